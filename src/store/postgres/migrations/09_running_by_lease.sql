-- The running jobs' index names their lease instead of their state. A job holds a lease
-- exactly while it runs: a claim sets `lease` with `state = 'running'`, and every end of an
-- attempt clears it in the statement that moves the job on; no other write touches either.
-- Ends look their jobs up by id and check `state = 'running'` on each; with the index on
-- that state, PostgreSQL could plan them as a scan of every running job instead, and did on
-- a fresh table, whose statistics say almost no job runs (a third of the ends in a run of
-- 50,000 jobs, at half again the cost per job). The rescuer and listings of running jobs
-- name the lease to use the index.
DROP INDEX jobs_running;
CREATE INDEX jobs_running ON jobs (lease_expires) WHERE lease IS NOT NULL;
