-- Pending keyed jobs in the order the jobs of one key start (priority, then
-- id), across all keys of a task: a keyed claim reads the head of this
-- index in one range scan and numbers the jobs per key, which finds each
-- key's first jobs without a descent per key (see KEYED_CLAIM_SQL). The
-- key is included so that the scan needs no visit to the table for it
-- once the pages are all-visible. Only keyed rows enter it: other jobs
-- pay nothing.
CREATE INDEX jobs_key_order_idx ON jobq.jobs (task, priority DESC, id) INCLUDE (key)
    WHERE state = 'pending' AND key IS NOT NULL;

-- Where the next key walk of a task starts: the last key the previous walk
-- visited. A keyed claim walks the keys only when the head of the index
-- above does not fill it, and then visits a bounded number of keys; the
-- position is kept here (one row per task, written under the task's claim
-- lock) so that successive walks, by any worker, go round all the keys.
CREATE TABLE jobq.key_walks (
    task text PRIMARY KEY,
    after_key text NOT NULL,
    walked_at timestamptz NOT NULL
);
