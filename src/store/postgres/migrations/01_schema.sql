-- The PostgreSQL store: the same records as the SQLite one. Ids are the 16 bytes of a job id
-- (they sort as the ids do); times are milliseconds since the Unix epoch; a job's limits and
-- retry policy are the compact text of `store/columns.rs`.
CREATE TABLE tasks (
    name        text PRIMARY KEY,
    digest      text NOT NULL,
    defaults    text NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE TABLE task_versions (
    name        text NOT NULL,
    digest      text NOT NULL,
    size_bytes  bigint NOT NULL,
    created_at  bigint NOT NULL,
    PRIMARY KEY (name, digest)
);
-- Module bytes, so that every node and worker can fetch any registered module.
CREATE TABLE modules (
    digest      text PRIMARY KEY,
    bytes       bytea NOT NULL
);
CREATE TABLE queues (
    name            text PRIMARY KEY,
    concurrency     integer NOT NULL,
    default_limits  text NOT NULL,
    caps            text NOT NULL,
    paused          boolean NOT NULL DEFAULT false
);
CREATE TABLE jobs (
    id              bytea PRIMARY KEY,
    task            text NOT NULL,
    digest          text NOT NULL,
    queue           text NOT NULL,
    state           text NOT NULL,
    input           bytea NOT NULL,
    args            text NOT NULL,
    env             text NOT NULL,
    priority        integer NOT NULL,
    run_at          bigint NOT NULL,
    unique_key      text,
    context         text,
    limits          text NOT NULL,
    retry           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    lease           bigint,
    lease_expires   bigint,
    worker          text,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress_done   bigint,
    progress_total  bigint,
    output          bytea,
    error_reason    text,
    error_message   text,
    submitter       text,
    created_at      bigint NOT NULL,
    started_at      bigint,
    finished_at     bigint
);
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (lease_expires) WHERE state = 'running';
CREATE INDEX jobs_held ON jobs (id) WHERE state = 'held';
CREATE INDEX jobs_ended ON jobs (finished_at)
    WHERE (state = 'completed' OR state = 'failed' OR state = 'cancelled');
CREATE INDEX jobs_task ON jobs (task, id);
CREATE INDEX jobs_context ON jobs (context, id) WHERE context IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL
      AND (state = 'held' OR state = 'scheduled' OR state = 'queued' OR state = 'running');
-- An attempt's job is not a foreign key (a lookup per attempt recorded); a trigger deletes a
-- job's attempts with it.
CREATE TABLE attempts (
    job_id          bytea NOT NULL,
    number          integer NOT NULL,
    reason          text NOT NULL,
    trap_kind       text,
    exit_code       integer,
    message         text,
    stderr          bytea NOT NULL,
    stderr_truncated boolean NOT NULL,
    receipt         text NOT NULL,
    worker          text NOT NULL,
    started_at      bigint NOT NULL,
    finished_at     bigint NOT NULL,
    PRIMARY KEY (job_id, number)
);
CREATE FUNCTION remotask_delete_attempts() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM attempts WHERE job_id IN (SELECT id FROM gone);
    RETURN NULL;
END $$;
CREATE TRIGGER jobs_delete_attempts AFTER DELETE ON jobs
    REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION remotask_delete_attempts();
-- Every queue's jobs counted per state, kept by the writes that insert, move or delete jobs,
-- in the same transaction: stats, and a claim's room under its queue's concurrency, read
-- these, never the jobs.
CREATE TABLE job_counts (
    queue   text NOT NULL,
    state   text NOT NULL,
    n       bigint NOT NULL,
    PRIMARY KEY (queue, state)
);
-- Fencing tokens: a sequence only grows, across every node.
CREATE SEQUENCE lease_tokens;
CREATE TABLE tokens (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL,
    hash        text NOT NULL UNIQUE,
    created_at  bigint NOT NULL,
    revoked_at  bigint
);
CREATE TABLE schedules (
    name        text PRIMARY KEY,
    spec        text NOT NULL,
    job         text NOT NULL,
    overlap     text NOT NULL,
    catch_up    text NOT NULL,
    paused      boolean NOT NULL,
    next_fire   bigint,
    last_fire   bigint,
    last_job    bytea,
    fires       bigint NOT NULL,
    skipped     bigint NOT NULL,
    last_error  text,
    created_at  bigint NOT NULL,
    updated_at  bigint NOT NULL
);
CREATE INDEX schedules_due ON schedules (next_fire) WHERE NOT paused AND next_fire IS NOT NULL;
