//! Where each of the worker's unlimited claims starts its walk of a task:
//! the claim floor, and the protocol that keeps it safe.
//!
//! Why: a snapshot held open anywhere on the server (a long report, a
//! forgotten `BEGIN`) keeps the dead index entry of every job claimed
//! since, at the head of the task's range of the claim index. A claim
//! that walks from the head visits each of them: its cost grew with the
//! jobs run since the snapshot (pickup p50 35× the clean figure after
//! 10 minutes at 1,000 jobs/s). A claim that starts at the last job this
//! worker claimed steps over only what others claimed since.
//!
//! The floor may only skip entries that cannot be pending for this worker,
//! so everything that may put a pending job before it lowers it:
//! - a notification of inserted jobs carries the first of their positions
//!   ([`ClaimFloors::lower`]): an inserting transaction that started
//!   before jobs already claimed were enqueued, or a higher priority;
//! - every other notification that jobs became pending (promotion, retry,
//!   release, rescue, unpause, unblock) and anything that may have lost
//!   one (a listener reconnect, a failed claim) sends every task back to
//!   its head ([`ClaimFloors::reset`]);
//! - a notification that arrives while a claim is in flight may be of a
//!   job the claim's snapshot did not see: the claim then cannot raise the
//!   floor past it ([`ClaimFloors::finish`]);
//! - nothing announces a job that a concurrent claim locked (so this one
//!   skipped it) and then rolled back, nor a key whose block ran out: for
//!   those, a claim starts from the head at least once per poll interval
//!   ([`ClaimFloors::begin`]), which is what polling promised before;
//! - a worker that gets no notifications at all walks from the head every
//!   time ([`ClaimFloors::turn_off`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobq_diesel::ClaimPosition;

/// A task's floor: `None` walks from the head. (`None` sorts before every
/// position, so the lower of two floors is their `min`.)
type Floor = Option<ClaimPosition>;

/// The claim floors of one worker's unlimited tasks.
#[derive(Debug)]
pub(crate) struct ClaimFloors {
    inner: Mutex<Inner>,
    /// How often a claim walks from the head whatever the floors say.
    from_head_every: Duration,
}

#[derive(Debug)]
struct Inner {
    floors: HashMap<String, Floor>,
    /// Claims begun and not yet finished or abandoned.
    in_flight: u32,
    /// The lowest floor each task was given while a claim was in flight.
    lowered_in_flight: HashMap<String, Floor>,
    /// When the last claim that walked every task from the head began.
    last_from_head: Option<Instant>,
    /// No notifications arrive (listening is off or does not work): every
    /// claim walks from the head, as nothing could lower a floor.
    off: bool,
}

/// A claim in flight: the floors it walks from, same order as the tasks
/// it was begun with. Hand it back to [`ClaimFloors::finish`] or
/// [`ClaimFloors::abandon`].
#[derive(Debug)]
#[must_use = "a flight must be finished or abandoned"]
pub(crate) struct Flight {
    /// The floor of each task of the claim.
    pub(crate) floors: Vec<Floor>,
    tasks: Vec<String>,
    began: Instant,
    from_head: bool,
}

