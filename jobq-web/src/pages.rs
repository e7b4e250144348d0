//! The routes: pages (GET) and actions (POST).

use std::sync::Arc;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{FromRequestParts, OriginalUri, Path, RawQuery, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use chrono::{DateTime, Utc};
use jobq::{JobFilter, JobId, JobState, RetryOutcome};

use crate::auth::{Access, Auth, COOKIE};
use crate::error::WebError;
use crate::form::Fields;
use crate::text::{cell, clip};
use crate::{assets, chart, limits_page};

/// Jobs one action may name: a page shows at most this many.
const MAX_IDS: usize = 1_000;
/// How much of a payload the detail page shows.
const PAYLOAD_SHOWN: usize = 200_000;
/// How much of one error message the detail page shows.
const ERROR_SHOWN: usize = 20_000;
/// How much of one header value the detail page shows.
const HEADER_SHOWN: usize = 2_000;

pub struct App {
    pub pool: jobq::Pool,
    pub auth: Auth,
}

pub(crate) type Shared = Arc<App>;

impl App {
    pub(crate) async fn conn(&self) -> Result<jobq_diesel::PooledConnection<'_>, WebError> {
        self.pool
            .get()
            .await
            .map_err(|e| WebError::Pool(e.to_string()))
    }
}

pub fn routes(app: Shared) -> Router {
    Router::new()
        .route("/", get(overview))
        .route("/jobs", get(jobs))
        .route("/jobs/{id}", get(job_detail))
        .route("/failed", get(failed))
        .route("/queues", get(queues))
        .route("/workers", get(workers))
        .route("/schedules", get(schedules))
        .route("/limits", get(limits_page::limits))
        .route("/actions/unblock", post(limits_page::unblock))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/actions/retry", post(retry))
        .route("/actions/cancel", post(cancel))
        .route("/actions/retry-failed", post(retry_failed))
        .route(
            "/actions/pause-queue",
            post(|s, b, h, body| set_queue_paused(s, b, h, body, true)),
        )
        .route(
            "/actions/resume-queue",
            post(|s, b, h, body| set_queue_paused(s, b, h, body, false)),
        )
        .route(
            "/actions/pause-schedule",
            post(|s, b, h, body| set_schedule_paused(s, b, h, body, true)),
        )
        .route(
            "/actions/resume-schedule",
            post(|s, b, h, body| set_schedule_paused(s, b, h, body, false)),
        )
        .route("/assets/style.css", get(assets::style))
        .route("/assets/app.js", get(assets::script))
        .fallback(|| async { WebError::NotFound })
        .layer(axum::middleware::map_response(security_headers))
        .with_state(app)
}

/// Scripts and styles only from the dashboard itself, no framing, no
/// sniffing: a value that escaped escaping still could not run.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
             form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// Where the dashboard is mounted ("" at the root, "/admin" when nested
/// there): the original path without the part the router matched.
pub struct Base(pub(crate) String);

impl<S: Send + Sync> FromRequestParts<S> for Base {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let inner = parts.uri.path();
        let original = parts
            .extensions
            .get::<OriginalUri>()
            .map(|o| o.0.path().to_owned())
            .unwrap_or_else(|| inner.to_owned());
        let base = if inner == "/" {
            original.trim_end_matches('/')
        } else {
            original.strip_suffix(inner).unwrap_or("")
        };
        Ok(Base(base.to_owned()))
    }
}

/// What every page's frame shows.
pub struct Chrome {
    pub(crate) base: String,
    pub(crate) nav: &'static str,
    pub(crate) read_only: bool,
    pub(crate) logged_in: bool,
    pub(crate) csrf: String,
    pub(crate) notice: Option<String>,
}

impl Chrome {
    pub(crate) fn new(app: &App, base: Base, headers: &HeaderMap, nav: &'static str) -> Self {
        let (read_only, logged_in, csrf) = match app.auth.access(headers) {
            Access::ReadOnly => (true, false, String::new()),
            Access::LoggedOut => (false, false, String::new()),
            Access::LoggedIn { csrf } => (false, true, csrf),
        };
        Self {
            base: base.0,
            nav,
            read_only,
            logged_in,
            csrf,
            notice: None,
        }
    }

