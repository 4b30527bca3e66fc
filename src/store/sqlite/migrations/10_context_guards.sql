-- Context guards: a job may carry a concurrency key, and its queue runs at most
-- `key_concurrency` jobs with one key at a time. A claim that meets a queued job whose key
-- is at its limit sets it aside (`guarded = 1`): out of `jobs_claim`, so claims never scan
-- it again, and its key listed in `guarded_keys`. Each claim first gives the keys listed
-- for its queue their free room back, the next guarded jobs of the key in claim order.
ALTER TABLE jobs ADD COLUMN concurrency_key TEXT;
ALTER TABLE jobs ADD COLUMN guarded INTEGER NOT NULL DEFAULT 0;
ALTER TABLE queues ADD COLUMN key_concurrency INTEGER NOT NULL DEFAULT 1;
DROP INDEX jobs_claim;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id)
    WHERE state = 'queued' AND guarded = 0;
-- Whether a claim must look at keys at all: queued keyed jobs that are not set aside.
CREATE INDEX jobs_keyed ON jobs (queue) WHERE state = 'queued' AND guarded = 0
    AND concurrency_key IS NOT NULL;
CREATE INDEX jobs_guarded ON jobs (queue, concurrency_key, priority DESC, run_at, id)
    WHERE state = 'queued' AND guarded = 1;
CREATE INDEX jobs_key_running ON jobs (queue, concurrency_key)
    WHERE state = 'running' AND concurrency_key IS NOT NULL;
CREATE TABLE guarded_keys (
    queue   TEXT NOT NULL,
    key     TEXT NOT NULL,
    PRIMARY KEY (queue, key)
) WITHOUT ROWID;
-- The contexts that live jobs carry (`GET /v1/contexts`), without reading ended jobs.
CREATE INDEX jobs_live_context ON jobs (context)
    WHERE context IS NOT NULL
      AND (state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running');
