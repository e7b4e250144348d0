-- Jobs waiting for a future run_at get a state of their own, so that the
-- claim index holds only due work (see the next migration).
--
-- PostgreSQL cannot use an enum value in the transaction that adds it, so
-- this migration only adds the value and the next one, applied in its own
-- transaction after this one commits, uses it.
ALTER TYPE jobq.job_state ADD VALUE IF NOT EXISTS 'scheduled' BEFORE 'pending';
