//! The real `jobq` binary against a test database: every command, its
//! tables and JSON, its exit codes, and its errors (which never show a
//! password).

use std::io::Write;
use std::process::{Command, Stdio};

use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
use jobq_testkit::{PrivateServer, TestDatabase};
use serde_json::Value;

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(self) -> Run {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

/// Runs `jobq args...` with DATABASE_URL set to `url` (unset with `None`).
fn jobq(url: Option<&str>, args: &[&str]) -> Run {
    jobq_with_stdin(url, args, "")
}

fn jobq_with_stdin(url: Option<&str>, args: &[&str], stdin: &str) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_jobq"));
    command
        .args(args)
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = url {
        command.env("DATABASE_URL", url);
    }
    let mut child = command.spawn().expect("run jobq");
    let mut input = child.stdin.take().expect("stdin");
    // A refused command may exit before reading: a broken pipe is fine.
    let _ = input.write_all(stdin.as_bytes());
    drop(input);
    let out = child.wait_with_output().expect("jobq output");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn sql(url: &str, statements: &str) {
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    conn.batch_execute(statements).await.expect(statements);
}

/// A database with jobq's schema installed by `jobq migrate`.
async fn migrated() -> TestDatabase {
    let db = TestDatabase::create().await.expect("test database");
    let run = jobq(Some(db.url()), &["migrate"]).ok();
    assert!(run.stdout.contains("installed at version"), "{run:#?}");
    db
}

fn enqueue(url: &str, task: &str, payload: &str, extra: &[&str]) -> i64 {
    let mut args = vec!["--json", "enqueue", task, "--payload", payload];
    args.extend_from_slice(extra);
    let run = jobq(Some(url), &args).ok();
    run.json()["id"].as_i64().expect("id")
}

fn state_of(url: &str, id: i64) -> String {
    let run = jobq(Some(url), &["--json", "jobs", "show", &id.to_string()]).ok();
    run.json()["state"].as_str().expect("state").to_owned()
}

#[tokio::test]
async fn a_jobs_life_through_the_cli() {
    let db = TestDatabase::create().await.expect("test database");
    let url = db.url();

    // Before migrate: a clear error, exit 1.
    let run = jobq(Some(url), &["status"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr
            .contains("jobq's schema is not installed; run `jobq migrate`"),
        "{run:#?}"
    );
    let run = jobq(Some(url), &["--json", "version"]).ok();
    assert_eq!(run.json()["schema_installed"], Value::Null);

    let run = jobq(Some(url), &["migrate"]).ok();
    assert!(run.stdout.contains("installed at version"), "{run:#?}");
    let run = jobq(Some(url), &["migrate"]).ok();
    assert!(run.stdout.contains("up to date"), "{run:#?}");
    let version = jobq(Some(url), &["--json", "version"]).ok().json();
    assert_eq!(version["binary"], env!("CARGO_PKG_VERSION"));
    assert_eq!(version["schema_installed"], version["schema_supported"]);
    let run = jobq(None, &["version"]).ok();
    assert!(run.stdout.contains("no database URL given"), "{run:#?}");

    // Enqueue: an unknown task is allowed, with a warning on stderr.
    let run = jobq(
        Some(url),
        &[
            "enqueue",
            "mail.send",
            "--payload",
            r#"{"to": "a@example.com"}"#,
        ],
    )
    .ok();
    assert!(run.stdout.starts_with("enqueued job "), "{run:#?}");
    assert!(run.stderr.contains("warning:"), "{run:#?}");
    assert!(run.stderr.contains("no registered tasks"), "{run:#?}");
    let id: i64 = run.stdout["enqueued job ".len()..].trim().parse().unwrap();
    // Now the task has a pending job: no warning.
    let run = jobq(
        Some(url),
        &[
            "enqueue",
            "mail.send",
            "--payload",
            "{}",
            "--queue",
            "mail",
            "--priority",
            "-3",
        ],
    )
    .ok();
    assert!(run.stderr.is_empty(), "{run:#?}");

    // List: table and JSON.
    let run = jobq(Some(url), &["jobs", "list"]).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:#?}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("TASK"),
        "{run:#?}"
    );
    assert!(lines[2].starts_with(&id.to_string()), "{run:#?}");
    assert!(lines[1].contains("mail.send") && lines[1].contains("-3"));
    let list = jobq(Some(url), &["--json", "jobs", "list", "--queue", "default"])
        .ok()
        .json();
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["id"], id);
    assert_eq!(list[0]["state"], "pending");
    assert_eq!(list[0]["task"], "mail.send");

    // Show: payload and (no) errors.
    let run = jobq(Some(url), &["jobs", "show", &id.to_string()]).ok();
    assert!(run.stdout.contains("\"to\": \"a@example.com\""), "{run:#?}");
    assert!(run.stdout.contains("errors:       none"), "{run:#?}");
    let run = jobq(Some(url), &["jobs", "show", "999999"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("no job 999999"), "{run:#?}");

    // Cancel, then retry.
    jobq(Some(url), &["jobs", "cancel", &id.to_string()]).ok();
    assert_eq!(state_of(url, id), "cancelled");
    let run = jobq(Some(url), &["jobs", "cancel", &id.to_string()]);
    assert_eq!(run.code, 1, "cancelling a cancelled job: {run:#?}");
    let run = jobq(Some(url), &["--json", "jobs", "retry", &id.to_string()]).ok();
    assert_eq!(run.json()[0]["outcome"], "retried");
    assert_eq!(state_of(url, id), "pending");
    let run = jobq(Some(url), &["jobs", "retry", &id.to_string()]);
    assert_eq!(run.code, 1, "retrying a pending job: {run:#?}");
    assert!(run.stdout.contains("not retried"), "{run:#?}");

    // Purge what finished more than a week ago.
    sql(
        url,
        &format!(
            "UPDATE jobq.jobs SET state = 'completed', finished_at = now() - interval '8 days' \
             WHERE id = {id}"
        ),
    )
    .await;
    let run = jobq(
        Some(url),
        &[
            "--json",
            "jobs",
            "purge",
            "--state",
            "completed",
            "--older-than",
            "7d",
        ],
    )
    .ok();
    assert_eq!(run.json()["purged"], 1);
    let run = jobq(Some(url), &["--json", "jobs", "list"]).ok();
    assert_eq!(run.json().as_array().unwrap().len(), 1);
    let run = jobq(
        Some(url),
        &["jobs", "purge", "--state", "pending", "--older-than", "1s"],
    );
    assert_eq!(run.code, 2, "{run:#?}");
}

#[tokio::test]
async fn status_counts_a_known_set_of_jobs() {
    let db = migrated().await;
    let url = db.url();
    for _ in 0..3 {
        enqueue(url, "a", "{}", &["--queue", "q1"]);
    }
    for _ in 0..2 {
        enqueue(url, "a", "{}", &["--queue", "q1", "--delay", "1h"]);
    }
    let failed = enqueue(url, "b", "{}", &[]);
    let cancelled = enqueue(url, "b", "{}", &[]);
    sql(
        url,
        &format!(
            "UPDATE jobq.jobs SET state = 'failed', finished_at = now() WHERE id = {failed}; \
             UPDATE jobq.jobs SET run_at = now() - interval '90 seconds' \
             WHERE id = (SELECT min(id) FROM jobq.jobs WHERE task = 'a'); \
             INSERT INTO jobq.workers (hostname, pid, queues, lease_ms) \
             VALUES ('box', 42, '{{q1}}', 30000), ('gone', 43, '{{q1}}', 1000);
             UPDATE jobq.workers SET heartbeat_at = now() - interval '1 minute' \
             WHERE hostname = 'gone';"
        ),
    )
    .await;
    jobq(Some(url), &["jobs", "cancel", &cancelled.to_string()]).ok();

    let stats = jobq(Some(url), &["--json", "status"]).ok().json();
    let tasks = stats["tasks"].as_array().unwrap();
    assert_eq!(tasks.len(), 2, "{stats:#}");
    let a = &tasks[1];
    assert_eq!(
        (a["queue"].as_str(), a["task"].as_str()),
        (Some("q1"), Some("a"))
    );
    assert_eq!(a["pending"], 3);
    assert_eq!(a["scheduled"], 2);
    assert_eq!(a["running"], 0);
    let age = a["oldest_due_age_secs"].as_f64().unwrap();
    assert!((89.0..600.0).contains(&age), "{age}");
    let b = &tasks[0];
    assert_eq!(
        (b["queue"].as_str(), b["task"].as_str()),
        (Some("default"), Some("b"))
    );
    assert_eq!(
        (b["failed"].as_i64(), b["cancelled"].as_i64()),
        (Some(1), Some(1))
    );
    assert_eq!(b["failed_last_minute"], 1);
    assert_eq!(b["failed_last_hour"], 1);
    assert_eq!(b["oldest_due_age_secs"], Value::Null);
    assert_eq!(stats["live_workers"], 1);

    let run = jobq(Some(url), &["status"]).ok();
    assert!(run.stdout.starts_with("QUEUE"), "{run:#?}");
    assert!(run.stdout.contains("live workers: 1"), "{run:#?}");

    let workers = jobq(Some(url), &["--json", "workers"]).ok().json();
    let workers = workers.as_array().unwrap();
    assert_eq!(workers.len(), 2);
    assert_eq!(workers[0]["hostname"], "box");
    assert_eq!(workers[0]["alive"], true);
    assert_eq!(workers[0]["lease_secs"], 30.0);
    assert_eq!(workers[1]["alive"], false);
    let run = jobq(Some(url), &["workers"]).ok();
    assert_eq!(run.stdout.lines().count(), 3, "{run:#?}");
    assert!(run.stdout.contains("box") && run.stdout.contains("yes"));

    // Retry every failed job of a task.
    let run = jobq(
        Some(url),
        &["--json", "jobs", "retry", "--all-failed", "--task", "b"],
    )
    .ok();
    assert_eq!(run.json()["retried"], 1);
    assert_eq!(state_of(url, failed), "pending");
    assert_eq!(state_of(url, cancelled), "cancelled");
    // --all-failed needs --task, and ids and --all-failed exclude each other.
    for args in [
        &["jobs", "retry", "--all-failed"][..],
        &["jobs", "retry"],
        &["jobs", "retry", "1", "--all-failed", "--task", "b"],
    ] {
        assert_eq!(jobq(Some(url), args).code, 2, "{args:?}");
    }
}

#[tokio::test]
async fn uninstall_refuses_without_yes() {
    let db = migrated().await;
    let url = db.url();
    enqueue(url, "keep", "{}", &[]);
    let run = jobq(Some(url), &["uninstall"]);
    assert_eq!(run.code, 2, "{run:#?}");
    assert!(run.stderr.contains("--yes"), "{run:#?}");
    assert_eq!(
        jobq(Some(url), &["--json", "jobs", "list"])
            .ok()
            .json()
            .as_array()
            .unwrap()
            .len(),
        1
    );
    let run = jobq(Some(url), &["uninstall", "--yes"]).ok();
    assert!(run.stdout.contains("dropped"), "{run:#?}");
    let run = jobq(Some(url), &["jobs", "list"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("run `jobq migrate`"), "{run:#?}");
}

#[tokio::test]
async fn payloads_are_checked_like_any_enqueue() {
    let db = migrated().await;
    let url = db.url();
    for (payload, says) in [
        ("{\"a\": NaN}", "invalid JSON"),
        ("{\"a\": 1e999}", "invalid JSON"),
        ("{\"a\": ", "invalid JSON"),
        ("{\"a\": \"x\\u0000y\"}", "U+0000"),
    ] {
        let run = jobq(Some(url), &["enqueue", "t", "--payload", payload]);
        assert_eq!(run.code, 1, "{payload}: {run:#?}");
        assert!(run.stderr.contains(says), "{payload}: {run:#?}");
    }
    // Larger than the 1 MiB limit, through stdin (argv cannot carry it).
    let big = format!("{{\"s\": \"{}\"}}", "x".repeat(2 << 20));
    let run = jobq_with_stdin(Some(url), &["enqueue", "t", "--payload", "-"], &big);
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(run.stderr.contains("over the limit"), "{}", run.stderr);
    let run = jobq_with_stdin(
        Some(url),
        &["--json", "enqueue", "t", "--payload", "-"],
        "[1]",
    )
    .ok();
    assert!(run.json()["id"].is_i64());
    for args in [
        &["enqueue", "t", "--payload", "{}", "--queue", ""][..],
        &["enqueue", "", "--payload", "{}"],
        &["enqueue", &"t".repeat(201), "--payload", "{}"],
        &["enqueue", "t", "--payload", "{}", "--max-attempts", "0"],
    ] {
        let run = jobq(Some(url), args);
        assert_eq!(run.code, 1, "{run:#?}");
    }
    let run = jobq(Some(url), &["--json", "jobs", "list"]).ok();
    assert_eq!(run.json().as_array().unwrap().len(), 1);
}

/// Strings anyone who can enqueue may choose: each must stay on its own
/// line of the table and reach the terminal as visible escapes.
#[tokio::test]
async fn hostile_names_and_payloads_do_not_break_the_output() {
    let db = migrated().await;
    let url = db.url();
    let long = "L".repeat(200);
    for task in [
        "new\nline",
        "carriage\rreturn",
        "esc\x1b[2J\x1b[31mred",
        "tab\there",
        "\u{202e}reversed",
        "bell\x07",
        long.as_str(),
    ] {
        enqueue(
            url,
            task,
            r#"{"s": "\u001b[2J\n\r\u202e"}"#,
            &["--queue", task, "--key", task],
        );
    }
    // Data that only raw SQL can put there: very long and odd keys.
    sql(
        url,
        "INSERT INTO jobq.jobs (task, queue, payload, dedupe_key, state, finished_at) \
         VALUES ('raw', E'q\\n\\n', '{\"k\": \"\\\\u0001\"}', repeat('k', 100000), 'failed', now())",
    )
    .await;

    for args in [
        &["jobs", "list"][..],
        &["status"],
        &["jobs", "list", "--state", "failed"],
    ] {
        let run = jobq(Some(url), args).ok();
        assert!(
            !run.stdout
                .contains(['\x1b', '\r', '\x07', '\u{202e}', '\0']),
            "{args:?} let a control character through: {:?}",
            run.stdout
        );
        for line in run.stdout.lines() {
            assert!(
                line.chars().count() < 1000,
                "{args:?}: a line of {}",
                line.len()
            );
        }
    }
    let run = jobq(Some(url), &["jobs", "list"]).ok();
    assert_eq!(run.stdout.lines().count(), 1 + 8, "{}", run.stdout);
    assert!(run.stdout.contains("new\\nline"), "{}", run.stdout);
    assert!(run.stdout.contains('…'), "long values are cut");
    let run = jobq(Some(url), &["status"]).ok();
    // A header, 8 rows, then the footer after a blank line.
    assert_eq!(run.stdout.lines().take_while(|l| !l.is_empty()).count(), 9);

    // JSON is exact: the names come back as they were stored.
    let list = jobq(Some(url), &["--json", "jobs", "list"]).ok().json();
    let tasks: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["task"].as_str().unwrap())
        .collect();
    assert!(tasks.contains(&"esc\x1b[2J\x1b[31mred"), "{tasks:?}");
    assert!(tasks.contains(&long.as_str()));

    let id = list[1]["id"].as_i64().unwrap();
    let run = jobq(Some(url), &["jobs", "show", &id.to_string()]).ok();
    assert!(
        !run.stdout.contains(['\x1b', '\r', '\u{202e}']),
        "{:?}",
        run.stdout
    );
}

const SECRET: &str = "hunter2-Pa55word-xyzzy";

#[tokio::test]
async fn connection_errors_are_clear_and_never_show_a_password() {
    // Port 1: nothing listens there.
    for url in [
        format!("postgres://postgres:{SECRET}@127.0.0.1:1/postgres"),
        format!("postgres://postgres@127.0.0.1:1/postgres?password={SECRET}"),
        format!(
            "postgres://postgres:{SECRET}@127.0.0.1:1/postgres?password={SECRET}&sslmode=disable"
        ),
        format!("host=127.0.0.1 port=1 user=postgres password={SECRET}"),
        format!("host=127.0.0.1 port=1 user=postgres password='{SECRET} with spaces'"),
    ] {
        for args in [&["status"][..], &["migrate"], &["--json", "jobs", "list"]] {
            let run = jobq(Some(&url), args);
            assert_eq!(run.code, 1, "{run:#?}");
            assert!(run.stderr.contains("cannot connect"), "{run:#?}");
            assert!(run.stderr.contains("Connection refused"), "{run:#?}");
            assert!(run.stderr.contains("is PostgreSQL running"), "{run:#?}");
            assert!(!run.stderr.contains(SECRET), "password leaked: {run:#?}");
            assert!(!run.stdout.contains(SECRET), "password leaked: {run:#?}");
        }
        // Also through --database-url, and in --help with the variable set.
        let run = jobq(None, &["status", "--database-url", &url]);
        assert_eq!(run.code, 1);
        assert!(!run.stderr.contains(SECRET), "password leaked: {run:#?}");
        let run = jobq(Some(&url), &["--help"]).ok();
        assert!(!run.stdout.contains(SECRET), "password leaked: {run:#?}");
        // `version` still gives the binary's versions.
        let run = jobq(Some(&url), &["version"]);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stdout.contains(env!("CARGO_PKG_VERSION")), "{run:#?}");
        assert!(!run.stderr.contains(SECRET), "password leaked: {run:#?}");
    }
    // Unreadable URLs are refused without echoing them.
    for url in [
        format!("postgres://u:{SECRET}@h:notaport/db"),
        format!("mysql://u:{SECRET}@h/db"),
        format!("host=h password='{SECRET}"),
    ] {
        let run = jobq(Some(&url), &["status"]);
        assert_eq!(run.code, 1, "{run:#?}");
        assert!(run.stderr.contains("invalid database URL"), "{run:#?}");
        assert!(!run.stderr.contains(SECRET), "password leaked: {run:#?}");
    }
    let run = jobq(None, &["status"]);
    assert_eq!(run.code, 1);
    assert!(run.stderr.contains("DATABASE_URL"), "{run:#?}");
    // Usage errors exit with 2.
    assert_eq!(jobq(None, &["no-such-command"]).code, 2);
    assert_eq!(jobq(None, &["jobs", "show", "not-a-number"]).code, 2);
    assert_eq!(jobq(None, &["jobs", "list", "--state", "done"]).code, 2);
    let help = jobq(None, &["--help"]).ok();
    assert!(help.stdout.contains("Exit codes"), "{help:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_without_the_password() {
    let server = PrivateServer::start().await.expect("server");
    let role = "cli_pw_role";
    sql(
        server.url(),
        &format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'"
        ),
    )
    .await;
    // Password authentication for this role, ahead of the trust lines.
    let hba = server.data_dir().join("pg_hba.conf");
    let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
    std::fs::write(
        &hba,
        format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"),
    )
    .expect("pg_hba.conf");
    sql(server.url(), "SELECT pg_reload_conf()").await;

    let port = server.port();
    let wrong = format!("postgres://{role}:{SECRET}@127.0.0.1:{port}/postgres");
    let run = jobq(Some(&wrong), &["status"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(
        run.stderr.contains("password authentication failed"),
        "{run:#?}"
    );
    assert!(
        run.stderr.contains("check the user name and password"),
        "{run:#?}"
    );
    assert!(!run.stderr.contains(SECRET), "password leaked: {run:#?}");
    let right = format!("postgres://{role}:the-right-one@127.0.0.1:{port}/postgres");
    let run = jobq(Some(&right), &["--json", "version"]).ok();
    assert!(!run.stdout.contains("the-right-one"), "{run:#?}");
}

#[tokio::test]
async fn status_watch_refreshes_until_stopped() {
    use std::io::BufRead;
    use std::sync::mpsc;
    use std::time::Duration;

    let db = migrated().await;
    let url = db.url();
    enqueue(url, "w", "{}", &[]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["--json", "status", "--watch", "--interval", "100ms"])
        .env("DATABASE_URL", url)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run jobq");
    let stdout = child.stdout.take().expect("stdout");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    // JSON lines: one snapshot per refresh; the second shows a job
    // enqueued after the first.
    let next = || -> Value {
        let line = lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a refresh within 20 s")
            .expect("a line");
        serde_json::from_str(&line).expect("a JSON line")
    };
    let first = next();
    assert_eq!(first["tasks"][0]["pending"], 1, "{first}");
    enqueue(url, "w", "{}", &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let snapshot = next();
        if snapshot["tasks"][0]["pending"] == 2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never refreshed: {snapshot}"
        );
    }
    child.kill().expect("stop jobq");
    child.wait().expect("reap jobq");
}

/// Starts `jobq dashboard --listen 127.0.0.1:0 extra...` and returns it
/// with the address it printed.
fn start_dashboard(url: &str, extra: &[&str]) -> (std::process::Child, String, String) {
    use std::io::BufRead;
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobq"))
        .args(["dashboard", "--listen", "127.0.0.1:0"])
        .args(extra)
        .env("DATABASE_URL", url)
        .env_remove("JOBQ_DASHBOARD_TOKEN")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run jobq");
    let stdout = child.stdout.take().expect("stdout");
    let (send, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = send.send(line);
    });
    let line = lines
        .recv_timeout(std::time::Duration::from_secs(20))
        .expect("the dashboard's address within 20 s");
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_owned();
    (child, addr, line)
}

