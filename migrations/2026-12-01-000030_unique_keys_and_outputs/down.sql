DROP FUNCTION jobq.enqueue_unique(text, text, jsonb, smallint, integer, bigint, timestamptz, text, bigint, boolean);
DROP FUNCTION jobq.unique_job_id(text, text, integer);
DROP INDEX jobq.jobs_unique_until_idx;
DROP INDEX jobq.jobs_finished_idx;
CREATE INDEX jobs_finished_idx ON jobq.jobs (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled');
DROP INDEX jobq.jobs_unique_active_idx;
DROP INDEX jobq.jobs_unique_key_idx;
ALTER TABLE jobq.jobs DROP COLUMN unique_until;
ALTER TABLE jobq.jobs DROP COLUMN unique_gen;
ALTER TABLE jobq.jobs DROP COLUMN unique_key;
ALTER TABLE jobq.jobs DROP COLUMN output;
