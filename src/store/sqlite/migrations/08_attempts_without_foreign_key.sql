-- An attempt's job was a foreign key: every attempt recorded cost a lookup of its job,
-- about 4% of the writer's work per job, though the writer records an attempt only with
-- the guarded update of that very job. A trigger keeps what the key's cascade did:
-- deleting a job deletes its attempts.
CREATE TABLE attempts_8 (
    job_id          TEXT NOT NULL,
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
INSERT INTO attempts_8 SELECT * FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_8 RENAME TO attempts;
CREATE TRIGGER jobs_delete_attempts AFTER DELETE ON jobs
BEGIN
    DELETE FROM attempts WHERE job_id = old.id;
END;
