-- Completed and failed jobs counted by the minute they ended (ms since the epoch / 60,000),
-- kept by the statement that ends attempts: the console's chart of the last hour reads 60
-- rows, however many jobs ended in it. The retention cleaner drops minutes it has passed.
CREATE TABLE ended_minutes (
    minute      bigint PRIMARY KEY,
    completed   bigint NOT NULL DEFAULT 0,
    failed      bigint NOT NULL DEFAULT 0
);
-- Failed and cancelled jobs in id order: the newest failures (the console's dashboard) and
-- a listing of one of these states, newest first, walk these instead of the whole table.
CREATE INDEX jobs_failed ON jobs (id) WHERE state = 'failed';
CREATE INDEX jobs_cancelled ON jobs (id) WHERE state = 'cancelled';
