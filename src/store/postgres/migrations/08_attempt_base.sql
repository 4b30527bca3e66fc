-- A retried job keeps its attempts and their numbers: a retry makes the attempts so far the
-- job's base, and its retry policy counts only the attempts after it. (A retry used to set
-- `attempts` back to 0, and each new attempt's record replaced the old one of its number.)
ALTER TABLE jobs ADD COLUMN attempt_base integer NOT NULL DEFAULT 0;

-- The claim as in migration 3, its claimed rows with the job's attempt base as well.
DROP FUNCTION remotask_claim(text, text, integer, bigint, bigint);

CREATE FUNCTION remotask_claim(
    p_queue text, p_worker text, p_max integer, p_lease_ms bigint, p_now bigint)
RETURNS TABLE (
    kind text, id bytea, task text, digest text, queue text, input bytea, args text,
    env text, priority integer, run_at bigint, unique_key text, context text, limits text,
    retry text, attempts integer, output bytea, error_reason text, error_message text,
    submitter text, created_at bigint, finished_at bigint, lease bigint,
    at_concurrency boolean, concurrency_key text, attempt_base integer)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_concurrency integer;
    v_paused boolean;
    v_key_limit integer;
    v_running bigint;
    v_room integer;
    v_token bigint;
    v_taken integer;
    v_guarded boolean := false;
    v_key text;
    v_free bigint;
    v_ids bytea[];
    v_keys text[];
    v_n bigint;
    r record;
