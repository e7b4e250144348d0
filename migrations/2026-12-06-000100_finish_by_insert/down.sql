DROP TRIGGER jobs_finished_notify_finished ON jobq.jobs_finished;
