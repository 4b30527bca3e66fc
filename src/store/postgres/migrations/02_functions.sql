-- The writes that take several steps, each one round trip. Their guards are the state
-- machine's (`domain::MOVES`); a unit test checks the text below against it.

-- A claim: due scheduled jobs of every queue become queued ('due'), then up to p_max queued
-- jobs of p_queue are taken under one new lease ('claim'), within the queue's pause and
-- concurrency. The queue's row is locked first, so the claims of one queue from every node
-- take turns, and each reads the running count the one before it left: the concurrency
-- holds across nodes. Rows: 'promoted' (id, task, queue), 'claimed' (the job), and one
-- 'status' (whether the concurrency stopped the claim).
CREATE FUNCTION remotask_claim(
    p_queue text, p_worker text, p_max integer, p_lease_ms bigint, p_now bigint)
RETURNS TABLE (
    kind text, id bytea, task text, digest text, queue text, input bytea, args text,
    env text, priority integer, run_at bigint, unique_key text, context text, limits text,
    retry text, attempts integer, output bytea, error_reason text, error_message text,
    submitter text, created_at bigint, finished_at bigint, lease bigint,
    at_concurrency boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    v_concurrency integer;
    v_paused boolean;
    v_running bigint;
    v_room integer;
    v_token bigint;
    v_taken integer;
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
        NULL::bigint, NULL::bigint, NULL::bigint, NULL::boolean
    FROM due;

    SELECT q.concurrency, q.paused INTO v_concurrency, v_paused
    FROM queues q WHERE q.name = p_queue FOR UPDATE;
    IF NOT FOUND OR v_paused THEN
        RETURN QUERY SELECT 'status', NULL::bytea, NULL::text, NULL::text, NULL::text,
            NULL::bytea, NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::text,
            NULL::text, NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::text,
            NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint, false;
        RETURN;
    END IF;
    SELECT coalesce(max(c.n), 0) INTO v_running
    FROM job_counts c WHERE c.queue = p_queue AND c.state = 'running';
    v_room := greatest(least(v_concurrency - v_running, p_max), 0);
    v_taken := 0;
    IF v_room > 0 THEN
        v_token := nextval('lease_tokens');
        RETURN QUERY
        WITH taken AS (
            UPDATE jobs SET state = 'running', lease = v_token,
                lease_expires = p_now + p_lease_ms, worker = p_worker,
                attempts = jobs.attempts + 1, started_at = p_now, cancel_requested = false,
                progress_done = NULL, progress_total = NULL
            WHERE jobs.id IN (
                SELECT j.id FROM jobs j WHERE j.queue = p_queue AND j.state = 'queued'
                ORDER BY j.priority DESC, j.run_at, j.id LIMIT v_room FOR UPDATE SKIP LOCKED)
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
            t.finished_at, t.lease, NULL::boolean
        FROM taken t;
        GET DIAGNOSTICS v_taken = ROW_COUNT;
    END IF;
    RETURN QUERY SELECT 'status', NULL::bytea, NULL::text, NULL::text, NULL::text,
        NULL::bytea, NULL::text, NULL::text, NULL::integer, NULL::bigint, NULL::text,
        NULL::text, NULL::text, NULL::text, NULL::integer, NULL::bytea, NULL::text,
        NULL::text, NULL::text, NULL::bigint, NULL::bigint, NULL::bigint,
        (v_room < p_max AND v_taken = v_room);
END $$;
