-- Liveness: each worker's own lease, the identity of each claim, and
-- hand-backs that do not use up attempts.

-- The lease each worker runs with. Rescue judges every worker by its own
-- lease, so workers with different settings never rescue each other's
-- live jobs, and a claim needs its worker's row to be alive by it. NULL
-- in rows of workers of an older jobq still running through an upgrade:
-- those are judged by the rescuing worker's lease, as before.
ALTER TABLE jobq.workers ADD COLUMN lease_ms bigint;

-- How many times the job was given back untried: at a graceful shutdown,
-- or because the reply of the claim that took it was lost. `attempt`
-- stays the fencing counter that every claim increments (a late outcome
-- must never match a later attempt); the attempts a job has used, the
-- number handlers and users see and the one compared with max_attempts,
-- are `attempt - handbacks`. (A constant default: no table rewrite.)
ALTER TABLE jobq.jobs ADD COLUMN handbacks integer NOT NULL DEFAULT 0;

-- Each claim statement carries a key its worker chose (a per-process
-- counter), so that a worker whose claim call failed after it may have
-- committed can hand back exactly that claim's jobs. Unique per worker:
-- the release first inserts an empty row under the same key, which waits
-- for a claim still in flight and makes one that has not reached the
-- table yet fail. This index replaces the one on worker_id alone (same
-- leading column for heartbeats and rescue; no second index per claim).
-- Rows of claims made before this migration have no key.
ALTER TABLE jobq.claims ADD COLUMN claim_key bigint;
CREATE UNIQUE INDEX claims_worker_key_idx ON jobq.claims (worker_id, claim_key);
DROP INDEX jobq.claims_worker_idx;