    /// The outcome of an action, from the numbers its redirect carries
    /// (numbers only: a link cannot put words on the page).
    pub(crate) fn with_notice(mut self, fields: &Fields) -> Self {
        let n = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
        let mut parts = Vec::new();
        if let Some(v) = n("retried") {
            parts.push(format!("{v} retried"));
        }
        if let Some(v) = n("cancelled") {
            parts.push(format!("{v} cancelled"));
        }
        if let Some(v) = n("skipped") {
            parts.push(format!(
                "{v} left as they were (not retryable or cancellable)"
            ));
        }
        match n("paused") {
            Some(0) => parts.push("already paused".to_owned()),
            Some(_) => parts.push("paused".to_owned()),
            None => {}
        }
        match n("resumed") {
            Some(0) => parts.push("was not paused".to_owned()),
            Some(_) => parts.push("resumed".to_owned()),
            None => {}
        }
        match (n("lifted"), n("back")) {
            (Some(0), _) => parts.push("was not blocked".to_owned()),
            (Some(_), Some(back)) => parts.push(format!("block lifted, {back} jobs pending again")),
            _ => {}
        }
        if !parts.is_empty() {
            self.notice = Some(parts.join(", "));
        }
        self
    }
}

pub(crate) fn render(t: &impl Template) -> Result<Html<String>, WebError> {
    t.render()
        .map(Html)
        .map_err(|e| WebError::Internal(format!("rendering a page: {e}")))
}

pub(crate) fn url_encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

pub(crate) fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map(time).unwrap_or_default()
}

// ---------------------------------------------------------------- overview

struct TaskRow {
    queue: String,
    queue_q: String,
    task: String,
    task_q: String,
    scheduled: i64,
    pending: i64,
    running: i64,
    failed: i64,
    cancelled: i64,
    oldest_due: String,
    completed_hour: i64,
    failed_hour: i64,
}

struct WorkerRow {
    id: i64,
    hostname: String,
    pid: i32,
    queues: String,
    started: String,
    heartbeat: String,
    alive: bool,
    running: i64,
}

fn worker_rows(workers: Vec<jobq::WorkerStatus>) -> Vec<WorkerRow> {
    workers
        .into_iter()
        .map(|w| WorkerRow {
            id: w.id,
            hostname: cell(&w.hostname),
            pid: w.pid,
            queues: cell(&w.queues.join(", ")),
            started: time(w.started_at),
            heartbeat: time(w.heartbeat_at),
            alive: w.alive,
            running: w.running,
        })
        .collect()
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    chrome: Chrome,
    tasks: Vec<TaskRow>,
    totals: [i64; 5],
    completed_estimate: String,
    chart: String,
    completed_hour: i64,
    failed_hour: i64,
    live_workers: usize,
    workers: Vec<WorkerRow>,
}

async fn overview(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    let mut conn = app.conn().await?;
    let stats = jobq::stats(&mut conn)
        .await
        .map_err(WebError::jobq("reading statistics"))?;
    let minutes = jobq::throughput(&mut conn)
        .await
        .map_err(WebError::jobq("reading throughput"))?;
    let workers = jobq::workers(&mut conn)
        .await
        .map_err(WebError::jobq("listing workers"))?;
    drop(conn);
    let mut totals = [0i64; 5];
    let tasks = stats
        .tasks
        .iter()
        .map(|t| {
            for (sum, n) in
                totals
                    .iter_mut()
                    .zip([t.scheduled, t.pending, t.running, t.failed, t.cancelled])
            {
                *sum += n;
            }
            TaskRow {
                queue: cell(&t.queue),
                queue_q: url_encode(&t.queue),
                task: cell(&t.task),
                task_q: url_encode(&t.task),
                scheduled: t.scheduled,
                pending: t.pending,
                running: t.running,
                failed: t.failed,
                cancelled: t.cancelled,
                oldest_due: t
                    .oldest_due_age
                    .map(|d| {
                        humantime::format_duration(std::time::Duration::from_secs(d.as_secs()))
                            .to_string()
                    })
                    .unwrap_or_default(),
                completed_hour: t.completed_last_hour,
                failed_hour: t.failed_last_hour,
            }
        })
        .collect();
    let page = Overview {
        chrome: Chrome::new(&app, base, &headers, "overview"),
        tasks,
        totals,
        completed_estimate: stats
            .completed_estimate
            .map(|n| format!("~{n}"))
            .unwrap_or_else(|| "–".to_owned()),
        chart: chart::svg(&minutes),
        completed_hour: minutes.iter().map(|m| m.completed).sum(),
        failed_hour: minutes.iter().map(|m| m.failed).sum(),
        live_workers: stats.live_workers,
        workers: worker_rows(workers.into_iter().filter(|w| w.alive).collect()),
    };
    render(&page)
}