impl ClaimFloors {
    /// Floors for `tasks`, all at their heads; the safety walk from the
    /// head runs at least every `from_head_every` (the poll interval).
    pub(crate) fn new(tasks: impl IntoIterator<Item = String>, from_head_every: Duration) -> Self {
        ClaimFloors {
            inner: Mutex::new(Inner {
                floors: tasks.into_iter().map(|t| (t, None)).collect(),
                in_flight: 0,
                lowered_in_flight: HashMap::new(),
                last_from_head: None,
                off: false,
            }),
            from_head_every,
        }
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job of `task` is pending at `at`: no floor of the task may lie
    /// past it. Unknown tasks (not served here) are ignored.
    pub(crate) fn lower(&self, task: &str, at: ClaimPosition) {
        self.inner().lower(task, Some(at));
    }

    /// Jobs became pending somewhere unknown: every task walks from its
    /// head next time.
    pub(crate) fn reset(&self) {
        let mut inner = self.inner();
        let tasks: Vec<String> = inner.floors.keys().cloned().collect();
        for task in tasks {
            inner.lower(&task, None);
        }
    }

    /// Notifications do not reach this worker (it polls alone): from now
    /// on every claim walks from the head.
    pub(crate) fn turn_off(&self) {
        self.inner().off = true;
    }

    /// Starts a claim of `tasks`: the floors it walks from (all at the
    /// head when the last walk from the head is a poll interval old).
    pub(crate) fn begin(&self, tasks: &[String], now: Instant) -> Flight {
        let mut inner = self.inner();
        inner.in_flight += 1;
        let from_head = inner.off
            || inner
                .last_from_head
                .is_none_or(|last| now.saturating_duration_since(last) >= self.from_head_every);
        let floors = tasks
            .iter()
            .map(|t| {
                if from_head {
                    None
                } else {
                    inner.floors.get(t).copied().flatten()
                }
            })
            .collect();
        Flight {
            floors,
            tasks: tasks.to_vec(),
            began: now,
            from_head,
        }
    }

    /// The claim committed and took `claimed` (each job's task and
    /// position): each task's floor moves to the last job it took, unless
    /// something was announced below that while the claim was in flight.
    /// Tasks that took nothing keep their floor: what lies past it was
    /// either walked and found not claimable, or announced since.
    pub(crate) fn finish<'a>(
        &self,
        flight: Flight,
        claimed: impl IntoIterator<Item = (&'a str, ClaimPosition)>,
    ) {
        let mut last: HashMap<&str, ClaimPosition> = HashMap::new();
        for (task, at) in claimed {
            let entry = last.entry(task).or_insert(at);
            *entry = (*entry).max(at);
        }
        let mut inner = self.inner();
        for task in &flight.tasks {
            let Some(&at) = last.get(task.as_str()) else {
                continue;
            };
            let lowered = inner.lowered_in_flight.get(task).copied();
            let Some(floor) = inner.floors.get_mut(task) else {
                continue;
            };
            *floor = match lowered {
                Some(lowered) => lowered.min(Some(at)),
                None => Some(at),
            };
        }
        if flight.from_head {
            inner.last_from_head = Some(flight.began);
        }
        inner.land();
    }

    /// The claim failed (it may or may not have committed): every task
    /// walks from its head next time.
    pub(crate) fn abandon(&self, flight: Flight) {
        drop(flight);
        self.inner().land();
        self.reset();
    }
}

impl Inner {
    fn lower(&mut self, task: &str, to: Floor) {
        let Some(floor) = self.floors.get_mut(task) else {
            return;
        };
        *floor = (*floor).min(to);
        if self.in_flight > 0 {
            let lowered = self.lowered_in_flight.entry(task.to_owned()).or_insert(to);
            *lowered = (*lowered).min(to);
        }
    }

    fn land(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if self.in_flight == 0 {
            self.lowered_in_flight.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::*;

    const EVERY: Duration = Duration::from_secs(1);

    fn at(priority: i16, id: i64) -> ClaimPosition {
        ClaimPosition {
            priority,
            run_at: DateTime::from_timestamp_micros(1_000_000 + id).unwrap(),
            id,
        }
    }

    fn tasks() -> Vec<String> {
        vec!["a".to_owned(), "b".to_owned()]
    }

    /// Floors after a first claim (from the head, as every first claim is)
    /// that took job 10 of "a" and job 20 of "b".
    fn after_a_first_claim(t0: Instant) -> ClaimFloors {
        let floors = ClaimFloors::new(tasks(), EVERY);
        let flight = floors.begin(&tasks(), t0);
        assert_eq!(
            flight.floors,
            vec![None, None],
            "the first claim walks from the head"
        );
        floors.finish(
            flight,
            [("a", at(0, 7)), ("a", at(0, 10)), ("b", at(0, 20))],
        );
        floors
    }

    #[test]
    fn a_claim_moves_each_floor_to_the_last_job_it_took_of_the_task() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![Some(at(0, 10)), Some(at(0, 20))]);
        // "b" took nothing: its floor stays.
        floors.finish(flight, [("a", at(0, 11))]);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![Some(at(0, 11)), Some(at(0, 20))]);
        floors.finish(flight, []);
    }

