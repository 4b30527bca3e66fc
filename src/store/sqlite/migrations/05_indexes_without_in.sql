-- SQLite tests `x IN (a, b, c)` (more than two constants) against an ephemeral table it
-- builds and drops at every evaluation, and a partial index's condition is evaluated for
-- every row written: three such tables per job (its insert, and both sides of its finish).
-- The same conditions as comparisons cost nothing. Queries that use these indexes spell
-- the condition exactly alike (`LIVE_STATES`, `TERMINAL_STATES`), so the planner sees it.
DROP INDEX jobs_ended;
CREATE INDEX jobs_ended ON jobs (finished_at)
    WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled');
DROP INDEX jobs_unique_live;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running');
