CREATE INDEX jobs_worker_idx ON jobq.jobs (worker_id)
    WHERE worker_id IS NOT NULL;
DROP TABLE jobq.claims;
