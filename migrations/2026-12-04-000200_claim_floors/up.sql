-- Inserted jobs due now announce where the first of them sits in its
-- task's claim order, so that workers can start each claim's walk at a
-- floor (the last job they claimed) instead of at the head of the task's
-- range in jobs_claim_idx. Under a snapshot held open (a long transaction
-- anywhere on the server) the head is made of the dead entries of every
-- job claimed since, which nothing can remove while it is held, and a
-- walk from the head visited each of them on every claim.
--
-- An insert can land before a worker's floor: its run_at is its
-- transaction's start, which may precede jobs that committed and were
-- claimed first, and a higher priority sorts first. The position lets the
-- worker lower its floor for exactly that task.
--
-- Payloads: "=<priority> <run_at epoch µs> <id> <task's length in
-- characters> <task><queue>" once per statement, queue and task for jobs
-- due now (names are at most 200 characters each, so this stays far below
-- NOTIFY's 8000 bytes); "<due> <queue>" as before for jobs due later.
-- Every other path that makes jobs pending (promotion, retries, releases,
-- rescue, unpause, unblock, admin retry) still sends "0 <queue>", which
-- tells workers to walk their queue's tasks from the head once.
CREATE OR REPLACE FUNCTION jobq.notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    misfiled boolean := false;
BEGIN
    FOR r IN SELECT DISTINCT ON (queue, task) queue, task, priority, run_at, id
             FROM inserted WHERE state IN ('pending', 'scheduled') AND run_at <= now()
             ORDER BY queue, task, priority DESC, run_at, id LOOP
        PERFORM pg_notify('jobq_jobs',
            '=' || r.priority || ' ' || (extract(epoch FROM r.run_at) * 1000000)::bigint
            || ' ' || r.id || ' ' || char_length(r.task) || ' ' || r.task || r.queue);
    END LOOP;
    FOR r IN SELECT queue, min(run_at) FILTER (WHERE run_at > now()) AS later,
                    bool_or((state = 'scheduled') <> (run_at > now())) AS misfiled
             FROM inserted WHERE state IN ('pending', 'scheduled') GROUP BY queue LOOP
        IF r.later IS NOT NULL THEN
            PERFORM pg_notify('jobq_jobs',
                ceil(extract(epoch FROM r.later) * 1000)::bigint || ' ' || r.queue);
        END IF;
        misfiled := misfiled OR r.misfiled;
    END LOOP;
    IF misfiled THEN
        UPDATE jobq.jobs
        SET state = CASE WHEN run_at > now() THEN 'scheduled'::jobq.job_state
                         ELSE 'pending'::jobq.job_state END
        WHERE id = ANY(ARRAY(SELECT id FROM inserted
                             WHERE (state = 'scheduled') <> (run_at > now())))
          AND state IN ('pending', 'scheduled');
    END IF;
    RETURN NULL;
END
$fn$;
