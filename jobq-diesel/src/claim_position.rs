//! A pending job's place in the claim's walk: the order of
//! `jobs_claim_idx` within a task (priority, higher first, then `run_at`,
//! then id), which is also the order in which jobs are claimed.

use std::cmp::Ordering;

use chrono::{DateTime, Utc};

/// Where a job sits in its task's claim order. Positions compare in that
/// order: a "lower" position is claimed earlier.
///
/// Workers keep one per task as a claim floor (see [`crate::ClaimRequest::floors`]);
/// the insert trigger announces the first position of the jobs it made
/// pending (see [`crate::Notification::Pending`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimPosition {
    /// The job's priority (claimed higher first).
    pub priority: i16,
    /// The job's due time.
    pub run_at: DateTime<Utc>,
    /// The job's id.
    pub id: i64,
}

impl Ord for ClaimPosition {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .priority
            .cmp(&self.priority)
            .then(self.run_at.cmp(&other.run_at))
            .then(self.id.cmp(&other.id))
    }
}

impl PartialOrd for ClaimPosition {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(priority: i16, us: i64, id: i64) -> ClaimPosition {
        ClaimPosition {
            priority,
            run_at: DateTime::from_timestamp_micros(us).unwrap(),
            id,
        }
    }

    #[test]
    fn orders_as_the_claim_index_higher_priority_first_then_run_at_then_id() {
        assert!(at(5, 900, 9) < at(0, 100, 1), "higher priority first");
        assert!(at(0, 100, 9) < at(0, 101, 1), "earlier run_at first");
        assert!(at(0, 100, 1) < at(0, 100, 2), "then the lower id");
        assert_eq!(at(0, 100, 1).cmp(&at(0, 100, 1)), Ordering::Equal);
        assert!(at(-3, 0, 0) > at(0, 999, 999), "negative priorities last");
    }
}