// -------------------------------------------------------------------- jobs

struct JobRow {
    id: i64,
    state: &'static str,
    task: String,
    queue: String,
    priority: i16,
    attempts: String,
    created: String,
    finished: String,
    key: String,
    retryable: bool,
    cancellable: bool,
}

/// The filter form's values, as given (shown back in the form).
#[derive(Default)]
struct FilterView {
    state: String,
    task: String,
    queue: String,
    key: String,
    since: String,
    limit: String,
}

#[derive(Template)]
#[template(path = "jobs.html")]
struct Jobs {
    chrome: Chrome,
    title: &'static str,
    failed_page: bool,
    filter: FilterView,
    states: [&'static str; 6],
    rows: Vec<JobRow>,
    next: Option<String>,
    first: Option<String>,
    back: String,
    failed_tasks: Vec<(String, String, i64)>,
    /// A filter on queue or time without a state, task or key: no index
    /// holds finished jobs by those, see `jobq::jobs`.
    slow_filter: bool,
}

const STATES: [&str; 6] = [
    "scheduled",
    "pending",
    "running",
    "completed",
    "failed",
    "cancelled",
];

fn parse_since(s: &str) -> Result<DateTime<Utc>, WebError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let age = humantime::parse_duration(s).map_err(|_| {
        WebError::BadRequest(format!(
            "since: {:?} is neither an age (1h, 2d) nor a time (2026-11-30T12:00:00Z)",
            clip(s, 100)
        ))
    })?;
    chrono::Duration::from_std(age)
        .ok()
        .and_then(|age| Utc::now().checked_sub_signed(age))
        .ok_or_else(|| WebError::BadRequest("since: too long ago".to_owned()))
}

/// The filter a query string asks for, and the form's view of it.
fn read_filter(q: &Fields, failed_page: bool) -> Result<(JobFilter, FilterView, String), WebError> {
    let mut filter = JobFilter::new().limit(50);
    let mut view = FilterView::default();
    // The query string of this filter without paging, for the next-page
    // and return links.
    let mut keep = Vec::new();
    let state = if failed_page {
        Some("failed")
    } else {
        q.get("state")
    };
    if let Some(s) = state {
        let state: JobState = s.parse().map_err(|_| {
            WebError::BadRequest(format!("state: {:?} is not a job state", clip(s, 100)))
        })?;
        filter = filter.state(state);
        view.state = state.as_str().to_owned();
        if !failed_page {
            keep.push(format!("state={}", state.as_str()));
        }
    }
    if let Some(t) = q.get("task") {
        filter = filter.task(t);
        view.task = clip(t, 1000);
        keep.push(format!("task={}", url_encode(t)));
    }
    if let Some(v) = q.get("queue") {
        filter = filter.queue(v);
        view.queue = clip(v, 1000);
        keep.push(format!("queue={}", url_encode(v)));
    }
    if let Some(v) = q.get("key") {
        filter = filter.dedupe_key(v);
        view.key = clip(v, 1000);
        keep.push(format!("key={}", url_encode(v)));
    }
    if let Some(v) = q.get("since") {
        filter = filter.since(parse_since(v)?);
        view.since = clip(v, 100);
        keep.push(format!("since={}", url_encode(v)));
    }
    if let Some(v) = q.get("limit") {
        let n: u32 = v
            .parse()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| {
                WebError::BadRequest(format!("limit: {:?} is not 1 to 1000", clip(v, 100)))
            })?;
        filter = filter.limit(n);
        view.limit = n.to_string();
        keep.push(format!("limit={n}"));
    }
    if let Some(v) = q.get("before") {
        let id: i64 = v.parse().map_err(|_| {
            WebError::BadRequest(format!("before: {:?} is not a job id", clip(v, 100)))
        })?;
        filter = filter.before(JobId::from(id));
    }
    Ok((filter, view, keep.join("&")))
}

