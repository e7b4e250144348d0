//! The waiter's one task: owns the LISTEN connection, registers waited
//! ids in `jobq.awaited` (only those are announced) and removes them when
//! their waits end, turns notifications, new waits and the fallback poll
//! into look-ups, resolves waits, and reconnects with backoff.
//!
//! No wake-up is lost: a new wait is registered in the database and then
//! looked up (so a job that finished before is found, and one that
//! finishes later is announced); a job whose outcome may have been
//! written just before the registration committed (an unsettled row) is
//! looked at again shortly ([`Rechecks`]); after every (re)connection the
//! waiter's registrations are written again and every waited id is looked
//! up (whatever finished while nobody listened); and the poll looks at
//! every waited id now and then (a notification lost some other way).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobq_diesel::{Connector, FinishedListener, ListenerError, Pool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::finish::Finish;
use super::recheck::Rechecks;
use super::waits::Waits;
use crate::worker::backoff::Backoff;
use crate::worker::error_text::error_chain;

const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// A look-up that takes longer means the connection hangs (a half-open
/// TCP connection): reconnect.
const LOOK_UP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a dropped Waiter tries to remove its registrations (its
/// connection closes right after, and maintenance removes whatever is
/// left: see `jobq_diesel::clean_awaited`).
const GOODBYE_TIMEOUT: Duration = Duration::from_secs(1);

/// Where the waiter's connection comes from.
#[derive(Clone)]
pub(crate) enum Source {
    /// A dedicated connection of the application's pool.
    Pool(Pool),
    /// A connection of its own.
    Connector(Box<Connector>),
}

impl Source {
    pub(crate) async fn connect(&self) -> Result<FinishedListener, ListenerError> {
        match self {
            Source::Pool(pool) => FinishedListener::connect(pool).await,
            Source::Connector(connector) => FinishedListener::connect_with(connector).await,
        }
    }
}

/// What the waits and the driver share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) waits: Arc<Waits>,
    /// Ids of new waits, to register and look up.
    pub(crate) fresh: mpsc::UnboundedSender<i64>,
    /// Why the connection is down; `None` while it is up.
    pub(crate) down: Mutex<Option<String>>,
}

impl Shared {
    pub(crate) fn down_reason(&self) -> Option<String> {
        self.down.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_down(&self, reason: Option<String>) {
        *self.down.lock().unwrap_or_else(|p| p.into_inner()) = reason;
    }
}

pub(crate) struct Driver {
    pub(crate) shared: Arc<Shared>,
    pub(crate) fresh: mpsc::UnboundedReceiver<i64>,
    /// Ids whose last wait ended, to deregister.
    pub(crate) gone: mpsc::UnboundedReceiver<i64>,
    pub(crate) source: Source,
    pub(crate) poll_interval: Duration,
    pub(crate) stop: CancellationToken,
    /// This Waiter's name in `jobq.awaited` (random, drawn once).
    pub(crate) waiter: i64,
}

/// Why a step on the connection failed: the connection is taken as lost.
struct Lost;

impl Driver {
    /// Runs until `stop` is cancelled (the last `Waiter` handle dropped),
    /// then removes this waiter's registrations, if it can.
    pub(crate) async fn run(mut self, connected: FinishedListener) {
        let mut listener = Some(connected);
        self.serve(&mut listener).await;
        if let Some(conn) = listener.as_mut() {
            if let Ok(Err(e)) =
                tokio::time::timeout(GOODBYE_TIMEOUT, conn.deregister_all(self.waiter)).await
            {
                tracing::debug!(error = %e, "waiter: removing its registrations failed");
            }
        }
    }

