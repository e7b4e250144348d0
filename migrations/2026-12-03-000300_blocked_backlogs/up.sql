-- Blocked backlogs leave the claim path (DESIGN invariant 8). When an
-- attempt returns TaskError::rate_limited, the pending jobs of its key (or
-- of its whole task) become 'scheduled' until the block ends, and
-- promotion brings them back then. A block can hold back a large backlog
-- for a long time, and they all come back due at the same instant, the
-- block's end: promotion must hand them back in claim order (priority,
-- then enqueue order), batch after batch, so that a claim running between
-- two batches never sees a later job of a key as pending while an earlier
-- one still waits. jobs_scheduled_idx therefore gains the claim's
-- tie-breakers after run_at; its leading columns, and so every query that
-- used it, stay as they were.
DROP INDEX jobq.jobs_scheduled_idx;
CREATE INDEX jobs_scheduled_idx ON jobq.jobs (queue, run_at, priority DESC, id)
    WHERE state = 'scheduled';
