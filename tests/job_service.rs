//! `examples/job_service.rs` over real HTTP: idempotent submission, the
//! correlation lookup, the done and error paths, health while the database
//! stops answering, and the metrics.

mod support;

#[path = "../examples/job_service.rs"]
#[allow(dead_code)]
mod example;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use jobq_testkit::PrivateServer;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use support::proxy::Proxy;

/// The metrics recorder is global to the process.
fn metrics() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .install_recorder()
                .expect("recorder")
        })
        .clone()
}

/// Serves the example's app for `service` on a free port.
async fn serve(service: example::Service) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = example::app(service);
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

/// What a client's callback endpoint received: (path, body).
type Received = Arc<Mutex<Vec<(String, Value)>>>;

/// A client's callback endpoint: `/ok` answers 200, `/fail` 500.
async fn callback_target() -> (String, Received) {
    let received: Received = Arc::default();
    let record = |path: &'static str, status: axum::http::StatusCode| {
        let received = Arc::clone(&received);
        axum::routing::post(move |body: String| async move {
            let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
            received
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((path.to_owned(), body));
            status
        })
    };
    let app = axum::Router::new()
        .route("/ok", record("/ok", axum::http::StatusCode::OK))
        .route(
            "/fail",
            record("/fail", axum::http::StatusCode::INTERNAL_SERVER_ERROR),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (base, received)
}

