//! The shared server goes away when the test process dies, even by SIGKILL.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use jobq_testkit::TestDatabase;

/// Child mode: start the shared server, print its URL, then wait to be killed.
#[tokio::test]
async fn child_holding_a_server() {
    let Ok(out) = std::env::var("JOBQ_TESTKIT_WATCHDOG_CHILD") else {
        return;
    };
    let db = TestDatabase::create().await.expect("database");
    std::fs::write(&out, db.url()).expect("write url");
    std::thread::park();
}

#[test]
fn server_goes_away_after_sigkill() {
    if std::env::var_os("DATABASE_URL").is_some() {
        eprintln!("DATABASE_URL is set, the shared private server is not used; skipping");
        return;
    }
    let out = std::env::temp_dir().join(format!("jobq-testkit-watchdog-{}", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let mut child = Command::new(std::env::current_exe().expect("current exe"))
        .args(["child_holding_a_server", "--exact", "--nocapture"])
        .env("JOBQ_TESTKIT_WATCHDOG_CHILD", &out)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn child");

    let url = poll("the child to start a server", || {
        std::fs::read_to_string(&out).ok().filter(|u| !u.is_empty())
    });
    let port: u16 = url
        .rsplit_once(':')
        .and_then(|(_, rest)| rest.split('/').next())
        .and_then(|p| p.parse().ok())
        .expect("port in url");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());

    child.kill().expect("kill");
    child.wait().expect("wait");
    poll("the server to go away", || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .err()
            .map(|_| ())
    });
    let _ = std::fs::remove_file(&out);
}

fn poll<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}
