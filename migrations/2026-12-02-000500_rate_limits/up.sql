-- Rate limits and downstream back-off: two small tables, one row per task
-- (key '') or per (task, partition key). Both hold times, not counters, so
-- nothing a worker holds can leak: a dead worker leaves times that simply
-- pass.

-- Token buckets as GCRA state: `tat` (theoretical arrival time) is when
-- the bucket is full again. A claim of a rate-limited task reads it and
-- moves it on by one emission interval per job claimed, in the claim's
-- own statement, under the task's advisory lock. No row, or a `tat` in
-- the past beyond the burst, is a full bucket.
CREATE TABLE jobq.rate_tokens (
    task text NOT NULL CHECK (char_length(task) BETWEEN 1 AND 200),
    -- '' for the task's bucket; jobs.key (never empty) for a key's.
    key text NOT NULL CHECK (char_length(key) <= 200),
    tat timestamptz NOT NULL,
    PRIMARY KEY (task, key)
);

-- "Nobody starts this task (key '') or this key of the task before
-- `until`": written by the outcome of an attempt that returned
-- TaskError::rate_limited, honoured by every claim.
CREATE TABLE jobq.blocks (
    task text NOT NULL CHECK (char_length(task) BETWEEN 1 AND 200),
    key text NOT NULL CHECK (char_length(key) <= 200),
    until timestamptz NOT NULL,
    PRIMARY KEY (task, key)
);