async fn jobs(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    list(app, base, headers, query, false).await
}

async fn failed(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    list(app, base, headers, query, true).await
}

async fn list(
    app: Shared,
    base: Base,
    headers: HeaderMap,
    query: Option<String>,
    failed_page: bool,
) -> Result<Html<String>, WebError> {
    let q = Fields::parse(query.as_deref().unwrap_or("").as_bytes());
    let (filter, view, keep) = read_filter(&q, failed_page)?;
    // A task or a key has an index of its own (see `jobq::jobs`); a queue
    // or a time without a state walks the primary key.
    let slow_filter = view.state.is_empty()
        && view.task.is_empty()
        && view.key.is_empty()
        && ["queue", "since"].iter().any(|k| q.get(k).is_some());
    let limit = view.limit.parse().unwrap_or(50usize);
    let mut conn = app.conn().await?;
    let jobs = jobq::jobs(&mut conn, &filter)
        .await
        .map_err(WebError::jobq("listing jobs"))?;
    let failed_tasks = if failed_page {
        let stats = jobq::stats(&mut conn)
            .await
            .map_err(WebError::jobq("reading statistics"))?;
        stats
            .tasks
            .iter()
            .filter(|t| t.failed > 0)
            .map(|t| (cell(&t.task), t.task.clone(), t.failed))
            .collect()
    } else {
        Vec::new()
    };
    drop(conn);
    let path = if failed_page { "/failed" } else { "/jobs" };
    let chrome = Chrome::new(
        &app,
        base,
        &headers,
        if failed_page { "failed" } else { "jobs" },
    )
    .with_notice(&q);
    let sep = if keep.is_empty() { "" } else { "&" };
    let next = (jobs.len() == limit)
        .then(|| jobs.last())
        .flatten()
        .map(|last| format!("{}{path}?{keep}{sep}before={}", chrome.base, last.id));
    let first = q
        .get("before")
        .map(|_| format!("{}{path}?{keep}", chrome.base));
    let rows = jobs
        .into_iter()
        .map(|j| JobRow {
            id: j.id.get(),
            state: j.state.as_str(),
            task: cell(&j.task),
            queue: cell(&j.queue),
            priority: j.priority,
            attempts: format!("{}/{}", j.attempt, j.max_attempts),
            created: time(j.created_at),
            finished: opt_time(j.finished_at),
            key: j.dedupe_key.as_deref().map(cell).unwrap_or_default(),
            retryable: matches!(j.state, JobState::Failed | JobState::Cancelled),
            cancellable: !j.state.is_terminal(),
        })
        .collect();
    let page = Jobs {
        chrome,
        title: if failed_page { "Failed jobs" } else { "Jobs" },
        failed_page,
        filter: view,
        states: STATES,
        rows,
        next,
        first,
        back: format!("{path}?{keep}"),
        failed_tasks,
        slow_filter,
    };
    render(&page)
}

struct ErrorRow {
    attempt: u32,
    at: String,
    message: String,
}

#[derive(Template)]
#[template(path = "job.html")]
struct JobPage {
    chrome: Chrome,
    id: i64,
    state: &'static str,
    task: String,
    task_q: String,
    queue: String,
    priority: i16,
    attempts: String,
    run_at: String,
    created: String,
    started: String,
    finished: String,
    key: String,
    partition_key: String,
    unique_key: String,
    /// Name and value, both made safe to show.
    headers: Vec<(String, String)>,
    payload: String,
    /// The output as pretty JSON; `None` until the job completes with one.
    output: Option<String>,
    errors: Vec<ErrorRow>,
    retryable: bool,
    cancellable: bool,
    back: String,
}

