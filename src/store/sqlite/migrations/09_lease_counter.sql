-- Fencing tokens come from the store: one counter that every claim that takes jobs raises
-- in its own transaction, so a lease token only grows, also across server processes and
-- restarts (before, each process counted from a random start of its own). It starts past
-- every lease a running job holds.
CREATE TABLE counters (
    name    TEXT PRIMARY KEY,
    n       INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO counters (name, n) SELECT 'lease', coalesce(max(lease), 0) FROM jobs;
