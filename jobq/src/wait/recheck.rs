//! Jobs to look at again soon: those a look-up found unsettled (not
//! finished, their row marked by a transaction that may be an outcome
//! whose trigger ran before this waiter's registration committed, and
//! which will therefore not be announced to it).
//!
//! Such a transaction normally commits within a millisecond or two (an
//! outcome batch), but may take as long as an application's transaction
//! (`complete_in`), and a mark can also be left by a transaction that
//! rolled back. So the look-ups back off: doubling from a first delay up
//! to the poll interval, and back to the first delay when a job joins.

use std::collections::HashSet;
use std::time::Duration;

use tokio::time::Instant;

use crate::worker::backoff::Backoff;

/// The first look-up again after a job was found unsettled.
const FIRST_DELAY: Duration = Duration::from_millis(2);

#[derive(Debug)]
pub(crate) struct Rechecks {
    ids: HashSet<i64>,
    backoff: Backoff,
    at: Option<Instant>,
}

impl Rechecks {
    /// Rechecks backing off up to `max` (the poll interval, which looks
    /// at every waited job anyway).
    pub(crate) fn new(max: Duration) -> Self {
        Self {
            ids: HashSet::new(),
            backoff: Backoff::new(FIRST_DELAY, max.max(FIRST_DELAY)),
            at: None,
        }
    }

    /// Adds `ids` found unsettled by a look-up made `now`. A job not
    /// already waiting for its recheck makes the next one come soon.
    pub(crate) fn add(&mut self, now: Instant, ids: impl IntoIterator<Item = i64>) {
        let mut joined = false;
        for id in ids {
            joined |= self.ids.insert(id);
        }
        if joined {
            self.backoff.reset();
            self.at = Some(now + self.backoff.next_delay());
        }
    }

    /// When the next recheck is due (`None`: nothing to recheck).
    pub(crate) fn due_at(&self) -> Option<Instant> {
        self.at
    }

    /// The ids to look up now; those found unsettled again go back with
    /// [`Rechecks::again`], which keeps backing off.
    pub(crate) fn take(&mut self) -> Vec<i64> {
        self.at = None;
        self.ids.drain().collect()
    }

    /// Puts back `ids` still unsettled after a recheck made `now`, with
    /// the next, longer delay.
    pub(crate) fn again(&mut self, now: Instant, ids: impl IntoIterator<Item = i64>) {
        self.ids.extend(ids);
        if self.ids.is_empty() {
            self.backoff.reset();
        } else {
            self.at = Some(now + self.backoff.next_delay());
        }
    }

    /// Forgets everything (after a reconnection, which looks at every
    /// waited job).
    pub(crate) fn clear(&mut self) {
        self.ids.clear();
        self.at = None;
        self.backoff.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rechecks_back_off_to_the_cap_and_start_over_when_a_job_joins() {
        let now = Instant::now();
        let mut rechecks = Rechecks::new(Duration::from_millis(10));
        assert_eq!(rechecks.due_at(), None);

        rechecks.add(now, [1, 2]);
        assert_eq!(rechecks.due_at(), Some(now + Duration::from_millis(2)));
        let mut ids = rechecks.take();
        ids.sort_unstable();
        assert_eq!(ids, vec![1, 2]);
        assert_eq!(rechecks.due_at(), None);

        // Still unsettled: 4 ms, 8 ms, then the 10 ms cap.
        let mut delays = Vec::new();
        for _ in 0..3 {
            rechecks.again(now, [2]);
            delays.push(rechecks.due_at().unwrap() - now);
            assert_eq!(rechecks.take(), vec![2]);
        }
        assert_eq!(delays, [4, 8, 10].map(Duration::from_millis).to_vec());

        // A job already waiting changes nothing; a new one brings the
        // recheck forward.
        rechecks.again(now, [2]);
        rechecks.add(now, [2]);
        assert_eq!(rechecks.due_at(), Some(now + Duration::from_millis(10)));
        rechecks.add(now, [3]);
        assert_eq!(rechecks.due_at(), Some(now + Duration::from_millis(2)));

        // Settled: nothing left, nothing due.
        rechecks.take();
        rechecks.again(now, []);
        assert_eq!(rechecks.due_at(), None);
        rechecks.add(now, [4]);
        rechecks.clear();
        assert_eq!((rechecks.due_at(), rechecks.take()), (None, vec![]));
    }
}
