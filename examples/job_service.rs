//! A document-extraction job service: a REST API in front of a jobq worker.
//!
//! ```text
//! cargo run --example job_service               # the API and the worker
//! cargo run --example job_service -- --api-only # the REST side alone
//! ```
//!
//! - `POST /jobs` with `{"client_id", "request_id", "request", "callback_url"?}`
//!   is idempotent on (`client_id`, `request_id`), forever: `201` with the
//!   job the first time, `200` with the same job on every repeat (the first
//!   submission's callback URL wins). Clients retry; jobs are not repeated.
//! - `GET /jobs/{id}`: the job's envelope, or `404`.
//!   `GET /jobs?client_id=..&request_id=..`: the same, looked up by the
//!   client's own ids.
//! - `GET /healthz`: `{"postgres": "ok"|"fail", "worker": ...}`, the
//!   database probe bounded by 2 s; `200` only when all are ok.
//! - `GET /metrics`: jobs by queue, task and state, in Prometheus' format.
//!
//! The extraction is a stand-in: a document containing `#unreadable` fails
//! for good with the error code `E_UNREADABLE`, `#flaky` fails its first
//! attempt (`E_UPSTREAM`, retried after a backoff), `#slow` takes seconds.
//! When a job has ended, a one-shot callback POSTs its envelope to the
//! `callback_url` (a follow-up job, `then = deliver_callback`, enqueued in
//! the transaction that ends the job): a 2xx answer marks it `delivered`,
//! anything else (including no answer within 5 s) `failed`. It is never
//! retried and never changes the job.
//!
//! jobq does the rest: a job stuck `running` under a dead process is
//! rescued, an insert's notification wakes the worker within milliseconds,
//! and the poll recovers a lost one.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Json, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use diesel::OptionalExtension;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, JobId, JobInfo, JobState, TaskError};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// What a client submits, and the job's payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Submission {
    pub client_id: String,
    pub request_id: String,
    pub request: Request,
    #[serde(default)]
    pub callback_url: Option<String>,
}

/// The document to extract fields from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Request {
    pub document: String,
}

/// The job's output: `name: value` lines of the document.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Extracted {
    pub fields: BTreeMap<String, String>,
}

/// A failure the client can act on: the code is stable, the message is
/// for people.
fn failure(code: &str, message: &str) -> String {
    format!("{code}: {message}")
}

/// Where each job's callback stands: the service's own table. The job's
/// state never depends on it.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS service_callbacks (
        job_id bigint PRIMARY KEY,
        status text NOT NULL CHECK (status IN ('delivered', 'failed')),
        detail text NOT NULL,
        at timestamptz NOT NULL DEFAULT now());
";

/// The stand-in extraction pipeline. When its job has ended, however it
/// ended, jobq enqueues `deliver_callback` in the same transaction.
#[jobq::task(
    queue = "extraction",
    concurrency = 4,
    max_attempts = 3,
    retry = "500ms",
    timeout = "1m",
    then = deliver_callback
)]
async fn extract(ctx: jobq::Context, job: Submission) -> Result<Extracted, TaskError> {
    let document = &job.request.document;
    if document.contains("#unreadable") {
        return Err(TaskError::permanent(anyhow::anyhow!(failure(
            "E_UNREADABLE",
            "the document has no text to read"
        ))));
    }
    if document.contains("#flaky") && ctx.attempt() == 1 {
        return Err(TaskError::msg(failure(
            "E_UPSTREAM",
            "the OCR service did not answer",
        )));
    }
    if document.contains("#slow") {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let fields = document
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .filter(|(name, _)| !name.is_empty() && !name.starts_with('#'))
        .collect();
    Ok(Extracted { fields })
}

/// The one-shot callback: one attempt, never retried (should its worker
/// die, the rescue fails it rather than deliver twice), and what it gets
/// back is recorded beside the job, never on it.
#[jobq::task(
    queue = "callbacks",
    concurrency = 8,
    max_attempts = 1,
    timeout = "30s"
)]
async fn deliver_callback(
    jobq::State(pool): jobq::State<jobq::Pool>,
    jobq::State(http): jobq::State<reqwest::Client>,
    done: jobq::Finished,
) -> Result<(), TaskError> {
    let info = {
        let mut conn = pool.get().await?;
        jobq::job(&mut conn, done.job_id).await?
    };
    let Some(info) = info else {
        return Ok(()); // pruned meanwhile: nothing to send
    };
    let Some(url) = info.payload["callback_url"].as_str() else {
        return Ok(());
    };
    let body = envelope(&info, None);
    let sent = http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await;
    // Without the URL in the text: it may hold a client's credentials.
    let (status, detail) = match sent {
        Ok(response) if response.status().is_success() => {
            ("delivered", response.status().to_string())
        }
        Ok(response) => ("failed", response.status().to_string()),
        Err(e) if e.is_timeout() => ("failed", "no answer in time".to_owned()),
        Err(e) => ("failed", e.without_url().to_string()),
    };
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO service_callbacks (job_id, status, detail) VALUES ($1, $2, $3) \
         ON CONFLICT (job_id) DO NOTHING",
    )
    .bind::<diesel::sql_types::BigInt, _>(info.id.get())
    .bind::<diesel::sql_types::Text, _>(status)
    .bind::<diesel::sql_types::Text, _>(&detail)
    .execute(&mut conn)
    .await?;
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct CallbackRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    status: String,
}

