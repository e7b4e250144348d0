-- Jobs are split by state into two partitions: jobq.jobs_active holds the
-- scheduled, pending and running jobs, jobq.jobs_finished the completed,
-- failed and cancelled ones. jobq.jobs becomes their partitioned parent, so
-- every statement that names it (jobq's own, the application's, psql) sees
-- all jobs as before.
--
-- Why: claims, promotions, heartbeats and outcomes only ever touch active
-- jobs, but they shared one heap and its indexes with every finished job
-- kept for its retention, and every finished job left its dead versions
-- there until pruning and vacuum caught up. Now the active partition holds
-- little more than the active jobs, is vacuumed quickly and often, and a
-- pass over the finished jobs (pruning, their vacuum) no longer competes
-- with claims for the same table. An outcome moves its row into the
-- finished partition (a delete and an insert under the hood).
--
-- PostgreSQL does not allow a unique index across partitions that leaves
-- out the partition key, so each partition has its own primary key on id;
-- ids stay unique because they come from one sequence (or are derived from
-- a unique key and checked by jobq.enqueue_unique). Identity columns on
-- partitioned tables need PostgreSQL 17, hence a plain sequence default.

CREATE SEQUENCE jobq.job_ids AS bigint;
SELECT setval('jobq.job_ids', s.last_value, s.is_called)
FROM jobq.jobs_id_seq s;

ALTER TABLE jobq.jobs RENAME TO jobs_unsplit;

CREATE TABLE jobq.jobs (
    id bigint NOT NULL DEFAULT nextval('jobq.job_ids'),
    task text NOT NULL CONSTRAINT jobs_task_check CHECK (char_length(task) BETWEEN 1 AND 200),
    queue text NOT NULL DEFAULT 'default'
        CONSTRAINT jobs_queue_check CHECK (char_length(queue) BETWEEN 1 AND 200),
    payload jsonb NOT NULL,
    state jobq.job_state NOT NULL DEFAULT 'pending',
    priority smallint NOT NULL DEFAULT 0,
    attempt integer NOT NULL DEFAULT 0 CONSTRAINT jobs_attempt_check CHECK (attempt >= 0),
    max_attempts integer NOT NULL DEFAULT 20
        CONSTRAINT jobs_max_attempts_check CHECK (max_attempts >= 1),
    run_at timestamptz NOT NULL DEFAULT now(),
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    worker_id bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    dedupe_key text,
    errors jsonb NOT NULL DEFAULT '[]',
    handbacks integer NOT NULL DEFAULT 0,
    key text CONSTRAINT jobs_key_check CHECK (char_length(key) BETWEEN 1 AND 200),
    headers jsonb CONSTRAINT jobs_headers_check
        CHECK (headers IS NULL OR jsonb_typeof(headers) = 'object'),
    limited boolean NOT NULL DEFAULT false,
    output jsonb,
    unique_key text,
    unique_gen integer,
    unique_until timestamptz,
    follow_up jsonb CONSTRAINT jobs_follow_up_check
        CHECK (follow_up IS NULL OR jobq.valid_follow_up(follow_up))
) PARTITION BY LIST (state);
ALTER SEQUENCE jobq.job_ids OWNED BY jobq.jobs.id;

-- Both partitions churn (the active one by claims and outcomes, the
-- finished one by pruning): vacuum them early.
CREATE TABLE jobq.jobs_active PARTITION OF jobq.jobs
    FOR VALUES IN ('scheduled', 'pending', 'running')
    WITH (autovacuum_vacuum_scale_factor = 0.02,
          autovacuum_vacuum_insert_scale_factor = 0.02,
          autovacuum_analyze_scale_factor = 0.02,
          autovacuum_vacuum_cost_delay = 0);
CREATE TABLE jobq.jobs_finished PARTITION OF jobq.jobs
    FOR VALUES IN ('completed', 'failed', 'cancelled')
    WITH (autovacuum_vacuum_scale_factor = 0.02,
          autovacuum_vacuum_insert_scale_factor = 0.02,
          autovacuum_analyze_scale_factor = 0.02,
          autovacuum_vacuum_cost_delay = 0);

INSERT INTO jobq.jobs
SELECT id, task, queue, payload, state, priority, attempt, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, cancel_requested, dedupe_key, errors, handbacks,
       key, headers, limited, output, unique_key, unique_gen, unique_until, follow_up
FROM jobq.jobs_unsplit;

-- Whoever could use the old table may use the new one and its partitions
-- (statements name the parent; a deduplicating enqueue inserts into the
-- active partition, where its unique index lives); inserting needs the
-- sequence as well now.
DO $grants$
DECLARE
    g record;
