-- Flow control: partition keys, headers, fleet-wide concurrency limits and
-- paused queues. Every column added here is nullable or has a constant
-- default, so no existing row is rewritten or lost.

-- A job's partition key (EnqueueOptions::key): what key_concurrency limits.
ALTER TABLE jobq.jobs ADD COLUMN key text
    CHECK (char_length(key) BETWEEN 1 AND 200);

-- String pairs the enqueuer attaches (EnqueueOptions::header), as a jsonb
-- object of strings. NULL when there are none, so jobs without headers
-- cost nothing to store, claim or return.
ALTER TABLE jobq.jobs ADD COLUMN headers jsonb
    CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object');

-- Set by the claim of a task with a fleet-wide limit (global_concurrency or
-- key_concurrency), so that only those running rows enter the index below.
-- The claims of unlimited tasks never set it: their rows never enter that
-- index, and their claim path does not change.
ALTER TABLE jobq.jobs ADD COLUMN limited boolean NOT NULL DEFAULT false;

-- Running attempts of limited tasks, per task and key: a limited claim
-- counts them (the running count is derived from rows, so an outcome or a
-- rescue that moves a row out of 'running' frees its slot by itself).
CREATE INDEX jobs_limited_running_idx ON jobq.jobs (task, key)
    WHERE state = 'running' AND limited;

-- Pending jobs of a key in dispatch order: a limited claim checks that no
-- earlier job of the same key waits (per-key order). Only keyed rows are
-- in it.
CREATE INDEX jobs_key_pending_idx ON jobq.jobs (task, key, priority DESC, id)
    WHERE state = 'pending' AND key IS NOT NULL;

-- Queues no worker claims from (jobq::pause_queue); survives restarts.
CREATE TABLE jobq.paused_queues (
    queue text PRIMARY KEY CHECK (char_length(queue) BETWEEN 1 AND 200),
    paused_at timestamptz NOT NULL DEFAULT now()
);
