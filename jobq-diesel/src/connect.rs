//! How jobq opens connections: [`ConnectOptions`] (a connection string
//! read once, with TLS, keepalives and jobq's server-side timeouts) and
//! [`Connector`] (those options plus the application's own set-up hook,
//! if any). The pool jobq builds and its LISTEN connection both connect
//! through a [`Connector`].

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use diesel::ConnectionError;
use diesel_async::AsyncPgConnection;
use tokio_postgres::tls::{MakeTlsConnect, TlsStream};
use tokio_postgres::Socket;

use crate::conninfo::Settings;

/// libpq's `sslmode`, the TLS part of a connection string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SslMode {
    /// No TLS.
    Disable,
    /// TLS when the server offers it, plain otherwise (libpq's default,
    /// and jobq's). The certificate is checked only against an
    /// `sslrootcert` that was given.
    Prefer,
    /// TLS or no connection. The certificate is checked only against an
    /// `sslrootcert` that was given (then as `verify-ca`).
    Require,
    /// TLS, and the certificate must chain to `sslrootcert` (or, without
    /// it, to the Mozilla roots).
    VerifyCa,
    /// As `verify-ca`, and the certificate must name the host connected to.
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> Result<SslMode, String> {
        Ok(match value {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            "allow" => {
                return Err("sslmode=allow is not supported; use disable or prefer".to_owned())
            }
            other => {
                return Err(format!(
                "sslmode={other:?} is not one of disable, prefer, require, verify-ca, verify-full"
            ))
            }
        })
    }

    /// The name libpq gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }
}

/// Why a connection string was refused. Its message never contains the
/// password.
#[derive(Debug, thiserror::Error)]
#[error("invalid connection string {shown}: {reason}")]
pub struct ConnectOptionsError {
    /// The string with its password masked (or a placeholder when it could
    /// not be read at all).
    pub shown: String,
    /// What is wrong.
    pub reason: String,
}

/// TCP keepalive defaults: a peer that vanished (a failed-over database,
/// a NAT that dropped the flow) is noticed after about a minute of
/// silence instead of the system's two hours. A connection string's own
/// `keepalives*` settings win.
const KEEPALIVES_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVES_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVES_RETRIES: u32 = 3;

/// How long sent data may go unacknowledged before the connection is
/// dropped (`tcp_user_timeout`, Linux): keepalives only probe an idle
/// connection, and a statement sent to a vanished server would otherwise
/// wait out TCP's retransmissions, about a quarter of an hour. A minute
/// matches the keepalives' 30 s + 3 × 10 s.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// How long a connection attempt may take when the string does not say
/// (`connect_timeout`): an unanswered SYN otherwise waits for minutes.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the placeholder says when a string cannot be read at all.
const UNREADABLE: &str = "(unreadable, not shown)";

/// A connection string read once: the server, the credentials, TLS as
/// libpq's `sslmode` and `sslrootcert` say, TCP keepalives, and the
/// server-side timeouts jobq asks for.
///
/// Both forms libpq takes are read: `postgres://user:password@host:5432/db?sslmode=verify-full`
/// and `host=h user=u password='a b' dbname=db sslmode=require`. On top
/// of the string's own settings, jobq sets (unless the string does):
/// keepalives after 30 s idle, every 10 s, 3 probes; unacknowledged data
/// dropping the connection after 60 s (`tcp_user_timeout`); a 10 s connect
/// timeout; `application_name=jobq`.
///
/// Its `Display` and `Debug` never show the password.
///
/// ```
/// let options = jobq_diesel::ConnectOptions::parse(
///     "postgres://app:secret@db.example.com/app?sslmode=verify-full",
/// )?;
/// assert_eq!(options.ssl_mode(), jobq_diesel::SslMode::VerifyFull);
/// assert_eq!(
///     options.to_string(),
///     "postgres://app:***@db.example.com/app?sslmode=verify-full"
/// );
/// # Ok::<(), jobq_diesel::ConnectOptionsError>(())
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    config: tokio_postgres::Config,
    ssl_mode: SslMode,
    ssl_root_cert: Option<PathBuf>,
    #[cfg(feature = "tls")]
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
    shown: String,
    /// The string's own `options` (startup `-c` settings); jobq's go
    /// before them, so the string's win.
    own_options: Option<String>,
    lock_timeout: Option<Duration>,
    statement_timeout: Option<Duration>,
    /// Whether the session plans prepared statements generically (see
    /// [`ConnectOptions::generic_plans`]).
    generic_plans: bool,
    /// Set once a server (a PgBouncer) refused the startup `options`:
    /// shared by the clones that make one pool's connections.
    options_refused: Arc<AtomicBool>,
}

