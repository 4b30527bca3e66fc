CREATE TABLE schedules (
    name        TEXT PRIMARY KEY,
    spec        TEXT NOT NULL,
    job         TEXT NOT NULL,
    overlap     TEXT NOT NULL,
    catch_up    TEXT NOT NULL,
    paused      INTEGER NOT NULL,
    next_fire   INTEGER,
    last_fire   INTEGER,
    last_job    TEXT,
    fires       INTEGER NOT NULL,
    skipped     INTEGER NOT NULL,
    last_error  TEXT,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_fire) WHERE paused = 0 AND next_fire IS NOT NULL;
