-- Indexes for the operators' job listings (jobq::jobs, `jobq jobs list`,
-- the dashboard's jobs page), newest first.
--
-- Finished jobs by task and state, in id order: "the failed jobs of T"
-- and "the completed jobs of T". Without it such a listing walked the
-- primary key backwards, filtering, until it had a page; for a task with
-- no failed jobs, or with only old ones, that was the whole table (over
-- half a second with a million finished jobs). jobs_failed_idx has the
-- queue between task and id, so it cannot give a task's jobs in id order.
-- Its price on the hot path: one index entry per job, written by the
-- outcome that finishes it (a partial index gets no entry while a job is
-- scheduled, pending or running).
CREATE INDEX jobs_finished_task_idx ON jobq.jobs (task, state, id)
    WHERE state IN ('completed', 'failed', 'cancelled');

-- Jobs by dedupe key, in id order, whatever their state
-- (jobs_dedupe_idx holds only live jobs, and by task first). Only jobs
-- enqueued with a dedupe key get entries.
CREATE INDEX jobs_dedupe_key_idx ON jobq.jobs (dedupe_key, id)
    WHERE dedupe_key IS NOT NULL;
