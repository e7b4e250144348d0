-- Completed jobs go to a ring of eight segments that are emptied whole,
-- instead of being deleted row by row once past their retention.
--
-- Why: pruning by DELETE wrote a WAL record and an index deletion per
-- job, left a dead row for vacuum to find, and at tens of thousands of
-- jobs a second took a quarter of the server's time (BENCHMARKS.md,
-- soak). A TRUNCATE of a segment whose jobs are all past their retention
-- costs the same for a million jobs as for one.
--
-- jobq.jobs_finished becomes a partitioned table, listed by the new column
-- completed_segment:
--   jobq.jobs_completed_0 .. jobq.jobs_completed_7 (segment 0..7): jobs a
--     worker completed that hold no unique key; the bulk of the history.
--   jobq.jobs_finished_kept (NULL): everything else that finished (failed,
--     cancelled, completed while holding a unique key, finished by an
--     UPDATE such as a handler's complete_in or a rescue), pruned row by
--     row on its own retention as before. It is the old finished
--     partition, renamed, with every job it held.
-- The worker's finishing statement picks the open segment from
-- jobq.completed_segments; maintenance closes it after a quarter of the
-- retention, opens the next one once that is empty, and truncates a
-- closed segment once everything in it is past the retention.
--
-- Each segment has its own primary key on id (a unique index of a
-- partitioned table must contain its partition key); ids stay unique as
-- before, through jobq.job_ids.

ALTER TABLE jobq.jobs ADD COLUMN completed_segment smallint;

CREATE TABLE jobq.completed_segments (
    segment smallint PRIMARY KEY CHECK (segment BETWEEN 0 AND 7),
    -- NULL: empty, waiting to be opened.
    opened_at timestamptz,
    -- NULL while open: finishing statements write into the open segment.
    closed_at timestamptz,
    CHECK (closed_at IS NULL OR opened_at IS NOT NULL)
);
INSERT INTO jobq.completed_segments (segment, opened_at)
SELECT s, CASE WHEN s = 0 THEN now() END FROM generate_series(0, 7) s;

ALTER TABLE jobq.jobs DETACH PARTITION jobq.jobs_finished;
ALTER TABLE jobq.jobs_finished RENAME TO jobs_finished_kept;
-- The new parent carries these; left on the partition they would fire
-- twice.
DROP TRIGGER jobs_follow_up ON jobq.jobs_finished_kept;
DROP TRIGGER jobs_finished_notify_finished ON jobq.jobs_finished_kept;

CREATE TABLE jobq.jobs_finished (LIKE jobq.jobs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)
    PARTITION BY LIST (completed_segment);

-- The same indexes as the old partition had; creating them on the parent
-- adopts the old partition's (which keep their names, the ones plans show
-- for it) and builds them on every segment.
CREATE INDEX jobs_finished_all_idx ON jobq.jobs_finished (finished_at)
    WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS NULL;
CREATE INDEX jobs_held_finished_all_idx ON jobq.jobs_finished (finished_at)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_unique_until_all_idx ON jobq.jobs_finished (unique_until)
    WHERE unique_until IS NOT NULL AND state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_finished_task_all_idx ON jobq.jobs_finished (task, state, id)
    WHERE state IN ('completed', 'failed', 'cancelled');
CREATE INDEX jobs_failed_all_idx ON jobq.jobs_finished (task, queue, state, id)
    WHERE state IN ('failed', 'cancelled');

ALTER TABLE jobq.jobs_finished ATTACH PARTITION jobq.jobs_finished_kept FOR VALUES IN (NULL);

-- Segments are only ever appended to and then truncated: no dead rows, so
-- no vacuum after inserts (analyze still runs for the planner).
DO $segments$
BEGIN
    FOR s IN 0..7 LOOP
        EXECUTE format(
            'CREATE TABLE jobq.%I PARTITION OF jobq.jobs_finished FOR VALUES IN (%s) '
            'WITH (autovacuum_vacuum_insert_threshold = -1)', 'jobs_completed_' || s, s);
        EXECUTE format('ALTER TABLE jobq.%I ADD CONSTRAINT %I PRIMARY KEY (id)',
                       'jobs_completed_' || s, 'jobs_completed_' || s || '_pkey');
        -- A segment is truncated on the completed jobs' retention: a job
        -- kept longer (failed, cancelled, holding its key) must never land
        -- in one.
        EXECUTE format('ALTER TABLE jobq.%I ADD CONSTRAINT %I '
                       'CHECK (state = ''completed'' AND unique_until IS NULL)',
                       'jobs_completed_' || s, 'jobs_completed_' || s || '_check');
    END LOOP;
END
$segments$;

ALTER TABLE jobq.jobs ATTACH PARTITION jobq.jobs_finished
    FOR VALUES IN ('completed', 'failed', 'cancelled');

CREATE TRIGGER jobs_follow_up
    AFTER INSERT ON jobq.jobs_finished
    FOR EACH ROW WHEN (NEW.follow_up IS NOT NULL)
    EXECUTE FUNCTION jobq.enqueue_follow_up();