struct Api {
    base: String,
    client: reqwest::Client,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .timeout(Duration::from_secs(30));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let response = request.send().await.expect("request");
        let status = response.status().as_u16();
        let text = response.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, value)
    }

    async fn submit(&self, client_id: &str, request_id: &str, document: &str) -> (u16, Value) {
        self.submit_with_callback(client_id, request_id, document, None)
            .await
    }

    async fn submit_with_callback(
        &self,
        client_id: &str,
        request_id: &str,
        document: &str,
        callback_url: Option<&str>,
    ) -> (u16, Value) {
        let body = json!({
            "client_id": client_id,
            "request_id": request_id,
            "request": {"document": document},
            "callback_url": callback_url,
        });
        self.call(reqwest::Method::POST, "/jobs", Some(body)).await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }

    /// Polls the job until its callback is no longer pending.
    async fn called_back(&self, id: i64) -> Value {
        let deadline = Instant::now() + support::SOON;
        loop {
            let (_, job) = self.get(&format!("/jobs/{id}")).await;
            if job["callback"]["status"] != "pending" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} not called back: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls the job until its status is no longer pending or running.
    async fn finished(&self, id: i64) -> Value {
        let deadline = Instant::now() + support::SOON;
        loop {
            let (status, job) = self.get(&format!("/jobs/{id}")).await;
            assert_eq!(status, 200, "{job}");
            if job["status"] == "done" || job["status"] == "error" {
                return job;
            }
            assert!(Instant::now() < deadline, "job {id} not finished: {job}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submissions_are_idempotent_and_end_done_or_in_error() {
    let env = support::env().await;
    env.conn()
        .await
        .batch_execute(example::SCHEMA)
        .await
        .expect("the service's table");
    let service = example::Service {
        pool: env.pool.clone(),
        metrics: metrics(),
        with_worker: true,
    };
    let api = Api {
        base: serve(service).await,
        client: reqwest::Client::new(),
    };
    let (target, received) = callback_target().await;
    let (ok, fail) = (format!("{target}/ok"), format!("{target}/fail"));
    // Submitted before any worker runs: the first answer is `pending`.
    let (status, first) = api
        .submit_with_callback("c1", "r1", "total: 12 EUR\nvendor: ACME", Some(&ok))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["status"], "pending");
    assert_eq!(first["callback"], json!({"url": ok, "status": "pending"}));
    let id = first["id"].as_i64().expect("id");
    // A retried submission gets the same job, whatever it carries now: the
    // first submission's callback URL wins.
    let (status, again) = api
        .submit_with_callback("c1", "r1", "something else", Some(&fail))
        .await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    assert_eq!(again["request"]["document"], "total: 12 EUR\nvendor: ACME");
    assert_eq!(again["callback"]["url"], json!(ok));
    // The pair is the key, not its concatenation.
    let (a, _) = api.submit("c1/x", "r1", "a: 1").await;
    let (b, _) = api.submit("c1", "x/r1", "a: 1").await;
    assert_eq!((a, b), (201, 201));
    // Ids are data: any characters, refused only where jobq refuses them.
    let (status, odd) = api.submit("c'\"\\;--ü", "r\u{1F600}", "a: 1").await;
    assert_eq!(status, 201, "{odd}");
    let (status, refused) = api.submit("c\u{0}", "r1", "a: 1").await;
    assert_eq!(status, 422, "U+0000 cannot be stored: {refused}");
    let (status, _) = api.submit("", "r1", "a: 1").await;
    assert_eq!(status, 400);

    let (status, found) = api.get("/jobs?client_id=c1&request_id=r1").await;
    assert_eq!((status, &found["id"]), (200, &first["id"]));
    let (status, found) = api
        .get("/jobs?client_id=c%27%22%5C%3B--%C3%BC&request_id=r%F0%9F%98%80")
        .await;
    assert_eq!((status, &found["id"]), (200, &odd["id"]), "{found}");
    assert_eq!(api.get("/jobs?client_id=c1&request_id=nope").await.0, 404);
    assert_eq!(api.get("/jobs?client_id=c1").await.0, 400);
    assert_eq!(api.get("/jobs/999999999").await.0, 404);

    let (_, unreadable) = api
        .submit_with_callback("c2", "r1", "#unreadable", Some(&fail))
        .await;
    let (_, flaky) = api.submit("c2", "r2", "#flaky\nsum: 3").await;
    let worker = example::worker(env.db.url(), &env.pool)
        .poll_interval(Duration::from_millis(100))
        .build()
        .await
        .expect("worker")
        .spawn();

    let done = api.finished(id).await;
    assert_eq!(done["status"], "done", "{done}");
    assert_eq!(
        done["response"],
        json!({"fields": {"total": "12 EUR", "vendor": "ACME"}})
    );
    assert_eq!(done["attempts"], 1);
    let failed = api.finished(unreadable["id"].as_i64().expect("id")).await;
    assert_eq!(failed["status"], "error", "{failed}");
    assert_eq!(failed["error"]["code"], "E_UNREADABLE", "{failed}");
    assert_eq!(failed["attempts"], 1, "a permanent error is not retried");
    let retried = api.finished(flaky["id"].as_i64().expect("id")).await;
    assert_eq!(
        (&retried["status"], &retried["attempts"]),
        (&json!("done"), &json!(2)),
        "{retried}"
    );

    // One-shot callbacks, once each job has ended: the job as the API shows
    // it, to the first submission's URL; a failed delivery is recorded and
    // changes nothing about the job.
    let delivered = api.called_back(id).await;
    assert_eq!(delivered["callback"]["status"], "delivered", "{delivered}");
    let not_delivered = api
        .called_back(unreadable["id"].as_i64().expect("id"))
        .await;
    assert_eq!(
        not_delivered["callback"]["status"], "failed",
        "{not_delivered}"
    );
    assert_eq!(not_delivered["status"], "error");
    assert_eq!(not_delivered["error"]["code"], "E_UNREADABLE");
    let calls = received.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let to = |path: &str| -> Vec<&Value> {
        calls
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, b)| b)
            .collect()
    };
    assert_eq!(to("/ok").len(), 1, "{calls:?}");
    assert_eq!(
        (&to("/ok")[0]["id"], &to("/ok")[0]["status"]),
        (&json!(id), &json!("done"))
    );
    assert_eq!(to("/ok")[0]["response"], done["response"]);
    assert_eq!(to("/fail").len(), 1, "{calls:?}");
    assert_eq!(to("/fail")[0]["id"], unreadable["id"]);
    // Jobs without a callback URL have no callback.
    assert_eq!(retried["callback"], Value::Null);

    let (status, health) = api.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health, json!({"postgres": "ok", "worker": "ok"}));
    let (status, scrape) = api.get("/metrics").await;
    assert_eq!(status, 200);
    let scrape = scrape.as_str().expect("text").to_owned();
    assert!(
        scrape.lines().any(|l| l.starts_with("service_jobs{")
            && l.contains("queue=\"extraction\"")
            && l.contains("state=\"failed\"")
            && l.ends_with(" 1")),
        "{scrape}"
    );
    worker.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_a_database_that_stopped_answering_within_its_bound() {
    support::init_tracing();
    let server = PrivateServer::start().await.expect("server");
    {
        let pool = example::pool(server.url());
        let mut conn = pool.get().await.expect("connection");
        jobq::migrate(&mut conn).await.expect("migrate");
    }
    let proxy = Proxy::start(server.port()).await;
    let through = format!("postgres://postgres@127.0.0.1:{}/postgres", proxy.port());
    let service = example::Service {
        pool: example::pool(&through),
        metrics: metrics(),
        with_worker: false,
    };
    let api = Api {
        base: serve(service).await,
        client: reqwest::Client::new(),
    };
    let (status, health) = api.get("/healthz").await;
    assert_eq!(
        (status, health["postgres"].as_str()),
        (200, Some("ok")),
        "{health}"
    );

    proxy.freeze();
    let asked = Instant::now();
    let (status, health) = api.get("/healthz").await;
    let took = asked.elapsed();
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["postgres"], "fail", "{health}");
    // The probe's bound is 2 s; the rest is room for a slow machine.
    assert!(took < Duration::from_secs(10), "the probe took {took:?}");

    proxy.thaw();
    support::wait_until("health to recover", || async {
        api.get("/healthz").await.0 == 200
    })
    .await;
}
