//! The bench's task definitions.
//!
//! The no-op task runs with `concurrency = 1000`. Concurrency is a task
//! attribute, i.e. the user's own code; for a task that does no I/O the
//! sensible choice is as many in flight as one claim statement should
//! take, because the claim asks for exactly the free slots: with the
//! library's default of 10, every claim round trip (and commit) would fetch
//! at most 10 jobs and the benchmark would measure round trips, not jobq.
//! 1000 also matches the batch of the minimal SQL loop and the completer's
//! outcome batch, so both sides move jobs in the same unit.

use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// The tasks a worker of the bench serves unless told otherwise: the
/// binary also holds the `tasks` scenario's hundred ([`crate::spread`]),
/// which the other scenarios' workers must not claim for.
pub const BASE_TASKS: [&str; 3] = ["bench.noop", "bench.probe", "bench.timed"];

/// Payload of the no-op task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Noop {
    /// Sequence number, so payloads differ like real ones.
    pub n: u64,
}

/// `count` payloads numbered on from `*next`, which advances past them.
pub fn noops(next: &mut u64, count: usize) -> Vec<Noop> {
    (0..count)
        .map(|_| {
            *next += 1;
            Noop { n: *next }
        })
        .collect()
}

/// Does nothing.
#[jobq::task(name = "bench.noop", concurrency = 1000)]
pub async fn noop(job: Noop) -> Result<(), jobq::TaskError> {
    let _ = job.n;
    Ok(())
}

/// Payload of the latency probe.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Probe {
    /// Index of the sample.
    pub n: usize,
}

/// Handler start times of probes, recorded by [`probe()`] in the process
/// that also enqueues them (the `latency` scenario runs its worker
/// in-process, so both sides read the same monotonic clock).
pub static PROBE_STARTS: Mutex<Vec<(usize, Instant)>> = Mutex::new(Vec::new());

/// Records when its handler started.
#[jobq::task(name = "bench.probe", concurrency = 10)]
pub async fn probe(job: Probe) -> Result<(), jobq::TaskError> {
    let now = Instant::now();
    PROBE_STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((job.n, now));
    Ok(())
}

/// Task name of [`timed()`].
pub const TIMED: &str = "bench.timed";

/// Payload of the timed task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Timed {
    /// Index of the sample.
    pub n: u64,
}

/// Handler start times of [`timed()`] jobs in this process.
pub static TIMED_STARTS: Mutex<Vec<(u64, Instant)>> = Mutex::new(Vec::new());

/// Records when its handler started; as many in flight as the no-op task,
/// so the `scheduled` scenario can both time single jobs and drain a
/// backlog with one task (whose claims then meet the future-dated rows).
#[jobq::task(name = "bench.timed", concurrency = 1000)]
pub async fn timed(job: Timed) -> Result<(), jobq::TaskError> {
    let now = Instant::now();
    TIMED_STARTS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push((job.n, now));
    Ok(())
}

/// Task name of [`hold()`].
pub const HOLD: &str = "bench.hold";

/// Payload of the holding task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hold {
    /// How long the job stays running, in ms.
    pub ms: u64,
}

/// Stays running for `ms`, so that the `restart` scenario sees which
/// worker holds it (a running job's row names its worker).
#[jobq::task(name = "bench.hold", concurrency = 10)]
pub async fn hold(job: Hold) -> Result<(), jobq::TaskError> {
    tokio::time::sleep(std::time::Duration::from_millis(job.ms)).await;
    Ok(())
}

/// A no-op under a fleet-wide limit that does not bind (two worker
/// processes of 1000 slots each never hold more than 2000): what the
/// limited claim path itself costs.
#[jobq::task(name = "bench.global", concurrency = 1000, global_concurrency = 2000)]
pub async fn global_noop(job: Noop) -> Result<(), jobq::TaskError> {
    let _ = job.n;
    Ok(())
}

/// A no-op under a rate limit far above what the workers achieve, with a
/// burst of a claim batch (a claim takes at most `burst + 1` jobs): what
/// spending tokens in the claim costs.
#[jobq::task(
    name = "bench.rated",
    concurrency = 1000,
    rate = "1000000/s",
    burst = 1000
)]
pub async fn rated_noop(job: Noop) -> Result<(), jobq::TaskError> {
    let _ = job.n;
    Ok(())
}

/// A no-op whose jobs run one at a time per partition key.
#[jobq::task(name = "bench.keyed", concurrency = 1000, key_concurrency = 1)]
pub async fn keyed_noop(job: Noop) -> Result<(), jobq::TaskError> {
    let _ = job.n;
    Ok(())
}

/// Task name of [`square()`].
pub const SQUARE: &str = "bench.square";

/// Returns its payload squared: a task with a typed output, for the
/// `await` scenario's waits to decode.
#[jobq::task(name = "bench.square", concurrency = 1000)]
pub async fn square(job: Noop) -> Result<u64, jobq::TaskError> {
    Ok(job.n.wrapping_mul(job.n))
}