BEGIN
    FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = 'jobq.jobs_unsplit'::regclass
               AND a.grantee <> c.relowner LOOP
        EXECUTE format('GRANT %s ON jobq.jobs, jobq.jobs_active, jobq.jobs_finished TO %s%s',
                       g.privilege_type,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(g.grantee::regrole::text) END,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        IF g.privilege_type = 'INSERT' THEN
            EXECUTE format('GRANT USAGE ON SEQUENCE jobq.job_ids TO %s',
                           CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                                ELSE quote_ident(g.grantee::regrole::text) END);
        END IF;
    END LOOP;
    FOR g IN SELECT a.privilege_type, a.grantee, c.attname
             FROM pg_attribute c, aclexplode(c.attacl) a
             WHERE c.attrelid = 'jobq.jobs_unsplit'::regclass AND c.attacl IS NOT NULL LOOP
        EXECUTE format('GRANT %s (%I) ON jobq.jobs, jobq.jobs_active, jobq.jobs_finished TO %s',
                       g.privilege_type, g.attname,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(g.grantee::regrole::text) END);
    END LOOP;
END
$grants$;

DROP TABLE jobq.jobs_unsplit;

ALTER TABLE jobq.jobs_active ADD CONSTRAINT jobs_pkey PRIMARY KEY (id);
ALTER TABLE jobq.jobs_finished ADD CONSTRAINT jobs_finished_pkey PRIMARY KEY (id);

-- Active jobs: the claim, promotion, keyed and limited claims, dedupe and
-- unique keys while active.
CREATE INDEX jobs_claim_idx ON jobq.jobs_active (task, priority DESC, run_at, id)
    WHERE state = 'pending';
CREATE INDEX jobs_scheduled_idx ON jobq.jobs_active (queue, run_at, priority DESC, id)
    WHERE state = 'scheduled';
CREATE INDEX jobs_key_order_idx ON jobq.jobs_active (task, priority DESC, id) INCLUDE (key)
    WHERE state = 'pending' AND key IS NOT NULL;
CREATE INDEX jobs_key_pending_idx ON jobq.jobs_active (task, key, priority DESC, id)
    WHERE state = 'pending' AND key IS NOT NULL;
CREATE INDEX jobs_limited_running_idx ON jobq.jobs_active (task, key)
    WHERE state = 'running' AND limited;
CREATE UNIQUE INDEX jobs_dedupe_idx ON jobq.jobs_active (task, dedupe_key)
    WHERE dedupe_key IS NOT NULL AND state IN ('scheduled', 'pending', 'running');
CREATE UNIQUE INDEX jobs_unique_active_idx ON jobq.jobs_active (task, unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'pending', 'running');

-- Finished jobs: pruning, listings, held unique keys.
CREATE INDEX jobs_finished_idx ON jobq.jobs_finished (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NULL;
CREATE INDEX jobs_held_finished_idx ON jobq.jobs_finished (finished_at)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_unique_until_idx ON jobq.jobs_finished (unique_until)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_finished_task_idx ON jobq.jobs_finished (task, state, id)
    WHERE state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_failed_idx ON jobq.jobs_finished (task, queue, state, id)
    WHERE state IN ('failed', 'cancelled');

-- Both: lookups by dedupe key and by unique key whatever the state.
CREATE INDEX jobs_dedupe_key_idx ON jobq.jobs (dedupe_key, id) WHERE dedupe_key IS NOT NULL;
CREATE INDEX jobs_unique_key_idx ON jobq.jobs (task, unique_key, unique_gen DESC)
    WHERE unique_key IS NOT NULL;

-- Wake-ups for inserted jobs: statements naming the parent fire its
-- trigger, a deduplicating enqueue (which names the active partition)
-- fires the partition's.
CREATE TRIGGER jobs_notify_inserted
    AFTER INSERT ON jobq.jobs
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_inserted();
CREATE TRIGGER jobs_active_notify_inserted
    AFTER INSERT ON jobq.jobs_active
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_inserted();

-- The parent's statement trigger sees rows moved between partitions in its
-- transition table.
CREATE TRIGGER jobs_notify_finished
    AFTER UPDATE ON jobq.jobs
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_finished();

-- A job that finishes arrives in the finished partition: an update that
-- moves a row fires the destination's insert triggers, not update
-- triggers.
CREATE TRIGGER jobs_follow_up
    AFTER INSERT ON jobq.jobs_finished
    FOR EACH ROW WHEN (NEW.follow_up IS NOT NULL)
    EXECUTE FUNCTION jobq.enqueue_follow_up();
