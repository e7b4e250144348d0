DROP INDEX jobq.jobs_scheduled_idx;
CREATE INDEX jobs_scheduled_idx ON jobq.jobs (queue, run_at) WHERE state = 'scheduled';
