//! Results: percentiles, the JSON line per result and the final table.

use std::time::Duration;

use serde::Serialize;

/// One measured configuration of a scenario. Figures that a configuration
/// does not measure are `None` (`null` in JSON).
#[derive(Debug, Clone, Default, Serialize)]
pub struct BenchResult {
    pub scenario: &'static str,
    pub config: String,
    pub jobs_per_sec: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p95_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The minimal SQL loop (or bare statement) through the same driver in
    /// the same run, for the same work.
    pub limit_jobs_per_sec: Option<f64>,
    /// Peak RSS (VmHWM) of the worker process(es), the largest one.
    pub rss_mib: Option<f64>,
    /// Scenario-specific figures (ratios, table size, ...).
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl BenchResult {
    /// A result with only its name set.
    pub fn new(scenario: &'static str, config: impl Into<String>) -> Self {
        Self {
            scenario,
            config: config.into(),
            ..Self::default()
        }
    }

    /// Sets p50/p95/p99 from samples.
    pub fn with_latencies(mut self, samples: &mut [Duration]) -> Self {
        if !samples.is_empty() {
            samples.sort_unstable();
            self.p50_ms = Some(ms(percentile(samples, 50.0)));
            self.p95_ms = Some(ms(percentile(samples, 95.0)));
            self.p99_ms = Some(ms(percentile(samples, 99.0)));
        }
        self
    }

    /// Adds a scenario-specific figure.
    pub fn extra(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        self.extra.insert(key.to_owned(), value.into());
        self
    }

    /// Prints the JSON line of this result, at once (so partial runs keep
    /// their results).
    pub fn emit(self) -> Self {
        match serde_json::to_string(&self) {
            Ok(line) => println!("{line}"),
            Err(e) => eprintln!("could not serialize a result: {e}"),
        }
        self
    }
}

/// Nearest-rank percentile of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Milliseconds, as a float.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Jobs per second.
pub fn rate(jobs: usize, elapsed: Duration) -> f64 {
    jobs as f64 / elapsed.as_secs_f64().max(1e-9)
}

fn cell(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.decimals$}"))
}

/// Prints every result as a table, with the scenario-specific figures
/// after it.
pub fn print_table(results: &[BenchResult]) {
    println!();
    println!(
        "| {:<9} | {:<42} | {:>9} | {:>7} | {:>7} | {:>7} | {:>9} | {:>6} | {:>5} |",
        "scenario", "config", "jobs/s", "p50 ms", "p95 ms", "p99 ms", "limit/s", "ratio", "RSS"
    );
    println!(
        "|{:-<11}|{:-<44}|{:->11}|{:->9}|{:->9}|{:->9}|{:->11}|{:->8}|{:->7}|",
        "", "", "", "", "", "", "", "", ""
    );
    for r in results {
        let ratio = match (r.jobs_per_sec, r.limit_jobs_per_sec) {
            (Some(j), Some(l)) if l > 0.0 => Some(j / l),
            _ => None,
        };
        println!(
            "| {:<9} | {:<42} | {:>9} | {:>7} | {:>7} | {:>7} | {:>9} | {:>6} | {:>5} |",
            r.scenario,
            r.config,
            cell(r.jobs_per_sec, 0),
            cell(r.p50_ms, 2),
            cell(r.p95_ms, 2),
            cell(r.p99_ms, 2),
            cell(r.limit_jobs_per_sec, 0),
            cell(ratio, 2),
            cell(r.rss_mib, 1),
        );
    }
    let extras: Vec<&BenchResult> = results.iter().filter(|r| !r.extra.is_empty()).collect();
    if !extras.is_empty() {
        println!();
        for r in extras {
            let figures: Vec<String> = r.extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!("{} / {}: {}", r.scenario, r.config, figures.join(", "));
        }
    }
}
