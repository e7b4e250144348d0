//! The `opentelemetry` feature: an enqueue inside a traced span stores its
//! W3C trace context as headers, and the attempt's span continues that
//! trace. Spans go to an in-memory exporter through `tracing-opentelemetry`,
//! as an application would install it with its real exporter.

mod support;

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use jobq::{EnqueueOptions, JobState, TaskError};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Debug, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

#[jobq::task]
async fn traced_ping(job: Ping) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

/// The other test's task: each test's databases number jobs from 1, so
/// spans are told apart by task too.
#[jobq::task]
async fn badly_traced_ping(job: Ping) -> Result<(), TaskError> {
    let _ = job;
    Ok(())
}

struct Tracing {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

/// The process-wide subscriber: the worker's tasks run on the runtime's
/// threads, so a thread-local one would miss them.
fn tracing() -> &'static Tracing {
    static TRACING: OnceLock<Tracing> = OnceLock::new();
    TRACING.get_or_init(|| {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("jobq-test"));
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(layer))
            .expect("the only global subscriber of this test binary");
        Tracing { exporter, provider }
    })
}

/// The exported spans named `name`, once there are `n` of them.
fn spans(name: &str, n: usize) -> Vec<SpanData> {
    let deadline = Instant::now() + support::SOON;
    loop {
        let _ = tracing().provider.force_flush();
        let found: Vec<SpanData> = tracing()
            .exporter
            .get_finished_spans()
            .expect("exported spans")
            .into_iter()
            .filter(|s| s.name == name)
            .collect();
        if found.len() >= n {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "{n} span(s) {name:?} not exported"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_continues_the_trace_of_the_request_that_enqueued_it() {
    tracing();
    let env = support::env().await;
    let mut conn = env.conn().await;

    let request = tracing::info_span!("http_request");
    let traced = traced_ping::enqueue(&mut conn, &Ping { n: 1 })
        .instrument(request)
        .await
        .unwrap();
    // Outside any span: nothing to carry.
    let untraced = traced_ping::enqueue(&mut conn, &Ping { n: 2 })
        .await
        .unwrap();
    // A context the caller set is kept as given.
    let given = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let explicit = traced_ping::enqueue_with(
        &mut conn,
        &Ping { n: 3 },
        EnqueueOptions::new().header("traceparent", given),
    )
    .instrument(tracing::info_span!("another_request"))
    .await
    .unwrap();

    let request = spans("http_request", 1).remove(0);
    let trace_id = request.span_context.trace_id();
    let stored = env.job(traced).await.headers;
    assert!(
        stored["traceparent"].starts_with(&format!("00-{trace_id}-")),
        "{stored:?}"
    );
    assert!(env.job(untraced).await.headers.is_empty());
    assert_eq!(env.job(explicit).await.headers["traceparent"], given);

    let handle = env.worker().build().await.unwrap().spawn();
    for id in [traced, untraced, explicit] {
        env.wait_state(id, JobState::Completed).await;
    }
    handle.shutdown().await.unwrap();

    let attempts = spans("job", 3);
    let of = |id: jobq::JobId| {
        attempts
            .iter()
            .find(|s| {
                let has = |key: &str, value: &str| {
                    s.attributes
                        .iter()
                        .any(|kv| kv.key.as_str() == key && kv.value.as_str() == value)
                };
                has("job.id", &id.to_string()) && has("job.task", "traced_ping")
            })
            .unwrap_or_else(|| panic!("no span of job {id}: {attempts:#?}"))
    };
    let attempt = of(traced);
    assert_eq!(attempt.span_context.trace_id(), trace_id);
    assert_eq!(attempt.parent_span_id, request.span_context.span_id());
    assert_ne!(of(untraced).span_context.trace_id(), trace_id);
    assert_eq!(
        of(explicit).span_context.trace_id().to_string(),
        "0af7651916cd43dd8448eb211c80319c"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_context_that_does_not_parse_is_ignored() {
    tracing();
    let env = support::env().await;
    let mut conn = env.conn().await;
    let mut ids = Vec::new();
    for bad in [
        "",
        "garbage",
        "00-00000000000000000000000000000000-0000000000000000-01",
        "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra\u{1F600}",
        &"9".repeat(10_000),
    ] {
        ids.push(
            badly_traced_ping::enqueue_with(
                &mut conn,
                &Ping { n: 0 },
                EnqueueOptions::new()
                    .header("traceparent", bad)
                    .header("tracestate", bad),
            )
            .await
            .unwrap(),
        );
    }
    let handle = env.worker().build().await.unwrap().spawn();
    for id in ids {
        env.wait_state(id, JobState::Completed).await;
    }
    handle.shutdown().await.unwrap();
}
