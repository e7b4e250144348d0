DROP TRIGGER IF EXISTS jobs_notify_finished ON jobq.jobs;
DROP FUNCTION IF EXISTS jobq.notify_finished();
