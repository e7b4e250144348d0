//! `rtt`: issue 16's `latency` figure (the name `latency` belongs to the
//! idle pickup scenario of `all`): the drain of `--jobs` no-op jobs by one
//! worker process that sits `--rtt-ms` of round trip away from the
//! database, against the same drain with the worker beside it, in the
//! same run. (Issue 16: ≥ 0.5.)
//!
//! The bench puts the distant worker in a network namespace of its own,
//! joined to the host by a veth pair, and removes both at the end, also
//! on error ([`crate::netns`]). Half the round trip is added in each
//! direction by `tc ... netem` on both ends of the link; where the kernel
//! lacks netem (this machine's does), by the relay the namespace reaches
//! the database through ([`crate::delay_proxy`]), whose round trip the
//! scenario measures and reports. Without root or `ip`/`tc` the scenario
//! says so in one line and fails.
//!
//! Both drains are timed by the rows' own timestamps, as in `drain`.

use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::db;
use crate::delay_proxy::{target_of, url_via, DelayProxy};
use crate::netns::{missing_prerequisite, Namespace};
use crate::report::BenchResult;
use crate::scenario::drain::enqueue_noops;
use crate::windows::median;
use crate::worker::Workers;

/// Round trips timed through the relay.
const PINGS: usize = 50;

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== rtt");
    if let Some(missing) = missing_prerequisite() {
        anyhow::bail!(missing);
    }
    let one_way = options.rtt_ms / 2.0;
    let ns = Namespace::create(one_way)?;

    let local = drain(options.jobs, None).await?.rate;
    println!("   worker beside the database: {local:.0} jobs/s");

    let relay_delay = if ns.netem {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(one_way / 1000.0)
    };
    let distant = drain(options.jobs, Some((&ns, relay_delay))).await?;
    println!(
        "   worker {} ms away: {:.0} jobs/s",
        options.rtt_ms, distant.rate
    );
    let delay_by = if ns.netem { "netem" } else { "relay" };
    Ok(vec![BenchResult {
        jobs_per_sec: Some(distant.rate),
        limit_jobs_per_sec: Some(local),
        ..BenchResult::new(
            "rtt",
            format!(
                "{} no-op jobs, 1 worker {} ms RTT away ({delay_by})",
                options.jobs, options.rtt_ms
            ),
        )
    }
    .extra("ratio_to_local", distant.rate / local.max(1e-9))
    .extra("local_jobs_per_sec", local)
    .extra("rtt_ms_asked", options.rtt_ms)
    .extra("rtt_ms_measured_p50", distant.measured_rtt_ms)
    .extra("delay_by", delay_by)
    .extra("load_average", crate::cpu::load_average())
    .emit()])
}

/// The distant drain's figures.
struct Distant {
    rate: f64,
    /// Median `SELECT 1` round trip through the relay, where the relay
    /// makes the delay (with netem, the host does not see it).
    measured_rtt_ms: Option<f64>,
}

/// Drains `jobs` no-op jobs with one worker process in a fresh database,
/// beside it (`None`) or in the namespace through a relay delaying each
/// direction by the given time. Jobs per second.
async fn drain(jobs: usize, away: Option<(&Namespace, Duration)>) -> anyhow::Result<Distant> {
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    enqueue_noops(&url, jobs).await?;
    let mut measured_rtt_ms = None;
    // The relay lives until the drain is over.
    let _relay = match away {
        None => {
            Workers::start(&url, 1, true)?.stop().await?;
            None
        }
        Some((ns, delay)) => {
            let listen = format!("{}:0", ns.host_ip).parse()?;
            let relay = DelayProxy::start(listen, target_of(&url)?, delay)?;
            let via = url_via(&url, relay.addr)?;
            if !delay.is_zero() {
                measured_rtt_ms = Some(round_trip_ms(&via).await?);
            }
            Workers::start_wrapped(&ns.exec_prefix(), &via, 1, true, &[])?
                .stop()
                .await?;
            Some(relay)
        }
    };
    let mut conn = db::connect(&url).await?;
    let rate = db::drained_rate(&mut conn, "rtt", jobs).await?;
    Ok(Distant {
        rate,
        measured_rtt_ms,
    })
}

/// Median round trip of `SELECT 1` on `url`, ms.
async fn round_trip_ms(url: &str) -> anyhow::Result<f64> {
    let mut conn = db::connect(url).await?;
    let mut times = Vec::with_capacity(PINGS);
    for _ in 0..PINGS {
        let t = Instant::now();
        db::exec(&mut conn, "SELECT 1").await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    Ok(median(&times))
}
