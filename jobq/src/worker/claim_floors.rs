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
//!   those, a probe of every task's first claimable job, once per poll
//!   interval (`super::head_probe`), lowers the floors, which is what
//!   polling promised before. The probe walks the dead entries below the
//!   floor, not a claim that a handler waits for;
//! - a worker that gets no notifications at all walks from the head every
//!   time ([`ClaimFloors::turn_off`]).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use jobq_diesel::ClaimPosition;

/// A task's floor: `None` walks from the head. (`None` sorts before every
/// position, so the lower of two floors is their `min`.)
type Floor = Option<ClaimPosition>;

/// The claim floors of one worker's unlimited tasks.
#[derive(Debug)]
pub(crate) struct ClaimFloors {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    floors: HashMap<String, Floor>,
    /// Claims begun and not yet finished or abandoned.
    in_flight: u32,
    /// The lowest floor each task was given while a claim was in flight.
    lowered_in_flight: HashMap<String, Floor>,
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
}

impl ClaimFloors {
    /// Floors for `tasks`, all at their heads.
    pub(crate) fn new(tasks: impl IntoIterator<Item = String>) -> Self {
        ClaimFloors {
            inner: Mutex::new(Inner {
                floors: tasks.into_iter().map(|t| (t, None)).collect(),
                in_flight: 0,
                lowered_in_flight: HashMap::new(),
                off: false,
            }),
        }
    }

    /// The tasks that have floors, for the probe to check.
    pub(crate) fn tasks(&self) -> Vec<String> {
        let mut tasks: Vec<String> = self.inner().floors.keys().cloned().collect();
        tasks.sort();
        tasks
    }

    /// Whether every claim walks from the head anyway (see
    /// [`ClaimFloors::turn_off`]): then nothing needs probing.
    pub(crate) fn is_off(&self) -> bool {
        self.inner().off
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A job of `task` is pending at `at`: no floor of the task may lie
    /// past it. Unknown tasks (not served here) are ignored. Returns
    /// whether a claim may now find a job it would not have: the floor
    /// lay past `at`, or a claim in flight will keep its floor at `at`.
    pub(crate) fn lower(&self, task: &str, at: ClaimPosition) -> bool {
        self.inner().lower(task, Some(at))
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
    /// head when the floors are off).
    pub(crate) fn begin(&self, tasks: &[String]) -> Flight {
        let mut inner = self.inner();
        inner.in_flight += 1;
        let off = inner.off;
        let floors = tasks
            .iter()
            .map(|t| {
                if off {
                    None
                } else {
                    inner.floors.get(t).copied().flatten()
                }
            })
            .collect();
        Flight {
            floors,
            tasks: tasks.to_vec(),
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
    fn lower(&mut self, task: &str, to: Floor) -> bool {
        let Some(floor) = self.floors.get_mut(task) else {
            return false;
        };
        let past = to < *floor;
        *floor = (*floor).min(to);
        if self.in_flight > 0 {
            let lowered = self.lowered_in_flight.entry(task.to_owned()).or_insert(to);
            *lowered = (*lowered).min(to);
        }
        past || self.in_flight > 0
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
    fn after_a_first_claim() -> ClaimFloors {
        let floors = ClaimFloors::new(tasks());
        let flight = floors.begin(&tasks());
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
        let floors = after_a_first_claim();
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 10)), Some(at(0, 20))]);
        // "b" took nothing: its floor stays.
        floors.finish(flight, [("a", at(0, 11))]);
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 11)), Some(at(0, 20))]);
        floors.finish(flight, []);
    }

    #[test]
    fn an_announced_job_before_the_floor_lowers_it_and_one_after_does_not() {
        let floors = after_a_first_claim();
        floors.lower("a", at(0, 5));
        floors.lower("a", at(0, 8));
        floors.lower("b", at(0, 25));
        floors.lower("elsewhere", at(0, 1));
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 5)), Some(at(0, 20))]);
        floors.finish(flight, []);
        floors.lower("b", at(3, 99));
        let flight = floors.begin(&tasks());
        assert_eq!(
            flight.floors[1],
            Some(at(3, 99)),
            "a higher priority sorts before the floor, whatever its id"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn an_announcement_during_a_claim_keeps_the_floor_from_passing_it() {
        let floors = after_a_first_claim();
        let flight = floors.begin(&tasks());
        // Job 12 committed after the claim's snapshot was taken, which
        // went on to take 11 to 15: 12 is still pending.
        floors.lower("a", at(0, 12));
        // And 30 of "b" committed too, but past what "b" took.
        floors.lower("b", at(0, 30));
        floors.finish(
            flight,
            [("a", at(0, 11)), ("a", at(0, 15)), ("b", at(0, 24))],
        );
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 12)), Some(at(0, 24))]);
        floors.finish(flight, [("a", at(0, 16))]);
        let flight = floors.begin(&tasks());
        assert_eq!(
            flight.floors[0],
            Some(at(0, 16)),
            "announcements of an earlier flight no longer hold the floor back"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn a_reset_sends_every_task_to_its_head_also_during_a_claim() {
        let floors = after_a_first_claim();
        floors.reset();
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, [("a", at(0, 40)), ("b", at(0, 41))]);

        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 40)), Some(at(0, 41))]);
        floors.reset();
        floors.finish(flight, [("a", at(0, 50))]);
        let flight = floors.begin(&tasks());
        assert_eq!(
            flight.floors,
            vec![None, None],
            "the reset came while in flight"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn a_failed_claim_sends_every_task_to_its_head() {
        let floors = after_a_first_claim();
        let flight = floors.begin(&tasks());
        floors.abandon(flight);
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, []);
    }

    #[test]
    fn a_probed_head_lowers_only_the_floors_it_lies_before() {
        let floors = after_a_first_claim();
        assert_eq!(floors.tasks(), tasks());
        // The probe found job 3 of "a" claimable (a claim that held it
        // rolled back) and job 25 of "b", past its floor.
        assert!(floors.lower("a", at(0, 3)), "below the floor");
        assert!(!floors.lower("b", at(0, 25)), "past the floor");
        assert!(!floors.lower("elsewhere", at(0, 1)), "not served here");
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![Some(at(0, 3)), Some(at(0, 20))]);
        assert!(
            floors.lower("b", at(0, 26)),
            "while a claim is in flight, a head found holds its floor back"
        );
        floors.finish(
            flight,
            [("a", at(0, 3)), ("a", at(0, 12)), ("b", at(0, 30))],
        );
        let flight = floors.begin(&tasks());
        assert_eq!(
            flight.floors,
            vec![Some(at(0, 12)), Some(at(0, 26))],
            "claims walk from their floors again, never from the head"
        );
        floors.finish(flight, []);
    }

    #[test]
    fn without_notifications_every_claim_walks_from_the_head() {
        let floors = after_a_first_claim();
        assert!(!floors.is_off());
        floors.turn_off();
        assert!(floors.is_off());
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, [("a", at(0, 30))]);
        let flight = floors.begin(&tasks());
        assert_eq!(flight.floors, vec![None, None]);
        floors.finish(flight, []);
    }
}
