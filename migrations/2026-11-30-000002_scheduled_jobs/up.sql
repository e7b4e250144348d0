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
-- leaves the state to its default, 'pending'. This files each inserted row
-- by its run_at, so raw inserts stay first-class jobs. A row trigger rather
-- than an UPDATE from the statement trigger below: it changes the row
-- before it is written, so no dead tuple or dead claim-index entry is
-- left behind, and its WHEN clause is evaluated without calling the
-- function, so rows already filed right (every insert jobq makes) cost a
-- comparison.
CREATE FUNCTION jobq.file_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    NEW.state := CASE WHEN NEW.run_at > now() THEN 'scheduled' ELSE 'pending' END;
    RETURN NEW;
END
$fn$;

CREATE TRIGGER jobs_file_inserted
    BEFORE INSERT ON jobq.jobs
    FOR EACH ROW
    WHEN (NEW.state IN ('pending', 'scheduled')
          AND (NEW.state = 'scheduled') IS DISTINCT FROM (NEW.run_at > now()))
    EXECUTE FUNCTION jobq.file_inserted();

-- Wakes workers on commit, once per statement, queue and kind: "0 <queue>"
-- when jobs due now were inserted, "<due> <queue>" with the epoch
-- milliseconds of the earliest run_at, rounded up so that no worker wakes
-- before it, when scheduled ones were (a
-- statement inserting both sends both, so no worker misses the due time).
CREATE OR REPLACE FUNCTION jobq.notify_inserted() RETURNS trigger
LANGUAGE plpgsql AS $fn$
DECLARE
    r record;
BEGIN
    FOR r IN SELECT queue, bool_or(state = 'pending') AS due,
                    min(run_at) FILTER (WHERE state = 'scheduled') AS later
             FROM inserted WHERE state IN ('pending', 'scheduled') GROUP BY queue LOOP
        IF r.due THEN
            PERFORM pg_notify('jobq_jobs', '0 ' || r.queue);
        END IF;
        IF r.later IS NOT NULL THEN
            PERFORM pg_notify('jobq_jobs',
                ceil(extract(epoch FROM r.later) * 1000)::bigint || ' ' || r.queue);
        END IF;
    END LOOP;
    RETURN NULL;
END
$fn$;