impl ConnectOptions {
    /// Reads a connection string and, for the verify modes, the
    /// `sslrootcert` file.
    pub fn parse(s: &str) -> Result<ConnectOptions, ConnectOptionsError> {
        let mut settings = Settings::parse(s).map_err(|reason| ConnectOptionsError {
            shown: UNREADABLE.to_owned(),
            reason,
        })?;
        let shown = settings.shown();
        let fail = |reason: String| ConnectOptionsError {
            shown: shown.clone(),
            reason,
        };
        let ssl_root_cert = settings.take("sslrootcert").map(PathBuf::from);
        // As in libpq 16: the well-known roots serve any certificate of a
        // public CA, so only a check of the host name makes them safe.
        let system_roots = ssl_root_cert
            .as_deref()
            .is_some_and(|p| p.as_os_str() == "system");
        let ssl_mode = match settings.take("sslmode") {
            Some(mode) => SslMode::parse(&mode).map_err(fail)?,
            None if system_roots => SslMode::VerifyFull,
            None => SslMode::Prefer,
        };
        if system_roots && ssl_mode != SslMode::VerifyFull {
            return Err(fail(format!(
                "sslmode={} may not be used with sslrootcert=system; use sslmode=verify-full",
                ssl_mode.as_str()
            )));
        }
        for key in ["sslcert", "sslkey", "sslpassword", "sslcrl", "sslcrldir"] {
            if settings.has(key) {
                return Err(fail(format!(
                    "{key} is not read from the connection string; set up TLS yourself \
                     with WorkerBuilder::connect_with and ConnectOptions::connect_with_tls"
                )));
            }
        }
        // Settings whose libpq meaning rustls already has (SNI, TLS 1.2 or
        // later, no compression) or that do not apply (no GSSAPI here);
        // tokio-postgres would refuse them by name.
        for key in [
            "sslsni",
            "sslcompression",
            "ssl_min_protocol_version",
            "ssl_max_protocol_version",
            "gssencmode",
        ] {
            settings.take(key);
        }
        let own_options = settings.take("options");
        let mut config: tokio_postgres::Config = settings
            .to_key_values()
            .parse()
            .map_err(|e: tokio_postgres::Error| fail(error_chain(&e)))?;
        if config.get_hosts().is_empty() && config.get_hostaddrs().is_empty() {
            // libpq would try its default Unix socket; tokio-postgres
            // cannot guess one.
            return Err(fail(
                "it names no host (for a Unix socket, give its directory: host=/var/run/postgresql)"
                    .to_owned(),
            ));
        }
        if !settings.has("keepalives_idle") {
            config.keepalives_idle(KEEPALIVES_IDLE);
        }
        if !settings.has("keepalives_interval") {
            config.keepalives_interval(KEEPALIVES_INTERVAL);
        }
        if !settings.has("keepalives_retries") {
            config.keepalives_retries(KEEPALIVES_RETRIES);
        }
        if !settings.has("tcp_user_timeout") {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        if !settings.has("connect_timeout") {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if !settings.has("application_name") {
            config.application_name("jobq");
        }
        config.ssl_mode(match ssl_mode {
            SslMode::Disable => tokio_postgres::config::SslMode::Disable,
            SslMode::Prefer => tokio_postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                tokio_postgres::config::SslMode::Require
            }
        });
        #[cfg(feature = "tls")]
        let tls = match ssl_mode {
            SslMode::Disable => None,
            mode => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                crate::tls::client_config(mode, ssl_root_cert.as_deref()).map_err(fail)?,
            )),
        };
        #[cfg(not(feature = "tls"))]
        if !matches!(ssl_mode, SslMode::Disable | SslMode::Prefer) {
            return Err(fail(format!(
                "sslmode={} needs TLS, which this build leaves out: enable jobq's `tls` feature",
                ssl_mode.as_str()
            )));
        }
        Ok(ConnectOptions {
            config,
            ssl_mode,
            ssl_root_cert,
            #[cfg(feature = "tls")]
            tls,
            shown,
            own_options,
            lock_timeout: None,
            statement_timeout: None,
            generic_plans: false,
            options_refused: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The `sslmode` in force (`prefer` when the string does not say).
    pub fn ssl_mode(&self) -> SslMode {
        self.ssl_mode
    }

    /// The `sslrootcert` file, if the string names one.
    pub fn ssl_root_cert(&self) -> Option<&Path> {
        self.ssl_root_cert.as_deref()
    }

    /// The driver's settings: change them here, e.g. to put a fresh IAM
    /// token in as the password, before [`connect`](Self::connect).
    pub fn config_mut(&mut self) -> &mut tokio_postgres::Config {
        &mut self.config
    }

    /// The driver's settings.
    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    /// Asks the server to apply `lock_timeout` and `statement_timeout` to
    /// every statement on connections made from these options (`None` or
    /// zero leaves the server's setting). They travel in the startup
    /// packet's `options`, so no statement is added; the connection
    /// string's own `options=-c ...` win over them.
    pub fn session_timeouts(
        &mut self,
        lock_timeout: Option<Duration>,
        statement_timeout: Option<Duration>,
    ) {
        self.lock_timeout = lock_timeout.filter(|d| !d.is_zero());
        self.statement_timeout = statement_timeout.filter(|d| !d.is_zero());
    }

    /// Makes the server plan every prepared statement of these connections
    /// once, generically (`plan_cache_mode = force_generic_plan`), sent
    /// with the timeouts. For connections that run only statements whose
    /// generic plan is known to be good (the claim): PostgreSQL's own
    /// choice compares cost estimates, and beside a large table it kept
    /// re-planning the claim on every call, 0.3 ms a claim.
    ///
    /// These connections also plan without sequential scans
    /// (`enable_seqscan = off`). A generic plan is made once, with the
    /// table's size at that moment, and kept until the next `ANALYZE`: a
    /// worker that prepared its claim beside an empty jobs table (a new
    /// installation, a queue that had drained) got a plan that writes the
    /// claimed rows through a sequential scan, and kept scanning the whole
    /// table on every claim once a burst of jobs had arrived, until
    /// autovacuum analyzed it (measured: a twentieth of the usual rate
    /// with 100,000 jobs waiting). Every statement these connections run
    /// has an index for its rows.
    ///
    /// And without JIT (`jit = off`): PostgreSQL compiles a plan's
    /// expressions at every execution, cached plan or not, and a claim
    /// whose estimates crossed `jit_above_cost` spent tens of milliseconds
    /// compiling on each call (measured: three quarters of the server's
    /// CPU with 32 worker processes).
    pub fn generic_plans(&mut self, on: bool) {
        self.generic_plans = on;
    }

    /// The startup `options` to send: jobq's settings, then the string's
    /// own.
    fn startup_options(&self, with_timeouts: bool) -> Option<String> {
        let mut parts = Vec::new();
        if with_timeouts {
            if self.generic_plans {
                parts.push("-c plan_cache_mode=force_generic_plan".to_owned());
                parts.push("-c enable_seqscan=off".to_owned());
                parts.push("-c jit=off".to_owned());
            }
            if let Some(d) = self.lock_timeout {
                parts.push(format!("-c lock_timeout={}", d.as_millis().max(1)));
            }
            if let Some(d) = self.statement_timeout {
                parts.push(format!("-c statement_timeout={}", d.as_millis().max(1)));
            }
        }
        parts.extend(self.own_options.clone());
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    fn has_timeouts(&self) -> bool {
        self.lock_timeout.is_some() || self.statement_timeout.is_some() || self.generic_plans
    }

    /// Opens a connection with TLS as `sslmode` says. The error names the
    /// cause (the whole driver chain) and never the password.
    pub async fn connect(&self) -> Result<AsyncPgConnection, ConnectionError> {
        #[cfg(feature = "tls")]
        if let Some(tls) = &self.tls {
            return self
                .connect_via(tls.clone())
                .await
                .map_err(|e| ConnectionError::BadConnection(self.describe(&e)));
        }
        self.connect_with_tls(tokio_postgres::NoTls).await
    }

    /// Opens a connection through your own TLS set-up (any
    /// tokio-postgres `MakeTlsConnect`, e.g. `tokio-postgres-rustls` over
    /// a rustls config with client certificates). The `sslmode` still
    /// decides whether TLS is tried (`prefer`) or required (`require`
    /// and the verify modes); what is checked is up to `tls`.
    pub async fn connect_with_tls<T>(&self, tls: T) -> Result<AsyncPgConnection, ConnectionError>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync,
        T::Stream: TlsStream + Unpin + Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
    {
        self.connect_via(tls)
            .await
            .map_err(|e| ConnectionError::BadConnection(e.message()))
    }

    /// Connects with jobq's timeouts unless a server refused them before
    /// (then without, saying so once).
    async fn connect_via<T>(&self, tls: T) -> Result<AsyncPgConnection, ConnectFailure>
    where
        T: MakeTlsConnect<Socket> + Clone + Send + Sync,
        T::Stream: TlsStream + Unpin + Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
    {
        let with_timeouts = self.has_timeouts() && !self.options_refused.load(Ordering::Relaxed);
        let first = self.connect_once(tls.clone(), with_timeouts).await;
        match first {
            Err(e) if with_timeouts && refuses_options(&e) => {
                if !self.options_refused.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        url = %self.shown,
                        "the server refused the startup `options` carrying jobq's lock_timeout, \
                         statement_timeout and plan_cache_mode (a PgBouncer?); connecting without them. Add \
                         `options` to PgBouncer's ignore_startup_parameters, or set the \
                         timeouts on the role (ALTER ROLE ... SET statement_timeout = ...)"
                    );
                }
                self.connect_once(tls, false).await
            }
            other => other,
        }
    }

    async fn connect_once<T>(
        &self,
        tls: T,
        with_timeouts: bool,
    ) -> Result<AsyncPgConnection, ConnectFailure>
    where
        T: MakeTlsConnect<Socket> + Send + Sync,
        T::Stream: TlsStream + Unpin + Send + 'static,
        T::TlsConnect: Send,
        <T::TlsConnect as tokio_postgres::tls::TlsConnect<Socket>>::Future: Send,
    {
        let mut config = self.config.clone();
        if let Some(options) = self.startup_options(with_timeouts) {
            config.options(options);
        }
        let (client, connection) = config.connect(tls).await.map_err(ConnectFailure::Driver)?;
        AsyncPgConnection::try_from_client_and_connection(client, connection)
            .await
            .map_err(ConnectFailure::Setup)
    }

    /// The message of a connection that failed with jobq's TLS set-up:
    /// for a refused certificate, it adds what it was checked against.
    #[cfg(feature = "tls")]
    fn describe(&self, failure: &ConnectFailure) -> String {
        let message = failure.message();
        if !message.contains("invalid peer certificate") {
            return message;
        }
        let against = match self.ssl_root_cert.as_deref() {
            Some(path) if path.as_os_str() != "system" => {
                format!("sslrootcert={}", path.display())
            }
            _ => "the Mozilla root certificates (no sslrootcert given)".to_owned(),
        };
        format!(
            "{message} (TLS certificate check failed: sslmode={} against {against})",
            self.ssl_mode.as_str()
        )
    }
}

enum ConnectFailure {
    Driver(tokio_postgres::Error),
    Setup(ConnectionError),
}

impl ConnectFailure {
    /// The driver's whole chain: its own message names no cause.
    fn message(&self) -> String {
        match self {
            ConnectFailure::Driver(e) => error_chain(e),
            ConnectFailure::Setup(e) => error_chain(e),
        }
    }
}

/// PgBouncer's answer to startup `options` it does not know.
fn refuses_options(failure: &ConnectFailure) -> bool {
    match failure {
        ConnectFailure::Driver(e) => e.as_db_error().is_some_and(|db| {
            db.code() == &tokio_postgres::error::SqlState::PROTOCOL_VIOLATION
                && db.message().contains("unsupported startup parameter")
        }),
        ConnectFailure::Setup(_) => false,
    }
}

impl std::fmt::Display for ConnectOptions {
    /// The connection string with its password masked.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.shown)
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &self.shown)
            .field("ssl_mode", &self.ssl_mode)
            .field("lock_timeout", &self.lock_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("generic_plans", &self.generic_plans)
            .finish_non_exhaustive()
    }
}

