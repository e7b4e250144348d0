//! What the worker's loops share: who the worker is and what it serves,
//! and one small type per concern (attempts, claims, slots, wake-ups,
//! outcome backlog, standing), each the only way to change its state.

use std::sync::Arc;
use std::time::Duration;

use jobq_diesel::{Outcome, Pool};
use tokio_util::sync::CancellationToken;

use super::attempts::Attempts;
use super::backlog::Backlog;
use super::claim_floors::ClaimFloors;
use super::config::Config;
use super::lane_gate::LaneGate;
use super::open_claims::OpenClaims;
use super::slots::Slots;
use super::standing::Standing;
use super::wakeups::Wakeups;
use crate::registry::TaskDescriptor;
use crate::state::States;

/// A task this worker serves, with its effective settings: the
/// attribute's, or the operator's overrides (see `overrides.rs`).
#[derive(Debug)]
pub(crate) struct ServedTask {
    pub(crate) descriptor: &'static TaskDescriptor,
    /// Attempts of this task running at once.
    pub(crate) limit: u32,
    /// Time limit of one attempt.
    pub(crate) timeout: Option<Duration>,
    /// Base of the exponential backoff between attempts.
    pub(crate) retry_base: Duration,
    /// The task's fleet-wide limits; a task with any is claimed on its own,
    /// under its limits (see `jobq_diesel::claim_limited`).
    pub(crate) fleet: FleetLimits,
    /// The worker's states, handed to each attempt's `Context` (one `Arc`
    /// shared by every task).
    pub(crate) states: States,
}

/// A task's fleet-wide limits, as the claim binds them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct FleetLimits {
    pub(crate) global: Option<i32>,
    pub(crate) per_key: Option<i32>,
    pub(crate) rate: Option<crate::Rate>,
    pub(crate) key_rate: Option<crate::Rate>,
}

impl FleetLimits {
    pub(crate) fn of(options: &crate::TaskOptions) -> Self {
        let bound = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            global: options.global_limit().map(bound),
            per_key: options.key_limit().map(bound),
            rate: options.rate_limit(),
            key_rate: options.key_rate_limit(),
        }
    }

    /// These limits with the builder's overrides, where given.
    pub(crate) fn with(self, overrides: FleetOverrides) -> Self {
        let bound = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        Self {
            global: overrides.global.map(bound).or(self.global),
            per_key: overrides.per_key.map(bound).or(self.per_key),
            rate: overrides.rate.or(self.rate),
            key_rate: overrides.key_rate.or(self.key_rate),
        }
    }

    /// Whether the task has any fleet-wide limit.
    pub(crate) fn any(&self) -> bool {
        self.global.is_some()
            || self.per_key.is_some()
            || self.rate.is_some()
            || self.key_rate.is_some()
    }

    /// Whether the task has a rate limit of either kind.
    pub(crate) fn rated(&self) -> bool {
        self.rate.is_some() || self.key_rate.is_some()
    }
}

/// The builder's overrides of one task's fleet-wide limits.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FleetOverrides {
    pub(crate) global: Option<u32>,
    pub(crate) per_key: Option<u32>,
    pub(crate) rate: Option<crate::Rate>,
    pub(crate) key_rate: Option<crate::Rate>,
}

