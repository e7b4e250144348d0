DROP INDEX IF EXISTS jobq.jobs_held_finished_idx;
