//! How the worker connects: passwords never printed whatever the URL's
//! form, the application's connect hook used for every connection jobq
//! opens, and jobq's server-side timeouts on them.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{Integer, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jobq::JobState;
use serde::{Deserialize, Serialize};

// ------------------------------------------------------------- log capture

/// Captures every log line of this binary at debug level, so that a
/// password printed anywhere, at any level, is caught. Every test calls
/// it first: the first subscriber installed wins.
fn capture_logs() {
    support::logs::capture("debug");
}

fn logs() -> String {
    support::logs::all()
}

/// A port on 127.0.0.1 that nothing listens on.
fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

/// Everything a user could print of an error: `Display`, `Debug`, the
/// source chain.
fn printed(err: &jobq::Error) -> String {
    let mut out = format!("{err} | {err:?}");
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        out.push_str(" | ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn assert_hidden(printed: &str, secrets: &[&str], what: &str) {
    for secret in secrets {
        assert!(
            !printed.contains(secret),
            "{what}: {secret:?} was printed in: {printed}"
        );
    }
}

// --------------------------------------------------------------- passwords

/// The issue's case: `postgres://u@h/db?password=...` was printed in full
/// in the connection error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_password_given_as_a_query_parameter_is_never_printed() {
    capture_logs();
    let port = dead_port();
    let url = format!("postgres://jobq@127.0.0.1:{port}/nowhere?password=hunter2-in-query");
    let err = jobq::Worker::builder()
        .database_url(&url)
        // Long enough for a retry, so that its warning is logged too.
        .connect_timeout(Duration::from_millis(500))
        .build()
        .await
        .expect_err("nothing listens there");
    assert!(matches!(err, jobq::Error::Connect { .. }), "{err:?}");
    let printed = printed(&err);
    assert!(printed.contains(&format!("127.0.0.1:{port}")), "{printed}");
    assert!(printed.contains("password=***"), "{printed}");
    assert_hidden(&printed, &["hunter2"], "the error");
    let logged = logs();
    assert!(
        logged.contains("the database is unreachable; retrying")
            && logged.contains(&port.to_string()),
        "no retry warning was logged: {logged}"
    );
    assert_hidden(&logged, &["hunter2"], "the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passwords_of_every_form_stay_out_of_errors() {
    capture_logs();
    let port = dead_port();
    let at = format!("127.0.0.1:{port}");
    // (connection string, fragments of its password that must not show)
    let cases: Vec<(String, Vec<&str>)> = vec![
        (
            format!("postgres://jobq:s3cret-plain@{at}/x"),
            vec!["s3cret"],
        ),
        // '@' and ':' unencoded: the user information ends at the last '@'.
        (
            format!("postgres://jobq:s3c@r:et@{at}/x"),
            vec!["s3c", "r:et"],
        ),
        (
            format!("postgres://jobq:s3c%40ret%3A@{at}/x"),
            vec!["s3c", "%40ret", "@ret"],
        ),
        (
            format!("postgres://jobq:p\u{e4}ss-\u{fc}n\u{ef}c\u{f6}de@{at}/x"),
            vec!["\u{fc}n\u{ef}", "%C3%BCn"],
        ),
        (
            format!("postgres://jobq@{at}/x?sslmode=disable&password=s3cr+et%26x"),
            vec!["s3cr", "et%26x"],
        ),
        // libpq has no such key: refused, still not shown.
        (
            format!("postgres://jobq@{at}/x?PASSWORD=s3cret-upper"),
            vec!["s3cret"],
        ),
        (
            format!("postgresql://jobq:@{at}/x?application_name=empty-password"),
            vec![],
        ),
        (
            format!("host=127.0.0.1 port={port} user=jobq password='s3cret with spaces' dbname=x"),
            vec!["s3cret", "with spaces"],
        ),
        (
            format!(r"host=127.0.0.1 port={port} password='it\'s s3cret' dbname=x"),
            vec!["s3cret", r"it\'s", "it's"],
        ),
        (
            format!("host=127.0.0.1 port={port} PASSWORD=s3cret-upper dbname=x"),
            vec!["s3cret"],
        ),
        (
            format!("host=127.0.0.1 port={port} password=s3cret-unquoted\\ more"),
            vec!["s3cret", "more"],
        ),
        // Malformed: the reader gives up in the middle of the password.
        (
            format!("host=127.0.0.1 port={port} password='s3cret-unterminated"),
            vec!["s3cret"],
        ),
        (
            "postgres://jobq:s3cret-badport@127.0.0.1:notaport/x".to_owned(),
            vec!["s3cret"],
        ),
    ];
    for (url, secrets) in &cases {
        let err = jobq::Worker::builder()
            .database_url(url)
            .connect_timeout(Duration::ZERO)
            .build()
            .await
            .expect_err(url);
        assert!(
            matches!(
                err,
                jobq::Error::Connect { .. } | jobq::Error::InvalidUrl { .. }
            ),
            "{err:?}"
        );
        assert_hidden(&printed(&err), secrets, url);
        let options = jobq::ConnectOptions::parse(url);
        let shown = match &options {
            Ok(options) => format!("{options} {options:?}"),
            Err(e) => format!("{e} {e:?}"),
        };
        assert_hidden(&shown, secrets, url);
    }
    assert_hidden(&logs(), &["s3cret", "s3c@r", "\u{fc}n\u{ef}"], "the logs");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Ping {
    n: u32,
}

#[jobq::task(queue = "connect")]
async fn ping(job: Ping) -> Result<(), jobq::TaskError> {
    let _ = job.n;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_listeners_connection_errors_never_print_its_password() {
    capture_logs();
    let env = support::env().await;
    let port = dead_port();
    let handle = env
        .worker()
        .queues(&["connect"])
        .listen_url(format!(
            "host=127.0.0.1 port={port} user=jobq password='listener s3cret' dbname=x"
        ))
        .build()
        .await
        .expect("the pool's database is up")
        .spawn();
    let deadline = Instant::now() + support::SOON;
    while !logs()
        .lines()
        .any(|l| l.contains("LISTEN connection failed") && l.contains(&port.to_string()))
    {
        assert!(Instant::now() < deadline, "no LISTEN warning: {}", logs());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.expect("clean shutdown");
    assert_hidden(&logs(), &["listener s3cret", "s3cret"], "the logs");
}

// ------------------------------------------------------- hook and timeouts

#[derive(diesel::QueryableByName, Debug, Clone, PartialEq, Eq)]
struct Session {
    #[diesel(sql_type = Text)]
    app: String,
    #[diesel(sql_type = Text)]
    lock_timeout: String,
    #[diesel(sql_type = Text)]
    statement_timeout: String,
}

async fn session(conn: &mut AsyncPgConnection) -> Session {
    diesel::sql_query(
        "SELECT current_setting('application_name') AS app, \
                current_setting('lock_timeout') AS lock_timeout, \
                current_setting('statement_timeout') AS statement_timeout",
    )
    .get_result(conn)
    .await
    .expect("session settings")
}

fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_hook_opens_every_connection_with_jobqs_timeouts() {
    capture_logs();
    let db = jobq_testkit::TestDatabase::create()
        .await
        .expect("database");
    let seen: Arc<Mutex<Vec<Session>>> = Arc::default();
    let record = Arc::clone(&seen);
    let handle = jobq::Worker::builder()
        .database_url(db.url())
        .listen_url(with_params(db.url(), "application_name=jobq_listener"))
        .queues(&["connect"])
        .lock_timeout(Duration::from_secs(3))
        .statement_timeout(Duration::from_secs(7))
        .poll_interval(Duration::from_secs(60))
        .connect_with(move |options: jobq::ConnectOptions| {
            let record = Arc::clone(&record);
            async move {
                let mut conn = options.connect().await?;
                let settings = session(&mut conn).await;
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(settings);
                Ok(conn)
            }
        })
        .build()
        .await
        .expect("worker")
        .spawn();
    let mut app = AsyncPgConnection::establish(db.url())
        .await
        .expect("connect");
    let deadline = Instant::now() + support::SOON;
    let has = |app: &str| {
        let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter().any(|s| s.app == app)
    };
    while !has("jobq_listener") {
        assert!(
            Instant::now() < deadline,
            "the hook never opened the listener"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let id = ping::enqueue(&mut app, &Ping { n: 1 })
        .await
        .expect("enqueue");
    while !jobq::job(&mut app, id)
        .await
        .expect("lookup")
        .is_some_and(|j| j.state == JobState::Completed)
    {
        assert!(Instant::now() < deadline, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.expect("clean shutdown");

    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let timed = |app: &str| Session {
        app: app.to_owned(),
        lock_timeout: "3s".to_owned(),
        statement_timeout: "7s".to_owned(),
    };
    // The first connection migrates, without the statement timeout.
    assert_eq!(seen[0].app, "jobq", "{seen:#?}");
    assert_eq!(seen[0].statement_timeout, "0", "{seen:#?}");
    // The pool's connections and the listener's: through the hook, with
    // the timeouts.
    assert!(seen[1..].contains(&timed("jobq")), "{seen:#?}");
    assert!(seen[1..].contains(&timed("jobq_listener")), "{seen:#?}");
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.lock_timeout == "3s" && s.statement_timeout == "7s"),
        "{seen:#?}"
    );
}

#[derive(diesel::QueryableByName)]
struct Pid {
    #[diesel(sql_type = Integer)]
    pid: i32,
}

/// LISTEN is no statement: waiting for notifications far longer than the
/// statement timeout keeps the connection, and wake-ups keep coming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_statement_timeout_never_cuts_the_listeners_wait() {
    capture_logs();
    let db = jobq_testkit::TestDatabase::create()
        .await
        .expect("database");
    let handle = jobq::Worker::builder()
        .database_url(db.url())
        .listen_url(with_params(db.url(), "application_name=jobq_listener"))
        .queues(&["connect"])
        .statement_timeout(Duration::from_millis(300))
        .lock_timeout(Duration::from_millis(300))
        // Only a notification can start the job in time.
        .poll_interval(Duration::from_secs(60))
        .build()
        .await
        .expect("worker")
        .spawn();
    let mut app = AsyncPgConnection::establish(db.url())
        .await
        .expect("connect");
    let listener = |idle_ms: u32| {
        diesel::sql_query(format!(
            "SELECT pid FROM pg_stat_activity \
             WHERE application_name = 'jobq_listener' AND query LIKE 'LISTEN%' \
               AND state = 'idle' AND now() - state_change > interval '{idle_ms} ms'"
        ))
    };
    // Wait until the listener has been idle for three statement timeouts.
    let deadline = Instant::now() + support::SOON;
    let pid = loop {
        if let Ok(row) = listener(900).get_result::<Pid>(&mut app).await {
            break row.pid;
        }
        assert!(
            Instant::now() < deadline,
            "the listener never idled that long"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let enqueued = Instant::now();
    let id = ping::enqueue(&mut app, &Ping { n: 2 })
        .await
        .expect("enqueue");
    while !jobq::job(&mut app, id)
        .await
        .expect("lookup")
        .is_some_and(|j| j.state == JobState::Completed)
    {
        assert!(Instant::now() < deadline, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        enqueued.elapsed() < Duration::from_secs(10),
        "the job waited for the poll: {:?}",
        enqueued.elapsed()
    );
    // The same connection: it was never cut and re-made.
    let still: Vec<Pid> = listener(0).load(&mut app).await.expect("listener");
    assert_eq!(still.iter().map(|p| p.pid).collect::<Vec<_>>(), vec![pid]);
    handle.shutdown().await.expect("clean shutdown");
}

// ------------------------------------------------------------- PgBouncer

/// A session-pooling PgBouncer in front of `port`, that refuses the
/// `options` startup parameter as PgBouncer does unless told otherwise.
/// Stopped and removed on drop.
struct Bouncer {
    child: std::process::Child,
    dir: std::path::PathBuf,
    port: u16,
}

impl Drop for Bouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_bouncer(bin: &std::path::Path, server_port: u16) -> Bouncer {
    use std::os::unix::fs::PermissionsExt;
    let port = dead_port();
    let dir = std::env::temp_dir().join(format!(
        "jobq-connect-pgbouncer-{}-{:08x}",
        std::process::id(),
        fastrand::u32(..)
    ));
    std::fs::create_dir_all(&dir).expect("pgbouncer dir");
    // PgBouncer runs as `postgres` when we are root, and writes its log here.
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let ini = dir.join("pgbouncer.ini");
    std::fs::write(
        &ini,
        format!(
            "[databases]\n* = host=127.0.0.1 port={server_port} user=postgres\n\n[pgbouncer]\n\
             listen_addr = 127.0.0.1\nlisten_port = {port}\nunix_socket_dir =\n\
             auth_type = any\npool_mode = session\nmax_client_conn = 100\n\
             ignore_startup_parameters = extra_float_digits\nlogfile = {}\n",
            dir.join("pgbouncer.log").display()
        ),
    )
    .expect("pgbouncer.ini");
    let mut command = std::process::Command::new(bin);
    // /proc/self belongs to this process's user.
    let root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").expect("/proc/self"))
            == 0;
    if root {
        command.args(["-u", "postgres"]);
    }
    let child = command
        .arg(&ini)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting pgbouncer");
    Bouncer { child, dir, port }
}

/// PgBouncer drops or refuses startup `options`: jobq connects without its
/// timeouts, says so once, and works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn behind_a_pgbouncer_refusing_startup_options_the_worker_connects_without_them() {
    capture_logs();
    let Some(bin) = support::pgbouncer(
        "behind_a_pgbouncer_refusing_startup_options_the_worker_connects_without_them",
    ) else {
        return;
    };
    let server = jobq_testkit::PrivateServer::start().await.expect("server");
    let bouncer = start_bouncer(&bin, server.port());
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable",
        bouncer.port
    );
    let handle = jobq::Worker::builder()
        .database_url(&url)
        .queues(&["connect"])
        // PgBouncer may take a moment to listen.
        .connect_timeout(support::SOON)
        .build()
        .await
        .expect("worker through PgBouncer")
        .spawn();
    let mut app = AsyncPgConnection::establish(server.url())
        .await
        .expect("connect");
    let id = ping::enqueue(&mut app, &Ping { n: 3 })
        .await
        .expect("enqueue");
    let deadline = Instant::now() + support::SOON;
    while !jobq::job(&mut app, id)
        .await
        .expect("lookup")
        .is_some_and(|j| j.state == JobState::Completed)
    {
        assert!(Instant::now() < deadline, "the job did not complete");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.expect("clean shutdown");
    let port = format!(":{}/", bouncer.port);
    let warnings: Vec<String> = logs()
        .lines()
        .filter(|l| l.contains("refused the startup `options`") && l.contains(&port))
        .map(str::to_owned)
        .collect();
    assert_eq!(warnings.len(), 1, "{warnings:#?}");
}
