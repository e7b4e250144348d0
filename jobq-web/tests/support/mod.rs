//! A test database with jobq's schema, a dashboard served on a free port,
//! and a small HTTP client that keeps the session cookie.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use diesel_async::SimpleAsyncConnection;
use jobq::{EnqueueOptions, JobId, JobInfo};
use jobq_testkit::TestDatabase;

pub struct Env {
    pub db: TestDatabase,
    pub pool: jobq::Pool,
}

/// A pool on `url` whose checkouts wait at most `checkout`.
pub fn pool_for(url: &str, checkout: Duration) -> jobq::Pool {
    let options = jobq::ConnectOptions::parse(url).expect("database url");
    jobq_diesel::build_pool(jobq_diesel::Connector::new(options), 8, checkout)
}

pub async fn env() -> Env {
    let db = TestDatabase::create().await.expect("test database");
    let pool = pool_for(db.url(), Duration::from_secs(10));
    let mut conn = pool.get().await.expect("connection");
    jobq::migrate(&mut conn).await.expect("migrate");
    drop(conn);
    Env { db, pool }
}

impl Env {
    pub async fn enqueue(&self, task: &str, payload: serde_json::Value) -> JobId {
        self.enqueue_with(task, payload, EnqueueOptions::new())
            .await
    }

    pub async fn enqueue_with(
        &self,
        task: &str,
        payload: serde_json::Value,
        options: EnqueueOptions,
    ) -> JobId {
        let mut conn = self.pool.get().await.expect("connection");
        jobq::enqueue_json(&mut conn, task, &payload, options)
            .await
            .expect("enqueue")
    }

    /// Marks the job failed as a worker would after its last attempt, with
    /// `message` as its one error.
    pub async fn fail(&self, id: JobId, message: &str) {
        let errors = serde_json::json!([{
            "attempt": 1, "at": "2026-11-30T00:00:00Z", "message": message,
        }])
        .to_string();
        let mut conn = self.pool.get().await.expect("connection");
        conn.batch_execute(&format!(
            "UPDATE jobq.jobs SET state = 'failed', attempt = 1, max_attempts = 1, \
             finished_at = now(), errors = {} WHERE id = {id}",
            quote(&errors)
        ))
        .await
        .expect("fail job");
    }

    /// Marks the job completed with `output`, as a worker would store a
    /// task fn's return value.
    pub async fn complete_with(&self, id: JobId, output: &serde_json::Value) {
        let mut conn = self.pool.get().await.expect("connection");
        conn.batch_execute(&format!(
            "UPDATE jobq.jobs SET state = 'completed', attempt = 1, finished_at = now(), \
             output = {}::jsonb WHERE id = {id}",
            quote(&output.to_string())
        ))
        .await
        .expect("complete job");
    }

    /// Declares a schedule as a starting worker does.
    pub async fn declare_schedule(&self, name: &str, task: &str, expression: &str) {
        let mut conn = self.pool.get().await.expect("connection");
        jobq_diesel::declare_schedules(
            &mut conn,
            &[jobq_diesel::ScheduleDef {
                name: name.to_owned(),
                task: task.to_owned(),
                expression: expression.to_owned(),
                timezone: "UTC".to_owned(),
            }],
        )
        .await
        .expect("declare schedule");
    }

    /// Runs SQL that sets up rows as workers would leave them.
    pub async fn execute(&self, sql: &str) {
        let mut conn = self.pool.get().await.expect("connection");
        conn.batch_execute(sql).await.expect(sql);
    }

    pub async fn paused_queues(&self) -> Vec<String> {
        let mut conn = self.pool.get().await.expect("connection");
        jobq::paused_queues(&mut conn).await.expect("paused queues")
    }

    pub async fn schedule(&self, name: &str) -> jobq::ScheduleInfo {
        let mut conn = self.pool.get().await.expect("connection");
        jobq::schedules(&mut conn)
            .await
            .expect("schedules")
            .into_iter()
            .find(|s| s.name == name)
            .expect("schedule exists")
    }

    pub async fn job(&self, id: JobId) -> JobInfo {
        let mut conn = self.pool.get().await.expect("connection");
        jobq::job(&mut conn, id)
            .await
            .expect("job lookup")
            .expect("job exists")
    }

    pub async fn register_worker(&self, hostname: &str, queues: &[&str]) -> i64 {
        let mut conn = self.pool.get().await.expect("connection");
        let info = jobq_diesel::WorkerInfo {
            hostname: hostname.to_owned(),
            pid: 4242,
            queues: queues.iter().map(|q| (*q).to_owned()).collect(),
            lease: Duration::from_secs(60),
        };
        jobq_diesel::register_worker(&mut conn, &info)
            .await
            .expect("register worker")
    }
}

/// A SQL string literal (the tests' own data only).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Serves `app` on 127.0.0.1 at a free port until the test's runtime
/// ends.
pub async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    addr
}

/// A client that follows no redirect (the tests check them) and keeps the
/// session cookie by hand.
pub struct Client {
    http: reqwest::Client,
    pub origin: String,
    pub cookie: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub location: Option<String>,
    pub set_cookie: Option<String>,
    pub body: String,
}

impl Client {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            origin: format!("http://{addr}"),
            cookie: None,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        let mut req = self.http.get(format!("{}{path}", self.origin));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        reply(req.send().await.expect("GET")).await
    }

    /// Posts `fields` as a form, with this client's Origin unless `origin`
    /// names another.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Reply {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .http
            .post(format!("{}{path}", self.origin))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("origin", origin.unwrap_or(&self.origin))
            .body(body);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        reply(req.send().await.expect("POST")).await
    }

    /// Logs in at `prefix` (the mount path) and keeps the cookie.
    pub async fn login(&mut self, prefix: &str, token: &str) -> Reply {
        let r = self
            .post(&format!("{prefix}/login"), &[("token", token)], None)
            .await;
        assert_eq!(r.status, 303, "login: {}", r.body);
        let set = r.set_cookie.clone().expect("a session cookie");
        self.cookie = Some(set.split(';').next().expect("cookie pair").to_owned());
        r
    }

    /// The CSRF token in a page's forms.
    pub async fn csrf(&self, path: &str) -> String {
        let page = self.get(path).await;
        let marker = "name=\"csrf\" value=\"";
        let start = page.body.find(marker).expect("a form with a CSRF token") + marker.len();
        let len = page.body[start..].find('"').expect("end of the token");
        page.body[start..start + len].to_owned()
    }
}

async fn reply(r: reqwest::Response) -> Reply {
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Reply {
        status: r.status().as_u16(),
        location: header("location"),
        set_cookie: header("set-cookie"),
        body: r.text().await.expect("body"),
    }
}

impl Client {
    /// The response headers of a GET, one `name: value` a line.
    pub async fn http_headers(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.origin))
            .send()
            .await
            .expect("GET");
        r.headers()
            .iter()
            .map(|(k, v)| format!("{k}: {}\n", v.to_str().unwrap_or("?")))
            .collect()
    }
}