/// An outcome on its way to the completer, with the claim its job came
/// from.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) outcome: Outcome,
    pub(crate) claim: i64,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    /// The fetcher's connection for claims and promotions: generic plans
    /// (see [`ClaimPool`]).
    pub(crate) claim_pool: Pool,
    /// Where the vacuum runs (see [`Pools::vacuum`]).
    pub(crate) vacuum_pool: Option<Pool>,
    pub(crate) config: Config,
    pub(crate) worker_id: i64,
    pub(crate) queues: Vec<String>,
    /// The same queues, shared with every attempt's [`crate::Context`].
    pub(crate) queue_names: Vec<Arc<str>>,
    pub(crate) tasks: Vec<ServedTask>,
    pub(crate) task_names: Vec<String>,
    /// Whether any task served has a fleet-wide limit.
    pub(crate) serves_limited_tasks: bool,
    /// The attempts running, and who writes each one's outcome.
    pub(crate) attempts: Attempts,
    /// The jobs of each claim whose outcome is not written yet.
    pub(crate) claims: OpenClaims,
    /// The slots of each task.
    pub(crate) slots: Slots,
    /// What wakes the fetcher besides freed slots.
    pub(crate) wake: Wakeups,
    /// Where the unlimited claims start their walk of each task.
    pub(crate) floors: ClaimFloors,
    /// Whether the next unlimited claim takes a claim lane.
    pub(crate) lanes: LaneGate,
    /// Fires when shutdown begins.
    pub(crate) stopping: CancellationToken,
    /// Outcomes handed to the completer and not yet written.
    pub(crate) backlog: Backlog,
    /// Whether this worker's heartbeats go through well enough that it may
    /// judge others dead.
    pub(crate) standing: Standing,
}

impl Shared {
    pub(crate) fn serves_queue(&self, queue: &str) -> bool {
        self.queue_index(queue).is_some()
    }

    /// The position of `queue` among the queues served.
    pub(crate) fn queue_index(&self, queue: &str) -> Option<usize> {
        self.queues.iter().position(|q| q == queue)
    }

    pub(crate) fn new_arc(
        pools: Pools,
        config: Config,
        worker_id: i64,
        queues: Vec<String>,
        tasks: Vec<ServedTask>,
    ) -> Arc<Self> {
        let n = tasks.len();
        let slots: usize = tasks.iter().map(|t| t.limit as usize).sum();
        // Room for a full outcome batch, and for every slot to finish twice
        // over while a write is under way.
        let backlog_limit = config.outcome_batch.max(2 * slots);
        // Limited tasks walk as before (their claims take few jobs per key).
        let floors = ClaimFloors::new(
            tasks
                .iter()
                .filter(|t| !t.fleet.any())
                .map(|t| t.descriptor.name.to_owned()),
        );
        let lanes = LaneGate::new(config.claim_lanes);
        Arc::new(Self {
            pool: pools.main,
            claim_pool: pools.claims,
            vacuum_pool: pools.vacuum,
            config,
            worker_id,
            queue_names: queues.iter().map(|q| Arc::from(q.as_str())).collect(),
            queues,
            task_names: tasks.iter().map(|t| t.descriptor.name.to_owned()).collect(),
            serves_limited_tasks: tasks.iter().any(|t| t.fleet.any()),
            tasks,
            attempts: Attempts::default(),
            claims: OpenClaims::default(),
            slots: Slots::new(n),
            wake: Wakeups::default(),
            floors,
            lanes,
            stopping: CancellationToken::new(),
            backlog: Backlog::new(backlog_limit),
            standing: Standing::default(),
        })
    }
}

/// A worker's connection pools.
#[derive(Debug, Clone)]
pub(crate) struct Pools {
    /// Everything but claims: outcomes, heartbeats, maintenance.
    pub(crate) main: Pool,
    /// One connection that plans the claim and promotion statements once,
    /// generically: PostgreSQL's own choice re-planned the claim on every
    /// call beside a large table (0.3 ms a claim, the pickup latency's
    /// largest part), while the outcome statements need per-call plans
    /// (see `jobq_diesel::outcome`). A pool given by the application
    /// serves both.
    pub(crate) claims: Pool,
    /// One connection opened without jobq's statement timeout, for the
    /// vacuum, whose passes over a big partition may rightly take minutes;
    /// opened when a vacuum is first due. None with an application's pool:
    /// the vacuum then lifts the timeout on one of its connections for the
    /// pass.
    pub(crate) vacuum: Option<Pool>,
}
