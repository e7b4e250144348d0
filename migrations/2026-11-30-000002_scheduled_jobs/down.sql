CREATE OR REPLACE FUNCTION jobq.notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT queue, min(run_at) AS run_at FROM inserted WHERE state = 'pending' GROUP BY queue LOOP
        PERFORM pg_notify('jobq_jobs',
            CASE WHEN r.run_at > now()
                 THEN (extract(epoch FROM r.run_at) * 1000)::bigint
                 ELSE 0 END || ' ' || r.queue);
    END LOOP;
    RETURN NULL;
END
$fn$;
UPDATE jobq.jobs SET state = 'pending' WHERE state = 'scheduled';
DROP INDEX jobq.jobs_dedupe_idx;
CREATE UNIQUE INDEX jobs_dedupe_idx ON jobq.jobs (task, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('pending', 'running');
DROP INDEX jobq.jobs_scheduled_idx;