    async fn serve(&mut self, listener: &mut Option<FinishedListener>) {
        let mut backoff = Backoff::new(FIRST_RECONNECT_DELAY, MAX_RECONNECT_DELAY);
        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + self.poll_interval,
            self.poll_interval,
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rechecks = Rechecks::new(self.poll_interval);
        loop {
            let Some(conn) = listener.as_mut() else {
                let connected = tokio::select! {
                    () = self.stop.cancelled() => return,
                    connected = self.source.connect() => connected,
                };
                match connected {
                    Ok(mut conn) => {
                        tracing::info!("waiter: LISTEN connection re-established");
                        self.shared.set_down(None);
                        backoff.reset();
                        // New and ended waits are covered by registering
                        // and looking up all that are waited now.
                        while self.fresh.try_recv().is_ok() {}
                        while self.gone.try_recv().is_ok() {}
                        rechecks.clear();
                        if let Ok(unsettled) = self.reregister(&mut conn).await {
                            rechecks.add(tokio::time::Instant::now(), unsettled);
                            *listener = Some(conn);
                        }
                    }
                    Err(e) => {
                        let reason = error_chain(&e);
                        let retry_in = backoff.next_delay();
                        tracing::warn!(error = %reason, ?retry_in, "waiter: connecting failed");
                        self.shared.set_down(Some(reason));
                        tokio::select! {
                            () = self.stop.cancelled() => return,
                            () = tokio::time::sleep(retry_in) => {}
                        }
                    }
                }
                continue;
            };
            let recheck_at = rechecks.due_at();
            let step = tokio::select! {
                biased;
                () = self.stop.cancelled() => return,
                next = conn.next() => match next {
                    Some(Ok(ids)) => {
                        let ids = self.shared.waits.unresolved_among(ids);
                        self.look_up(conn, ids).await
                    }
                    Some(Err(e)) => {
                        self.lost(error_chain(&e));
                        Err(Lost)
                    }
                    None => {
                        self.lost("the connection closed".to_owned());
                        Err(Lost)
                    }
                },
                Some(first) = self.fresh.recv() => {
                    let ids = drain(first, &mut self.fresh);
                    let ids = self.shared.waits.unresolved_among(ids);
                    self.register(conn, ids).await
                }
                () = sleep_until(recheck_at) => {
                    let ids = rechecks.take();
                    let ids = self.shared.waits.unresolved_among(ids);
                    // Those still unsettled keep backing off.
                    self.look_up(conn, ids).await.map(|unsettled| {
                        rechecks.again(tokio::time::Instant::now(), unsettled);
                        Vec::new()
                    })
                }
                _ = poll.tick() => {
                    let ids = self.shared.waits.unresolved();
                    self.look_up(conn, ids).await
                }
                // Last: removing registrations is never urgent (an extra
                // notification is all a stale one costs), so it waits
                // while notifications, new waits and look-ups are due.
                Some(first) = self.gone.recv() => {
                    let ids = drain(first, &mut self.gone);
                    let ids = self.shared.waits.unwaited_among(ids);
                    self.deregister(conn, ids).await.map(|()| Vec::new())
                }
            };
            match step {
                Ok(unsettled) => rechecks.add(tokio::time::Instant::now(), unsettled),
                Err(Lost) => *listener = None,
            }
        }
    }

    fn lost(&self, reason: String) {
        tracing::warn!(error = %reason, "waiter: LISTEN connection lost; reconnecting");
        self.shared.set_down(Some(reason));
    }

    /// On a new connection: drops this waiter's old registrations (made
    /// on a connection that is gone), registers every id still waited
    /// for, and looks them all up.
    async fn reregister(&self, conn: &mut FinishedListener) -> Result<Vec<i64>, Lost> {
        self.on_connection(
            "removing the waiter's old registrations",
            conn.deregister_all(self.waiter),
        )
        .await?;
        let all = self.shared.waits.unresolved();
        self.register(conn, all).await
    }

    /// Registers `ids`, then looks them up: in this order, so that a job
    /// finishing after the look-up is announced to this waiter. Returns
    /// the unsettled ones.
    async fn register(
        &self,
        conn: &mut FinishedListener,
        mut ids: Vec<i64>,
    ) -> Result<Vec<i64>, Lost> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort_unstable();
        ids.dedup();
        self.on_connection("registering waited jobs", conn.register(self.waiter, &ids))
            .await?;
        self.look_up(conn, ids).await
    }

    /// Removes the registrations of `ids`, whose waits all ended.
    async fn deregister(&self, conn: &mut FinishedListener, ids: Vec<i64>) -> Result<(), Lost> {
        if ids.is_empty() {
            return Ok(());
        }
        self.on_connection(
            "removing the registrations of ended waits",
            conn.deregister(self.waiter, &ids),
        )
        .await
    }

    /// Runs `step` on the connection with [`LOOK_UP_TIMEOUT`]; a failure
    /// or a hang is a lost connection.
    async fn on_connection<T>(
        &self,
        what: &str,
        step: impl std::future::Future<Output = diesel::QueryResult<T>>,
    ) -> Result<T, Lost> {
        match tokio::time::timeout(LOOK_UP_TIMEOUT, step).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                self.lost(format!("{what} failed: {}", error_chain(&e)));
                Err(Lost)
            }
            Err(_) => {
                self.lost(format!("{what} took over {LOOK_UP_TIMEOUT:?}"));
                Err(Lost)
            }
        }
    }

    /// Looks `ids` up, resolves those that ended or do not exist, and
    /// returns the unsettled ones.
    async fn look_up(
        &self,
        conn: &mut FinishedListener,
        mut ids: Vec<i64>,
    ) -> Result<Vec<i64>, Lost> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        ids.sort_unstable();
        ids.dedup();
        let rows = self
            .on_connection("looking up waited jobs", conn.look_up(&ids))
            .await?;
        let mut found: HashMap<i64, _> = rows.into_iter().map(|row| (row.id, row)).collect();
        let mut unsettled = Vec::new();
        for id in ids {
            match found.remove(&id) {
                Some(row) if row.is_finished() => {
                    self.shared.waits.resolve(id, Finish::Ended(row));
                }
                Some(row) if row.unsettled => unsettled.push(id),
                Some(_) => {}
                None => self.shared.waits.resolve(id, Finish::NotFound),
            }
        }
        Ok(unsettled)
    }
}

/// `first` and whatever else is queued in `rx`.
fn drain(first: i64, rx: &mut mpsc::UnboundedReceiver<i64>) -> Vec<i64> {
    let mut ids = vec![first];
    while let Ok(id) = rx.try_recv() {
        ids.push(id);
    }
    ids
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
