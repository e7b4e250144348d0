//! Worker processes: the hidden `worker` subcommand (the child side) and
//! starting, stopping and reading children (the parent side).
//!
//! A child runs `jobq::Worker` with default settings on the given
//! database, stops when nothing is pending or running (`--until-empty`) or
//! when its stdin closes, and prints one JSON line with its peak RSS
//! (`VmHWM` of `/proc/self/status`, read just before it exits) on stdout.

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use serde::{Deserialize, Serialize};

use crate::cli::WorkerOptions;
use crate::cpu;
use crate::db;
use crate::tasks::BASE_TASKS;

/// What a worker process reports when it exits.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    /// Its pid.
    pub pid: u32,
    /// Peak resident set size, KiB.
    pub vmhwm_kib: u64,
    /// CPU time used (user + system), seconds.
    pub cpu_s: f64,
}

/// Peak RSS of process `pid` in KiB, from `/proc/<pid>/status`.
pub fn vmhwm_kib(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// The `worker` subcommand.
pub async fn child_main(options: WorkerOptions) -> anyhow::Result<()> {
    let tasks = if options.tasks.is_empty() {
        BASE_TASKS.iter().map(|t| t.to_string()).collect()
    } else {
        options.tasks
    };
    let worker = jobq::Worker::builder()
        .database_url(&options.url)
        .tasks(&tasks)
        .build()
        .await?
        .spawn();
    if options.until_empty {
        let mut conn = db::connect(&options.url).await?;
        loop {
            // The drain is timed by the rows' own timestamps, so how often
            // this looks does not change the figure; it must only be cheap:
            // both halves are answered without scanning finished rows,
            // which would take server CPU from the jobs being measured (the
            // claim index's order for pending jobs; for running ones, the
            // claims table, which holds a row per batch in flight).
            tokio::time::sleep(Duration::from_millis(50)).await;
            let busy = db::count(&mut conn, db::BUSY_SQL).await?;
            if busy == 0 {
                break;
            }
        }
    } else {
        // Stop when the parent closes our stdin (or dies).
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let mut sink = Vec::new();
            let _ = std::io::stdin().read_to_end(&mut sink);
            let _ = tx.send(());
        });
        let _ = rx.await;
    }
    worker.shutdown().await?;
    let report = WorkerReport {
        pid: std::process::id(),
        vmhwm_kib: vmhwm_kib("self").unwrap_or(0),
        cpu_s: cpu::own_cpu_seconds(),
    };
    println!("{}", serde_json::to_string(&report)?);
    Ok(())
}

/// Worker processes started by a scenario.
pub struct Workers {
    children: Vec<Child>,
}

impl Workers {
    /// Starts `n` worker processes on `url` by re-executing this binary,
    /// serving the bench's own tasks.
    pub fn start(url: &str, n: usize, until_empty: bool) -> anyhow::Result<Self> {
        Self::start_serving(url, n, until_empty, &[])
    }

    /// The same, serving `tasks` (empty: the bench's own).
    pub fn start_serving(
        url: &str,
        n: usize,
        until_empty: bool,
        tasks: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_wrapped(&[], url, n, until_empty, tasks)
    }

    /// The same, each started through `wrapper` (a command prefix such as
    /// `ip netns exec NAME`; empty: none).
    pub fn start_wrapped(
        wrapper: &[String],
        url: &str,
        n: usize,
        until_empty: bool,
        tasks: &[String],
    ) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this binary to start workers")?;
        let mut children = Vec::with_capacity(n);
        for _ in 0..n {
            let mut cmd = match wrapper.split_first() {
                Some((program, args)) => {
                    let mut cmd = Command::new(program);
                    cmd.args(args).arg(&exe);
                    cmd
                }
                None => Command::new(&exe),
            };
            cmd.args(["worker", "--url", url]);
            if until_empty {
                cmd.arg("--until-empty");
            }
            if !tasks.is_empty() {
                cmd.arg("--tasks").arg(tasks.join(","));
            }
            cmd.stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit());
            children.push(cmd.spawn().context("starting a worker process")?);
        }
        Ok(Self { children })
    }

    /// Peak RSS so far of every worker still running, KiB.
    pub fn current_vmhwm_kib(&self) -> Vec<u64> {
        self.children
            .iter()
            .filter_map(|c| vmhwm_kib(&c.id().to_string()))
            .collect()
    }

    /// Asks every worker to stop (closes stdin), waits for all of them and
    /// collects their reports.
    pub async fn stop(self) -> anyhow::Result<Vec<WorkerReport>> {
        tokio::task::spawn_blocking(move || {
            let mut reports = Vec::new();
            for mut child in self.children {
                drop(child.stdin.take());
                let stdout = child.stdout.take().context("worker stdout")?;
                let mut report = None;
                for line in BufReader::new(stdout).lines() {
                    let line = line?;
                    if let Ok(r) = serde_json::from_str::<WorkerReport>(&line) {
                        report = Some(r);
                    }
                }
                let status = child.wait()?;
                anyhow::ensure!(status.success(), "a worker process failed: {status}");
                reports.push(report.context("a worker process printed no report")?);
            }
            Ok(reports)
        })
        .await?
    }
}

/// CPU seconds of all the reports together.
pub fn total_cpu_s(reports: &[WorkerReport]) -> f64 {
    reports.iter().map(|r| r.cpu_s).sum()
}

/// The largest peak RSS of the reports, in MiB.
pub fn max_rss_mib(reports: &[WorkerReport]) -> Option<f64> {
    reports
        .iter()
        .map(|r| r.vmhwm_kib as f64 / 1024.0)
        .reduce(f64::max)
}
