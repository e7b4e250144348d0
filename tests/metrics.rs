//! The `metrics` feature: a Prometheus exporter scraped over HTTP after a
//! known set of jobs shows exact counters, histogram series with their
//! labels, and gauges sampled from `jobq::stats`; hostile task and queue
//! names travel as label values without breaking the exposition format.
//!
//! One test in this binary: the recorder is process-wide, and counters of
//! another test's jobs would spoil the exact values.

mod support;

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use jobq::{EnqueueOptions, JobState, TaskError};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Input {
    n: u32,
}

#[jobq::task(name = "metrics.ok")]
async fn ok(_job: Input) -> Result<(), TaskError> {
    Ok(())
}

/// One attempt only: its failure is the job's last.
#[jobq::task(name = "metrics.doomed", max_attempts = 1)]
async fn doomed(_job: Input) -> Result<(), TaskError> {
    Err(TaskError::msg("no"))
}

/// Fails its first attempt, then succeeds.
#[jobq::task(name = "metrics.flaky", retry = "10ms", max_attempts = 3)]
async fn flaky(ctx: jobq::Context, _job: Input) -> Result<(), TaskError> {
    if ctx.attempt() == 1 {
        return Err(TaskError::msg("not yet"));
    }
    Ok(())
}

/// Runs until it is cancelled.
#[jobq::task(name = "metrics.wait")]
async fn wait(ctx: jobq::Context, _job: Input) -> Result<(), TaskError> {
    ctx.cancelled().await;
    Err(TaskError::msg("cancelled"))
}

/// Completes its job in its own transaction (`Context::complete_in`); the
/// job with `n == 2` then fails, after the commit. Both count as one
/// completion each.
#[jobq::task(name = "metrics.in_tx", retry = "10ms", max_attempts = 3)]
async fn in_tx(
    ctx: jobq::Context,
    jobq::State(pool): jobq::State<jobq::Pool>,
    job: Input,
) -> Result<(), TaskError> {
    use diesel_async::AsyncConnection;
    let mut conn = pool.get().await?;
    conn.transaction::<_, TaskError, _>(async |conn| {
        ctx.complete_in(conn).await?;
        Ok(())
    })
    .await?;
    if job.n == 2 {
        return Err(TaskError::msg("failed after the commit"));
    }
    Ok(())
}

/// A queue name with everything the exposition format escapes, and more.
const HOSTILE_QUEUE: &str = "q \"quoted\"\nnew line \\ back, ü☃ } {";
/// A task name that would forge a series if it were not escaped.
const HOSTILE_TASK: &str = "evil\"} 1\nfake_metric{a=\"b\"} 2\n# TYPE x counter";

/// A series of the scrape: name, labels, value.
type Series = (String, BTreeMap<String, String>, f64);

/// Parses the Prometheus text format strictly: every line is a comment or
/// `name{label="value",...} value` with the format's three escapes. Panics
/// on anything else, so a label that broke the format fails the test.
fn parse(text: &str) -> Vec<Series> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .unwrap_or_else(|| panic!("no value on line {line:?}"));
        let name = &line[..name_end];
        assert!(!name.is_empty(), "no metric name on line {line:?}");
        let mut rest = line[name_end..].chars().peekable();
        let mut labels = BTreeMap::new();
        if rest.peek() == Some(&'{') {
            rest.next();
            loop {
                match rest.peek() {
                    Some('}') => {
                        rest.next();
                        break;
                    }
                    Some(',') => {
                        rest.next();
                        continue;
                    }
                    _ => {}
                }
                let key: String = rest.by_ref().take_while(|&c| c != '=').collect();
                assert!(
                    !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                    "bad label name {key:?} on line {line:?}"
                );
                assert_eq!(rest.next(), Some('"'), "unquoted value on line {line:?}");
                let mut value = String::new();
                loop {
                    match rest.next() {
                        Some('"') => break,
                        Some('\\') => match rest.next() {
                            Some('\\') => value.push('\\'),
                            Some('"') => value.push('"'),
                            Some('n') => value.push('\n'),
                            other => panic!("bad escape {other:?} on line {line:?}"),
                        },
                        Some(c) => value.push(c),
                        None => panic!("unterminated value on line {line:?}"),
                    }
                }
                labels.insert(key, value);
            }
        }
        let rest: String = rest.collect();
        let value = rest.trim();
        let value = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value {v:?} on line {line:?}")),
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

/// One GET over a plain TCP connection: the scrape a Prometheus server does.
async fn scrape(addr: SocketAddr) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect to the exporter");
    stream
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .expect("send the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .expect("read the response");
    let response = String::from_utf8(response).expect("UTF-8 response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .expect("an HTTP response with a body");
    assert!(head.starts_with("HTTP/1.1 200"), "scrape failed: {head}");
    assert!(
        !head
            .to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
        "a chunked response this test does not decode: {head}"
    );
    body.to_owned()
}

fn find<'a>(series: &'a [Series], name: &str, labels: &[(&str, &str)]) -> Option<&'a Series> {
    series.iter().find(|(n, l, _)| {
        n == name
            && labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
    })
}

