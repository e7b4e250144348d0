DROP INDEX IF EXISTS jobq.jobs_failed_idx;
