-- Least-privilege roles for jobq. See docs/roles.md.
--
-- jobq_owner   owns the `jobq` schema and runs the migrations (deploy step).
-- jobq_worker  runs jobs: claims, writes outcomes, heartbeats, rescues, prunes.
-- jobq_app     the application: enqueues jobs and reads their status.
--
-- Replace the role names and passwords to suit; the database here is the
-- one you are connected to.

-- step 1: as a superuser or a role with CREATEROLE, once per cluster/database
CREATE ROLE jobq_owner LOGIN;   -- PASSWORD '...'
CREATE ROLE jobq_worker LOGIN;  -- PASSWORD '...'
CREATE ROLE jobq_app LOGIN;     -- PASSWORD '...'
DO $grant$ BEGIN
    EXECUTE format('GRANT CREATE ON DATABASE %I TO jobq_owner', current_database());
END $grant$;

-- Now run the migrations as jobq_owner: `jobq::migrate(&mut conn)` on a
-- connection of jobq_owner, or start one worker as jobq_owner once.

-- step 2: as jobq_owner, after the migrations
GRANT USAGE ON SCHEMA jobq TO jobq_worker, jobq_app;

-- The worker checks the schema version at start-up (read only when it is
-- current).
GRANT SELECT ON jobq.schema_migrations TO jobq_worker;

-- Workers claim, settle, rescue and prune jobs; their handlers may enqueue
-- follow-up jobs.
-- jobq.jobs is partitioned by state; a deduplicating enqueue inserts into
-- its active partition directly, and new ids come from jobq.job_ids.
-- Maintenance deletes failed, cancelled and key-holding finished jobs past
-- their retention from the partition that keeps them, by name.
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.jobs, jobq.jobs_active, jobq.jobs_finished,
    jobq.jobs_finished_kept TO jobq_worker;
-- Completed jobs are written to a ring of segments (partitions of
-- jobq.jobs_finished), which maintenance turns and prunes by truncating a
-- whole segment.
GRANT SELECT, UPDATE ON jobq.completed_segments TO jobq_worker;
GRANT TRUNCATE ON jobq.jobs_completed_0, jobq.jobs_completed_1, jobq.jobs_completed_2,
    jobq.jobs_completed_3, jobq.jobs_completed_4, jobq.jobs_completed_5,
    jobq.jobs_completed_6, jobq.jobs_completed_7 TO jobq_worker;
GRANT USAGE ON SEQUENCE jobq.job_ids TO jobq_worker, jobq_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.workers TO jobq_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.claims TO jobq_worker;
-- Claims skip paused queues; pausing and resuming is an operator's
-- action (jobq::pause_queue), done with the worker's rights or the owner's.
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.paused_queues TO jobq_worker;
-- Periodic tasks: workers declare schedules and enqueue their ticks.
GRANT SELECT, INSERT, UPDATE ON jobq.schedules TO jobq_worker;
-- Rate limits: claims move token buckets on, outcomes of rate-limited
-- attempts write blocks, maintenance removes the ones that have passed.
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.rate_tokens TO jobq_worker;
GRANT SELECT, INSERT, UPDATE, DELETE ON jobq.blocks TO jobq_worker;
-- Key-limited tasks: a claim that walks the keys records where it stopped.
GRANT SELECT, INSERT, UPDATE ON jobq.key_walks TO jobq_worker;
-- Waiters register the jobs they await (jobq::Waiter, usually the
-- application's); maintenance removes the rows of waiters that are gone.
GRANT SELECT, DELETE ON jobq.awaited TO jobq_worker;

-- The application enqueues and reads status. It cannot claim, change or
-- delete jobs. To let it cancel jobs as well, add:
--   GRANT UPDATE (state, finished_at, cancel_requested) ON jobq.jobs TO jobq_app;
-- and for handlers that complete their job in their own transaction
-- (Context::complete_in) on a connection of this role:
--   GRANT UPDATE (state, finished_at, worker_id, output) ON jobq.jobs TO jobq_app;
GRANT SELECT, INSERT ON jobq.jobs, jobq.jobs_active TO jobq_app;
-- Awaiting jobs (jobq::Waiter): the ids waited for, registered and removed.
GRANT SELECT, INSERT, DELETE ON jobq.awaited TO jobq_app;

-- Tables added by later jobq migrations get the same grants.
ALTER DEFAULT PRIVILEGES FOR ROLE jobq_owner IN SCHEMA jobq
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO jobq_worker;
ALTER DEFAULT PRIVILEGES FOR ROLE jobq_owner IN SCHEMA jobq
    GRANT USAGE ON SEQUENCES TO jobq_worker;
