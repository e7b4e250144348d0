//! The attempts a worker is running, and who writes each one's outcome.
//!
//! An attempt enters with [`Attempts::start`] when its job is claimed and
//! leaves in exactly one of three ways, each of which hands out at most
//! one [`Owned`] — the only thing an outcome can be sent with:
//!
//! * **finished** ([`Attempts::finish`]): its handler returned; the
//!   executor gets the `Owned` and sends the outcome;
//! * **handed back** ([`Attempts::take_all`]): shutdown took it at the
//!   deadline; shutdown gets the `Owned` and sends a release. The handler,
//!   when it returns later, gets nothing;
//! * **superseded** ([`Attempts::start`] of the same job again): the job
//!   was rescued from this worker and has come back to it. The old
//!   attempt is cancelled and gets nothing (its outcome would be fenced
//!   out anyway); its slot and claim are returned to the caller to free.
//!
//! Once [`Attempts::close`] has run (shutdown), attempts that start are
//! cancelled at once, so no attempt can slip past shutdown's cancel.

use std::sync::{Mutex, MutexGuard};

use rustc_hash::FxHashMap;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;

/// One job's attempt, as far as its bookkeeping goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AttemptRef {
    pub(crate) id: i64,
    pub(crate) attempt: i32,
    /// The claim the attempt came from.
    pub(crate) claim: i64,
    /// Index of its task among the tasks the worker serves.
    pub(crate) task_index: usize,
}

/// The right, and the duty, to send this attempt's outcome.
#[derive(Debug, PartialEq, Eq)]
#[must_use = "an attempt's outcome must be sent, or its job stays running"]
pub(crate) struct Owned(pub(crate) AttemptRef);

#[derive(Debug)]
struct Entry {
    attempt: AttemptRef,
    cancel: CancellationToken,
    abort: Option<AbortHandle>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Keyed by job id with a plain multiplicative hash: the ids come from
    /// our own claims, so SipHash's defence against chosen keys buys
    /// nothing, and it cost a busy worker 5 % of its instructions.
    running: FxHashMap<i64, Entry>,
    closed: bool,
}

/// The attempts in flight; see the module docs for the protocol.
#[derive(Debug, Default)]
pub(crate) struct Attempts {
    inner: Mutex<Inner>,
    /// Signalled when the last attempt leaves.
    idle: Notify,
}

impl Attempts {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every change below is a single step on the map; a panic in
        // another holder cannot leave it half-done.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers an attempt about to start, with the token that cancels
    /// it (cancelled at once when shutdown has begun). Returns the
    /// attempt it supersedes, if the same job was still running here.
    pub(crate) fn start(
        &self,
        attempt: AttemptRef,
        cancel: CancellationToken,
    ) -> Option<AttemptRef> {
        let mut inner = self.lock();
        if inner.closed {
            cancel.cancel();
        }
        let old = inner.running.insert(
            attempt.id,
            Entry {
                attempt,
                cancel,
                abort: None,
            },
        )?;
        old.cancel.cancel();
        Some(old.attempt)
    }

    /// Remembers how to abort the attempt's task at shutdown.
    pub(crate) fn set_abort(&self, attempt: &AttemptRef, abort: AbortHandle) {
        if let Some(entry) = self.lock().running.get_mut(&attempt.id) {
            if entry.attempt.attempt == attempt.attempt {
                entry.abort = Some(abort);
            }
        }
    }

    /// The attempt's handler has returned: the outcome is the caller's to
    /// send, unless shutdown took the attempt or a later attempt of the
    /// same job superseded it.
    pub(crate) fn finish(&self, attempt: &AttemptRef) -> Option<Owned> {
        let (owned, idle) = {
            let mut inner = self.lock();
            let ours = inner
                .running
                .get(&attempt.id)
                .is_some_and(|e| e.attempt.attempt == attempt.attempt);
            let owned = ours.then(|| inner.running.remove(&attempt.id)).flatten();
            (owned, inner.running.is_empty())
        };
        if idle {
            self.idle.notify_waiters();
        }
        owned.map(|e| Owned(e.attempt))
    }