/// A plain HTTP/1.1 GET; the whole response, headers and body.
fn http_get(addr: &str, path: &str) -> String {
    http_get_as(addr, addr, path)
}

/// [`http_get`] with another `Host` header.
fn http_get_as(addr: &str, host: &str, path: &str) -> String {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the dashboard");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .expect("send");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("response");
    response
}

#[tokio::test]
async fn dashboard_serves_the_pages_read_only_unless_given_a_token() {
    let db = migrated().await;
    let id = enqueue(db.url(), "dash.task", "{}", &[]);

    let (mut child, addr, line) = start_dashboard(db.url(), &[]);
    assert!(line.contains("read-only"), "{line}");
    let overview = http_get(&addr, "/");
    assert!(overview.starts_with("HTTP/1.1 200"), "{overview}");
    assert!(overview.contains("dash.task"), "{overview}");
    assert!(overview.contains("read-only"));
    let job = http_get(&addr, &format!("/jobs/{id}"));
    assert!(job.starts_with("HTTP/1.1 200"), "{job}");
    // On localhost only local names are answered (DNS rebinding).
    let rebound = http_get_as(&addr, "evil.example", "/");
    assert!(rebound.starts_with("HTTP/1.1 403"), "{rebound}");
    assert!(http_get_as(&addr, "localhost:9999", "/").starts_with("HTTP/1.1 200"));
    child.kill().expect("stop jobq");
    child.wait().expect("reap jobq");

    let (mut child, addr, line) = start_dashboard(db.url(), &["--token", "s3cret-token"]);
    assert!(line.contains("log in with the token"), "{line}");
    assert!(!line.contains("s3cret-token"), "the token is not printed");
    let overview = http_get(&addr, "/");
    assert!(overview.contains("Log in"), "{overview}");
    child.kill().expect("stop jobq");
    child.wait().expect("reap jobq");
}

