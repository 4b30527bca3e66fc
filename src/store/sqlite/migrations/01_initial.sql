CREATE TABLE tasks (
    name        TEXT PRIMARY KEY,
    digest      TEXT NOT NULL,
    defaults    TEXT NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE TABLE task_versions (
    name        TEXT NOT NULL,
    digest      TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    PRIMARY KEY (name, digest)
);
CREATE TABLE queues (
    name            TEXT PRIMARY KEY,
    concurrency     INTEGER NOT NULL,
    default_limits  TEXT NOT NULL,
    caps            TEXT NOT NULL,
    paused          INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    task            TEXT NOT NULL,
    digest          TEXT NOT NULL,
    queue           TEXT NOT NULL,
    state           TEXT NOT NULL,
    input           BLOB NOT NULL,
    args            TEXT NOT NULL,
    env             TEXT NOT NULL,
    priority        INTEGER NOT NULL,
    run_at          INTEGER NOT NULL,
    unique_key      TEXT,
    context         TEXT,
    limits          TEXT NOT NULL,
    retry           TEXT NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    lease           INTEGER,
    lease_expires   INTEGER,
    worker          TEXT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_done   INTEGER,
    progress_total  INTEGER,
    output          BLOB,
    error_reason    TEXT,
    error_message   TEXT,
    submitter       TEXT,
    created_at      INTEGER NOT NULL,
    started_at      INTEGER,
    finished_at     INTEGER
) WITHOUT ROWID;
CREATE INDEX jobs_claim ON jobs (queue, priority DESC, run_at, id) WHERE state = 'queued';
CREATE INDEX jobs_due ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (queue, lease_expires) WHERE state = 'running';
CREATE INDEX jobs_state ON jobs (state, finished_at);
CREATE INDEX jobs_task ON jobs (task, id);
CREATE INDEX jobs_context ON jobs (context, id) WHERE context IS NOT NULL;
CREATE UNIQUE INDEX jobs_unique_live ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('held', 'scheduled', 'queued', 'running');
CREATE TABLE attempts (
    job_id          TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    number          INTEGER NOT NULL,
    reason          TEXT NOT NULL,
    trap_kind       TEXT,
    exit_code       INTEGER,
    message         TEXT,
    stderr          BLOB NOT NULL,
    stderr_truncated INTEGER NOT NULL,
    receipt         TEXT NOT NULL,
    worker          TEXT NOT NULL,
    started_at      INTEGER NOT NULL,
    finished_at     INTEGER NOT NULL,
    PRIMARY KEY (job_id, number)
) WITHOUT ROWID;