async fn job_detail(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    let id: i64 = id
        .parse()
        .map_err(|_| WebError::BadRequest(format!("{:?} is not a job id", clip(&id, 100))))?;
    let mut conn = app.conn().await?;
    let job = jobq::job(&mut conn, JobId::from(id))
        .await
        .map_err(WebError::jobq("reading the job"))?
        .ok_or(WebError::NotFound)?;
    drop(conn);
    let q = Fields::parse(query.as_deref().unwrap_or("").as_bytes());
    let payload = serde_json::to_string_pretty(&job.payload)
        .unwrap_or_else(|e| format!("(payload cannot be shown: {e})"));
    let page = JobPage {
        chrome: Chrome::new(&app, base, &headers, "jobs").with_notice(&q),
        id,
        state: job.state.as_str(),
        task: clip(&job.task, 1000),
        task_q: url_encode(&job.task),
        queue: clip(&job.queue, 1000),
        priority: job.priority,
        attempts: format!("{}/{}", job.attempt, job.max_attempts),
        run_at: time(job.run_at),
        created: time(job.created_at),
        started: opt_time(job.started_at),
        finished: opt_time(job.finished_at),
        key: job
            .dedupe_key
            .as_deref()
            .map(|k| clip(k, 1000))
            .unwrap_or_default(),
        partition_key: job
            .key
            .as_deref()
            .map(|k| clip(k, 1000))
            .unwrap_or_default(),
        unique_key: job
            .unique_key
            .as_deref()
            .map(|k| clip(k, 1000))
            .unwrap_or_default(),
        headers: job
            .headers
            .iter()
            .map(|(name, value)| (cell(name), clip(value, HEADER_SHOWN)))
            .collect(),
        payload: clip(&payload, PAYLOAD_SHOWN),
        output: job.output.as_ref().map(|output| {
            let text = serde_json::to_string_pretty(output)
                .unwrap_or_else(|e| format!("(output cannot be shown: {e})"));
            clip(&text, PAYLOAD_SHOWN)
        }),
        errors: job
            .errors
            .iter()
            .map(|e| ErrorRow {
                attempt: e.attempt,
                at: time(e.at),
                message: clip(&e.message, ERROR_SHOWN),
            })
            .collect(),
        retryable: matches!(job.state, JobState::Failed | JobState::Cancelled),
        cancellable: !job.state.is_terminal(),
        back: format!("/jobs/{id}?"),
    };
    render(&page)
}

// ------------------------------------------------------- queues and workers

struct QueueRow {
    queue: String,
    queue_q: String,
    scheduled: i64,
    pending: i64,
    running: i64,
    failed: i64,
    tasks: usize,
    paused: bool,
}

impl QueueRow {
    fn new(name: &str) -> Self {
        Self {
            queue: cell(name),
            queue_q: url_encode(name),
            scheduled: 0,
            pending: 0,
            running: 0,
            failed: 0,
            tasks: 0,
            paused: false,
        }
    }
}

#[derive(Template)]
#[template(path = "queues.html")]
struct Queues {
    chrome: Chrome,
    queues: Vec<QueueRow>,
}

async fn queues(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    let mut conn = app.conn().await?;
    let stats = jobq::stats(&mut conn)
        .await
        .map_err(WebError::jobq("reading statistics"))?;
    let paused = jobq::paused_queues(&mut conn)
        .await
        .map_err(WebError::jobq("listing paused queues"))?;
    drop(conn);
    // By the raw name: two names may look alike once made safe to show.
    let mut queues: std::collections::BTreeMap<&str, QueueRow> = std::collections::BTreeMap::new();
    for t in &stats.tasks {
        let q = queues
            .entry(t.queue.as_str())
            .or_insert_with(|| QueueRow::new(&t.queue));
        q.scheduled += t.scheduled;
        q.pending += t.pending;
        q.running += t.running;
        q.failed += t.failed;
        q.tasks += 1;
    }
    // A paused queue is listed even without jobs, so it can be resumed.
    for name in &paused {
        queues
            .entry(name.as_str())
            .or_insert_with(|| QueueRow::new(name))
            .paused = true;
    }
    let q = Fields::parse(query.as_deref().unwrap_or("").as_bytes());
    render(&Queues {
        chrome: Chrome::new(&app, base, &headers, "queues").with_notice(&q),
        queues: queues.into_values().collect(),
    })
}