CREATE TRIGGER jobs_finished_notify_finished
    AFTER INSERT ON jobq.jobs_finished
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_finished();

-- Whoever could use the old finished partition may use the new parent and
-- its segments as well; who could delete finished jobs may truncate the
-- segments (that is how they are pruned now) and turn the ring; who could
-- write them reads which segment is open.
DO $grants$
DECLARE
    g record;
    segments text := (SELECT string_agg(format('jobq.%I', 'jobs_completed_' || s), ', ')
                      FROM generate_series(0, 7) s);
    grantee text;
BEGIN
    FOR g IN SELECT a.privilege_type, a.grantee, a.is_grantable
             FROM pg_class c, aclexplode(c.relacl) a
             WHERE c.oid = 'jobq.jobs_finished_kept'::regclass
               AND a.grantee <> c.relowner LOOP
        grantee := CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                        ELSE quote_ident(g.grantee::regrole::text) END;
        EXECUTE format('GRANT %s ON jobq.jobs_finished, %s TO %s%s',
                       g.privilege_type, segments, grantee,
                       CASE WHEN g.is_grantable THEN ' WITH GRANT OPTION' ELSE '' END);
        IF g.privilege_type = 'DELETE' THEN
            EXECUTE format('GRANT TRUNCATE ON %s TO %s', segments, grantee);
            EXECUTE format('GRANT SELECT, UPDATE ON jobq.completed_segments TO %s', grantee);
        ELSIF g.privilege_type = 'INSERT' THEN
            EXECUTE format('GRANT SELECT ON jobq.completed_segments TO %s', grantee);
        END IF;
    END LOOP;
    FOR g IN SELECT a.privilege_type, a.grantee, c.attname
             FROM pg_attribute c, aclexplode(c.attacl) a
             WHERE c.attrelid = 'jobq.jobs_finished_kept'::regclass AND c.attacl IS NOT NULL LOOP
        EXECUTE format('GRANT %s (%I) ON jobq.jobs_finished, %s TO %s',
                       g.privilege_type, g.attname, segments,
                       CASE WHEN g.grantee = 0 THEN 'PUBLIC'
                            ELSE quote_ident(g.grantee::regrole::text) END);
    END LOOP;
END
$grants$;

-- One maintenance step over the ring, run by one worker at a time (the
-- advisory lock; the others return at once):
-- 1. truncate every closed segment closed longer than `retention` (plus a
--    second, for a finishing statement that read the segment as open just
--    before it closed) ago. A TRUNCATE waits for no longer than
--    `lock_wait` for the statements reading the segment; one that would
--    wait longer is left for the next step ('busy').
-- 2. close the open segment once it has been open for `width`, provided
--    the next one is empty, and open that one.
-- Returns what it did, a row per segment touched.
CREATE FUNCTION jobq.turn_completed_segments(retention interval, width interval,
                                             lock_wait text)
RETURNS TABLE (segment smallint, action text)
LANGUAGE plpgsql AS $turn$
DECLARE
    old smallint;
    open_now smallint;
    next_one smallint;
BEGIN
    IF NOT pg_try_advisory_xact_lock(7669456929825582695) THEN -- "jobqring"
        RETURN;
    END IF;
    PERFORM set_config('lock_timeout', lock_wait, true);
    FOR old IN SELECT c.segment FROM jobq.completed_segments c
               WHERE c.closed_at < now() - retention - interval '1 second'
               ORDER BY c.closed_at LOOP
        BEGIN
            EXECUTE format('TRUNCATE jobq.%I', 'jobs_completed_' || old);
            UPDATE jobq.completed_segments c SET opened_at = NULL, closed_at = NULL
            WHERE c.segment = old;
            segment := old;
            action := 'truncated';
        EXCEPTION WHEN lock_not_available THEN
            segment := old;
            action := 'busy';
        END;
        RETURN NEXT;
    END LOOP;

    SELECT c.segment INTO open_now FROM jobq.completed_segments c
    WHERE c.opened_at IS NOT NULL AND c.closed_at IS NULL
    ORDER BY c.opened_at DESC LIMIT 1;
    IF open_now IS NULL THEN
        -- Nothing open (never so after this migration): open the first
        -- empty segment.
        SELECT c.segment INTO next_one FROM jobq.completed_segments c
        WHERE c.opened_at IS NULL ORDER BY c.segment LIMIT 1;
    ELSIF (SELECT c.opened_at FROM jobq.completed_segments c WHERE c.segment = open_now)
          <= now() - width THEN
        SELECT c.segment INTO next_one FROM jobq.completed_segments c
        WHERE c.segment = (open_now + 1) % 8 AND c.opened_at IS NULL;
    END IF;
    IF next_one IS NOT NULL THEN
        UPDATE jobq.completed_segments c SET closed_at = clock_timestamp()
        WHERE c.segment = open_now;
        UPDATE jobq.completed_segments c SET opened_at = clock_timestamp()
        WHERE c.segment = next_one;
        segment := next_one;
        action := 'opened';
        RETURN NEXT;
    END IF;
END
$turn$;
