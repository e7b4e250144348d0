//! The listener loop: turns notifications into wake-ups and cancellations,
//! and reconnects by itself when the connection drops.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use jobq_diesel::{Listener, Notification};

use super::state::{lock, Shared};

const MAX_RECONNECT_DELAY: Duration = Duration::from_secs(5);

pub(crate) async fn run(shared: Arc<Shared>) {
    let mut delay = Duration::from_millis(100);
    let mut connected_before = false;
    loop {
        let mut listener = match Listener::connect(&shared.pool).await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::warn!(error = %error_chain(&e), retry_in = ?delay, "LISTEN connection failed; polling meanwhile");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                continue;
            }
        };
        if connected_before {
            tracing::info!("LISTEN connection re-established");
        }
        connected_before = true;
        delay = Duration::from_millis(100);
        // Anything committed while we were not listening sent its
        // notification to nobody: look once now.
        shared.wake.notify_one();
        loop {
            match listener.next().await {
                Some(Ok(notification)) => handle(&shared, notification),
                Some(Err(e)) => {
                    tracing::warn!(error = %error_chain(&e), "LISTEN connection lost; reconnecting");
                    break;
                }
                None => {
                    tracing::warn!("LISTEN connection closed; reconnecting");
                    break;
                }
            }
        }
    }
}

fn handle(shared: &Shared, notification: Notification) {
    match notification {
        Notification::Jobs { queue, due_at_ms } => {
            if !shared.serves_queue(&queue) {
                return;
            }
            match due_at_ms.and_then(instant_of_epoch_ms) {
                Some(at) => shared.schedule_wake(at),
                None => shared.wake.notify_one(),
            }
        }
        Notification::Cancel { job_id } => {
            if let Some(job) = lock(&shared.in_flight).get(&job_id) {
                tracing::info!(job.id = job_id, "cancellation requested");
                job.cancel.cancel();
            }
        }
    }
}

/// The local instant of a database timestamp; `None` when it is already
/// past (then the job is due now).
fn instant_of_epoch_ms(ms: i64) -> Option<Instant> {
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .ok()?
        .as_millis();
    let ahead = u64::try_from(i128::from(ms) - i128::try_from(now_ms).ok()?).ok()?;
    Some(Instant::now() + Duration::from_millis(ahead))
}

pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
