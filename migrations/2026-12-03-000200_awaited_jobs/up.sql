-- Announce finished jobs only to those who wait for them.
--
-- Until now the trigger of `finished_notify` sent the ids of every job
-- reaching a terminal state, on every outcome batch. That costs twice:
-- PostgreSQL serialises the commits of transactions that sent a NOTIFY
-- under one cluster-wide lock (so many worker processes committing
-- outcomes queue behind each other), and a listener that stops reading
-- keeps the notification queue from being trimmed until it reaches its
-- 8 GB limit, after which every NOTIFY, and so every outcome statement,
-- fails.
--
-- Now a jobq::Waiter writes the ids it waits for into jobq.awaited
-- before it looks at the jobs' states, and the trigger announces only
-- those ids. With nobody waiting the trigger costs one probe of an empty
-- table and sends nothing.
--
-- Unlogged: registrations are worth nothing after a crash (every waiter's
-- connection is gone with it, and a waiter registers everything again
-- when it reconnects), so they need not be written to the WAL.
--   job_id  the waited job (no foreign key: a row lock for every
--           registration would get in the way of claims and outcomes,
--           and a pruned job just leaves a row for the clean-up).
--   waiter  a random number each Waiter draws once; it removes its own
--           rows by it when a wait ends, when it reconnects and when it
--           is dropped.
--   pid     the backend that registered, so that the rows of a waiter
--           that died (its connection gone) can be found and removed by
--           the workers' maintenance.
--   since   when; rows older than a day are removed as well (a backend
--           pid reused by another session would otherwise keep them).
CREATE UNLOGGED TABLE jobq.awaited (
    job_id bigint NOT NULL,
    waiter bigint NOT NULL,
    pid integer NOT NULL DEFAULT pg_backend_pid(),
    since timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, waiter)
);

-- The same statement-level trigger (one call per statement, reading the
-- NEW transition table), now joined with jobq.awaited.
--
-- Correctness of "register, then look": each query in this function
-- takes a fresh snapshot, so a registration committed before the
-- trigger's query runs is seen. A registration that commits after it is
-- missed here; the waiter covers that case itself: its look-up after
-- registering sees such a job either finished (the outcome committed) or
-- with its row version still marked by the unfinished outcome
-- transaction (a non-zero xmax), and looks again shortly (see
-- jobq-diesel/src/awaited.rs).
--
-- The payload is unchanged: ids, space-separated, at most 390 per
-- notification (390 ids of at most 20 characters stay under NOTIFY's
-- 8000-byte payload limit).
--
-- SECURITY DEFINER: the trigger runs as whoever finishes a job (the
-- worker's role, or the application's when it cancels or completes in
-- its own transaction); reading jobq.awaited as the function's owner
-- spares those roles a grant. The search path is pinned, as it must be
-- for a definer function.
CREATE OR REPLACE FUNCTION jobq.notify_finished() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $fn$
DECLARE
    chunk text;
BEGIN
    -- The usual case on a busy queue: nobody waits. One probe, no NOTIFY.
    IF NOT EXISTS (SELECT 1 FROM jobq.awaited) THEN
        RETURN NULL;
    END IF;
    FOR chunk IN
        SELECT string_agg(f.id::text, ' ')
        FROM (SELECT n.id, (row_number() OVER ()) / 390 AS part
              FROM finished n
              WHERE n.state IN ('completed', 'failed', 'cancelled')
                AND EXISTS (SELECT 1 FROM jobq.awaited a WHERE a.job_id = n.id)) f
        GROUP BY f.part
    LOOP
        PERFORM pg_notify('jobq_finished', chunk);
    END LOOP;
    RETURN NULL;
END
$fn$;
