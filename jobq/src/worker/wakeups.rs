//! What wakes the fetcher besides freed slots: a notification or a
//! reconnect (at once), and the earliest due time it knows of (scheduled
//! jobs and retries).

use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug, Default)]
pub(crate) struct Wakeups {
    now: Notify,
    /// The earliest known future `run_at`.
    next_due: Mutex<Option<Instant>>,
}

impl Wakeups {
    fn next_due(&self) -> MutexGuard<'_, Option<Instant>> {
        self.next_due.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the fetcher to claim at once.
    pub(crate) fn now(&self) {
        self.now.notify_one();
    }

    /// Resolves when [`now`](Self::now) or [`at`](Self::at) wakes the
    /// fetcher.
    pub(crate) fn notified(&self) -> Notified<'_> {
        self.now.notified()
    }

    /// Wakes the fetcher at `at` (a job becomes due then), unless it
    /// already wakes earlier.
    pub(crate) fn at(&self, at: Instant) {
        if self.remember(at) {
            self.now.notify_one();
        }
    }

    /// Remembers `at` as a due time without waking the fetcher (it is the
    /// fetcher that learnt it); true when it is the earliest known.
    pub(crate) fn remember(&self, at: Instant) -> bool {
        let mut next = self.next_due();
        let earlier = next.is_none_or(|n| at < n);
        if earlier {
            *next = Some(at);
        }
        earlier
    }

    /// The earliest known due time, if any.
    pub(crate) fn earliest(&self) -> Option<Instant> {
        *self.next_due()
    }

    /// True, once, when the earliest known due time has come (it is
    /// forgotten then).
    pub(crate) fn take_due(&self, now: Instant) -> bool {
        let mut next = self.next_due();
        if next.is_some_and(|due| due <= now) {
            *next = None;
            return true;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn keeps_the_earliest_due_time_and_hands_it_out_once_due() {
        let w = Wakeups::default();
        let t0 = Instant::now();
        assert!(w.remember(t0 + Duration::from_secs(5)));
        assert!(!w.remember(t0 + Duration::from_secs(9)), "later than known");
        assert!(w.remember(t0 + Duration::from_secs(2)));
        assert_eq!(w.earliest(), Some(t0 + Duration::from_secs(2)));
        assert!(!w.take_due(t0 + Duration::from_secs(1)));
        assert!(w.take_due(t0 + Duration::from_secs(2)));
        assert!(!w.take_due(t0 + Duration::from_secs(3)), "taken");
        assert_eq!(w.earliest(), None);
    }
}
