//! What jobq records through the `metrics` facade (feature `metrics`): every
//! call site is one line, and without the feature these are empty inline
//! functions, so nothing is recorded and nothing is paid for. The names,
//! types, labels and units are listed in the README ("Metrics").

use std::time::Duration;

use chrono::{DateTime, Utc};

/// How an attempt ended, as the metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    Completed,
    /// Failed for good: no attempt left, or a permanent error.
    Failed,
    /// Failed, and the job will be tried again.
    Retried,
    Cancelled,
    /// Handed back untried at a shutdown: no job counter moves.
    Released,
}

#[cfg(feature = "metrics")]
mod on {
    use std::collections::BTreeSet;
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use metrics::{counter, gauge, histogram};

    use super::Ended;
    use crate::Stats;

    pub(crate) const ENQUEUED: &str = "jobq_jobs_enqueued_total";
    pub(crate) const CLAIMED: &str = "jobq_jobs_claimed_total";
    pub(crate) const COMPLETED: &str = "jobq_jobs_completed_total";
    pub(crate) const FAILED: &str = "jobq_jobs_failed_total";
    pub(crate) const RETRIED: &str = "jobq_jobs_retried_total";
    pub(crate) const RESCUED: &str = "jobq_jobs_rescued_total";
    pub(crate) const CANCELLED: &str = "jobq_jobs_cancelled_total";
    pub(crate) const ATTEMPT_DURATION: &str = "jobq_attempt_duration_seconds";
    pub(crate) const PICKUP_LATENCY: &str = "jobq_pickup_latency_seconds";
    pub(crate) const JOBS: &str = "jobq_jobs";
    pub(crate) const OLDEST_DUE_AGE: &str = "jobq_oldest_due_job_age_seconds";

    fn count(name: &'static str, task: &str, queue: &str, n: u64) {
        counter!(name, "task" => task.to_owned(), "queue" => queue.to_owned()).increment(n);
    }

    pub(crate) fn enqueued(task: &str, queue: &str, n: usize) {
        count(ENQUEUED, task, queue, u64::try_from(n).unwrap_or(u64::MAX));
    }

    pub(crate) fn claimed(task: &str, queue: &str, run_at: Option<DateTime<Utc>>) {
        count(CLAIMED, task, queue, 1);
        let Some(run_at) = run_at else {
            return;
        };
        // A job claimed the moment it became due can show a little below
        // zero when clocks differ: the database's `now()` set `run_at`.
        let waited = (Utc::now() - run_at).to_std().unwrap_or(Duration::ZERO);
        histogram!(PICKUP_LATENCY, "task" => task.to_owned(), "queue" => queue.to_owned())
            .record(waited.as_secs_f64());
    }

    pub(crate) fn attempt_ended(task: &str, queue: &str, ended: Ended, took: Duration) {
        let (name, outcome) = match ended {
            Ended::Completed => (Some(COMPLETED), "completed"),
            Ended::Failed => (Some(FAILED), "failed"),
            Ended::Retried => (Some(RETRIED), "retried"),
            Ended::Cancelled => (Some(CANCELLED), "cancelled"),
            Ended::Released => (None, "released"),
        };
        if let Some(name) = name {
            count(name, task, queue, 1);
        }
        histogram!(
            ATTEMPT_DURATION,
            "task" => task.to_owned(),
            "queue" => queue.to_owned(),
            "outcome" => outcome,
        )
        .record(took.as_secs_f64());
    }

    pub(crate) fn rescued(task: &str, queue: &str, state: &str) {
        count(RESCUED, task, queue, 1);
        // The rescue ended these jobs itself; no attempt will report them.
        match state {
            "failed" => count(FAILED, task, queue, 1),
            "cancelled" => count(CANCELLED, task, queue, 1),
            _ => {}
        }
    }

    pub(crate) fn cancelled(task: &str, queue: &str) {
        count(CANCELLED, task, queue, 1);
    }

