-- Back to one finished partition: the segments' jobs move into it.
ALTER TABLE jobq.jobs DETACH PARTITION jobq.jobs_finished;
ALTER TABLE jobq.jobs_finished DETACH PARTITION jobq.jobs_finished_kept;
INSERT INTO jobq.jobs_finished_kept
SELECT id, task, queue, payload, state, priority, attempt, max_attempts, run_at, created_at,
       started_at, finished_at, worker_id, cancel_requested, dedupe_key, errors, handbacks,
       key, headers, limited, output, unique_key, unique_gen, unique_until, follow_up, NULL
FROM jobq.jobs_finished;
DROP TABLE jobq.jobs_finished;
DROP TABLE jobq.completed_segments;
DROP FUNCTION jobq.turn_completed_segments(interval, interval, text);
ALTER TABLE jobq.jobs_finished_kept RENAME TO jobs_finished;
ALTER TABLE jobq.jobs ATTACH PARTITION jobq.jobs_finished
    FOR VALUES IN ('completed', 'failed', 'cancelled');
ALTER TABLE jobq.jobs DROP COLUMN completed_segment;
CREATE TRIGGER jobs_follow_up
    AFTER INSERT ON jobq.jobs_finished
    FOR EACH ROW WHEN (NEW.follow_up IS NOT NULL)
    EXECUTE FUNCTION jobq.enqueue_follow_up();
CREATE TRIGGER jobs_finished_notify_finished
    AFTER INSERT ON jobq.jobs_finished
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_finished();
