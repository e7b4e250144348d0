//! `pinned`: a snapshot held open for `--minutes` while producers enqueue
//! at `--rate` (default 1,000 jobs/s) and one worker process (default
//! settings) runs the jobs. (Issue 16: pickup p50 within 2× of the clean
//! phase, throughput holding, and back to baseline within 60 s of the
//! release.)
//!
//! Three phases on one database: clean ([`CLEAN`]), pinned (another
//! connection runs `BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT
//! txid_current();` and keeps the transaction open for `--minutes`, as a
//! forgotten `BEGIN` or a long report would: no row version deleted or
//! replaced after it can be vacuumed away), and released ([`RELEASED`],
//! after its `COMMIT`). Pickup latency is `started_at - created_at`, both
//! set by the server; a job belongs to the phase it was created in.
//! Throughput is the jobs finished within each phase by `finished_at`.
//! Every 5 s the bench collects the jobs finished up to a second ago
//! (retention prunes them only a minute after they finish) and samples the
//! jobs table (size, dead tuples) and the claim index's size: pgstattuple
//! is not installed, so the index's dead entries show as its growth (it
//! indexes only the few pending jobs).
//!
//! The recovery figure is the time from the release to the end of the
//! first 5 s bucket of the released phase (by creation) whose pickup p50 is
//! within 1.2× of the clean phase's.

use std::time::{Duration, Instant};

use crate::cli::Options;
use crate::db;
use crate::report::BenchResult;
use crate::storage::{self, mib, Pickup, Storage};
use crate::tasks::{noop, noops};
use crate::windows::{percentile, recovery_s};
use crate::worker::Workers;

/// Producer connections.
const PRODUCERS: u64 = 2;
/// How often each producer enqueues its share.
const TICK: Duration = Duration::from_millis(10);
/// The clean phase.
const CLEAN: Duration = Duration::from_secs(60);
/// The released phase.
const RELEASED: Duration = Duration::from_secs(60);
/// Sampling window.
const WINDOW: Duration = Duration::from_secs(5);
/// "Back to baseline": a p50 within this factor of the clean phase's.
const BACK_WITHIN: f64 = 1.2;

/// One phase's span on the database clock, epoch seconds.
#[derive(Debug, Clone, Copy)]
struct Phase {
    name: &'static str,
    from: f64,
    to: f64,
}

/// Runs the scenario.
pub async fn run(options: &Options) -> anyhow::Result<Vec<BenchResult>> {
    println!("== pinned");
    let rate = options.rate_or(1_000);
    let database = db::fresh().await?;
    let url = database.url().to_owned();
    let mut conn = db::connect(&url).await?;
    let workers = Workers::start(&url, 1, false)?;

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let per_tick = rate as f64 / PRODUCERS as f64 * TICK.as_secs_f64();
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let mut conn = db::connect(&url).await?;
        let stop = std::sync::Arc::clone(&stop);
        producers.push(tokio::spawn(async move {
            let started = Instant::now();
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let (mut n, mut sent) = (p << 40, 0u64);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                ticker.tick().await;
                // What the schedule owes by now: a slow commit is caught
                // up by the next call, so the offered rate holds.
                let due = (started.elapsed().as_secs_f64() / TICK.as_secs_f64() * per_tick) as u64;
                let size = due.saturating_sub(sent) as usize;
                if size > 0 {
                    noop::enqueue_many(&mut conn, &noops(&mut n, size)).await?;
                    sent += size as u64;
                }
            }
            anyhow::Ok(sent)
        }));
    }
    // The worker's start-up and the producers' first ticks stay out of
    // the clean phase.
    tokio::time::sleep(WINDOW).await;

    let t0 = storage::db_now(&mut conn).await?;
    let mut sampler = Sampler {
        after: t0,
        pickups: Vec::new(),
        looks: Vec::new(),
    };
    let pinned_for = Duration::from_secs(options.minutes * 60);
    sampler.run_for(&mut conn, CLEAN, t0).await?;

    let mut holder = db::connect(&url).await?;
    db::exec(
        &mut holder,
        "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT txid_current();",
    )
    .await?;
    let t_pin = storage::db_now(&mut conn).await?;
    println!("   snapshot pinned");
    sampler.run_for(&mut conn, pinned_for, t0).await?;
    db::exec(&mut holder, "COMMIT").await?;
    let t_release = storage::db_now(&mut conn).await?;
    println!("   snapshot released");
    sampler.run_for(&mut conn, RELEASED, t0).await?;
    let t_end = storage::db_now(&mut conn).await?;

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut enqueued = 0;
    for p in producers {
        enqueued += p.await??;
    }
    // The last jobs of the released phase: past their outcome's commit.
    tokio::time::sleep(Duration::from_secs(2)).await;
    sampler.collect(&mut conn).await?;
    workers.stop().await?;

    let phases = [
        Phase {
            name: "clean",
            from: t0,
            to: t_pin,
        },
        Phase {
            name: "pinned",
            from: t_pin,
            to: t_release,
        },
        Phase {
            name: "released",
            from: t_release,
            to: t_end,
        },
    ];
    let clean_p50 =
        phase_latencies(&sampler.pickups, &phases[0]).map_or(0.0, |l| percentile(&l, 0.5));
    let samples: Vec<(f64, f64)> = sampler
        .pickups
        .iter()
        .map(|p| (p.created - t0, p.latency_ms))
        .collect();
    let recovery = recovery_s(
        &samples,
        t_release - t0,
        t_end - t0,
        WINDOW.as_secs_f64(),
        clean_p50,
        BACK_WITHIN,
    );
    let mut results = Vec::new();
    for phase in &phases {
        let mut latencies = phase_latencies(&sampler.pickups, phase).unwrap_or_default();
        latencies.sort_by(f64::total_cmp);
        let finished = sampler
            .pickups
            .iter()
            .filter(|p| p.finished >= phase.from && p.finished < phase.to)
            .count();
        let looks: Vec<&Storage> = sampler
            .looks
            .iter()
            .filter(|(at, _)| *at >= phase.from && *at < phase.to)
            .map(|(_, l)| l)
            .collect();
        let peak = |of: fn(&Storage) -> i64| looks.iter().map(|l| of(l)).max().unwrap_or(0);
        let p50 = percentile(&latencies, 0.5);
        let mut result = BenchResult {
            jobs_per_sec: Some(finished as f64 / (phase.to - phase.from).max(1e-9)),
            p50_ms: Some(p50),
            p95_ms: Some(percentile(&latencies, 0.95)),
            p99_ms: Some(percentile(&latencies, 0.99)),
            ..BenchResult::new(
                "pinned",
                format!(
                    "{} phase, {:.0} s, {rate} jobs/s offered, 1 worker",
                    phase.name,
                    phase.to - phase.from
                ),
            )
        }
        .extra("p50_to_clean", p50 / clean_p50.max(1e-9))
        .extra("dead_tuples_max", peak(|l| l.dead))
        .extra("active_dead_tuples_max", peak(|l| l.active_dead))
        .extra("table_mib_max", mib(peak(|l| l.total_bytes)))
        .extra("claim_index_mib_max", mib(peak(|l| l.claim_index_bytes)))
        .extra("latency_clock", "db: started_at - created_at");
        if phase.name == "released" {
            result = result
                .extra("recovery_s", recovery)
                .extra("enqueued", enqueued)
                .extra("load_average", crate::cpu::load_average());
        }
        results.push(result.emit());
    }
    Ok(results)
}

