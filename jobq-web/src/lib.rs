//! A web dashboard for [jobq]: an [`axum::Router`] an application
//! mounts, or that `jobq dashboard` serves.
//!
//! Pages: an overview (jobs by queue, task and state, the last hour's
//! throughput as a chart, live workers), jobs with the CLI's filters and
//! keyset paging, a job's detail (keys, headers, output, error history),
//! failed jobs with retry and cancel (one or many), queues with pause and
//! resume, periodic tasks' schedules with pause and resume, and workers.
//! HTML is rendered on the server from templates compiled into the
//! binary; the stylesheet and the one small script are served from the
//! binary too. Nothing is fetched from the network.
//!
//! The dashboard is read-only unless a token is configured. With one, an
//! operator logs in with it (an `HttpOnly`, `SameSite=Strict` session
//! cookie) and every action is a POST that carries the session's CSRF
//! token and is refused from another origin.
//!
//! ```no_run
//! # async fn f(pool: jobq::Pool) -> std::io::Result<()> {
//! let dashboard = jobq_web::Dashboard::new(pool)
//!     .token(std::env::var("JOBQ_DASHBOARD_TOKEN").unwrap_or_default())
//!     .router();
//! // Mounted under a prefix: links and the cookie follow it.
//! let app = axum::Router::new().nest("/admin/jobs", dashboard);
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! axum::serve(listener, app).await
//! # }
//! ```

mod assets;
mod auth;
mod chart;
mod error;
mod form;
mod limits_page;
mod pages;
mod text;

use std::sync::Arc;
use std::time::Duration;

/// The connection pool the dashboard reads through: jobq's own (a bb8
/// pool of diesel-async connections), as the workers take it.
pub use jobq::Pool;

/// The dashboard's configuration; [`Dashboard::router`] turns it into a
/// router.
///
/// ```no_run
/// # fn f(pool: jobq::Pool) {
/// let app: axum::Router = jobq_web::Dashboard::new(pool)
///     .token("a long random string")
///     .router();
/// # }
/// ```
#[must_use = "a Dashboard does nothing until turned into a router"]
#[derive(Clone)]
pub struct Dashboard {
    pool: Pool,
    token: Option<String>,
    session_lifetime: Duration,
    allowed_hosts: Option<Vec<String>>,
}

impl std::fmt::Debug for Dashboard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a password: never printed.
        f.debug_struct("Dashboard")
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .field("session_lifetime", &self.session_lifetime)
            .field("allowed_hosts", &self.allowed_hosts)
            .finish_non_exhaustive()
    }
}

impl Dashboard {
    /// How long a login lasts by default: 12 hours.
    pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

    /// A read-only dashboard on `pool` (jobq's own pool type, as the
    /// workers take it).
    pub fn new(pool: Pool) -> Self {
        Self {
            pool,
            token: None,
            session_lifetime: Self::DEFAULT_SESSION_LIFETIME,
            allowed_hosts: None,
        }
    }

    /// Allows actions (retry, cancel, pause, resume) to whoever logs in with this token.
    /// An empty or all-blank token leaves the dashboard read-only, so an
    /// unset environment variable cannot open it to everyone.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        let token = token.into();
        if token.trim().is_empty() {
            tracing::warn!("jobq-web: empty dashboard token ignored; the dashboard is read-only");
            self.token = None;
        } else {
            self.token = Some(token);
        }
        self
    }

    /// How long a login lasts (default
    /// [`Self::DEFAULT_SESSION_LIFETIME`]).
    pub fn session_lifetime(mut self, lifetime: Duration) -> Self {
        self.session_lifetime = lifetime;
        self
    }

    /// Answers only requests whose `Host` names one of `hosts` (any
    /// port; case-insensitive); others get 403. Guards a dashboard on
    /// localhost against DNS rebinding: a hostile site whose name resolves
    /// to 127.0.0.1 sends its own name as the host. By default any host is
    /// accepted (the application's own routing decides).
    ///
    /// ```no_run
    /// # fn f(pool: jobq::Pool) {
    /// let app = jobq_web::Dashboard::new(pool)
    ///     .allowed_hosts(["localhost", "127.0.0.1", "[::1]"])
    ///     .router();
    /// # }
    /// ```
    pub fn allowed_hosts<I, S>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.allowed_hosts = Some(
            hosts
                .into_iter()
                .map(|h| h.into().to_ascii_lowercase())
                .collect(),
        );
        self
    }

    /// The router serving the dashboard at its root; nest it under any
    /// prefix (`Router::nest("/jobs", ...)`).
    pub fn router(self) -> axum::Router {
        let state = Arc::new(pages::App {
            pool: self.pool,
            auth: auth::Auth::new(self.token, self.session_lifetime),
        });
        let router = pages::routes(state);
        match self.allowed_hosts {
            Some(hosts) => auth::only_hosts(router, hosts),
            None => router,
        }
    }
}

/// A read-only dashboard on `pool`: `Dashboard::new(pool).router()`.
pub fn router(pool: Pool) -> axum::Router {
    Dashboard::new(pool).router()
}
