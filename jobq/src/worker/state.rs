//! What the worker's loops share: the pool, the tasks served, the
//! attempts in flight and the claims they came from.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use jobq_diesel::{Outcome, Pool};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::attempts::Attempts;
use super::backlog::Backlog;
use super::config::Config;
use super::standing::Standing;
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
    /// The worker's states, handed to each attempt's `Context` (one `Arc`
    /// shared by every task).
    pub(crate) states: States,
}

/// An outcome on its way to the completer, with the claim its job came
/// from.
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) outcome: Outcome,
    pub(crate) claim: i64,
}

#[derive(Debug, Default)]
pub(crate) struct Slots {
    /// Attempts running per task, indexed like [`Shared::tasks`].
    pub(crate) running: Vec<u32>,
    /// Tasks whose last claim filled every free slot: more work may wait,
    /// so a freed slot is worth a claim.
    pub(crate) saturated: Vec<bool>,
    /// Tasks one of whose freed slots has woken the fetcher since their
    /// last claim (see [`Shared::release_slot`]).
    pub(crate) woke_fetcher: Vec<bool>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) pool: Pool,
    pub(crate) config: Config,
    pub(crate) worker_id: i64,
    pub(crate) queues: Vec<String>,
    /// The same queues, shared with every attempt's [`crate::Context`].
    pub(crate) queue_names: Vec<Arc<str>>,
    pub(crate) tasks: Vec<ServedTask>,
    pub(crate) task_names: Vec<String>,
    /// The attempts running, and who writes each one's outcome.
    pub(crate) attempts: Attempts,
    /// Jobs of each claim whose outcome is not written yet. A claim's row
    /// holds its jobs for this worker (heartbeats and rescue find them
    /// through it), so it goes with the outcome of its last job.
    pub(crate) open_claims: Mutex<FxHashMap<i64, u32>>,
    pub(crate) slots: Mutex<Slots>,
    /// Wakes the fetcher to claim at once: notifications, reconnects, due
    /// times.
    pub(crate) wake: Notify,
    /// Wakes the fetcher when a task that may have work waiting frees a
    /// slot; the fetcher gathers a few before claiming.
    pub(crate) slot_freed: Notify,
    /// The earliest known future `run_at`, from notifications.
    pub(crate) next_due: Mutex<Option<Instant>>,
    /// Fires when shutdown begins.
    pub(crate) stopping: CancellationToken,
    /// Outcomes handed to the completer and not yet written.
    pub(crate) backlog: Backlog,
    /// Whether this worker's heartbeats go through well enough that it may
    /// judge others dead.
    pub(crate) standing: Standing,
}

/// Locks a mutex, recovering from poisoning: the data here stays
/// consistent across a panic in another holder (counters and maps updated
/// in single steps), and a worker must keep running.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    /// Frees a slot of `task_index` and wakes the fetcher when that task
    /// may have work waiting.
    pub(crate) fn release_slot(&self, task_index: usize) {
        let wake = {
            let mut slots = lock(&self.slots);
            let running = slots.running[task_index].saturating_sub(1);
            slots.running[task_index] = running;
            // The first freed slot starts the fetcher's gather window and
            // the last one ends it; the ones between change nothing it
            // does, and waking it for each of a thousand jobs of a batch
            // cost a busy worker measurably.
            let wake =
                slots.saturated[task_index] && (running == 0 || !slots.woke_fetcher[task_index]);
            slots.woke_fetcher[task_index] |= wake;
            wake
        };
        if wake {
            self.slot_freed.notify_one();
        }
    }

    /// Records a future due time learnt from a notification.
    pub(crate) fn schedule_wake(&self, at: Instant) {
        let mut next = lock(&self.next_due);
        if next.is_none_or(|n| at < n) {
            *next = Some(at);
            drop(next);
            self.wake.notify_one();
        }
    }

    /// Counts the jobs of a claim as open.
    pub(crate) fn open_claim(&self, claim: i64, jobs: u32) {
        *lock(&self.open_claims).entry(claim).or_default() += jobs;
    }

    /// One job of `claim` is settled; true when it was the claim's last.
    pub(crate) fn settle_claim_job(&self, claim: i64) -> bool {
        let mut open = lock(&self.open_claims);
        match open.get_mut(&claim) {
            Some(left) if *left > 1 => {
                *left -= 1;
                false
            }
            Some(_) => {
                open.remove(&claim);
                true
            }
            None => false,
        }
    }

    /// Forgets claims whose rows are gone.
    pub(crate) fn forget_claims(&self, claims: &[i64]) {
        let mut open = lock(&self.open_claims);
        for claim in claims {
            open.remove(claim);
        }
    }

    pub(crate) fn serves_queue(&self, queue: &str) -> bool {
        self.queue_index(queue).is_some()
    }

    /// The position of `queue` among the queues served.
    pub(crate) fn queue_index(&self, queue: &str) -> Option<usize> {
        self.queues.iter().position(|q| q == queue)
    }

    pub(crate) fn new_arc(
        pool: Pool,
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
        Arc::new(Self {
            pool,
            config,
            worker_id,
            queue_names: queues.iter().map(|q| Arc::from(q.as_str())).collect(),
            queues,
            task_names: tasks.iter().map(|t| t.descriptor.name.to_owned()).collect(),
            tasks,
            attempts: Attempts::default(),
            open_claims: Mutex::new(FxHashMap::default()),
            slots: Mutex::new(Slots {
                running: vec![0; n],
                saturated: vec![false; n],
                woke_fetcher: vec![false; n],
            }),
            wake: Notify::new(),
            slot_freed: Notify::new(),
            next_due: Mutex::new(None),
            stopping: CancellationToken::new(),
            backlog: Backlog::new(backlog_limit),
            standing: Standing::default(),
        })
    }
}
