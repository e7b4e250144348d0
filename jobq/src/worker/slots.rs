//! The slots of each task a worker serves: how many attempts run, and
//! when a freed slot is worth waking the fetcher for.

use std::sync::{Mutex, MutexGuard};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;

#[derive(Debug)]
struct Counts {
    /// Attempts running per task, indexed like the worker's tasks.
    running: Vec<u32>,
    /// Tasks whose last claim filled every free slot: more work may wait,
    /// so a freed slot is worth a claim.
    saturated: Vec<bool>,
    /// Tasks one of whose freed slots has woken the fetcher since their
    /// last claim.
    woke_fetcher: Vec<bool>,
}

/// Slot accounting of the tasks a worker serves.
#[derive(Debug)]
pub(crate) struct Slots {
    counts: Mutex<Counts>,
    /// Wakes the fetcher when a task that may have work waiting frees a
    /// slot; the fetcher gathers a few before claiming.
    freed: Notify,
}

impl Slots {
    pub(crate) fn new(tasks: usize) -> Self {
        Self {
            counts: Mutex::new(Counts {
                running: vec![0; tasks],
                saturated: vec![false; tasks],
                woke_fetcher: vec![false; tasks],
            }),
            freed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        // Counters updated in single steps: a panic elsewhere leaves them
        // consistent.
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The free slots of each task, given each task's limit, for those
    /// that have any: (task index, free slots).
    pub(crate) fn free(&self, limits: impl Iterator<Item = u32>) -> Vec<(usize, u32)> {
        let counts = self.lock();
        limits
            .enumerate()
            .map(|(i, limit)| (i, limit.saturating_sub(counts.running[i])))
            .filter(|&(_, free)| free > 0)
            .collect()
    }

    /// A claim asked for `asked` (task index, slots) and got `got[i]` jobs
    /// of task `i`: they take their slots, and a task whose batch came
    /// back full is marked saturated.
    pub(crate) fn claimed(&self, asked: &[(usize, u32)], got: &[u32]) {
        let mut counts = self.lock();
        for &(i, slots) in asked {
            counts.running[i] += got[i];
            counts.saturated[i] = got[i] >= slots;
            counts.woke_fetcher[i] = false;
        }
    }

    /// Frees a slot of `task`, waking the fetcher when that task may have
    /// work waiting.
    pub(crate) fn release(&self, task: usize) {
        let wake = {
            let mut counts = self.lock();
            let running = counts.running[task].saturating_sub(1);
            counts.running[task] = running;
            // The first freed slot starts the fetcher's gather window and
            // the last one ends it; the ones between change nothing it
            // does, and waking it for each of a thousand jobs of a batch
            // cost a busy worker measurably.
            let wake = counts.saturated[task] && (running == 0 || !counts.woke_fetcher[task]);
            counts.woke_fetcher[task] |= wake;
            wake
        };
        if wake {
            self.freed.notify_one();
        }
    }

    /// Resolves when a slot worth claiming for was freed.
    pub(crate) fn freed(&self) -> Notified<'_> {
        self.freed.notified()
    }

    /// Whether every slot of some task with work waiting is free.
    pub(crate) fn a_saturated_task_is_idle(&self) -> bool {
        let counts = self.lock();
        (0..counts.running.len()).any(|i| counts.saturated[i] && counts.running[i] == 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_batch_saturates_and_its_freed_slots_wake_the_fetcher_first_and_last() {
        let slots = Slots::new(2);
        assert_eq!(slots.free([3, 2].into_iter()), [(0, 3), (1, 2)]);
        // Task 0 got all it asked for, task 1 less.
        slots.claimed(&[(0, 3), (1, 2)], &[3, 1]);
        assert_eq!(slots.free([3, 2].into_iter()), [(1, 1)]);
        assert!(!slots.a_saturated_task_is_idle());
        // The first freed slot of the saturated task wakes the fetcher...
        slots.release(0);
        assert!(woken(&slots));
        // ...the one between does not...
        slots.release(0);
        assert!(!woken(&slots));
        // ...the last does, and then the task is idle.
        slots.release(0);
        assert!(woken(&slots));
        assert!(slots.a_saturated_task_is_idle());
        // A task whose batch came back short wakes nobody.
        slots.release(1);
        assert!(!woken(&slots));
    }

    fn woken(slots: &Slots) -> bool {
        use std::future::Future;
        let mut notified = std::pin::pin!(slots.freed());
        let waker = std::task::Waker::noop();
        notified
            .as_mut()
            .poll(&mut std::task::Context::from_waker(waker))
            .is_ready()
    }
}
