-- Live jobs change state several times each (claim, finish, retry); an index over every
-- state was rewritten at each of them. Live states have their partial indexes already
-- (claim, due, running), so only ended jobs (for `clean`) and held ones need one.
DROP INDEX jobs_state;
CREATE INDEX jobs_ended ON jobs (finished_at) WHERE state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_held ON jobs (id) WHERE state = 'held';
