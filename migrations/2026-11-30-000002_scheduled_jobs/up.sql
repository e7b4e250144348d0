-- Jobs whose run_at lies in the future are 'scheduled', not 'pending'.
-- The claim walks jobs_claim_idx, whose predicate is state = 'pending';
-- with future-dated rows in it, a claim asking for more jobs than are due
-- walked every one of them (and always those of a higher priority), so a
-- million delayed jobs or retries waiting on backoff slowed every claim of
-- their task. Scheduled rows are promoted to pending in bulk when due
-- (jobq-diesel's promote.rs), through the index below.

-- Existing jobs keep their place: pending ones not yet due become
-- scheduled.
UPDATE jobq.jobs SET state = 'scheduled' WHERE state = 'pending' AND run_at > now();

-- Promotion takes a queue's due scheduled rows in run_at order, and the
-- first entry past now is that queue's next due time. Keyed by queue so
-- that a worker promotes and waits for its own queues only: a queue with
-- a million scheduled jobs never costs the workers of another queue a
-- wake-up or an index entry walked.
CREATE INDEX jobs_scheduled_idx ON jobq.jobs (queue, run_at) WHERE state = 'scheduled';

-- A scheduled job holds its dedupe key like a pending one.
DROP INDEX jobq.jobs_dedupe_idx;
CREATE UNIQUE INDEX jobs_dedupe_idx ON jobq.jobs (task, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('scheduled', 'pending', 'running');

-- A job inserted by raw SQL (psql, another service) names its run_at and
-- leaves the state to its default, 'pending' (or says 'scheduled' of a job
-- due now). The statement trigger below files such rows by their run_at,
-- so raw inserts stay first-class jobs.
-- It is the statement trigger that already reads the inserted rows for
-- the notifications, and it updates rows only when there are misfiled ones
-- (raw inserts due later): a row trigger, even one whose WHEN clause is
-- false, cost every insert of jobq's own, which files its rows right
-- (measured: enqueue_many 14 % slower, jobq-bench enqueue).
--
-- Wakes workers on commit, once per statement, queue and kind: "0 <queue>"
-- when jobs due now were inserted, "<due> <queue>" with the epoch
-- milliseconds of the earliest run_at, rounded up so that no worker wakes
-- before it, when jobs due later were (a statement inserting both sends
-- both, so no worker misses the due time).
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
