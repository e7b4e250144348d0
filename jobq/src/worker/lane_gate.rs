//! Whether this worker's next claim takes a claim lane
//! (`jobq_diesel::ClaimLanes`): only while the fleet has more workers than
//! there are lanes. A worker runs one claim at a time, so a fleet of at
//! most that many workers can never have more claims in flight; a lane
//! would only add its two round trips. The fleet's size comes with every
//! heartbeat (the first one at start-up), so a worker sees a fleet grow
//! within one heartbeat interval: until then a fleet that starts together
//! keeps at most twice its lanes' claims in flight.

use std::sync::atomic::{AtomicI64, Ordering};

use jobq_diesel::ClaimLanes;

#[derive(Debug)]
pub(crate) struct LaneGate {
    lanes: Option<ClaimLanes>,
    /// Workers registered, this one included, at the last heartbeat.
    fleet: AtomicI64,
}

impl LaneGate {
    /// `lanes` as configured (`None`: claims never take one).
    pub(crate) fn new(lanes: Option<ClaimLanes>) -> Self {
        LaneGate {
            lanes,
            fleet: AtomicI64::new(1),
        }
    }

    /// A heartbeat counted `workers` registered workers.
    pub(crate) fn fleet_seen(&self, workers: i64) {
        self.fleet.store(workers, Ordering::Relaxed);
    }

    /// The lanes the next claim takes one of, if any.
    pub(crate) fn for_claim(&self) -> Option<ClaimLanes> {
        let fleet = self.fleet.load(Ordering::Relaxed);
        self.lanes.filter(|l| fleet > i64::from(l.get()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_takes_a_lane_only_while_the_fleet_outnumbers_the_lanes() {
        let gate = LaneGate::new(ClaimLanes::new(4));
        assert_eq!(gate.for_claim(), None, "alone until the first heartbeat");
        gate.fleet_seen(4);
        assert_eq!(gate.for_claim(), None);
        gate.fleet_seen(5);
        assert_eq!(gate.for_claim(), ClaimLanes::new(4));
        gate.fleet_seen(2);
        assert_eq!(gate.for_claim(), None, "the fleet shrank");
    }

    #[test]
    fn without_lanes_no_claim_takes_one_whatever_the_fleet() {
        let gate = LaneGate::new(None);
        gate.fleet_seen(1_000);
        assert_eq!(gate.for_claim(), None);
    }
}
