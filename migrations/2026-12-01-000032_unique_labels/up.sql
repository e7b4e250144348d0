-- Jobs submitted under a unique key carry their partition key and
-- headers too (both came in the flow_control migration, beside which the
-- unique-key function was written).
DROP FUNCTION jobq.enqueue_unique(text, text, jsonb, smallint, integer, bigint, timestamptz,
                                  text, bigint, boolean);

-- Inserts a job under a unique key, or returns the job holding the key.
-- `p_hold_ms` NULL holds the key while the job is active only;
-- `p_forever` holds it for good. `p_partition` is the job's partition key.
CREATE FUNCTION jobq.enqueue_unique(
    p_task text, p_queue text, p_payload jsonb, p_priority smallint, p_max_attempts integer,
    p_delay_ms bigint, p_run_at timestamptz, p_key text, p_hold_ms bigint, p_forever boolean,
    p_partition text, p_headers jsonb,
    OUT job_id bigint, OUT created boolean)
LANGUAGE plpgsql AS $fn$
DECLARE
    v_latest record;
    v_gen integer := 0;
    v_due timestamptz := coalesce(p_run_at, now() + p_delay_ms * interval '1 millisecond');
    v_constraint text;
    v_task text;
    v_key text;
    v_holder bigint;
BEGIN
    SELECT j.id, j.unique_gen,
           (j.state IN ('scheduled', 'pending', 'running') OR j.unique_until > now()) AS held
      INTO v_latest
      FROM jobq.jobs j
     WHERE j.task = p_task AND j.unique_key = p_key
     ORDER BY j.unique_gen DESC
     LIMIT 1;
    IF FOUND THEN
        IF v_latest.held THEN
            job_id := v_latest.id;
            created := false;
            RETURN;
        END IF;
        v_gen := v_latest.unique_gen + 1;
    END IF;
    job_id := jobq.unique_job_id(p_task, p_key, v_gen);
    BEGIN
        INSERT INTO jobq.jobs (id, task, queue, payload, priority, max_attempts, run_at, state,
                               unique_key, unique_gen, unique_until, key, headers)
        VALUES (job_id, p_task, p_queue, p_payload, p_priority, p_max_attempts, v_due,
                CASE WHEN v_due > now() THEN 'scheduled'::jobq.job_state
                     ELSE 'pending'::jobq.job_state END,
                p_key, v_gen,
                CASE WHEN p_forever THEN 'infinity'::timestamptz
                     WHEN p_hold_ms IS NULL THEN NULL
                     ELSE now() + p_hold_ms * interval '1 millisecond' END,
                p_partition, p_headers);
        created := true;
    EXCEPTION WHEN unique_violation THEN
        GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
        IF v_constraint = 'jobs_unique_active_idx' THEN
            -- Another generation is active: this transaction's snapshot
            -- predates it and the one before. Return the holder where it
            -- is visible (READ COMMITTED); otherwise only a newer snapshot
            -- can tell, so ask for the transaction to be retried.
            SELECT j.id INTO v_holder FROM jobq.jobs j
             WHERE j.task = p_task AND j.unique_key = p_key
               AND j.state IN ('scheduled', 'pending', 'running');
            IF FOUND THEN
                job_id := v_holder;
                created := false;
                RETURN;
            END IF;
            RAISE EXCEPTION 'jobq: another job holds this unique key, created after this transaction''s snapshot; retry the transaction'
                USING ERRCODE = 'serialization_failure';
        END IF;
        IF v_constraint IS DISTINCT FROM 'jobs_pkey' THEN
            RAISE;
        END IF;
        -- Another transaction created this generation (it may have
        -- committed after this transaction's snapshot, so its row may be
        -- invisible here; the id is the same either way). Where the row
        -- is visible, make sure it is this key's and not a hash collision.
        SELECT j.task, j.unique_key INTO v_task, v_key FROM jobq.jobs j WHERE j.id = job_id;
        IF FOUND AND (v_task IS DISTINCT FROM p_task OR v_key IS DISTINCT FROM p_key) THEN
            RAISE EXCEPTION 'jobq: unique key id collision: job % belongs to another task or key', job_id
                USING ERRCODE = 'unique_violation';
        END IF;
        created := false;
    END;
END
$fn$;