#[tokio::test]
async fn dashboard_refuses_to_start_without_the_schema() {
    let db = TestDatabase::create().await.expect("test database");
    let run = jobq(Some(db.url()), &["dashboard", "--listen", "127.0.0.1:0"]);
    assert_eq!(run.code, 1, "{run:#?}");
    assert!(run.stderr.contains("jobq migrate"), "{run:#?}");
}

#[tokio::test]
async fn queues_pause_and_resume_and_are_listed() {
    let db = migrated().await;
    let url = db.url();
    let run = jobq(Some(url), &["queues", "list"]).ok();
    assert!(run.stdout.contains("no queue is paused"), "{run:#?}");
    // Any text is a queue name; it reaches the database as data.
    let name = "reports'; DROP TABLE jobq.jobs; --";
    let run = jobq(Some(url), &["queues", "pause", name]).ok();
    assert!(run.stdout.contains("paused queue"), "{run:#?}");
    let again = jobq(Some(url), &["--json", "queues", "pause", name]).ok();
    assert_eq!(again.json()["changed"], Value::Bool(false), "{again:#?}");
    let listed = jobq(Some(url), &["--json", "queues", "list"]).ok();
    assert_eq!(listed.json(), serde_json::json!([name]));
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    assert_eq!(
        jobq::paused_queues(&mut conn).await.expect("paused"),
        [name.to_owned()]
    );
    let run = jobq(Some(url), &["--json", "queues", "resume", name]).ok();
    assert_eq!(run.json()["changed"], Value::Bool(true), "{run:#?}");
    assert!(jobq::paused_queues(&mut conn)
        .await
        .expect("paused")
        .is_empty());
    // A name the database cannot hold is refused with a usage-like error.
    let bad = jobq(Some(url), &["queues", "pause", ""]);
    assert_ne!(bad.code, 0, "{bad:#?}");
}

