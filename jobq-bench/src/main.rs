//! `jobq-bench`: throughput and latency benchmarks of jobq.
//!
//! ```text
//! cargo run --release -p jobq-bench -- <scenario> [options]
//! ```
//!
//! Scenarios: `enqueue`, `drain`, `latency`, `sustained`, `backlog`, or
//! `all` (those five), and `scheduled`, `limits`, `await` and `dashboard`
//! (every page of the web dashboard beside a million finished jobs), and the
//! long storage scenarios of issue 16: `soak`, `pinned` and `rtt`. Each
//! runs on a fresh database created with `jobq-testkit`: on `DATABASE_URL`'s
//! server when it is set, else on a private throwaway
//! server (tuned for speed: `fsync=off`, so its numbers are not the durable
//! ones). The server and its durability settings are printed first.
//!
//! Every result is printed as a row of a human table and as one JSON line
//! (prefixed by nothing, starting with `{`), so that scripts can
//! `grep '^{'` the output.
//!
//! `worker` is a hidden subcommand: the `drain` and `sustained` scenarios
//! re-execute this binary as `jobq-bench worker --url ..` to get real
//! worker processes whose peak RSS can be measured.

mod cli;
mod cpu;
mod db;
mod delay_proxy;
mod limit;
mod listen_limit;
mod netns;
mod report;
mod scenario;
mod spread;
mod sql_loop;
mod storage;
mod tasks;
mod windows;
mod worker;

use clap::Parser;
use cli::{Cli, Command, Options};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    let (options, scenarios): (Options, Vec<&str>) = match Cli::parse().command {
        Command::Worker(worker) => return worker::child_main(worker).await,
        Command::Enqueue(o) => (o, vec!["enqueue"]),
        Command::Drain(o) => (o, vec!["drain"]),
        Command::Latency(o) => (o, vec!["latency"]),
        Command::Sustained(o) => (o, vec!["sustained"]),
        Command::Backlog(o) => (o, vec!["backlog"]),
        Command::Scheduled(o) => (o, vec!["scheduled"]),
        Command::Tasks(o) => (o, vec!["tasks"]),
        Command::Restart(o) => (o, vec!["restart"]),
        Command::Scale(o) => (o, vec!["scale"]),
        Command::Limits(o) => (o, vec!["limits"]),
        Command::Await(o) => (o, vec!["await"]),
        Command::Dashboard(o) => (o, vec!["dashboard"]),
        Command::Soak(o) => (o, vec!["soak"]),
        Command::Pinned(o) => (o, vec!["pinned"]),
        Command::Rtt(o) => (o, vec!["rtt"]),
        Command::All(o) => (
            o,
            vec!["enqueue", "drain", "latency", "sustained", "backlog"],
        ),
    };
    db::print_server().await?;
    let mut results = Vec::new();
    for name in scenarios {
        let mut rows = match name {
            "enqueue" => scenario::enqueue::run(&options).await?,
            "drain" => scenario::drain::run(&options).await?,
            "latency" => scenario::latency::run(&options).await?,
            "sustained" => scenario::sustained::run(&options).await?,
            "backlog" => scenario::backlog::run(&options).await?,
            "scheduled" => scenario::scheduled::run(&options).await?,
            "tasks" => scenario::tasks::run(&options).await?,
            "restart" => scenario::restart::run(&options).await?,
            "scale" => scenario::scale::run(&options).await?,
            "limits" => scenario::limits::run(&options).await?,
            "await" => scenario::wait::run(&options).await?,
            "dashboard" => scenario::dashboard::run(&options).await?,
            "soak" => scenario::soak::run(&options).await?,
            "pinned" => scenario::pinned::run(&options).await?,
            "rtt" => scenario::rtt::run(&options).await?,
            other => unreachable!("scenario {other} is not in the list above"),
        };
        results.append(&mut rows);
    }
    report::print_table(&results);
    Ok(())
}