    /// The gauges' series set by the last sample, so that a queue or task
    /// whose jobs are all gone reads 0 instead of its last count.
    #[derive(Debug, Default)]
    pub(crate) struct Gauges {
        jobs: BTreeSet<(String, String, &'static str)>,
        oldest: BTreeSet<String>,
    }

    impl Gauges {
        pub(crate) fn record(&mut self, stats: &Stats) {
            let mut jobs = BTreeSet::new();
            let mut oldest: std::collections::BTreeMap<String, f64> = Default::default();
            for t in &stats.tasks {
                let states = [
                    ("scheduled", t.scheduled),
                    ("pending", t.pending),
                    ("running", t.running),
                    ("failed", t.failed),
                    ("cancelled", t.cancelled),
                ];
                for (state, n) in states {
                    jobs_gauge(&t.queue, &t.task, state).set(n as f64);
                    jobs.insert((t.queue.clone(), t.task.clone(), state));
                }
                let age = t.oldest_due_age.map_or(0.0, |d| d.as_secs_f64());
                let worst = oldest.entry(t.queue.clone()).or_insert(0.0);
                *worst = worst.max(age);
            }
            for gone in self.jobs.difference(&jobs) {
                jobs_gauge(&gone.0, &gone.1, gone.2).set(0.0);
            }
            for (queue, age) in &oldest {
                gauge!(OLDEST_DUE_AGE, "queue" => queue.clone()).set(*age);
            }
            for gone in self.oldest.iter().filter(|q| !oldest.contains_key(*q)) {
                gauge!(OLDEST_DUE_AGE, "queue" => gone.clone()).set(0.0);
            }
            self.jobs = jobs;
            self.oldest = oldest.into_keys().collect();
        }
    }

    fn jobs_gauge(queue: &str, task: &str, state: &'static str) -> metrics::Gauge {
        gauge!(JOBS, "queue" => queue.to_owned(), "task" => task.to_owned(), "state" => state)
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::Gauges;

/// Jobs inserted by an enqueue call (a unique one that found its key held
/// inserts none).
#[inline]
pub(crate) fn enqueued(task: &str, queue: &str, n: usize) {
    #[cfg(feature = "metrics")]
    on::enqueued(task, queue, n);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, queue, n);
}

/// A job claimed by this worker, due since `run_at` (which the claim
/// returns with the feature on).
#[inline]
pub(crate) fn claimed(task: &str, queue: &str, run_at: Option<DateTime<Utc>>) {
    #[cfg(feature = "metrics")]
    on::claimed(task, queue, run_at);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, queue, run_at);
}

/// An attempt that ended after `took`.
#[inline]
pub(crate) fn attempt_ended(task: &str, queue: &str, ended: Ended, took: Duration) {
    #[cfg(feature = "metrics")]
    on::attempt_ended(task, queue, ended, took);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, queue, ended, took);
}

/// A job taken back from a dead worker, now in `state`.
#[inline]
pub(crate) fn rescued(task: &str, queue: &str, state: &str) {
    #[cfg(feature = "metrics")]
    on::rescued(task, queue, state);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, queue, state);
}

/// A waiting job cancelled by [`crate::cancel`] (a running one is counted
/// when its attempt ends).
#[inline]
pub(crate) fn cancelled(task: &str, queue: &str) {
    #[cfg(feature = "metrics")]
    on::cancelled(task, queue);
    #[cfg(not(feature = "metrics"))]
    let _ = (task, queue);
}

/// Times an attempt for [`attempt_ended`]; reads no clock without the
/// feature.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stopwatch {
    #[cfg(feature = "metrics")]
    started: std::time::Instant,
}

impl Stopwatch {
    #[inline]
    pub(crate) fn start() -> Self {
        Stopwatch {
            #[cfg(feature = "metrics")]
            started: std::time::Instant::now(),
        }
    }

    #[inline]
    pub(crate) fn elapsed(&self) -> Duration {
        #[cfg(feature = "metrics")]
        return self.started.elapsed();
        #[cfg(not(feature = "metrics"))]
        Duration::ZERO
    }
}
