-- Completed and failed jobs counted by the minute they ended (ms since the epoch / 60,000),
-- kept by the statement that ends attempts: the console's chart of the last hour reads 60
-- rows, however many jobs ended in it. The retention cleaner drops minutes it has passed.
CREATE TABLE ended_minutes (
    minute      bigint PRIMARY KEY,
    completed   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0
);