/// `pending` until the callback ran, then what it got.
async fn callback_status(
    conn: &mut AsyncPgConnection,
    info: &JobInfo,
) -> Result<Option<String>, ApiError> {
    if !info.payload["callback_url"].is_string() {
        return Ok(None);
    }
    let row = diesel::sql_query("SELECT status FROM service_callbacks WHERE job_id = $1")
        .bind::<diesel::sql_types::BigInt, _>(info.id.get())
        .get_result::<CallbackRow>(conn)
        .await
        .optional()
        .map_err(jobq::Error::from)?;
    Ok(Some(row.map_or_else(|| "pending".to_owned(), |r| r.status)))
}

/// The job and its callback's status, as the API answers them.
async fn answer(conn: &mut AsyncPgConnection, info: &JobInfo) -> Result<Value, ApiError> {
    let callback = callback_status(conn, info).await?;
    Ok(envelope(info, callback))
}

/// The key a submission is idempotent on. JSON keeps the pair apart
/// whatever characters the ids hold.
fn unique_key(client_id: &str, request_id: &str) -> String {
    json!([client_id, request_id]).to_string()
}

/// The service's state: the pool, and the metrics it renders.
#[derive(Clone)]
pub struct Service {
    pub pool: jobq::Pool,
    pub metrics: PrometheusHandle,
    /// Whether this process runs the worker (reported by `/healthz`).
    pub with_worker: bool,
}

#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no such job")]
    NotFound,
    #[error("the database is unavailable")]
    Unavailable,
    #[error(transparent)]
    Jobq(#[from] jobq::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Jobq(
                jobq::Error::InvalidPayload { .. } | jobq::Error::InvalidJsonPayload { .. },
            ) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Jobq(e) => {
                tracing::error!(error = %e, "job service");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

impl Service {
    async fn conn(&self) -> Result<jobq_diesel::PooledConnection<'_>, ApiError> {
        self.pool.get().await.map_err(|_| ApiError::Unavailable)
    }
}

/// The job as clients see it.
fn envelope(info: &JobInfo, callback: Option<String>) -> Value {
    let status = match info.state {
        JobState::Completed => "done",
        JobState::Failed | JobState::Cancelled => "error",
        JobState::Running => "running",
        _ => "pending",
    };
    let error = match info.state {
        JobState::Cancelled => Some(json!({"code": "E_CANCELLED", "message": "cancelled"})),
        JobState::Failed => info.errors.last().map(|e| {
            let (code, message) = e
                .message
                .split_once(": ")
                .filter(|(code, _)| code.starts_with("E_"))
                .unwrap_or(("E_INTERNAL", e.message.as_str()));
            json!({"code": code, "message": message})
        }),
        _ => None,
    };
    let submission = &info.payload;
    json!({
        "id": info.id.get(),
        "client_id": submission["client_id"],
        "request_id": submission["request_id"],
        "status": status,
        "request": submission["request"],
        "response": info.output,
        "error": error,
        "attempts": info.attempt,
        "created_at": info.created_at,
        "started_at": info.started_at,
        "finished_at": info.finished_at,
        "callback": callback.map(|status| json!({
            "url": submission["callback_url"],
            "status": status,
        })),
    })
}

async fn submit(
    State(service): State<Service>,
    Json(submission): Json<Submission>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    for (name, value) in [
        ("client_id", &submission.client_id),
        ("request_id", &submission.request_id),
    ] {
        if value.is_empty() || value.len() > 200 {
            return Err(ApiError::BadRequest(format!(
                "{name} must have 1 to 200 bytes"
            )));
        }
    }
    let key = unique_key(&submission.client_id, &submission.request_id);
    let mut conn = service.conn().await?;
    let enqueued = extract::enqueue_unique(
        &mut conn,
        &submission,
        EnqueueOptions::new().unique_key(key).unique_forever(),
    )
    .await?;
    let info = jobq::job(&mut conn, enqueued.id)
        .await?
        .ok_or(ApiError::NotFound)?;
    let status = if enqueued.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(answer(&mut conn, &info).await?)))
}

