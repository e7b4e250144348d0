-- Which jobs each worker holds: one row per claim statement, with the ids
-- it claimed as ranges (a batch of neighbouring jobs is one or a few
-- ranges, a few bytes). Heartbeats and rescue find a worker's running jobs
-- through these rows and the primary key. This replaces an index on
-- jobs.worker_id, which cost every claimed job an index entry: the most
-- expensive single item of a claim after the row lock and the update.
-- A row goes away with the outcome statement that settles its last job,
-- or, once none of its jobs runs under its worker any more, with that
-- worker's heartbeat or with rescue.
CREATE TABLE jobq.claims (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    worker_id bigint NOT NULL,
    jobs int8multirange NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now()
) WITH (
    -- One insert and one delete per batch: vacuum it as eagerly as the
    -- jobs table.
    autovacuum_vacuum_scale_factor = 0.02,
    autovacuum_vacuum_insert_scale_factor = 0.02,
    autovacuum_vacuum_cost_delay = 0
);

CREATE INDEX claims_worker_idx ON jobq.claims (worker_id);

-- Jobs running at the upgrade get a claim row of their worker's. Workers
-- of the previous version that keep running do not record claims: stop
-- them before this migration runs (README, "Upgrading").
INSERT INTO jobq.claims (worker_id, jobs)
SELECT worker_id, range_agg(int8range(id, id, '[]'))
FROM jobq.jobs
WHERE worker_id IS NOT NULL AND state = 'running'
GROUP BY worker_id;

DROP INDEX jobq.jobs_worker_idx;
