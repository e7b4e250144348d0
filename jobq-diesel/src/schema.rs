//! The `diesel::table!` definitions of jobq's tables, for applications that
//! want to query jobs with diesel's DSL (dashboards, reports).
//!
//! jobq itself writes through the statements in this crate, which keep the
//! attempt fence and the notifications right; write through those, not
//! through these tables.

/// SQL types of jobq's schema.
pub mod sql_types {
    /// The `jobq.job_state` enum.
    #[derive(diesel::sql_types::SqlType, diesel::query_builder::QueryId)]
    #[diesel(postgres_type(name = "job_state", schema = "jobq"))]
    pub struct JobState;
}

diesel::table! {
    use diesel::sql_types::*;
    use super::sql_types::JobState;

    /// Every job, whatever its state.
    jobq.jobs (id) {
        id -> Int8,
        task -> Text,
        queue -> Text,
        payload -> Jsonb,
        state -> JobState,
        priority -> Int2,
        attempt -> Int4,
        max_attempts -> Int4,
        run_at -> Timestamptz,
        created_at -> Timestamptz,
        started_at -> Nullable<Timestamptz>,
        finished_at -> Nullable<Timestamptz>,
        worker_id -> Nullable<Int8>,
        cancel_requested -> Bool,
        dedupe_key -> Nullable<Text>,
        errors -> Jsonb,
    }
}

diesel::table! {
    /// Queues no worker claims from (`jobq::pause_queue`).
    jobq.paused_queues (queue) {
        queue -> Text,
        paused_at -> Timestamptz,
    }
}

diesel::table! {
    /// Token buckets of rate-limited tasks and keys (GCRA: `tat` is when
    /// the bucket is full again); `key` is '' for the task's own bucket.
    jobq.rate_tokens (task, key) {
        task -> Text,
        key -> Text,
        tat -> Timestamptz,
    }
}

diesel::table! {
    /// Tasks (key '') and keys no worker starts before `until`
    /// (`TaskError::rate_limited`).
    jobq.blocks (task, key) {
        task -> Text,
        key -> Text,
        until -> Timestamptz,
    }
}

diesel::table! {
    /// Live worker processes and their heartbeats.
    jobq.workers (id) {
        id -> Int8,
        hostname -> Text,
        pid -> Int4,
        queues -> Array<Text>,
        started_at -> Timestamptz,
        heartbeat_at -> Timestamptz,
        lease_ms -> Nullable<Int8>,
    }
}