    #[test]
    fn an_announced_job_before_the_floor_lowers_it_and_one_after_does_not() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        floors.lower("a", at(0, 5));
        floors.lower("a", at(0, 8));
        floors.lower("b", at(0, 25));
        floors.lower("elsewhere", at(0, 1));
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![Some(at(0, 5)), Some(at(0, 20))]);
        floors.finish(flight, []);
        floors.lower("b", at(3, 99));
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(
            flight.floors[1],
            Some(at(3, 99)),
            "a higher priority sorts before the floor, whatever its id"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn an_announcement_during_a_claim_keeps_the_floor_from_passing_it() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        // Job 12 committed after the claim's snapshot was taken, which
        // went on to take 11 to 15: 12 is still pending.
        floors.lower("a", at(0, 12));
        // And 30 of "b" committed too, but past what "b" took.
        floors.lower("b", at(0, 30));
        floors.finish(
            flight,
            [("a", at(0, 11)), ("a", at(0, 15)), ("b", at(0, 24))],
        );
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![Some(at(0, 12)), Some(at(0, 24))]);
        floors.finish(flight, [("a", at(0, 16))]);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(
            flight.floors[0],
            Some(at(0, 16)),
            "announcements of an earlier flight no longer hold the floor back"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn a_reset_sends_every_task_to_its_head_also_during_a_claim() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        floors.reset();
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, [("a", at(0, 40)), ("b", at(0, 41))]);

        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![Some(at(0, 40)), Some(at(0, 41))]);
        floors.reset();
        floors.finish(flight, [("a", at(0, 50))]);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(
            flight.floors,
            vec![None, None],
            "the reset came while in flight"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn a_failed_claim_sends_every_task_to_its_head() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        floors.abandon(flight);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, []);
    }

    #[test]
    fn a_claim_walks_from_the_head_once_per_interval_and_keeps_its_floors() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        let flight = floors.begin(&tasks(), t0 + EVERY - Duration::from_millis(1));
        assert_eq!(flight.floors, vec![Some(at(0, 10)), Some(at(0, 20))]);
        floors.finish(flight, []);
        let flight = floors.begin(&tasks(), t0 + EVERY);
        assert_eq!(
            flight.floors,
            vec![None, None],
            "an interval since the last"
        );
        floors.finish(flight, [("a", at(0, 3))]);
        let flight = floors.begin(&tasks(), t0 + EVERY + Duration::from_millis(1));
        assert_eq!(
            flight.floors,
            vec![Some(at(0, 3)), Some(at(0, 20))],
            "the walk from the head found job 3 before the floor; b kept its floor"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn without_notifications_every_claim_walks_from_the_head() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        floors.turn_off();
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, [("a", at(0, 30))]);
        let flight = floors.begin(&tasks(), t0 + EVERY / 2);
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, []);
    }

    #[test]
    fn a_failed_walk_from_the_head_is_tried_again_at_once() {
        let t0 = Instant::now();
        let floors = after_a_first_claim(t0);
        let flight = floors.begin(&tasks(), t0 + EVERY);
        assert!(flight.from_head);
        floors.abandon(flight);
        let flight = floors.begin(&tasks(), t0 + EVERY + Duration::from_millis(1));
        assert!(flight.from_head);
        floors.finish(flight, []);
    }
}
