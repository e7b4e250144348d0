-- Follow-up jobs (`#[jobq::task(then = notify_client)]`): when a job with
-- a follow-up reaches a terminal state, a job of the follow-up task is
-- inserted in the same transaction, whichever statement wrote that state
-- (an outcome batch, a rescue, a cancel, a handler's `complete_in`, raw
-- SQL).

-- What the follow-up's enqueue needs, fixed when the job is enqueued:
-- {"task": name, "queue": name, "priority": i16, "max_attempts": i32,
--  "then": the follow-up's own follow-up, if it has one}. NULL for jobs
-- without one: no default, so no table rewrite, and such rows pay one bit
-- of the null bitmap.
ALTER TABLE jobq.jobs ADD COLUMN follow_up jsonb;

-- Whether `f` is a follow-up the trigger below can always insert. A row's
-- terminal state is written by statements that settle many jobs at once;
-- a follow-up the trigger could not insert would fail every one of them,
-- so the shape is refused when the row is written instead. Loops over the
-- chain of `then`s rather than recursing.
CREATE FUNCTION jobq.valid_follow_up(f jsonb) RETURNS boolean
LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $fn$
BEGIN
    LOOP
        IF f IS NULL OR jsonb_typeof(f) = 'null' THEN
            RETURN true;
        END IF;
        IF jsonb_typeof(f) IS DISTINCT FROM 'object'
           OR jsonb_typeof(f -> 'task') IS DISTINCT FROM 'string'
           OR char_length(f ->> 'task') NOT BETWEEN 1 AND 200
           OR jsonb_typeof(f -> 'queue') IS DISTINCT FROM 'string'
           OR char_length(f ->> 'queue') NOT BETWEEN 1 AND 200
           OR jsonb_typeof(f -> 'priority') IS DISTINCT FROM 'number'
           OR jsonb_typeof(f -> 'max_attempts') IS DISTINCT FROM 'number'
           OR coalesce(f ->> 'priority', '') !~ '^-?[0-9]{1,5}$'
           OR (f ->> 'priority')::integer NOT BETWEEN -32768 AND 32767
           OR coalesce(f ->> 'max_attempts', '') !~ '^[0-9]{1,10}$'
           OR (f ->> 'max_attempts')::bigint NOT BETWEEN 1 AND 2147483647 THEN
            RETURN false;
        END IF;
        f := f -> 'then';
    END LOOP;
END
$fn$;

-- `IS NULL OR` first, so that rows without a follow-up (checked again by
-- every claim and outcome that updates them) never call the function.
-- NOT VALID skips a scan of the table: the column was just added, so
-- every existing row is NULL.
ALTER TABLE jobq.jobs ADD CONSTRAINT jobs_follow_up_check
    CHECK (follow_up IS NULL OR jobq.valid_follow_up(follow_up)) NOT VALID;

-- Inserts the follow-up of the job that just reached a terminal state.
-- Its payload is what `jobq::Finished` reads. `output` is left out when
-- the job stored none, so that a stored JSON null stays distinguishable;
-- `error` is the latest message of the error history, for jobs that did
-- not complete. The follow-up job carries its own follow-up, if any.
CREATE FUNCTION jobq.enqueue_follow_up() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    INSERT INTO jobq.jobs (task, queue, payload, priority, max_attempts, follow_up)
    VALUES (
        NEW.follow_up ->> 'task',
        NEW.follow_up ->> 'queue',
        jsonb_build_object(
            'job_id', NEW.id,
            'task', NEW.task,
            'queue', NEW.queue,
            'state', NEW.state,
            'error', CASE WHEN NEW.state <> 'completed'
                          THEN NEW.errors -> -1 ->> 'message' END,
            'attempt', NEW.attempt - NEW.handbacks,
            'created_at', NEW.created_at,
            'started_at', NEW.started_at,
            'finished_at', coalesce(NEW.finished_at, now()))
        || CASE WHEN NEW.output IS NULL THEN '{}'::jsonb
                ELSE jsonb_build_object('output', NEW.output) END,
        (NEW.follow_up ->> 'priority')::smallint,
        (NEW.follow_up ->> 'max_attempts')::integer,
        nullif(NEW.follow_up -> 'then', 'null'::jsonb));
    RETURN NULL;
END
$fn$;

-- A row trigger whose WHEN clause is false for jobs without a follow-up
-- and for every transition but the one into a terminal state. A job that
-- an operator retries and that finishes again gets a second follow-up:
-- each arrival in a terminal state is one.
CREATE TRIGGER jobs_follow_up
    AFTER UPDATE OF state ON jobq.jobs
    FOR EACH ROW
    WHEN (NEW.follow_up IS NOT NULL
          AND NEW.state IN ('completed', 'failed', 'cancelled')
          AND OLD.state IS DISTINCT FROM NEW.state)
    EXECUTE FUNCTION jobq.enqueue_follow_up();

-- Unique-key submissions carry the follow-up too. This overload of
-- jobq.enqueue_unique sets it on the job it creates, in the same
-- statement (the row is new and this transaction's own, so nobody can
-- have claimed it yet); a job that already held the key keeps its own.
CREATE FUNCTION jobq.enqueue_unique(
    p_task text, p_queue text, p_payload jsonb, p_priority smallint, p_max_attempts integer,
    p_delay_ms bigint, p_run_at timestamptz, p_key text, p_hold_ms bigint, p_forever boolean,
    p_partition text, p_headers jsonb, p_follow_up jsonb,
    OUT job_id bigint, OUT created boolean)
LANGUAGE plpgsql AS $fn$
BEGIN
    SELECT u.job_id, u.created INTO job_id, created
      FROM jobq.enqueue_unique(p_task, p_queue, p_payload, p_priority, p_max_attempts,
                               p_delay_ms, p_run_at, p_key, p_hold_ms, p_forever,
                               p_partition, p_headers) u;
    IF created AND p_follow_up IS NOT NULL THEN
        UPDATE jobq.jobs SET follow_up = p_follow_up WHERE id = job_id;
    END IF;
END
$fn$;