/// A connection string fit for messages: the password masked whatever the
/// form, or a placeholder when the string cannot be read at all.
pub fn redact(s: &str) -> String {
    Settings::parse(s).map_or_else(|_| UNREADABLE.to_owned(), |settings| settings.shown())
}

/// The future a [`ConnectHook`] returns.
pub type ConnectFuture =
    Pin<Box<dyn Future<Output = Result<AsyncPgConnection, ConnectionError>> + Send>>;

/// The application's own connection set-up: given the options jobq read
/// (and its timeouts), it returns a connection.
pub type ConnectHook = Arc<dyn Fn(ConnectOptions) -> ConnectFuture + Send + Sync>;

/// How jobq opens each connection: [`ConnectOptions`], through the
/// application's [`ConnectHook`] when there is one.
#[derive(Clone)]
pub struct Connector {
    options: ConnectOptions,
    hook: Option<ConnectHook>,
}

impl Connector {
    /// Connects with `options` as they are.
    pub fn new(options: ConnectOptions) -> Connector {
        Connector {
            options,
            hook: None,
        }
    }

    /// Connects through `hook` instead.
    pub fn with_hook(mut self, hook: Option<ConnectHook>) -> Connector {
        self.hook = hook;
        self
    }

    /// The options each connection starts from.
    pub fn options(&self) -> &ConnectOptions {
        &self.options
    }

