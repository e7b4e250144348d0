//! What the worker's loops share: the pool, the tasks served, and the
//! attempts in flight.

use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use jobq_diesel::{Outcome, Pool};
use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::config::Config;
use crate::registry::TaskDescriptor;

/// A task this worker serves, with its slot accounting.
#[derive(Debug)]
pub(crate) struct ServedTask {
    pub(crate) descriptor: &'static TaskDescriptor,
    pub(crate) limit: u32,
}

/// An attempt in flight. Whoever removes it from [`Shared::in_flight`]
/// owns the right to write its outcome: the executor when the handler
/// returns, or shutdown when it gives the job back.
#[derive(Debug)]
pub(crate) struct InFlight {
    pub(crate) attempt: i32,
    /// The claim the attempt came from.
    pub(crate) claim: i64,
    pub(crate) cancel: CancellationToken,
    pub(crate) abort: Option<tokio::task::AbortHandle>,
}

/// An outcome on its way to the completer, with the claim its job came
/// from when this worker knows it (it does not for a job it hands back
/// because it never heard of it).
#[derive(Debug)]
pub(crate) struct Finished {
    pub(crate) outcome: Outcome,
    pub(crate) claim: Option<i64>,
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
    /// Keyed by job id with a plain multiplicative hash: the ids come from
    /// our own claims, so SipHash's defence against chosen keys buys
    /// nothing, and it cost a busy worker 5 % of its instructions.
    pub(crate) in_flight: Mutex<FxHashMap<i64, InFlight>>,
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
    /// Fires when shutdown begins; shutdown then cancels every attempt's
    /// own token.
    pub(crate) stopping: CancellationToken,
    /// Signalled when the last attempt in flight finishes.
    pub(crate) idle: Notify,
    /// Outcomes handed to the completer and not yet written (or given up).
    pub(crate) unwritten: AtomicUsize,
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
        Arc::new(Self {
            pool,
            config,
            worker_id,
            queue_names: queues.iter().map(|q| Arc::from(q.as_str())).collect(),
            queues,
            task_names: tasks.iter().map(|t| t.descriptor.name.to_owned()).collect(),
            tasks,
            in_flight: Mutex::new(FxHashMap::default()),
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
            idle: Notify::new(),
            unwritten: AtomicUsize::new(0),
        })
    }
}
