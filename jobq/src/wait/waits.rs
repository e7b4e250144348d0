//! Who waits for which job: the map from job ids to their waits, and the
//! only way to change it.
//!
//! A wait registers, gets a [`Registration`] holding a watch receiver, and
//! deregisters by dropping it (a dropped wait future leaks nothing). When
//! an id's last wait goes, the id is handed to the driver, which removes
//! its row from `jobq.awaited` when it has nothing more urgent to do. The
//! driver resolves ids; a resolved id keeps its outcome until its last
//! wait is gone, so a wait registered just after the resolution still sees
//! it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, watch};

use super::finish::Finish;

type Slot = watch::Sender<Option<Arc<Finish>>>;

/// The waited ids.
#[derive(Debug)]
pub(crate) struct Waits {
    slots: Mutex<HashMap<i64, (Slot, usize)>>,
    /// Ids nobody waits for any more, for the driver to deregister.
    gone: mpsc::UnboundedSender<i64>,
}

impl Waits {
    /// No waits yet; ids whose last wait ends are sent to `gone`.
    pub(crate) fn new(gone: mpsc::UnboundedSender<i64>) -> Self {
        Self {
            slots: Mutex::default(),
            gone,
        }
    }

    fn slots(&self) -> MutexGuard<'_, HashMap<i64, (Slot, usize)>> {
        // A panic while holding the lock cannot leave the map half-changed
        // (every change is one insert, remove or counter step).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a wait for `id`.
    pub(crate) fn register(self: &Arc<Self>, id: i64) -> Registration {
        let mut slots = self.slots();
        let (slot, count) = slots
            .entry(id)
            .or_insert_with(|| (watch::Sender::new(None), 0));
        *count += 1;
        Registration {
            waits: Arc::clone(self),
            id,
            outcome: slot.subscribe(),
        }
    }

    /// Every id waited on and not resolved yet.
    pub(crate) fn unresolved(&self) -> Vec<i64> {
        self.slots()
            .iter()
            .filter(|(_, (slot, _))| slot.borrow().is_none())
            .map(|(id, _)| *id)
            .collect()
    }

    /// Those of `ids` that are waited on and not resolved yet.
    pub(crate) fn unresolved_among(&self, ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
        let slots = self.slots();
        ids.into_iter()
            .filter(|id| {
                slots
                    .get(id)
                    .is_some_and(|(slot, _)| slot.borrow().is_none())
            })
            .collect()
    }

    /// Those of `ids` that nobody waits for (their last wait ended and no
    /// new one started since).
    pub(crate) fn unwaited_among(&self, ids: impl IntoIterator<Item = i64>) -> Vec<i64> {
        let slots = self.slots();
        ids.into_iter()
            .filter(|id| !slots.contains_key(id))
            .collect()
    }

    /// Wakes every wait for `id` with its outcome (nothing when nobody
    /// waits any more).
    pub(crate) fn resolve(&self, id: i64, finish: Finish) {
        if let Some((slot, _)) = self.slots().get(&id) {
            slot.send_replace(Some(Arc::new(finish)));
        }
    }

    /// How many ids are waited on.
    pub(crate) fn len(&self) -> usize {
        self.slots().len()
    }

    fn deregister(&self, id: i64) {
        let mut slots = self.slots();
        if let Some((_, count)) = slots.get_mut(&id) {
            *count -= 1;
            if *count == 0 {
                slots.remove(&id);
                // The driver may be gone (the Waiter dropped, the runtime
                // shutting down): its connection then goes too, and the
                // rows with it (`jobq_diesel::clean_awaited`).
                let _ = self.gone.send(id);
            }
        }
    }
}

/// One wait for one job; dropping it ends the wait.
#[derive(Debug)]
pub(crate) struct Registration {
    waits: Arc<Waits>,
    id: i64,
    outcome: watch::Receiver<Option<Arc<Finish>>>,
}

impl Registration {
    /// The outcome, once the driver has resolved the id.
    pub(crate) async fn finished(&mut self) -> Option<Arc<Finish>> {
        // The sender lives in the map as long as this registration does,
        // so the channel cannot close under us; `None` only if it did.
        let value = self.outcome.wait_for(Option::is_some).await.ok()?;
        value.clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.waits.deregister(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waits_share_an_outcome_and_leave_nothing_behind() {
        let (gone_tx, mut gone) = mpsc::unbounded_channel();
        let waits = Arc::new(Waits::new(gone_tx));
        let mut a = waits.register(1);
        let b = waits.register(1);
        let c = waits.register(2);
        assert_eq!(waits.len(), 2);
        let mut unresolved = waits.unresolved();
        unresolved.sort_unstable();
        assert_eq!(unresolved, vec![1, 2]);

        waits.resolve(1, Finish::NotFound);
        assert_eq!(waits.unresolved(), vec![2]);
        assert_eq!(waits.unresolved_among([1, 2, 3]), vec![2]);
        assert!(matches!(
            a.finished().await.as_deref(),
            Some(Finish::NotFound)
        ));
        // A late wait on a resolved id sees the outcome at once.
        let mut late = waits.register(1);
        assert!(late.finished().await.is_some());

        drop((a, b));
        assert_eq!(waits.unwaited_among([1, 2, 3]), vec![3]);
        assert!(gone.try_recv().is_err(), "id 1 still has a wait");
        drop(late);
        assert_eq!(waits.len(), 1, "id 1 is forgotten with its last wait");
        assert_eq!(waits.unwaited_among([1, 2, 3]), vec![1, 3]);
        assert_eq!(
            gone.try_recv().ok(),
            Some(1),
            "and handed over to be deregistered"
        );
        drop(c);
        assert_eq!(gone.try_recv().ok(), Some(2));
        assert_eq!(waits.len(), 0);
    }
}
