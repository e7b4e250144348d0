DROP TABLE jobq.paused_queues;
DROP INDEX jobq.jobs_key_pending_idx;
DROP INDEX jobq.jobs_limited_running_idx;
ALTER TABLE jobq.jobs DROP COLUMN limited;
ALTER TABLE jobq.jobs DROP COLUMN headers;
ALTER TABLE jobq.jobs DROP COLUMN key;
