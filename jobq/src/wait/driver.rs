//! The waiter's one task: owns the LISTEN connection, turns notifications,
//! new waits and the fallback poll into look-ups, resolves waits, and
//! reconnects with backoff.
//!
//! No wake-up is lost: a new wait is looked up once after it registered
//! (so a job that finished before, or while its notification was being
//! handled, is found); after every (re)connection every waited id is
//! looked up (whatever finished while nobody listened); and the poll looks
//! at every waited id now and then (a notification lost some other way).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jobq_diesel::{Connector, FinishedListener, ListenerError, Pool};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::finish::Finish;
use super::waits::Waits;
use crate::worker::backoff::Backoff;
use crate::worker::error_text::error_chain;

const FIRST_RECONNECT_DELAY: Duration = Duration::from_millis(100);
const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);
/// A look-up that takes longer means the connection hangs (a half-open
/// TCP connection): reconnect.
const LOOK_UP_TIMEOUT: Duration = Duration::from_secs(30);

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
    /// Ids of new waits, for their first look-up.
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
    pub(crate) source: Source,
    pub(crate) poll_interval: Duration,
    pub(crate) stop: CancellationToken,
}

impl Driver {
    /// Runs until `stop` is cancelled (the last `Waiter` handle dropped).
    pub(crate) async fn run(mut self, connected: FinishedListener) {
        let mut listener = Some(connected);
        let mut backoff = Backoff::new(FIRST_RECONNECT_DELAY, MAX_RECONNECT_DELAY);
        let mut poll = tokio::time::interval_at(
            tokio::time::Instant::now() + self.poll_interval,
            self.poll_interval,
        );
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                        // New waits are covered by the look-up of all.
                        while self.fresh.try_recv().is_ok() {}
                        let all = self.shared.waits.unresolved();
                        if self.look_up(&mut conn, all).await {
                            listener = Some(conn);
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
            let ids = tokio::select! {
                () = self.stop.cancelled() => return,
                next = conn.next() => match next {
                    Some(Ok(ids)) => self.shared.waits.unresolved_among(ids),
                    Some(Err(e)) => {
                        self.lost(error_chain(&e));
                        listener = None;
                        continue;
                    }
                    None => {
                        self.lost("the connection closed".to_owned());
                        listener = None;
                        continue;
                    }
                },
                Some(first) = self.fresh.recv() => {
                    let mut ids = vec![first];
                    while let Ok(id) = self.fresh.try_recv() {
                        ids.push(id);
                    }
                    self.shared.waits.unresolved_among(ids)
                }
                _ = poll.tick() => self.shared.waits.unresolved(),
            };
            if !self.look_up(conn, ids).await {
                listener = None;
            }
        }
    }

    fn lost(&self, reason: String) {
        tracing::warn!(error = %reason, "waiter: LISTEN connection lost; reconnecting");
        self.shared.set_down(Some(reason));
    }

    /// Looks `ids` up and resolves those that ended or do not exist.
    /// `false` when the connection failed.
    async fn look_up(&self, conn: &mut FinishedListener, mut ids: Vec<i64>) -> bool {
        if ids.is_empty() {
            return true;
        }
        ids.sort_unstable();
        ids.dedup();
        let rows = match tokio::time::timeout(LOOK_UP_TIMEOUT, conn.look_up(&ids)).await {
            Ok(Ok(rows)) => rows,
            Ok(Err(e)) => {
                self.lost(format!(
                    "looking up waited jobs failed: {}",
                    error_chain(&e)
                ));
                return false;
            }
            Err(_) => {
                self.lost(format!(
                    "looking up waited jobs took over {LOOK_UP_TIMEOUT:?}"
                ));
                return false;
            }
        };
        let mut found: HashMap<i64, _> = rows.into_iter().map(|row| (row.id, row)).collect();
        for id in ids {
            match found.remove(&id) {
                Some(row) if row.is_finished() => {
                    self.shared.waits.resolve(id, Finish::Ended(row));
                }
                Some(_) => {}
                None => self.shared.waits.resolve(id, Finish::NotFound),
            }
        }
        true
    }
}
