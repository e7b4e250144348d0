-- Wakes jobq::Waiter on commit when jobs reach a terminal state (completed,
-- failed, cancelled), whichever statement took them there: the worker's
-- outcome batches, cancellation, a rescue that fails a job out of
-- attempts, an outcome written in the handler's own transaction, raw SQL.
-- Made in the database so that no path can forget it.
--
-- One statement-level trigger reading the new rows: one call per
-- statement, not per row, and no call per row that stays unfinished (the
-- claim's rows are scanned and skipped). Only the NEW table is captured,
-- which halves the copy a transition table costs; a row updated while
-- already finished is therefore announced again, which a waiter reads as
-- "look again" and nothing more.
--
-- The payload is the ids, space-separated, at most 390 per notification:
-- 390 ids of at most 20 characters each stay under NOTIFY's 8000-byte
-- payload limit. Nobody listening costs nothing more than the queueing:
-- PostgreSQL's notification queue is trimmed as soon as every listener
-- has read it.
CREATE FUNCTION jobq.notify_finished() RETURNS trigger
LANGUAGE plpgsql AS $fn$
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

CREATE TRIGGER jobs_notify_finished
    AFTER UPDATE ON jobq.jobs
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_finished();
