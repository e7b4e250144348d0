//! Writing a batch of outcomes so that no outcome can hold up another.
//!
//! A batch goes in one statement. When the database is away, the write
//! is tried again later, from where it stopped. When the server answers
//! the statement with an error, some outcome of the batch may be the
//! cause (a row another transaction keeps locked past `lock_timeout`, a
//! message the database refuses, a rule of the application's that refuses
//! a row): the batch is written again without waiting for row locks, and
//! split in halves until the outcomes it refuses stand alone, so that
//! every other outcome is written. Outcomes of locked rows are parked.
//! An outcome refused on its own is tried again a few times (a
//! lock timeout looks the same from here), then written with less: its
//! message replaced by a note, then without a message (an outcome whose
//! output is refused becomes a failure saying so). One that is
//! refused even then (a row lock held for long, a rule that refuses the
//! row whatever it holds) is parked: handed back to the caller as it
//! was, to be tried again later on its own, while every other outcome
//! goes on being written. Its claim stays until it is written.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use jobq_diesel::{NotWritten, Outcome, Pool, RejectedOutcome};

use super::backoff::Backoff;
use super::error_text::error_chain;
use super::message;

/// Why a write did not go through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    /// No answer: no connection, or it broke. The same write may work
    /// later.
    Unavailable(String),
    /// The server answered the statement with an error.
    Refused(String),
}

/// Where outcomes are written: the pool in production, a fake in the
/// tests of the isolation logic.
pub(crate) trait OutcomeStore {
    /// Writes `outcomes` in one statement and removes the `settled_claims`
    /// rows; returns the outcomes the attempt fence turned away.
    fn write(
        &mut self,
        outcomes: &[Outcome],
        settled_claims: &[i64],
    ) -> impl Future<Output = Result<Vec<RejectedOutcome>, WriteError>> + Send;

    /// Writes `outcomes` without waiting for row locks: the outcomes of
    /// rows another transaction holds come back as `locked`.
    fn write_around_locks(
        &mut self,
        outcomes: &[Outcome],
    ) -> impl Future<Output = Result<NotWritten, WriteError>> + Send;

    /// Whether the database answers at all.
    fn ping(&mut self) -> impl Future<Output = bool> + Send;
}

/// The worker's pool as an [`OutcomeStore`].
pub(crate) struct PoolStore<'a>(pub(crate) &'a Pool);

impl OutcomeStore for PoolStore<'_> {
    async fn write(
        &mut self,
        outcomes: &[Outcome],
        settled_claims: &[i64],
    ) -> Result<Vec<RejectedOutcome>, WriteError> {
        let mut conn = self
            .0
            .get()
            .await
            .map_err(|e| WriteError::Unavailable(error_chain(&e)))?;
        jobq_diesel::write_outcomes(&mut conn, outcomes, settled_claims)
            .await
            .map_err(classify)
    }

    async fn write_around_locks(&mut self, outcomes: &[Outcome]) -> Result<NotWritten, WriteError> {
        let mut conn = self
            .0
            .get()
            .await
            .map_err(|e| WriteError::Unavailable(error_chain(&e)))?;
        jobq_diesel::write_outcomes_around_locks(&mut conn, outcomes)
            .await
            .map_err(classify)
    }

    async fn ping(&mut self) -> bool {
        match self.0.get().await {
            Ok(mut conn) => jobq_diesel::ping(&mut conn).await.is_ok(),
            Err(_) => false,
        }
    }
}

/// A statement error the server sent is a refusal; anything else (the
/// connection broke, nothing could be sent) means the database is away.
fn classify(e: diesel::result::Error) -> WriteError {
    use diesel::result::DatabaseErrorKind::{ClosedConnection, UnableToSendCommand};
    use diesel::result::Error::DatabaseError;
    match &e {
        DatabaseError(UnableToSendCommand | ClosedConnection, _) => {
            WriteError::Unavailable(error_chain(&e))
        }
        DatabaseError(..) => WriteError::Refused(error_chain(&e)),
        _ => WriteError::Unavailable(error_chain(&e)),
    }
}

