//! The quickstart and the metrics example, run as their users run them:
//! the quickstart to its end, the metrics example scraped while its jobs
//! run. (The application examples have tests of their own.)

mod support;

#[path = "../examples/quickstart.rs"]
#[allow(dead_code)]
mod quickstart;

#[path = "../examples/metrics.rs"]
#[allow(dead_code)]
mod metrics_example;

use std::time::{Duration, Instant};

use support::example::{example_process, Running};
use support::fleet::run_tests;

const QUICKSTART_ENV: &str = "JOBQ_TEST_RUN_QUICKSTART";
const METRICS_ENV: &str = "JOBQ_TEST_RUN_METRICS";

fn main() -> std::process::ExitCode {
    if let Some(code) = example_process(QUICKSTART_ENV, quickstart::main) {
        return code;
    }
    if let Some(code) = example_process(METRICS_ENV, metrics_example::main) {
        return code;
    }
    run_tests(&[
        ("the_quickstart_runs_its_jobs_to_the_end", || {
            Box::pin(the_quickstart_runs_its_jobs_to_the_end())
        }),
        ("the_metrics_example_serves_jobq_metrics", || {
            Box::pin(the_metrics_example_serves_jobq_metrics())
        }),
    ])
}

async fn the_quickstart_runs_its_jobs_to_the_end() {
    let mut example = Running::start(QUICKSTART_ENV, &[]);
    let status = example.wait(Duration::from_secs(120));
    assert!(
        status.success(),
        "exit status {status}: {:#?}",
        example.seen
    );
    let ended: Vec<&String> = example
        .seen
        .iter()
        .filter(|l| l.starts_with("job ") && l.contains(" after "))
        .collect();
    assert_eq!(ended.len(), 4, "{:#?}", example.seen);
    assert!(
        ended.iter().all(|l| l.contains(": Completed after ")),
        "{ended:#?}"
    );
    // The report fails its first attempt on purpose.
    assert_eq!(
        ended
            .iter()
            .filter(|l| l.ends_with("after 2 attempt(s)"))
            .count(),
        1,
        "{ended:#?}"
    );
    assert!(example
        .seen
        .iter()
        .any(|l| l.ends_with("it does not exist")));
}

/// The value of the first sample of `name` with `label` in a scrape.
fn sample(scrape: &str, name: &str, label: &str) -> Option<f64> {
    scrape
        .lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

async fn the_metrics_example_serves_jobq_metrics() {
    // A free port for the example's exporter.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
        .to_string();
    let mut example = Running::start(METRICS_ENV, &[("JOBQ_METRICS_PORT", &port)]);
    example.line(Duration::from_secs(60), |l| {
        l.starts_with("metrics on http://")
    });
    let url = format!("http://127.0.0.1:{port}/metrics");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + support::SOON;
    let scrape = loop {
        let scrape = match client.get(&url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        // Retries come with one image in ten, failures with one in fifty.
        let seen = |name| sample(&scrape, name, "task=\"resize\"").unwrap_or(0.0);
        if seen("jobq_jobs_completed_total") > 0.0
            && seen("jobq_jobs_retried_total") > 0.0
            && seen("jobq_jobs_failed_total") > 0.0
        {
            break scrape;
        }
        assert!(
            Instant::now() < deadline,
            "the example's metrics never showed completed, retried and failed jobs:\n{scrape}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        scrape.contains("jobq_attempt_duration_seconds_bucket{"),
        "{scrape}"
    );
    assert!(
        sample(&scrape, "jobq_jobs_enqueued_total", "task=\"resize\"").unwrap_or(0.0)
            >= sample(&scrape, "jobq_jobs_completed_total", "task=\"resize\"").unwrap_or(0.0),
        "{scrape}"
    );
}
