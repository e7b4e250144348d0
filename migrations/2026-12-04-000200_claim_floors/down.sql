-- Back to one notification per queue without the jobs' place (2026-11-30-000002).
CREATE OR REPLACE FUNCTION jobq.notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
    misfiled boolean := false;
BEGIN
    FOR r IN SELECT queue, bool_or(run_at <= now()) AS due,
                    min(run_at) FILTER (WHERE run_at > now()) AS later,
                    bool_or((state = 'scheduled') <> (run_at > now())) AS misfiled
             FROM inserted WHERE state IN ('pending', 'scheduled') GROUP BY queue LOOP
        IF r.due THEN
            PERFORM pg_notify('jobq_jobs', '0 ' || r.queue);
        END IF;
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
