-- Workers now finish jobs by deleting them from jobq.jobs_active and
-- inserting them into jobq.jobs_finished in one statement, instead of an
-- UPDATE that moves them between partitions. A claim that read a job as
-- pending, and finds it claimed and finished by another worker by the time
-- it locks it, skips a deleted row; a row moved by an UPDATE makes
-- PostgreSQL fail the whole claim with a serialization error instead.
--
-- Those inserts name the finished partition, so the parent's statement
-- trigger does not see them: the partition gets the same trigger.
-- (Statements that update jobq.jobs, the application's among them, still
-- notify through the parent's trigger; a row moved by an UPDATE fires no
-- statement-level insert trigger, so nothing is announced twice.)
CREATE TRIGGER jobs_finished_notify_finished
    AFTER INSERT ON jobq.jobs_finished
    REFERENCING NEW TABLE AS finished
    FOR EACH STATEMENT EXECUTE FUNCTION jobq.notify_finished();
