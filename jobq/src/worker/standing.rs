//! How long this worker has seen the database without a break, which
//! bounds whom it may judge dead.
//!
//! After an outage every worker's heartbeat is old, its own included. The
//! first worker back must not rescue the jobs of the others before they
//! have had the time to heartbeat again: a database that was away is not
//! a worker that died. So a worker judges another dead only when its own
//! heartbeats have gone through without a break for at least the other's
//! lease (the time the other has to heartbeat); a worker that really died
//! is rescued that much later at most.

use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub(crate) struct Standing {
    /// Since when heartbeats have gone through without a failure.
    unbroken_since: Mutex<Option<Instant>>,
}

impl Standing {
    pub(crate) fn heartbeat(&self, went_through: bool, now: Instant) {
        let mut since = self
            .unbroken_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        *since = match (went_through, *since) {
            (true, Some(start)) => Some(start),
            (true, None) => Some(now),
            (false, _) => None,
        };
    }

    /// How long heartbeats have gone through without a break; zero
    /// after a failed one.
    pub(crate) fn unbroken_for(&self, now: Instant) -> Duration {
        self.unbroken_since
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map_or(Duration::ZERO, |start| now.duration_since(start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_from_the_first_heartbeat_after_the_last_failure() {
        let secs = Duration::from_secs;
        let t0 = Instant::now();
        let s = Standing::default();
        assert_eq!(s.unbroken_for(t0 + secs(5)), Duration::ZERO, "none yet");
        s.heartbeat(true, t0);
        s.heartbeat(true, t0 + secs(10));
        assert_eq!(s.unbroken_for(t0 + secs(30)), secs(30));
        s.heartbeat(false, t0 + secs(40));
        assert_eq!(s.unbroken_for(t0 + secs(41)), Duration::ZERO);
        s.heartbeat(true, t0 + secs(50));
        assert_eq!(s.unbroken_for(t0 + secs(80)), secs(30));
    }
}