fn value(series: &[Series], name: &str, labels: &[(&str, &str)]) -> f64 {
    find(series, name, labels)
        .unwrap_or_else(|| panic!("no series {name}{labels:?} in the scrape"))
        .2
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_after_a_known_set_of_jobs_shows_exact_counters_histograms_and_gauges() {
    // A free port for the exporter's listener (the exporter does not say
    // which port it bound).
    let addr = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    PrometheusBuilder::new()
        .with_http_listener(addr)
        .set_buckets_for_metric(
            Matcher::Suffix("_seconds".into()),
            &[0.001, 0.01, 0.1, 1.0, 10.0],
        )
        .expect("buckets")
        .install()
        .expect("install the Prometheus exporter");

    let env = support::env().await;
    let mut conn = env.conn().await;
    let input = Input { n: 1 };

    let mut oks = Vec::new();
    for _ in 0..3 {
        oks.push(ok::enqueue(&mut conn, &input).await.unwrap());
    }
    let hostile_ok = ok::enqueue_with(
        &mut conn,
        &input,
        EnqueueOptions::new().queue(HOSTILE_QUEUE),
    )
    .await
    .unwrap();
    let delayed = ok::enqueue_with(
        &mut conn,
        &input,
        EnqueueOptions::new().delay(Duration::from_secs(3600)),
    )
    .await
    .unwrap();
    let doomed_id = doomed::enqueue(&mut conn, &input).await.unwrap();
    let flaky_id = flaky::enqueue(&mut conn, &input).await.unwrap();
    let wait_id = wait::enqueue(&mut conn, &input).await.unwrap();
    let in_tx_ids = [
        in_tx::enqueue(&mut conn, &Input { n: 1 }).await.unwrap(),
        in_tx::enqueue(&mut conn, &Input { n: 2 }).await.unwrap(),
    ];
    // No worker knows this task and none serves this queue: it stays
    // pending, for the gauges.
    jobq::enqueue_json(
        &mut conn,
        HOSTILE_TASK,
        &serde_json::json!({}),
        EnqueueOptions::new().queue("elsewhere"),
    )
    .await
    .unwrap();
    // A unique submission that finds its key held inserts nothing.
    let unique = EnqueueOptions::new().unique_key("once");
    assert!(
        ok::enqueue_unique(&mut conn, &input, unique.clone())
            .await
            .unwrap()
            .created
    );
    assert!(
        !ok::enqueue_unique(&mut conn, &input, unique)
            .await
            .unwrap()
            .created
    );

    // A waiting job cancelled before any worker sees it.
    assert!(jobq::cancel(&mut conn, delayed).await.unwrap());

    let worker = env
        .worker()
        .queues(["default", HOSTILE_QUEUE])
        .state(env.pool.clone())
        .build()
        .await
        .unwrap()
        .spawn();

    for &id in &oks {
        env.wait_state(id, JobState::Completed).await;
    }
    env.wait_state(hostile_ok, JobState::Completed).await;
    env.wait_state(doomed_id, JobState::Failed).await;
    env.wait_state(flaky_id, JobState::Completed).await;
    // And one running job cancelled.
    env.wait_state(wait_id, JobState::Running).await;
    assert!(jobq::cancel(&mut conn, wait_id).await.unwrap());
    env.wait_state(wait_id, JobState::Cancelled).await;
    for &id in &in_tx_ids {
        let info = env.wait_state(id, JobState::Completed).await;
        assert_eq!(info.attempt, 1);
    }
    // Every attempt is counted before its outcome settles its claim.
    support::wait_until("every outcome to be written", async || {
        env.count("SELECT count(*) AS n FROM jobq.claims").await == 0
    })
    .await;

    // The gauges come from the sampler: poll until its sample shows the
    // unserved job (samples before the enqueue would not).
    let deadline = Instant::now() + support::SOON;
    let series = loop {
        let body = scrape(addr).await;
        let series = parse(&body);
        let pending = find(
            &series,
            "jobq_jobs",
            &[
                ("queue", "elsewhere"),
                ("task", HOSTILE_TASK),
                ("state", "pending"),
            ],
        )
        .map(|s| s.2);
        // A sample taken after the last job ended (not one from before the
        // wait job was claimed, which also shows none running).
        let cancelled_sampled = find(
            &series,
            "jobq_jobs",
            &[
                ("queue", "default"),
                ("task", "metrics.wait"),
                ("state", "cancelled"),
            ],
        )
        .map(|s| s.2);
        if pending == Some(1.0) && cancelled_sampled == Some(1.0) {
            break series;
        }
        assert!(
            Instant::now() < deadline,
            "the gauges never showed the unserved job and the finished wait job:\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let d = "default";
    // Counters, exactly.
    let counters: &[(&str, &str, &str, f64)] = &[
        ("jobq_jobs_enqueued_total", "metrics.ok", d, 5.0),
        ("jobq_jobs_enqueued_total", "metrics.ok", HOSTILE_QUEUE, 1.0),
        ("jobq_jobs_enqueued_total", "metrics.doomed", d, 1.0),
        ("jobq_jobs_enqueued_total", "metrics.flaky", d, 1.0),
        ("jobq_jobs_enqueued_total", "metrics.wait", d, 1.0),
        ("jobq_jobs_enqueued_total", HOSTILE_TASK, "elsewhere", 1.0),
        ("jobq_jobs_enqueued_total", "metrics.in_tx", d, 2.0),
        ("jobq_jobs_claimed_total", "metrics.in_tx", d, 2.0),
        ("jobq_jobs_completed_total", "metrics.in_tx", d, 2.0),
        ("jobq_jobs_claimed_total", "metrics.ok", d, 4.0),
        ("jobq_jobs_claimed_total", "metrics.ok", HOSTILE_QUEUE, 1.0),
        ("jobq_jobs_claimed_total", "metrics.doomed", d, 1.0),
        ("jobq_jobs_claimed_total", "metrics.flaky", d, 2.0),
        ("jobq_jobs_claimed_total", "metrics.wait", d, 1.0),
        ("jobq_jobs_completed_total", "metrics.ok", d, 4.0),
        (
            "jobq_jobs_completed_total",
            "metrics.ok",
            HOSTILE_QUEUE,
            1.0,
        ),
        ("jobq_jobs_completed_total", "metrics.flaky", d, 1.0),
        ("jobq_jobs_failed_total", "metrics.doomed", d, 1.0),
        ("jobq_jobs_retried_total", "metrics.flaky", d, 1.0),
        ("jobq_jobs_cancelled_total", "metrics.ok", d, 1.0),
        ("jobq_jobs_cancelled_total", "metrics.wait", d, 1.0),
    ];
    for &(name, task, queue, expected) in counters {
        assert_eq!(
            value(&series, name, &[("task", task), ("queue", queue)]),
            expected,
            "{name} of {task:?} in {queue:?}"
        );
    }
    // Nothing else moved: no failure, retry or cancellation elsewhere, and
    // no rescue at all.
    for name in [
        "jobq_jobs_failed_total",
        "jobq_jobs_retried_total",
        "jobq_jobs_cancelled_total",
        "jobq_jobs_completed_total",
    ] {
        let listed = counters.iter().filter(|c| c.0 == name).count();
        let found = series.iter().filter(|s| s.0 == name).count();
        assert_eq!(found, listed, "unexpected {name} series");
    }
    assert!(find(&series, "jobq_jobs_rescued_total", &[]).is_none());

    // Histograms: one series per outcome, with every attempt counted.
    let attempts = |task: &str, outcome: &str| {
        value(
            &series,
            "jobq_attempt_duration_seconds_count",
            &[("task", task), ("queue", d), ("outcome", outcome)],
        )
    };
    assert_eq!(attempts("metrics.ok", "completed"), 4.0);
    assert_eq!(attempts("metrics.flaky", "retried"), 1.0);
    assert_eq!(attempts("metrics.flaky", "completed"), 1.0);
    assert_eq!(attempts("metrics.doomed", "failed"), 1.0);
    assert_eq!(attempts("metrics.wait", "cancelled"), 1.0);
    assert_eq!(attempts("metrics.in_tx", "completed"), 2.0);
    let inf = value(
        &series,
        "jobq_attempt_duration_seconds_bucket",
        &[
            ("task", "metrics.ok"),
            ("queue", HOSTILE_QUEUE),
            ("outcome", "completed"),
            ("le", "+Inf"),
        ],
    );
    assert_eq!(inf, 1.0);
    assert_eq!(
        value(
            &series,
            "jobq_pickup_latency_seconds_count",
            &[("task", "metrics.flaky"), ("queue", d)]
        ),
        2.0
    );
    let latency = value(
        &series,
        "jobq_pickup_latency_seconds_sum",
        &[("task", "metrics.ok"), ("queue", d)],
    );
    assert!(latency >= 0.0, "pickup latency {latency}");

    // Gauges: the finished jobs are sampled in their states, and the
    // unserved queue's oldest due job has an age.
    assert_eq!(
        value(
            &series,
            "jobq_jobs",
            &[
                ("queue", d),
                ("task", "metrics.doomed"),
                ("state", "failed")
            ]
        ),
        1.0
    );
    assert_eq!(
        value(
            &series,
            "jobq_jobs",
            &[
                ("queue", d),
                ("task", "metrics.wait"),
                ("state", "cancelled")
            ]
        ),
        1.0
    );
    let age = value(
        &series,
        "jobq_oldest_due_job_age_seconds",
        &[("queue", "elsewhere")],
    );
    assert!(age >= 0.0, "oldest due age {age}");
    assert_eq!(
        value(&series, "jobq_oldest_due_job_age_seconds", &[("queue", d)]),
        0.0
    );
    // The hostile names forged nothing.
    assert!(series.iter().all(|s| s.0 != "fake_metric"));

    worker.shutdown().await.unwrap();
}
