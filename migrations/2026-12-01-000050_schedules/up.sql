-- Periodic tasks: one row per schedule, shared by every worker.
--
-- Exactly one job per tick comes from `revision`: a worker enqueues the
-- due ticks of a schedule in the same statement that moves `last_tick`
-- forward, and only if the row is still at the revision it read (a
-- compare-and-set). Of any number of workers racing for a tick, one
-- statement matches and the others change nothing. The row, not the jobs,
-- remembers which ticks were enqueued, so pruning finished jobs can never
-- let a tick be enqueued again.
CREATE TABLE jobq.schedules (
    name text PRIMARY KEY CHECK (char_length(name) BETWEEN 1 AND 200),
    task text NOT NULL CHECK (char_length(task) BETWEEN 1 AND 200),
    expression text NOT NULL CHECK (char_length(expression) BETWEEN 1 AND 1000),
    timezone text NOT NULL CHECK (char_length(timezone) BETWEEN 1 AND 100),
    paused boolean NOT NULL DEFAULT false,
    -- The latest tick enqueued; NULL before the first one.
    last_tick timestamptz,
    -- Ticks at or before this instant are never enqueued: set when the
    -- schedule is created and when it is resumed (paused ticks are
    -- skipped), so a new schedule does not run for the past.
    since timestamptz NOT NULL DEFAULT now(),
    -- Bumped by every change; the compare-and-set above is on it.
    revision bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
