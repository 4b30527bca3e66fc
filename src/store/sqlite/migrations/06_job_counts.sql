-- Counting a queue's jobs by state scanned the whole table (ended jobs pile up until
-- `clean`, queued ones can be millions) at every queue stats call, health check and
-- metrics scrape. The counts are kept here instead, changed by every write that adds,
-- moves or removes jobs (see `StateCounts`), a row per queue and state per write.
CREATE TABLE job_counts (
    queue   TEXT NOT NULL,
    state   TEXT NOT NULL,
    n       INTEGER NOT NULL,
    PRIMARY KEY (queue, state)
) WITHOUT ROWID;
INSERT INTO job_counts (queue, state, n)
    SELECT queue, state, count(*) FROM jobs GROUP BY queue, state;