BEGIN
    RETURN QUERY
    WITH due AS (
        UPDATE jobs SET state = 'queued'
        WHERE jobs.id IN (
            SELECT j.id FROM jobs j WHERE j.state = 'scheduled' AND j.run_at <= p_now
            ORDER BY j.run_at LIMIT 1000 FOR UPDATE SKIP LOCKED)
        RETURNING jobs.id, jobs.task, jobs.queue
    ), counted AS (
        INSERT INTO job_counts (queue, state, n)
        SELECT c.q, c.s, sum(c.n) FROM (
            SELECT due.queue AS q, 'scheduled' AS s, -1 AS n FROM due
            UNION ALL SELECT due.queue, 'queued', 1 FROM due) c
        GROUP BY c.q, c.s ORDER BY c.q, c.s
        ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n
    )
    SELECT 'promoted', due.id, due.task, NULL::text, due.queue, NULL::bytea, NULL::text,
        NULL::text, NULL::integer, NULL::bigint, NULL::text, NULL::text, NULL::text,
        NULL::text, NULL::integer, NULL::bytea, NULL::text, NULL::text, NULL::text,
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean, NULL::text, NULL::integer
    FROM due;

    SELECT q.concurrency, q.paused, q.key_concurrency INTO v_concurrency, v_paused, v_key_limit
    FROM queues q WHERE q.name = p_queue FOR UPDATE;
    IF NOT FOUND OR v_paused THEN
        RETURN QUERY SELECT 'status', NULL::bytea, NULL::text, NULL::text, NULL::text,
            NULL::bytea, NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::text,
            NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, false,
            NULL::text, NULL::integer;
        RETURN;
    END IF;
    SELECT coalesce(max(c.n), 0) INTO v_running
    FROM job_counts c WHERE c.queue = p_queue AND c.state = 'running';
    v_room := greatest(least(v_concurrency - v_running, p_max), 0);
    v_taken := 0;
    IF v_room > 0 THEN
        -- The keys set aside get their free room back, in claim order.
        FOR v_key IN SELECT g.key FROM guarded_keys g WHERE g.queue = p_queue LOOP
            SELECT v_key_limit - count(*) INTO v_free FROM jobs j
            WHERE j.queue = p_queue AND j.concurrency_key = v_key AND j.state = 'running';
            IF v_free > 0 THEN
                UPDATE jobs SET guarded = false WHERE jobs.id IN (
                    SELECT j.id FROM jobs j
                    WHERE j.queue = p_queue AND j.concurrency_key = v_key
                      AND j.state = 'queued' AND j.guarded
                    ORDER BY j.priority DESC, j.run_at, j.id LIMIT v_free);
            END IF;
            IF EXISTS (SELECT 1 FROM jobs j WHERE j.queue = p_queue
                       AND j.concurrency_key = v_key AND j.state = 'queued' AND j.guarded) THEN
                v_guarded := true;
            ELSE
                DELETE FROM guarded_keys g WHERE g.queue = p_queue AND g.key = v_key;
            END IF;
        END LOOP;
        v_token := nextval('lease_tokens');
        IF NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = p_queue AND j.state = 'queued'
                       AND NOT j.guarded AND j.concurrency_key IS NOT NULL) THEN
            SELECT coalesce(array_agg(c.id), '{}') INTO v_ids FROM (
                SELECT j.id FROM jobs j
                WHERE j.queue = p_queue AND j.state = 'queued' AND NOT j.guarded
                ORDER BY j.priority DESC, j.run_at, j.id LIMIT v_room FOR UPDATE SKIP LOCKED) c;
        ELSE
            -- Jobs in claim order, passing over (and setting aside) those whose key already
            -- runs its limit, counting the ones picked.
            v_ids := '{}';
            v_keys := '{}';
            FOR r IN SELECT j.id AS job, j.concurrency_key AS key FROM jobs j
                     WHERE j.queue = p_queue AND j.state = 'queued' AND NOT j.guarded
                     ORDER BY j.priority DESC, j.run_at, j.id FOR UPDATE SKIP LOCKED LOOP
                EXIT WHEN cardinality(v_ids) >= v_room;
                IF r.key IS NULL THEN
                    v_ids := v_ids || r.job;
                    CONTINUE;
                END IF;
                SELECT count(*) + coalesce(cardinality(array_positions(v_keys, r.key)), 0)
                INTO v_n FROM jobs j
                WHERE j.queue = p_queue AND j.concurrency_key = r.key AND j.state = 'running';
                IF v_n < v_key_limit THEN
                    v_ids := v_ids || r.job;
                    v_keys := v_keys || r.key;
                ELSE
                    UPDATE jobs SET guarded = true WHERE jobs.id = r.job;
                    INSERT INTO guarded_keys (queue, key) VALUES (p_queue, r.key)
                    ON CONFLICT DO NOTHING;
                    v_guarded := true;
                END IF;
            END LOOP;
        END IF;
        RETURN QUERY
        WITH taken AS (
            UPDATE jobs SET state = 'running', lease = v_token,
                lease_expires = p_now + p_lease_ms, worker = p_worker,
                attempts = jobs.attempts + 1, started_at = p_now, cancel_requested = false,
                progress_done = NULL, progress_total = NULL
            WHERE jobs.id = ANY(v_ids) AND jobs.state = 'queued'
            RETURNING jobs.*
        ), counted AS (
            INSERT INTO job_counts (queue, state, n)
            SELECT p_queue, c.s, c.n FROM (
                SELECT 'queued' AS s, -count(*) AS n FROM taken
                UNION ALL SELECT 'running', count(*) FROM taken) c
            WHERE c.n <> 0
            ORDER BY c.s
            ON CONFLICT (queue, state) DO UPDATE SET n = job_counts.n + excluded.n
        )
        SELECT 'claimed', t.id, t.task, t.digest, t.queue, t.input, t.args, t.env,
            t.priority, t.run_at, t.unique_key, t.context, t.limits, t.retry, t.attempts,
            t.output, t.error_reason, t.error_message, t.submitter, t.created_at,
            t.finished_at, t.lease, NULL::boolean, t.concurrency_key, t.attempt_base
        FROM taken t;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
    END IF;
    RETURN QUERY SELECT 'status', NULL::bytea, NULL::text, NULL::text, NULL::text,
        NULL::bytea, NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::text,
        NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint,
        (v_room < p_max AND v_taken = v_room) OR (v_taken < p_max AND v_guarded), NULL::text,
        NULL::integer;
END $$;
