-- Typed outputs and idempotent submission (unique keys). Only nullable
-- columns without defaults are added: no table rewrite, every job stays.

-- What a task fn returned, as JSON; NULL for jobs that did not complete
-- and for tasks that return `()`.
ALTER TABLE jobq.jobs ADD COLUMN output jsonb;

-- A job submitted with a unique key holds the key for its task while it
-- is scheduled, pending or running, and besides until `unique_until`
-- ('infinity' for keys held forever, NULL for keys held only while
-- active). A key taken again after its holder let go starts the next
-- generation, `unique_gen`.
ALTER TABLE jobq.jobs ADD COLUMN unique_key text;
ALTER TABLE jobq.jobs ADD COLUMN unique_gen integer;
ALTER TABLE jobq.jobs ADD COLUMN unique_until timestamptz;

-- Finds a key's latest generation. Not unique: the primary key is what
-- makes submissions of one key agree (see jobq.unique_job_id).
CREATE INDEX jobs_unique_key_idx ON jobq.jobs (task, unique_key, unique_gen DESC)
    WHERE unique_key IS NOT NULL;

-- At most one active job per key, whatever the submitters saw: a backstop
-- for a REPEATABLE READ transaction whose snapshot is older than the
-- key's last two generations (see jobq.enqueue_unique). Created after the
-- primary key, so that a submission racing another of the same
-- generation meets it on the primary key first.
CREATE UNIQUE INDEX jobs_unique_active_idx ON jobq.jobs (task, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'pending', 'running');

-- Pruning must keep finished jobs whose key is still held, and must not
-- walk them at every round either (a million `unique_forever` jobs would
-- cost every prune a million index entries). The age index now holds the
-- jobs without a hold past their end; held ones are found by the end of
-- their hold, so that those held for good ('infinity') are never visited.
-- Rebuilding the age index reads the table once, during the migration.
DROP INDEX jobq.jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobq.jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NULL;
CREATE INDEX jobs_unique_until_idx ON jobq.jobs (unique_until)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');

-- The id of generation `gen` of a task's key: derived, not drawn from the
-- identity sequence, so that two transactions submitting the same key
-- compute the same id and meet on the primary key. That is what lets the
-- loser learn the winner's id without seeing its row, which a REPEATABLE
-- READ transaction cannot do when the winner committed after its snapshot
-- (an ON CONFLICT clause there raises a serialization failure instead).
-- Derived ids lie in [2^62, 2^63), far above any identity value; the
-- parts are length-prefixed so that no two (task, key, gen) share an input.
CREATE FUNCTION jobq.unique_job_id(p_task text, p_key text, p_gen integer) RETURNS bigint
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE AS $fn$
    SELECT 4611686018427387904 + (('x' || encode(substr(sha256(convert_to(
        length(p_task)::text || ':' || p_task || length(p_key)::text || ':' || p_key
            || ':' || p_gen::text, 'UTF8')), 1, 8), 'hex'))::bit(64)::bigint
        & 4611686018427387903)
$fn$;

-- Inserts a job under a unique key, or returns the job holding the key.
-- `p_hold_ms` NULL holds the key while the job is active only;
-- `p_forever` holds it for good.
CREATE FUNCTION jobq.enqueue_unique(
    p_task text, p_queue text, p_payload jsonb, p_priority smallint, p_max_attempts integer,
    p_delay_ms bigint, p_run_at timestamptz, p_key text, p_hold_ms bigint, p_forever boolean,
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
                               unique_key, unique_gen, unique_until)
        VALUES (job_id, p_task, p_queue, p_payload, p_priority, p_max_attempts, v_due,
                CASE WHEN v_due > now() THEN 'scheduled'::jobq.job_state
                     ELSE 'pending'::jobq.job_state END,
                p_key, v_gen,
                CASE WHEN p_forever THEN 'infinity'::timestamptz
                     WHEN p_hold_ms IS NULL THEN NULL
                     ELSE now() + p_hold_ms * interval '1 millisecond' END);
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
