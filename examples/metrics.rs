//! jobq's metrics served to Prometheus: a worker running a steady trickle
//! of jobs (some retried, some failing for good) with the
//! `metrics-exporter-prometheus` exporter listening on 127.0.0.1.
//!
//! ```text
//! cargo run --example metrics --features metrics
//! curl -s http://127.0.0.1:9000/metrics | grep jobq_
//! ```
//!
//! The port is `JOBQ_METRICS_PORT` (9000 by default). With `DATABASE_URL`
//! set, it works in a fresh database on that server; without it, on a
//! throwaway PostgreSQL started from the binaries installed on this
//! machine. Either way it leaves nothing behind. Stop it with Ctrl-C.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use jobq::{EnqueueOptions, TaskError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Resize {
    image: u64,
}

/// Takes a few milliseconds; one image in ten fails its first attempt and
/// one in fifty every attempt.
#[jobq::task(concurrency = 4, retry = "100ms", max_attempts = 2)]
async fn resize(ctx: jobq::Context, job: Resize) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(fastrand::u64(1..20))).await;
    if job.image % 50 == 0 {
        return Err(TaskError::msg("corrupt image"));
    }
    if job.image % 10 == 0 && ctx.attempt() == 1 {
        return Err(TaskError::msg("storage busy"));
    }
    Ok(())
}

// `pub`: tests/examples.rs runs this very program as its child.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=error")),
        )
        .init();

    let port = match std::env::var("JOBQ_METRICS_PORT") {
        Ok(port) => port
            .parse::<u16>()
            .map_err(|e| format!("JOBQ_METRICS_PORT={port:?}: {e}"))?,
        Err(_) => 9000,
    };
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    // Histograms as buckets (the exporter's default is a summary); jobq's
    // are all in seconds.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0, 120.0],
        )?
        .install()?;
    println!("metrics on http://{addr}/metrics");

    let db = jobq_testkit::TestDatabase::create().await?;
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;

    let worker = jobq::Worker::builder()
        .database_url(db.url())
        .build()
        .await?
        .spawn();

    // A few jobs every 100 ms, some of them delayed, until Ctrl-C.
    let mut image = 0u64;
    let mut ticker = tokio::time::interval(Duration::from_millis(100));
    // Made once: a Ctrl-C while jobs are being enqueued is not lost.
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        for _ in 0..fastrand::u64(1..6) {
            image += 1;
            let options = if image % 7 == 0 {
                EnqueueOptions::new().delay(Duration::from_secs(2))
            } else {
                EnqueueOptions::new()
            };
            resize::enqueue_with(&mut conn, &Resize { image }, options).await?;
        }
    }
    println!("stopping after {image} jobs");
    worker.shutdown().await?;
    Ok(())
}
