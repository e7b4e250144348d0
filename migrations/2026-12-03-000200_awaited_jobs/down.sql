-- Back to announcing every finished job (migration finished_notify).
CREATE OR REPLACE FUNCTION jobq.notify_finished() RETURNS trigger
LANGUAGE plpgsql SECURITY INVOKER AS $fn$
DECLARE
    chunk text;
BEGIN
    FOR chunk IN
        SELECT string_agg(f.id::text, ' ')
        FROM (SELECT id, (row_number() OVER ()) / 390 AS part
              FROM finished WHERE state IN ('completed', 'failed', 'cancelled')) f
        GROUP BY f.part
    LOOP
        PERFORM pg_notify('jobq_finished', chunk);
    END LOOP;
    RETURN NULL;
END
$fn$;

DROP TABLE jobq.awaited;