/// Tries of an outcome refused on its own before it is written with less.
const SINGLE_TRIES: u32 = 3;

/// One outcome of a batch and what has become of it.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) outcome: Outcome,
    /// The claim its job came from, when this worker knows it.
    pub(crate) claim: Option<i64>,
    /// Whether it is the last open job of `claim`: the claim's row goes
    /// once it is written.
    pub(crate) settles_claim: bool,
    state: EntryState,
    /// Since when its row has been found locked, while it is.
    locked_since: Option<Instant>,
    /// Whether a long-held lock on its row was logged already.
    pub(crate) long_lock_logged: bool,
}

/// Why an outcome could not be written for now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ParkedBecause {
    /// Another transaction holds the job's row locked, since `since`
    /// (the first write that found it locked).
    Locked { since: Instant },
    /// The database refused every form of it; the last refusal.
    Refused(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum EntryState {
    Unwritten,
    Written,
    Parked(ParkedBecause),
}

impl Entry {
    pub(crate) fn new(outcome: Outcome, claim: Option<i64>, settles_claim: bool) -> Self {
        Self {
            outcome,
            claim,
            settles_claim,
            state: EntryState::Unwritten,
            locked_since: None,
            long_lock_logged: false,
        }
    }
}

/// What writing a batch came to.
#[derive(Debug, Default)]
pub(crate) struct Report {
    /// Outcomes the attempt fence turned away (their job was rescued).
    pub(crate) rejected: Vec<RejectedOutcome>,
    /// Outcomes written with less than they held, and why.
    pub(crate) degraded: Vec<(i64, i32, String)>,
    /// Outcomes that could not be written in any form, as they were, with
    /// the last refusal: to be tried again later.
    pub(crate) parked: Vec<(Entry, ParkedBecause)>,
}

/// A batch on its way to the database. [`write`](Self::write) may be
/// called again after it failed with [`WriteError::Unavailable`]: it goes
/// on from where it stopped.
#[derive(Debug, Default)]
pub(crate) struct BatchWrite {
    pub(crate) entries: Vec<Entry>,
    isolating: bool,
    report: Report,
}

impl BatchWrite {
    /// A batch of parked outcomes: written around row locks from the
    /// start, so that a lock still held costs no wait.
    pub(crate) fn retrying(entries: Vec<Entry>) -> Self {
        Self {
            entries,
            isolating: true,
            ..Self::default()
        }
    }

    pub(crate) fn push(&mut self, entry: Entry) {
        self.entries.push(entry);
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes every outcome it can; `Err` when the database went away
    /// (call again later). On success the batch is empty again and the
    /// report says what happened.
    pub(crate) async fn write<S: OutcomeStore>(&mut self, store: &mut S) -> Result<Report, String> {
        if !self.isolating {
            let outcomes: Vec<Outcome> = self.entries.iter().map(|e| e.outcome.clone()).collect();
            let settled = self.settled_claims();
            match store.write(&outcomes, &settled).await {
                Ok(rejected) => {
                    self.report.rejected = rejected;
                    return Ok(self.finish());
                }
                Err(WriteError::Unavailable(e)) => return Err(e),
                Err(WriteError::Refused(e)) => {
                    tracing::warn!(
                        error = %e,
                        outcomes = self.entries.len(),
                        "the database refused a batch of outcomes; writing them in parts to find the cause"
                    );
                    self.isolating = true;
                }
            }
        }
        self.isolate(store).await?;
        let settled = self.settled_claims();
        if !settled.is_empty() {
            store.write(&[], &settled).await.map_err(|e| match e {
                WriteError::Unavailable(e) | WriteError::Refused(e) => e,
            })?;
        }
        Ok(self.finish())
    }

    /// Claims whose last outcome is in the batch and not parked: before
    /// the first write all of them go with it; after isolation, those
    /// whose outcome was written.
    fn settled_claims(&self) -> Vec<i64> {
        self.entries
            .iter()
            .filter(|e| e.settles_claim && !matches!(e.state, EntryState::Parked(_)))
            .filter_map(|e| e.claim)
            .collect()
    }

    fn finish(&mut self) -> Report {
        self.isolating = false;
        let mut report = std::mem::take(&mut self.report);
        for mut entry in self.entries.drain(..) {
            if let EntryState::Parked(why) =
                std::mem::replace(&mut entry.state, EntryState::Unwritten)
            {
                report.parked.push((entry, why));
            }
        }
        report
    }

    /// Halves the unwritten outcomes until each refused one stands alone.
    async fn isolate<S: OutcomeStore>(&mut self, store: &mut S) -> Result<(), String> {
        let mut ranges = vec![(0, self.entries.len())];
        while let Some((start, end)) = ranges.pop() {
            let unwritten: Vec<usize> = (start..end)
                .filter(|&i| self.entries[i].state == EntryState::Unwritten)
                .collect();
            match unwritten.len() {
                0 => continue,
                1 => self.write_alone(store, unwritten[0]).await?,
                n => {
                    let outcomes: Vec<Outcome> = unwritten
                        .iter()
                        .map(|&i| self.entries[i].outcome.clone())
                        .collect();
                    match store.write_around_locks(&outcomes).await {
                        Ok(not_written) => self.settle(&unwritten, not_written),
                        Err(WriteError::Unavailable(e)) => return Err(e),
                        Err(WriteError::Refused(_)) => {
                            let mid = unwritten[n / 2];
                            ranges.push((mid, end));
                            ranges.push((start, mid));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Records what a write around locks did with the entries `indices`:
    /// written, turned away by the fence (written, as far as this batch
    /// goes), or parked because another transaction holds the row.
    fn settle(&mut self, indices: &[usize], not_written: NotWritten) {
        for &i in indices {
            let o = &self.entries[i].outcome;
            let locked = not_written
                .locked
                .iter()
                .any(|l| l.id == o.id && l.attempt == o.attempt);
            let entry = &mut self.entries[i];
            if locked {
                let since = *entry.locked_since.get_or_insert_with(Instant::now);
                entry.state = EntryState::Parked(ParkedBecause::Locked { since });
            } else {
                entry.state = EntryState::Written;
            }
        }
        self.report.rejected.extend(not_written.rejected);
    }

    /// One outcome the server refused as part of a group: tried again as
    /// it is, then with its message replaced by a note, then without one.
    async fn write_alone<S: OutcomeStore>(
        &mut self,
        store: &mut S,
        i: usize,
    ) -> Result<(), String> {
        let original = self.entries[i].outcome.clone();
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut refusal = String::new();
        for try_number in 1..=SINGLE_TRIES {
            match store
                .write_around_locks(std::slice::from_ref(&original))
                .await
            {
                Ok(not_written) => {
                    self.settle(&[i], not_written);
                    return Ok(());
                }
                Err(WriteError::Unavailable(e)) => return Err(e),
                Err(WriteError::Refused(e)) => refusal = e,
            }
            if try_number < SINGLE_TRIES {
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
        if !store.ping().await {
            // Not this outcome's fault after all.
            return Err(refusal);
        }
        let note = format!(
            "the attempt's error message could not be stored ({}); the worker's log has it",
            message::stored(&refusal.chars().take(500).collect::<String>())
        );
        let mut lesser = Vec::new();
        if original.output.is_some() {
            // The database refused the output (jobq checks what it can
            // before, but jsonb has limits of its own, such as nesting
            // depth): the attempt fails with the reason instead, like an
            // output refused before it was sent.
            lesser.push(Outcome {
                kind: jobq_diesel::OutcomeKind::Failed,
                message: Some(format!(
                    "the handler succeeded but the database refused its output ({})",
                    message::stored(&refusal.chars().take(500).collect::<String>())
                )),
                output: None,
                ..original.clone()
            });
        }
        if original.message.is_some() {
            lesser.push(Outcome {
                message: Some(note),
                ..original.clone()
            });
            lesser.push(Outcome {
                message: None,
                ..original.clone()
            });
        }
        for outcome in lesser {
            match store
                .write_around_locks(std::slice::from_ref(&outcome))
                .await
            {
                Ok(not_written) => {
                    if not_written.locked.is_empty() {
                        self.report
                            .degraded
                            .push((original.id, original.attempt, refusal));
                    }
                    self.settle(&[i], not_written);
                    return Ok(());
                }
                Err(WriteError::Unavailable(e)) => return Err(e),
                Err(WriteError::Refused(e)) => refusal = e,
            }
        }
        let entry = &mut self.entries[i];
        entry.state = EntryState::Parked(ParkedBecause::Refused(refusal));
        entry.locked_since = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use jobq_diesel::OutcomeKind;

    use super::*;

    /// Refuses any statement holding an outcome its rule refuses; records
    /// what it wrote.
    struct Fake {
        refuse: Box<dyn Fn(&Outcome) -> bool + Send>,
        /// Rows another transaction holds locked: a plain write waits for
        /// them until the lock timeout, one around locks skips them.
        locked: HashSet<i64>,
        down_for: u32,
        written: Vec<Outcome>,
        deleted_claims: Vec<i64>,
        statements: u32,
    }

    impl Fake {
        fn new(refuse: impl Fn(&Outcome) -> bool + Send + 'static) -> Self {
            Self {
                refuse: Box::new(refuse),
                locked: HashSet::new(),
                down_for: 0,
                written: Vec::new(),
                deleted_claims: Vec::new(),
                statements: 0,
            }
        }

        fn written_ids(&self) -> HashSet<i64> {
            self.written.iter().map(|o| o.id).collect()
        }
    }

    impl OutcomeStore for Fake {
        async fn write(
            &mut self,
            outcomes: &[Outcome],
            settled_claims: &[i64],
        ) -> Result<Vec<RejectedOutcome>, WriteError> {
            self.statements += 1;
            if self.down_for > 0 {
                self.down_for -= 1;
                return Err(WriteError::Unavailable("connection refused".into()));
            }
            if outcomes.iter().any(|o| self.locked.contains(&o.id)) {
                return Err(WriteError::Refused(
                    "canceling statement due to lock timeout".into(),
                ));
            }
            if outcomes.iter().any(|o| (self.refuse)(o)) {
                return Err(WriteError::Refused("invalid input".into()));
            }
            self.written.extend_from_slice(outcomes);
            self.deleted_claims.extend_from_slice(settled_claims);
            Ok(Vec::new())
        }

        async fn write_around_locks(
            &mut self,
            outcomes: &[Outcome],
        ) -> Result<NotWritten, WriteError> {
            let (locked, free): (Vec<&Outcome>, Vec<&Outcome>) =
                outcomes.iter().partition(|o| self.locked.contains(&o.id));
            let free: Vec<Outcome> = free.into_iter().cloned().collect();
            self.write(&free, &[]).await?;
            Ok(NotWritten {
                rejected: Vec::new(),
                locked: locked
                    .into_iter()
                    .map(|o| RejectedOutcome {
                        id: o.id,
                        attempt: o.attempt,
                    })
                    .collect(),
            })
        }

        async fn ping(&mut self) -> bool {
            self.down_for == 0
        }
    }

    fn failed(id: i64, message: &str) -> Entry {
        Entry::new(
            Outcome {
                id,
                attempt: 1,
                kind: OutcomeKind::Failed,
                message: Some(message.into()),
                output: None,
            },
            Some(id / 10),
            id % 10 == 9,
        )
    }

    fn batch(n: i64) -> BatchWrite {
        let mut b = BatchWrite::default();
        for id in 0..n {
            b.push(failed(id, "boom"));
        }
        b
    }

    #[tokio::test]
    async fn a_healthy_batch_is_one_statement() {
        let mut store = Fake::new(|_| false);
        let mut b = batch(20);
        let report = b.write(&mut store).await.unwrap();
        assert!(
            report.rejected.is_empty() && report.degraded.is_empty() && report.parked.is_empty()
        );
        assert_eq!(store.statements, 1);
        assert_eq!(store.written.len(), 20);
        assert_eq!(store.deleted_claims, [0, 1]);
        assert!(b.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_message_is_replaced_by_a_note_and_the_rest_is_written() {
        let mut store = Fake::new(|o| o.id == 7 && o.message.as_deref() == Some("boom"));
        let mut b = batch(20);
        let report = b.write(&mut store).await.unwrap();
        assert_eq!(store.written_ids(), (0..20).collect());
        let seven = store.written.iter().find(|o| o.id == 7).unwrap();
        assert!(
            seven
                .message
                .as_deref()
                .unwrap()
                .starts_with("the attempt's error message could not be stored (invalid input)"),
            "{seven:?}"
        );
        assert_eq!(report.degraded.len(), 1);
        assert!(report.parked.is_empty());
        // Its claim settles once everything is written.
        assert_eq!(store.deleted_claims, [0, 1]);
        // Bisection, not one statement per outcome.
        assert!(store.statements < 20, "{} statements", store.statements);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_output_fails_its_attempt_and_the_rest_of_the_batch_is_written() {
        let mut store = Fake::new(|o| o.output.is_some() && o.id == 4);
        let mut b = BatchWrite::default();
        for id in 0..10 {
            b.push(Entry::new(
                Outcome {
                    id,
                    attempt: 1,
                    kind: OutcomeKind::Completed,
                    message: None,
                    output: Some(format!("{{\"n\":{id}}}")),
                },
                Some(0),
                id == 9,
            ));
        }
        let report = b.write(&mut store).await.unwrap();
        assert_eq!(store.written_ids(), (0..10).collect());
        let four = store.written.iter().find(|o| o.id == 4).unwrap();
        assert_eq!(four.kind, OutcomeKind::Failed);
        assert_eq!(four.output, None);
        assert!(
            four.message.as_deref().unwrap().starts_with(
                "the handler succeeded but the database refused its output (invalid input)"
            ),
            "{four:?}"
        );
        let others = store.written.iter().filter(|o| o.id != 4);
        assert!(others
            .into_iter()
            .all(|o| o.kind == OutcomeKind::Completed && o.output.is_some()));
        assert_eq!(report.degraded.len(), 1);
        assert!(report.parked.is_empty());
        assert_eq!(store.deleted_claims, [0]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_refused_even_as_a_note_is_dropped_and_the_outcome_written() {
        let mut store = Fake::new(|o| o.id == 3 && o.message.is_some());
        let mut b = batch(10);
        b.write(&mut store).await.unwrap();
        let three = store.written.iter().find(|o| o.id == 3).unwrap();
        assert_eq!(three.message, None);
        assert_eq!(three.kind, OutcomeKind::Failed);
        assert_eq!(store.written.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn an_outcome_refused_whatever_it_holds_is_parked_as_it_was_with_its_claim() {
        let refuse = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let refusing = refuse.clone();
        let mut store =
            Fake::new(move |o| o.id == 19 && refusing.load(std::sync::atomic::Ordering::SeqCst));
        let mut b = batch(20);
        let mut report = b.write(&mut store).await.unwrap();
        assert_eq!(store.written_ids(), (0..19).collect());
        assert_eq!(report.parked.len(), 1);
        let (parked, why) = report.parked.pop().unwrap();
        assert_eq!(why, ParkedBecause::Refused("invalid input".into()));
        assert_eq!(parked.outcome.id, 19);
        assert_eq!(
            parked.outcome.message.as_deref(),
            Some("boom"),
            "kept as it was"
        );
        // Claim 1's last job is parked: its row stays until it is written.
        assert_eq!(store.deleted_claims, [0]);
        // Tried again later, once the database accepts it.
        refuse.store(false, std::sync::atomic::Ordering::SeqCst);
        let mut again = BatchWrite::default();
        again.push(parked);
        let report = again.write(&mut store).await.unwrap();
        assert!(report.parked.is_empty());
        assert_eq!(store.written.len(), 20);
        assert_eq!(store.deleted_claims, [0, 1]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_that_passes_writes_the_outcome_as_it_was() {
        // Refused twice (say, a lock timeout), then accepted.
        let refusals = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let seen = refusals.clone();
        let mut store = Fake::new(move |o| {
            o.id == 5 && seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < 3
        });
        let mut b = batch(10);
        let report = b.write(&mut store).await.unwrap();
        let five = store.written.iter().find(|o| o.id == 5).unwrap();
        assert_eq!(five.message.as_deref(), Some("boom"));
        assert!(report.degraded.is_empty());
        assert_eq!(store.written.len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn when_the_database_goes_away_the_write_resumes_where_it_stopped() {
        let mut store = Fake::new(|o| o.id == 2 && o.message.as_deref() == Some("boom"));
        let mut b = batch(10);
        // Refused once as a whole, then the database is away for a while.
        store.down_for = 0;
        let first = store.write(&[b.entries[2].outcome.clone()], &[]).await;
        assert!(matches!(first, Err(WriteError::Refused(_))));
        store.down_for = 2;
        assert!(b.write(&mut store).await.is_err());
        assert!(b.write(&mut store).await.is_err());
        let report = b.write(&mut store).await.unwrap();
        assert_eq!(report.degraded.len(), 1);
        // Nothing written twice.
        assert_eq!(store.written.len(), 10);
        assert_eq!(store.written_ids().len(), 10);
    }

    #[tokio::test(start_paused = true)]
    async fn a_locked_row_parks_its_outcome_alone_at_once_and_costs_no_wait_later() {
        let mut store = Fake::new(|_| false);
        store.locked.insert(4);
        let mut b = batch(10);
        let mut report = b.write(&mut store).await.unwrap();
        assert_eq!(store.written_ids(), (0..10).filter(|&i| i != 4).collect());
        assert!(report.degraded.is_empty(), "a lock is not the data's fault");
        let (parked, why) = report.parked.pop().unwrap();
        let ParkedBecause::Locked { since: first_found } = why else {
            panic!("{why:?}")
        };
        assert_eq!(parked.outcome.message.as_deref(), Some("boom"));
        // The whole batch, one statement around the locks (no bisection,
        // no single tries), and the settled claims.
        assert_eq!(store.statements, 3);
        // Tried again while still locked: parked again, without a plain
        // write that would wait for the lock.
        let mut retry = BatchWrite::retrying(vec![parked]);
        let statements = store.statements;
        tokio::time::advance(Duration::from_secs(3)).await;
        let report = retry.write(&mut store).await.unwrap();
        assert_eq!(report.parked.len(), 1);
        assert_eq!(store.statements, statements + 1);
        // Locked since the first write that found it so.
        assert_eq!(
            report.parked[0].1,
            ParkedBecause::Locked { since: first_found }
        );
        // Once the lock is gone, it is written as it was.
        store.locked.clear();
        let (parked, _) = report.parked.into_iter().next().unwrap();
        let mut retry = BatchWrite::retrying(vec![parked]);
        assert!(retry.write(&mut store).await.unwrap().parked.is_empty());
        assert_eq!(store.written.len(), 10);
    }
}