#[derive(Template)]
#[template(path = "workers.html")]
struct Workers {
    chrome: Chrome,
    workers: Vec<WorkerRow>,
}

async fn workers(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    let mut conn = app.conn().await?;
    let workers = jobq::workers(&mut conn)
        .await
        .map_err(WebError::jobq("listing workers"))?;
    drop(conn);
    render(&Workers {
        chrome: Chrome::new(&app, base, &headers, "workers"),
        workers: worker_rows(workers),
    })
}

// -------------------------------------------------------------- schedules

struct ScheduleRow {
    name: String,
    name_q: String,
    task: String,
    task_q: String,
    expression: String,
    timezone: String,
    paused: bool,
    last_tick: String,
    next_tick: String,
}

#[derive(Template)]
#[template(path = "schedules.html")]
struct Schedules {
    chrome: Chrome,
    schedules: Vec<ScheduleRow>,
}

async fn schedules(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, WebError> {
    let mut conn = app.conn().await?;
    let listed = jobq::schedules(&mut conn)
        .await
        .map_err(WebError::jobq("listing schedules"))?;
    drop(conn);
    let q = Fields::parse(query.as_deref().unwrap_or("").as_bytes());
    render(&Schedules {
        chrome: Chrome::new(&app, base, &headers, "schedules").with_notice(&q),
        schedules: listed
            .into_iter()
            .map(|s| ScheduleRow {
                name: cell(&s.name),
                name_q: url_encode(&s.name),
                task: cell(&s.task),
                task_q: url_encode(&s.task),
                expression: cell(&s.expression),
                timezone: cell(&s.timezone),
                paused: s.paused,
                last_tick: opt_time(s.last_tick),
                next_tick: s.next_tick.map(time).unwrap_or_else(|| "–".to_owned()),
            })
            .collect(),
    })
}

// ------------------------------------------------------------------ login

#[derive(Template)]
#[template(path = "login.html")]
struct Login {
    chrome: Chrome,
    wrong: bool,
}

async fn login_page(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
) -> Result<Html<String>, WebError> {
    render(&Login {
        chrome: Chrome::new(&app, base, &headers, "login"),
        wrong: false,
    })
}

async fn login(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    crate::auth::check_origin(&headers)?;
    if !app.auth.enabled() {
        return Err(WebError::Forbidden(
            "the dashboard is read-only: start it with a token to allow actions",
        ));
    }
    let fields = Fields::parse(&body);
    if !app.auth.token_matches(fields.get("token").unwrap_or("")) {
        tracing::warn!("jobq-web: login with a wrong token");
        let page = render(&Login {
            chrome: Chrome::new(&app, base, &headers, "login"),
            wrong: true,
        })?;
        return Ok((StatusCode::FORBIDDEN, page).into_response());
    }
    let session = app.auth.login()?;
    let cookie = format!(
        "{COOKIE}={session}; Path={}; HttpOnly; SameSite=Strict; Max-Age={}",
        cookie_path(&base.0),
        app.auth.lifetime().as_secs()
    );
    Ok(with_cookie(Redirect::to(&format!("{}/", base.0)), &cookie))
}

async fn logout(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, WebError> {
    let fields = Fields::parse(&body);
    app.auth.check_action(&headers, fields.get("csrf"))?;
    app.auth.logout(&headers);
    let cookie = format!(
        "{COOKIE}=; Path={}; HttpOnly; SameSite=Strict; Max-Age=0",
        cookie_path(&base.0)
    );
    Ok(with_cookie(Redirect::to(&format!("{}/", base.0)), &cookie))
}

fn cookie_path(base: &str) -> &str {
    if base.is_empty() {
        "/"
    } else {
        base
    }
}

fn with_cookie(redirect: Redirect, cookie: &str) -> Response {
    let mut response = redirect.into_response();
    // Built from hex and the mount path, which came in a valid URI.
    if let Ok(v) = HeaderValue::from_str(cookie) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

// ---------------------------------------------------------------- actions

/// Where an action returns to: a path of the dashboard from the form's
/// `back` field, never another site.
pub(crate) fn back_to(base: &str, fields: &Fields, outcome: &str) -> Redirect {
    let back = fields
        .get("back")
        .filter(|b| b.starts_with('/') && !b.starts_with("//") && !b.contains(['\\', '\r', '\n']))
        .unwrap_or("/jobs?");
    let sep = if back.contains('?') { "&" } else { "?" };
    let sep = if back.ends_with('?') || back.ends_with('&') {
        ""
    } else {
        sep
    };
    Redirect::to(&format!("{base}{back}{sep}{outcome}"))
}

/// The jobs an action names: the one of a row's own button (`only`), or
/// every ticked box (`id`).
fn ids(fields: &Fields) -> Result<Vec<JobId>, WebError> {
    let key = if fields.get("only").is_some() {
        "only"
    } else {
        "id"
    };
    let ids: Vec<JobId> = fields
        .all(key)
        .map(|v| {
            v.trim()
                .parse::<i64>()
                .map(JobId::from)
                .map_err(|_| WebError::BadRequest(format!("{:?} is not a job id", clip(v, 100))))
        })
        .collect::<Result<_, _>>()?;
    if ids.is_empty() {
        return Err(WebError::BadRequest("no job selected".to_owned()));
    }
    if ids.len() > MAX_IDS {
        return Err(WebError::BadRequest(format!(
            "at most {MAX_IDS} jobs at a time"
        )));
    }
    Ok(ids)
}

/// What the failed-jobs page can do to each job a form names.
#[derive(Debug, Clone, Copy)]
enum JobAction {
    Retry,
    Cancel,
}

impl JobAction {
    fn done(self) -> &'static str {
        match self {
            JobAction::Retry => "retried",
            JobAction::Cancel => "cancelled",
        }
    }

    /// Whether the job changed; `false` when it is no longer in a state
    /// the action applies to.
    async fn apply(
        self,
        conn: &mut jobq_diesel::AsyncPgConnection,
        id: JobId,
    ) -> Result<bool, WebError> {
        match self {
            JobAction::Retry => jobq::retry(conn, id)
                .await
                .map(|outcome| matches!(outcome, RetryOutcome::Retried))
                .map_err(WebError::jobq("retrying a job")),
            JobAction::Cancel => jobq::cancel(conn, id)
                .await
                .map_err(WebError::jobq("cancelling a job")),
        }
    }

    async fn on_each(
        self,
        app: &Shared,
        base: &Base,
        headers: &HeaderMap,
        body: &Bytes,
    ) -> Result<Redirect, WebError> {
        let fields = Fields::parse(body);
        app.auth.check_action(headers, fields.get("csrf"))?;
        let ids = ids(&fields)?;
        let mut conn = app.conn().await?;
        let (mut changed, mut skipped) = (0, 0);
        for id in ids {
            if self.apply(&mut conn, id).await? {
                changed += 1;
            } else {
                skipped += 1;
            }
        }
        let done = self.done();
        tracing::info!(changed, skipped, action = done, "jobq-web: jobs {done}");
        Ok(back_to(
            &base.0,
            &fields,
            &format!("{done}={changed}&skipped={skipped}"),
        ))
    }
}

async fn retry(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, WebError> {
    JobAction::Retry.on_each(&app, &base, &headers, &body).await
}

async fn cancel(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, WebError> {
    JobAction::Cancel
        .on_each(&app, &base, &headers, &body)
        .await
}

async fn retry_failed(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Redirect, WebError> {
    let fields = Fields::parse(&body);
    app.auth.check_action(&headers, fields.get("csrf"))?;
    let task = fields
        .all("task")
        .next()
        .filter(|t| !t.is_empty())
        .ok_or_else(|| WebError::BadRequest("no task given".to_owned()))?;
    let mut conn = app.conn().await?;
    let retried = jobq::retry_failed(&mut conn, task)
        .await
        .map_err(WebError::jobq("retrying failed jobs"))?;
    tracing::info!(retried, "jobq-web: failed jobs of a task retried");
    Ok(back_to(&base.0, &fields, &format!("retried={retried}")))
}

/// The queue or schedule name an action names. Forms carry it
/// percent-encoded (as in links): the page then holds no control
/// character, and a name with a carriage return or edge blanks, which a
/// browser would change in a plain field, still arrives byte for byte.
pub(crate) fn encoded_name(fields: &Fields, key: &'static str) -> Result<String, WebError> {
    let encoded = fields
        .all(key)
        .next()
        .filter(|v| !v.is_empty())
        .ok_or_else(|| WebError::BadRequest(format!("no {key} given")))?;
    // Percent-encoding never yields these; a value holding them was typed
    // by hand and would be cut by the decoder.
    if encoded.contains(['&', '=']) {
        return Err(WebError::BadRequest(format!(
            "{key}: {:?} is not percent-encoded",
            clip(encoded, 100)
        )));
    }
    let name: String = form_urlencoded::parse(encoded.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    if name.is_empty() {
        return Err(WebError::BadRequest(format!("no {key} given")));
    }
    Ok(name)
}

/// A queue name jobq refuses (too long, NUL) is the caller's mistake.
fn queue_error(context: &'static str) -> impl FnOnce(jobq::Error) -> WebError {
    move |e| match e {
        jobq::Error::InvalidOptions { reason, .. } => WebError::BadRequest(reason),
        source => WebError::Jobq { context, source },
    }
}

/// Pauses (`pause`) or resumes the queue an action names.
async fn set_queue_paused(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
    pause: bool,
) -> Result<Redirect, WebError> {
    let fields = Fields::parse(&body);
    app.auth.check_action(&headers, fields.get("csrf"))?;
    let queue = encoded_name(&fields, "queue")?;
    let mut conn = app.conn().await?;
    let (changed, done) = if pause {
        let changed = jobq::pause_queue(&mut conn, &queue)
            .await
            .map_err(queue_error("pausing a queue"))?;
        (changed, "paused")
    } else {
        let changed = jobq::resume_queue(&mut conn, &queue)
            .await
            .map_err(queue_error("resuming a queue"))?;
        (changed, "resumed")
    };
    tracing::info!(queue = %clip(&queue, 200), changed, "jobq-web: queue {done}");
    Ok(back_to(
        &base.0,
        &fields,
        &format!("{done}={}", u8::from(changed)),
    ))
}

/// The schedule an action names. PostgreSQL text cannot hold NUL, so no
/// schedule has such a name; asking the database would only fail.
fn schedule_name(fields: &Fields) -> Result<String, WebError> {
    let name = encoded_name(fields, "schedule")?;
    if name.contains('\0') {
        return Err(WebError::NotFound);
    }
    Ok(name)
}

/// Pauses (`pause`) or resumes the schedule an action names; an unknown
/// name is not found.
async fn set_schedule_paused(
    State(app): State<Shared>,
    base: Base,
    headers: HeaderMap,
    body: Bytes,
    pause: bool,
) -> Result<Redirect, WebError> {
    let fields = Fields::parse(&body);
    app.auth.check_action(&headers, fields.get("csrf"))?;
    let name = schedule_name(&fields)?;
    let mut conn = app.conn().await?;
    let (found, done) = if pause {
        let found = jobq::pause_schedule(&mut conn, &name)
            .await
            .map_err(WebError::jobq("pausing a schedule"))?;
        (found, "paused")
    } else {
        let found = jobq::resume_schedule(&mut conn, &name)
            .await
            .map_err(WebError::jobq("resuming a schedule"))?;
        (found, "resumed")
    };
    if !found {
        return Err(WebError::NotFound);
    }
    tracing::info!(schedule = %clip(&name, 200), "jobq-web: schedule {done}");
    Ok(back_to(&base.0, &fields, &format!("{done}=1")))
}
