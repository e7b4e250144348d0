//! Command-line options, parsed by hand (a handful of `--name value`
//! pairs does not justify another dependency).

use anyhow::{bail, Context as _};

/// Printed for `--help` and on mistakes.
pub const USAGE: &str = "\
usage: jobq-bench <scenario> [options]

scenarios:
  enqueue     enqueue_many in batches, single enqueues from 1 and 8 connections,
              and a bare INSERT + COMMIT baseline
  drain       N no-op jobs enqueued up front, then 1 and 2 worker processes run them
  latency     an idle in-process worker; jobs enqueued one at a time, 10 ms apart
  sustained   producers at a fixed rate while 2 worker processes drain
  backlog     claim throughput with a big pending + finished backlog vs an empty table
  all         every scenario above, in that order

options:
  --jobs N            jobs per measurement (enqueue, drain, backlog claims) [100000]
  --singles N         single enqueues per configuration [5000]
  --samples N         latency samples [500]
  --gap-ms N          pause between latency samples [10]
  --seconds N         duration of the sustained run [60]
  --rate N            sustained enqueue rate, jobs/s [5000]
  --backlog-rows N    pending rows and finished rows of the backlog table [1000000]
  --workers LIST      worker process counts of the drain scenario [1,2]

The database: DATABASE_URL's server if set, else a private throwaway server.";

/// Options of the scenarios.
#[derive(Debug, Clone)]
pub struct Options {
    pub jobs: usize,
    pub singles: usize,
    pub samples: usize,
    pub gap_ms: u64,
    pub seconds: u64,
    pub rate: u64,
    pub backlog_rows: u64,
    pub workers: Vec<usize>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            jobs: 100_000,
            singles: 5_000,
            samples: 500,
            gap_ms: 10,
            seconds: 60,
            rate: 5_000,
            backlog_rows: 1_000_000,
            workers: vec![1, 2],
        }
    }
}

fn number<T: std::str::FromStr>(name: &str, value: Option<&String>) -> anyhow::Result<T> {
    let value = value.with_context(|| format!("{name} needs a value"))?;
    value
        .parse()
        .map_err(|_| anyhow::anyhow!("{name}: {value:?} is not a number"))
}

impl Options {
    /// Parses `--name value` pairs.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut o = Self::default();
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--jobs" => o.jobs = number(arg, it.next())?,
                "--singles" => o.singles = number(arg, it.next())?,
                "--samples" => o.samples = number(arg, it.next())?,
                "--gap-ms" => o.gap_ms = number(arg, it.next())?,
                "--seconds" => o.seconds = number(arg, it.next())?,
                "--rate" => o.rate = number(arg, it.next())?,
                "--backlog-rows" => o.backlog_rows = number(arg, it.next())?,
                "--workers" => {
                    let list = it.next().context("--workers needs a value")?;
                    o.workers = list
                        .split(',')
                        .map(|w| number("--workers", Some(&w.trim().to_owned())))
                        .collect::<anyhow::Result<_>>()?;
                }
                other => bail!("unknown option {other:?}\n\n{USAGE}"),
            }
        }
        if o.jobs == 0 || o.samples == 0 || o.seconds == 0 || o.rate == 0 {
            bail!("--jobs, --samples, --seconds and --rate must be at least 1");
        }
        Ok(o)
    }
}

/// Options of the hidden `worker` subcommand.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Database to work on.
    pub url: String,
    /// Stop once no job is pending or running (else: when stdin closes).
    pub until_empty: bool,
}

impl WorkerOptions {
    /// Parses `--url URL [--until-empty]`.
    pub fn parse(args: &[String]) -> anyhow::Result<Self> {
        let mut url = None;
        let mut until_empty = false;
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--url" => url = Some(it.next().context("--url needs a value")?.clone()),
                "--until-empty" => until_empty = true,
                other => bail!("worker: unknown option {other:?}"),
            }
        }
        Ok(Self {
            url: url.context("worker: --url is required")?,
            until_empty,
        })
    }
}