#[tokio::test]
async fn schedules_are_listed_paused_and_resumed() {
    let db = migrated().await;
    let url = db.url();
    let run = jobq(Some(url), &["schedules", "list"]).ok();
    assert!(run.stdout.contains("no schedules"), "{run:#?}");
    // As a worker declares it.
    sql(
        url,
        "INSERT INTO jobq.schedules (name, task, expression, timezone) \
         VALUES ('nightly', 'reports.nightly', '0 3 * * *', 'Europe/Berlin')",
    )
    .await;
    let listed = jobq(Some(url), &["--json", "schedules", "list"]).ok();
    let schedule = &listed.json()[0];
    assert_eq!(schedule["name"], "nightly", "{listed:#?}");
    assert_eq!(schedule["timezone"], "Europe/Berlin");
    assert_eq!(schedule["paused"], Value::Bool(false));
    assert!(schedule["next_tick"].is_string(), "{listed:#?}");
    jobq(Some(url), &["schedules", "pause", "nightly"]).ok();
    let table = jobq(Some(url), &["schedules", "list"]).ok();
    assert!(
        table.stdout.contains("nightly") && table.stdout.contains("yes"),
        "{table:#?}"
    );
    jobq(Some(url), &["schedules", "resume", "nightly"]).ok();
    let listed = jobq(Some(url), &["--json", "schedules", "list"]).ok();
    assert_eq!(listed.json()[0]["paused"], Value::Bool(false));
    let missing = jobq(Some(url), &["schedules", "pause", "weekly"]);
    assert_eq!(missing.code, 1, "{missing:#?}");
    assert!(missing.stderr.contains("no schedule named"), "{missing:#?}");
}