    /// The same connector without jobq's server-side timeouts (for
    /// migrations, whose statements may rightly run long).
    pub fn without_timeouts(&self) -> Connector {
        let mut plain = self.clone();
        plain.options.session_timeouts(None, None);
        plain
    }

    /// The same connector for connections that run only statements with
    /// good generic plans (see [`ConnectOptions::generic_plans`]).
    pub fn with_generic_plans(&self) -> Connector {
        let mut generic = self.clone();
        generic.options.generic_plans(true);
        generic
    }

    /// Opens one connection.
    pub fn connect(&self) -> ConnectFuture {
        match &self.hook {
            Some(hook) => hook(self.options.clone()),
            None => {
                let options = self.options.clone();
                Box::pin(async move { options.connect().await })
            }
        }
    }
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("options", &self.options)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// The error and its sources on one line: tokio-postgres' own message
/// ("error connecting to server") names no cause.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let next = s.to_string();
        if !out.ends_with(&next) {
            out.push_str(": ");
            out.push_str(&next);
        }
        source = s.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_keepalives_and_a_name_unless_the_string_does() {
        let options = ConnectOptions::parse("postgres://u@h/db").unwrap();
        let config = options.config();
        assert!(config.get_keepalives());
        assert_eq!(config.get_keepalives_idle(), KEEPALIVES_IDLE);
        assert_eq!(config.get_keepalives_interval(), Some(KEEPALIVES_INTERVAL));
        assert_eq!(config.get_keepalives_retries(), Some(KEEPALIVES_RETRIES));
        assert_eq!(config.get_tcp_user_timeout(), Some(&TCP_USER_TIMEOUT));
        assert_eq!(config.get_connect_timeout(), Some(&CONNECT_TIMEOUT));
        assert_eq!(config.get_application_name(), Some("jobq"));
        assert_eq!(options.ssl_mode(), SslMode::Prefer);

        let options = ConnectOptions::parse(
            "host=h keepalives_idle=5 keepalives_interval=2 keepalives_retries=9 \
             connect_timeout=3 tcp_user_timeout=4 application_name=app sslmode=disable",
        )
        .unwrap();
        let config = options.config();
        assert_eq!(config.get_keepalives_idle(), Duration::from_secs(5));
        assert_eq!(
            config.get_keepalives_interval(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(config.get_keepalives_retries(), Some(9));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(3)));
        assert_eq!(config.get_tcp_user_timeout(), Some(&Duration::from_secs(4)));
        assert_eq!(config.get_application_name(), Some("app"));
        assert_eq!(options.ssl_mode(), SslMode::Disable);
    }