/// Pickup latencies of the jobs created within `phase`; `None` if none.
fn phase_latencies(pickups: &[Pickup], phase: &Phase) -> Option<Vec<f64>> {
    let mut l: Vec<f64> = pickups
        .iter()
        .filter(|p| p.created >= phase.from && p.created < phase.to)
        .map(|p| p.latency_ms)
        .collect();
    if l.is_empty() {
        return None;
    }
    l.sort_by(f64::total_cmp);
    Some(l)
}

/// Collects finished jobs and storage figures every [`WINDOW`].
struct Sampler {
    /// Jobs finished up to here (epoch seconds) are collected.
    after: f64,
    pickups: Vec<Pickup>,
    /// (when, figures), epoch seconds.
    looks: Vec<(f64, Storage)>,
}

impl Sampler {
    /// Samples every window for `span`.
    async fn run_for(
        &mut self,
        conn: &mut diesel_async::AsyncPgConnection,
        span: Duration,
        t0: f64,
    ) -> anyhow::Result<()> {
        let started = Instant::now();
        let mut next = started + WINDOW;
        while started.elapsed() < span {
            tokio::time::sleep_until(next.min(started + span).into()).await;
            next += WINDOW;
            let before = self.pickups.len();
            self.collect(conn).await?;
            let mut recent: Vec<f64> = self.pickups[before..]
                .iter()
                .map(|p| p.latency_ms)
                .collect();
            recent.sort_by(f64::total_cmp);
            let Some(&(at, look)) = self.looks.last() else {
                continue;
            };
            println!(
                "  t={:>5.0}s  {:>6} done  p50={:>7.2} ms  p99={:>8.2} ms  table={:>7.1} MiB  \
                 claim idx={:>6.2} MiB  dead={:>8}  vacuums={}",
                at - t0,
                recent.len(),
                percentile(&recent, 0.5),
                percentile(&recent, 0.99),
                mib(look.total_bytes),
                mib(look.claim_index_bytes),
                look.dead,
                look.vacuums
            );
        }
        Ok(())
    }

    /// Collects the jobs finished since the last look, up to a second ago
    /// (outcome transactions under way have committed by then), and the
    /// storage figures.
    async fn collect(&mut self, conn: &mut diesel_async::AsyncPgConnection) -> anyhow::Result<()> {
        let now = storage::db_now(conn).await?;
        let upto = (now - 1.0).max(self.after);
        let mut rows = storage::pickups(conn, self.after, upto).await?;
        self.pickups.append(&mut rows);
        self.after = upto;
        self.looks.push((now, storage::storage(conn).await?));
        Ok(())
    }
}
