DROP INDEX IF EXISTS jobq.jobs_dedupe_key_idx;
DROP INDEX IF EXISTS jobq.jobs_finished_task_idx;