#[tokio::test]
async fn jobs_show_prints_headers_keys_and_output_inertly() {
    let db = migrated().await;
    let url = db.url();
    let id = enqueue(url, "show.task", r#"{"n":1}"#, &[]);
    sql(
        url,
        &format!(
            "UPDATE jobq.jobs SET key = 'customer-42', \
                 headers = jsonb_build_object('request-id', E'r1\\u001b[31m\\nforged: yes'), \
                 output = '{{\"rows\": 3}}', state = 'completed', finished_at = now() \
             WHERE id = {id}"
        ),
    )
    .await;
    let run = jobq(Some(url), &["jobs", "show", &id.to_string()]).ok();
    assert!(run.stdout.contains("partition:    customer-42"), "{run:#?}");
    assert!(run.stdout.contains("request-id: r1"), "{run:#?}");
    assert!(run.stdout.contains("\"rows\": 3"), "{run:#?}");
    // The header's escape and newline are shown, not obeyed: no forged line.
    assert!(!run.stdout.contains('\u{1b}'), "{run:#?}");
    assert!(
        !run.stdout.lines().any(|l| l.starts_with("forged")),
        "{run:#?}"
    );
    let json = jobq(Some(url), &["--json", "jobs", "show", &id.to_string()]).ok();
    assert_eq!(
        json.json()["headers"]["request-id"],
        "r1\u{1b}[31m\nforged: yes"
    );
    assert_eq!(json.json()["output"]["rows"], 3);
}

#[tokio::test]
async fn limits_list_blocks_and_buckets_and_unblock_lifts_a_block_early() {
    let db = migrated().await;
    let url = db.url();
    let run = jobq(Some(url), &["limits", "list"]).ok();
    assert!(run.stdout.contains("no task or key is blocked"), "{run:#?}");
    assert!(
        run.stdout.contains("configured in the worker binaries"),
        "{run:#?}"
    );
    // As workers leave them: a key blocked for an hour with three jobs it
    // moved out of the claim path (due at its end) and one retry of the
    // key due earlier; a whole task blocked; a key's bucket that is not
    // full; and rows that have passed, which are not shown.
    sql(
        url,
        "INSERT INTO jobq.blocks (task, key, until) VALUES \
             ('mail.send', 'acme', date_trunc('second', now()) + interval '1 hour'), \
             ('reports', '', now() + interval '30 minutes'), \
             ('mail.send', 'passed-key', now() - interval '1 minute'); \
         INSERT INTO jobq.jobs (task, payload, key, state, run_at) \
         SELECT 'mail.send', '{}', 'acme', 'scheduled', \
             date_trunc('second', now()) + interval '1 hour' FROM generate_series(1, 3); \
         INSERT INTO jobq.jobs (task, payload, key, state, run_at) \
         VALUES ('mail.send', '{}', 'acme', 'scheduled', now() + interval '10 minutes'); \
         INSERT INTO jobq.rate_tokens (task, key, tat) VALUES \
             ('mail.send', 'acme', now() + interval '20 seconds'), \
             ('mail.send', '', now() - interval '1 second');",
    )
    .await;
    let table = jobq(Some(url), &["limits", "list"]).ok();
    for shown in ["mail.send", "acme", "reports", "(whole task)", "59m", "29m"] {
        assert!(table.stdout.contains(shown), "{shown}: {table:#?}");
    }
    assert!(!table.stdout.contains("passed-key"), "{table:#?}");
    let listed = jobq(Some(url), &["--json", "limits", "list"]).ok().json();
    let blocks = listed["blocks"].as_array().expect("blocks");
    assert_eq!(blocks.len(), 2, "{listed:#}");
    assert_eq!(
        (&blocks[0]["task"], &blocks[0]["key"]),
        (&Value::from("mail.send"), &Value::from("acme"))
    );
    assert_eq!(blocks[1]["key"], Value::Null);
    let left = blocks[0]["remaining_ms"].as_u64().expect("remaining_ms");
    assert!(left > 3_500_000 && left <= 3_600_000, "{left}");
    let buckets = listed["rate_buckets"].as_array().expect("buckets");
    assert_eq!(buckets.len(), 1, "{listed:#}");
    assert_eq!(buckets[0]["key"], "acme");
    let full_in = buckets[0]["full_in_ms"].as_u64().expect("full_in_ms");
    assert!(full_in > 15_000 && full_in <= 20_000, "{full_in}");
    assert!(listed["note"].as_str().expect("note").contains("rate"));

    // Lifting the key's block brings back the jobs it held, and only them.
    let run = jobq(
        Some(url),
        &["--json", "limits", "unblock", "mail.send", "--key", "acme"],
    )
    .ok();
    assert_eq!(
        run.json(),
        serde_json::json!({"task": "mail.send", "key": "acme", "lifted": true, "jobs_back": 3})
    );
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    let blocks = jobq::blocks(&mut conn).await.expect("blocks");
    assert_eq!(blocks.len(), 1);
    assert_eq!(
        (blocks[0].task.as_str(), blocks[0].key.as_deref()),
        ("reports", None)
    );
    let pending = jobq(Some(url), &["--json", "jobs", "list", "--state", "pending"]).ok();
    assert_eq!(
        pending.json().as_array().map(Vec::len),
        Some(3),
        "{pending:#?}"
    );
    let run = jobq(
        Some(url),
        &["limits", "unblock", "mail.send", "--key", "acme"],
    )
    .ok();
    assert!(run.stdout.contains("was not blocked"), "{run:#?}");
    let run = jobq(Some(url), &["limits", "unblock", "reports"]).ok();
    assert!(
        run.stdout.contains("lifted the block of task reports"),
        "{run:#?}"
    );
    assert!(jobq::blocks(&mut conn).await.expect("blocks").is_empty());
    // An empty key is refused, not taken for the whole task.
    let bad = jobq(Some(url), &["limits", "unblock", "reports", "--key", ""]);
    assert_ne!(bad.code, 0, "{bad:#?}");
}
