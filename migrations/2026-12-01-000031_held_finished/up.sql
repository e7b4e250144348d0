-- Finished jobs that still hold a unique key are outside jobs_finished_idx
-- (so that pruning never walks them); this index finds them by age for the
-- recent counts of jobq::stats. Only keyed jobs with a hold get an entry.
CREATE INDEX jobs_held_finished_idx ON jobq.jobs (finished_at)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');