    #[cfg(feature = "tls")]
    #[test]
    fn system_roots_mean_verify_full_as_in_libpq() {
        let options = ConnectOptions::parse("host=h sslrootcert=system").unwrap();
        assert_eq!(options.ssl_mode(), SslMode::VerifyFull);
    }

    #[test]
    fn sends_jobqs_timeouts_before_the_strings_own_options() {
        let mut options =
            ConnectOptions::parse("postgres://h/db?options=-c%20statement_timeout%3D0").unwrap();
        assert_eq!(
            options.startup_options(true).as_deref(),
            Some("-c statement_timeout=0")
        );
        options.session_timeouts(
            Some(Duration::from_secs(5)),
            Some(Duration::from_millis(1500)),
        );
        // PostgreSQL applies -c settings in order: the string's win.
        assert_eq!(
            options.startup_options(true).as_deref(),
            Some("-c lock_timeout=5000 -c statement_timeout=1500 -c statement_timeout=0")
        );
        assert_eq!(
            options.startup_options(false).as_deref(),
            Some("-c statement_timeout=0")
        );
        options.session_timeouts(Some(Duration::ZERO), None);
        assert!(!options.has_timeouts());
    }

    #[test]
    fn refuses_what_it_cannot_honour() {
        for (bad, says) in [
            ("postgres://h/db?sslmode=allow", "sslmode=allow"),
            ("postgres://h/db?sslmode=verify", "not one of"),
            ("host=h sslcert=/c.pem", "sslcert"),
            ("host=h sslcrl=/crl.pem", "sslcrl"),
            (
                "host=h sslmode=verify-full sslrootcert=/nonexistent/root.crt",
                "/nonexistent/root.crt",
            ),
            ("host=h bogus=1", "unknown option"),
            ("postgres://", "no host"),
            (
                "host=h sslrootcert=system sslmode=require",
                "use sslmode=verify-full",
            ),
            ("dbname=x", "no host"),
        ] {
            let err = ConnectOptions::parse(bad)
                .map(drop)
                .unwrap_err()
                .to_string();
            #[cfg(not(feature = "tls"))]
            if bad.contains("sslrootcert") {
                continue;
            }
            assert!(err.contains(says), "{bad}: {err}");
        }
    }

    #[cfg(not(feature = "tls"))]
    #[test]
    fn without_tls_require_is_refused_and_prefer_goes_plain() {
        let err = ConnectOptions::parse("postgres://h/db?sslmode=require")
            .map(drop)
            .unwrap_err();
        assert!(err.to_string().contains("`tls` feature"), "{err}");
        assert!(ConnectOptions::parse("postgres://h/db?sslmode=prefer").is_ok());
    }
}
