DROP FUNCTION IF EXISTS jobq.enqueue_unique(text, text, jsonb, smallint, integer, bigint,
    timestamptz, text, bigint, boolean, text, jsonb, jsonb);
DROP TRIGGER IF EXISTS jobs_follow_up ON jobq.jobs;
DROP FUNCTION IF EXISTS jobq.enqueue_follow_up();
ALTER TABLE jobq.jobs DROP CONSTRAINT IF EXISTS jobs_follow_up_check;
ALTER TABLE jobq.jobs DROP COLUMN IF EXISTS follow_up;
DROP FUNCTION IF EXISTS jobq.valid_follow_up(jsonb);