    /// Shutdown: from now on every attempt that starts is cancelled at
    /// once; those running are cancelled now.
    pub(crate) fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for entry in inner.running.values() {
            entry.cancel.cancel();
        }
    }

    /// Shutdown's deadline: takes every attempt still running, aborting
    /// its task; their outcomes are now the caller's.
    pub(crate) fn take_all(&self) -> Vec<Owned> {
        let taken: Vec<Entry> = self.lock().running.drain().map(|(_, e)| e).collect();
        self.idle.notify_waiters();
        taken
            .into_iter()
            .map(|e| {
                if let Some(abort) = e.abort {
                    abort.abort();
                }
                Owned(e.attempt)
            })
            .collect()
    }

    /// Asks the running attempt of job `id` to stop; true when there was
    /// one that had not been asked yet.
    pub(crate) fn cancel(&self, id: i64) -> bool {
        match self.lock().running.get(&id) {
            Some(e) if !e.cancel.is_cancelled() => {
                e.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Asks the running attempts that `keep` rejects to stop (their jobs
    /// were taken from this worker); returns them.
    pub(crate) fn cancel_unless(&self, keep: impl Fn(&AttemptRef) -> bool) -> Vec<AttemptRef> {
        let inner = self.lock();
        inner
            .running
            .values()
            .filter(|e| !keep(&e.attempt) && !e.cancel.is_cancelled())
            .map(|e| {
                e.cancel.cancel();
                e.attempt
            })
            .collect()
    }

    /// Every attempt running now, as (job id, attempt).
    pub(crate) fn snapshot(&self) -> Vec<(i64, i32)> {
        self.lock()
            .running
            .values()
            .map(|e| (e.attempt.id, e.attempt.attempt))
            .collect()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.lock().running.is_empty()
    }

    /// Waits until no attempt is running, or `deadline`; true when idle.
    pub(crate) async fn wait_idle(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            // Registered before the check, so that the last attempt
            // leaving in between still wakes us.
            let idle = self.idle.notified();
            if self.is_empty() {
                return true;
            }
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep_until(deadline) => return self.is_empty(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn job(id: i64, attempt: i32) -> AttemptRef {
        AttemptRef {
            id,
            attempt,
            claim: 100 + id,
            task_index: 0,
        }
    }

    #[test]
    fn the_handler_that_returns_owns_its_outcome_once() {
        let attempts = Attempts::default();
        assert_eq!(attempts.start(job(1, 1), CancellationToken::new()), None);
        assert_eq!(attempts.snapshot(), [(1, 1)]);
        assert_eq!(attempts.finish(&job(1, 1)), Some(Owned(job(1, 1))));
        assert_eq!(attempts.finish(&job(1, 1)), None);
        assert!(attempts.is_empty());
    }

    #[test]
    fn after_shutdown_took_an_attempt_its_handler_owns_nothing() {
        let attempts = Attempts::default();
        let _ = attempts.start(job(1, 1), CancellationToken::new());
        let _ = attempts.start(job(2, 3), CancellationToken::new());
        let mut taken: Vec<i64> = attempts.take_all().into_iter().map(|o| o.0.id).collect();
        taken.sort_unstable();
        assert_eq!(taken, [1, 2]);
        assert_eq!(attempts.finish(&job(1, 1)), None);
        assert!(attempts.take_all().is_empty());
    }

    #[test]
    fn a_later_attempt_supersedes_and_cancels_the_earlier_one() {
        let attempts = Attempts::default();
        let first = CancellationToken::new();
        let _ = attempts.start(job(1, 1), first.clone());
        let superseded = attempts.start(job(1, 2), CancellationToken::new());
        assert_eq!(superseded, Some(job(1, 1)));
        assert!(first.is_cancelled());
        // The earlier handler returns late: not its outcome to write.
        assert_eq!(attempts.finish(&job(1, 1)), None);
        assert_eq!(attempts.snapshot(), [(1, 2)]);
        assert_eq!(attempts.finish(&job(1, 2)), Some(Owned(job(1, 2))));
    }

    #[test]
    fn attempts_starting_after_close_are_cancelled_at_once() {
        let attempts = Attempts::default();
        let before = CancellationToken::new();
        let _ = attempts.start(job(1, 1), before.clone());
        attempts.close();
        assert!(before.is_cancelled());
        let after = CancellationToken::new();
        let _ = attempts.start(job(2, 1), after.clone());
        assert!(after.is_cancelled());
    }

    #[test]
    fn cancel_asks_once_and_cancel_unless_picks_the_taken_ones() {
        let attempts = Attempts::default();
        let one = CancellationToken::new();
        let two = CancellationToken::new();
        let _ = attempts.start(job(1, 1), one.clone());
        let _ = attempts.start(job(2, 1), two.clone());
        assert!(attempts.cancel(1));
        assert!(!attempts.cancel(1));
        assert!(!attempts.cancel(3));
        assert!(one.is_cancelled());
        let stopped = attempts.cancel_unless(|a| a.id == 1);
        assert_eq!(stopped, [job(2, 1)]);
        assert!(two.is_cancelled());
        assert!(attempts.cancel_unless(|_| false).is_empty(), "asked once");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_idle_returns_when_the_last_attempt_leaves_or_at_the_deadline() {
        let attempts = std::sync::Arc::new(Attempts::default());
        let _ = attempts.start(job(1, 1), CancellationToken::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let waiter = {
            let attempts = attempts.clone();
            tokio::spawn(async move { attempts.wait_idle(deadline).await })
        };
        tokio::task::yield_now().await;
        let _ = attempts.finish(&job(1, 1));
        assert!(waiter.await.unwrap());
        let _ = attempts.start(job(2, 1), CancellationToken::new());
        let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
        assert!(!attempts.wait_idle(deadline).await);
    }
}
