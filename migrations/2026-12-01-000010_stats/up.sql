-- Failed and cancelled jobs by task and queue, for jobq::stats, the CLI's
-- `jobs list --state failed` and `jobs retry --all-failed --task T`.
-- Operators look for these jobs among millions of completed ones, and
-- without this index every such question read the whole table. It costs
-- the hot path nothing: a partial index gets an entry only when a row
-- enters one of its states, and jobs end failed or cancelled rarely.
-- Its columns cover the counts, so once vacuumed stats can read it alone.
CREATE INDEX jobs_failed_idx ON jobq.jobs (task, queue, state, id)
    WHERE state IN ('failed', 'cancelled');