async fn by_id(
    State(service): State<Service>,
    Path(id): Path<i64>,
) -> Result<Json<Value>, ApiError> {
    let mut conn = service.conn().await?;
    let info = jobq::job(&mut conn, JobId::from(id))
        .await?
        .filter(|info| info.task == "extract")
        .ok_or(ApiError::NotFound)?;
    Ok(Json(answer(&mut conn, &info).await?))
}

#[derive(Debug, Deserialize)]
struct Lookup {
    client_id: Option<String>,
    request_id: Option<String>,
}

async fn by_client_ids(
    State(service): State<Service>,
    Query(lookup): Query<Lookup>,
) -> Result<Json<Value>, ApiError> {
    let (Some(client_id), Some(request_id)) = (lookup.client_id, lookup.request_id) else {
        return Err(ApiError::BadRequest(
            "give both client_id and request_id".into(),
        ));
    };
    let mut conn = service.conn().await?;
    let info = jobq::job_by_key(&mut conn, "extract", &unique_key(&client_id, &request_id))
        .await?
        .ok_or(ApiError::NotFound)?;
    Ok(Json(answer(&mut conn, &info).await?))
}

/// Health: every check bounded, so a database that stopped answering is
/// reported within the bound instead of hanging the probe.
async fn healthz(State(service): State<Service>) -> (StatusCode, Json<Value>) {
    let probe = async {
        let mut conn = service.pool.get().await.ok()?;
        let workers = jobq::workers(&mut conn).await.ok()?;
        Some(workers.len())
    };
    let (postgres, worker) = match tokio::time::timeout(Duration::from_secs(2), probe).await {
        Ok(Some(live)) => (
            "ok",
            if !service.with_worker || live > 0 {
                "ok"
            } else {
                "fail"
            },
        ),
        _ => ("fail", "unknown"),
    };
    let all_ok = postgres == "ok" && worker == "ok";
    let status = if all_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(json!({"postgres": postgres, "worker": worker})),
    )
}

/// Queue depth and counts, sampled when scraped.
async fn metrics(State(service): State<Service>) -> Result<String, ApiError> {
    let mut conn = service.conn().await?;
    let stats = jobq::stats(&mut conn).await?;
    for t in &stats.tasks {
        let (queue, task) = (t.queue.clone(), t.task.clone());
        for (state, count) in [
            ("scheduled", t.scheduled),
            ("pending", t.pending),
            ("running", t.running),
            ("failed", t.failed),
            ("cancelled", t.cancelled),
        ] {
            metrics::gauge!("service_jobs", "queue" => queue.clone(), "task" => task.clone(), "state" => state)
                .set(count as f64);
        }
        metrics::gauge!("service_jobs_completed_last_hour", "queue" => queue.clone(), "task" => task.clone())
            .set(t.completed_last_hour as f64);
        metrics::gauge!("service_oldest_due_seconds", "queue" => queue, "task" => task)
            .set(t.oldest_due_age.map_or(0.0, |age| age.as_secs_f64()));
    }
    Ok(service.metrics.render())
}

/// The REST API.
pub fn app(service: Service) -> Router {
    Router::new()
        .route("/jobs", axum::routing::post(submit).get(by_client_ids))
        .route("/jobs/{id}", get(by_id))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .with_state(service)
}

/// A pool whose checkout gives up quickly: a request should fail fast
/// rather than queue behind a database that does not answer.
pub fn pool(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(2))
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

/// The worker of this service. Callbacks get 5 s to answer.
pub fn worker(url: &str, pool: &jobq::Pool) -> jobq::WorkerBuilder {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap_or_default();
    jobq::Worker::builder()
        .database_url(url)
        .state(pool.clone())
        .state(http)
}

// `pub`: tests/job_service.rs runs the service from this file.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=warn")),
        )
        .init();
    let api_only = std::env::args().any(|a| a == "--api-only");

    let db = jobq_testkit::TestDatabase::create().await?;
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;
    conn.batch_execute(SCHEMA).await?;
    let pool = pool(db.url());
    let metrics = PrometheusBuilder::new().install_recorder()?;
    let worker = if api_only {
        None
    } else {
        Some(worker(db.url(), &pool).build().await?.spawn())
    };
    let service = Service {
        pool,
        metrics,
        with_worker: worker.is_some(),
    };

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let address = listener.local_addr()?;
    println!("job service on http://{address} (worker: {})", !api_only);
    println!(
        "  curl -i -H 'content-type: application/json' -d '{{\"client_id\": \"c1\", \
         \"request_id\": \"r1\", \"request\": {{\"document\": \"total: 12 EUR\"}}}}' \
         http://{address}/jobs"
    );
    axum::serve(listener, app(service))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    if let Some(worker) = worker {
        worker.shutdown().await?;
    }
    // Keep the database until the end: the requests above used it.
    drop(conn);
    drop(db);
    Ok(())
}
