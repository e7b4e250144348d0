//! The dashboard in a real browser: Debian's chromium, headless, driven
//! through chromedriver (WebDriver). Opens the overview, filters the jobs
//! to the failed ones, logs in, retries one and checks in the database
//! that it is pending again, then pauses a queue and a schedule with
//! their buttons. Saves a screenshot of each page to
//! `target/screenshots/`; with `JOBQ_WEB_UPDATE_DOCS=1` the overview's
//! also goes to `docs/dashboard.png` for the README.
//!
//! Runs when chromium and chromedriver are installed; otherwise prints one
//! line saying it was skipped, unless `JOBQ_REQUIRE_TOOLS` names
//! `chromium`, which makes their absence a failure (CI sets it).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use diesel_async::SimpleAsyncConnection;
use fantoccini::{Client, ClientBuilder, Locator};
use jobq::{EnqueueOptions, JobState};
use serde_json::json;

const TOKEN: &str = "browser-test-token";
const REQUIRE_TOOLS: &str = "JOBQ_REQUIRE_TOOLS";
const SOON: Duration = Duration::from_secs(30);

/// The tool's path, or `None` after printing the skip line; a failure
/// instead when `JOBQ_REQUIRE_TOOLS` names `tool` (or `all`).
fn required_tool(tool: &str, test: &str, install: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    let required = std::env::var(REQUIRE_TOOLS).unwrap_or_default();
    let required = required
        .split(',')
        .map(str::trim)
        .any(|t| t.eq_ignore_ascii_case(tool) || t.eq_ignore_ascii_case("all"));
    assert!(
        !required,
        "{test}: {tool} is not installed and {REQUIRE_TOOLS} requires it ({install})"
    );
    // Straight to stderr: the harness captures what a passing test prints.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "skipped: {test}: {tool} is not installed ({install}; {REQUIRE_TOOLS}={tool} makes this a failure)"
    );
    None
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    ["/usr/bin", "/usr/lib/chromium", "/usr/local/bin"]
        .iter()
        .map(PathBuf::from)
        .chain(std::env::split_paths(&path))
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// chromedriver, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn start_driver(path: &Path) -> Driver {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        l.local_addr().expect("address").port()
    };
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + SOON;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not start listening"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    driver
}

async fn browser(driver: &Driver, chromium: &Path, profile: &Path) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": chromium,
            "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--disable-background-networking", "--disable-component-update",
                "--disable-sync", "--window-size=1280,1000",
                format!("--user-data-dir={}", profile.display()),
            ],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a chromium session")
}

fn screenshots_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).expect("screenshot directory");
    dir
}

async fn screenshot(c: &Client, name: &str) -> PathBuf {
    let png = c.screenshot().await.expect("screenshot");
    assert!(png.starts_with(b"\x89PNG"), "a PNG");
    let path = screenshots_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).expect("save screenshot");
    path
}

/// Waits until the current page's source contains `needle`.
async fn wait_for_text(c: &Client, needle: &str) -> String {
    let deadline = Instant::now() + SOON;
    loop {
        let source = c.source().await.expect("page source");
        if source.contains(needle) {
            return source;
        }
        assert!(
            Instant::now() < deadline,
            "the page never showed {needle:?}: {source}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Failed, pending and finished jobs spread over the last hour, so that
/// every page and the chart have something to show.
async fn fill(env: &support::Env) -> Vec<jobq::JobId> {
    let mut failed = Vec::new();
    for n in 0..3 {
        let id = env
            .enqueue("mail.send_welcome", json!({"user_id": 100 + n}))
            .await;
        env.fail(
            id,
            &format!("smtp: 550 mailbox unavailable (user {})", 100 + n),
        )
        .await;
        failed.push(id);
    }
    for n in 0..4 {
        env.enqueue_with(
            "reports.nightly",
            json!({"day": n}),
            EnqueueOptions::new().queue("reports"),
        )
        .await;
    }
    let mut finished = Vec::new();
    for n in 0..90 {
        finished.push(env.enqueue("images.resize", json!({"image": n})).await);
    }
    let mut conn = env.pool.get().await.expect("connection");
    // Test data only: finish the jobs at times over the last hour.
    conn.batch_execute(&format!(
        "UPDATE jobq.jobs SET state = CASE WHEN id % 11 = 0 THEN 'failed' ELSE 'completed' END::jobq.job_state, \
         attempt = 1, finished_at = now() - ((id * 37) % 60) * interval '1 minute' \
         WHERE id IN ({})",
        finished
            .iter()
            .map(|i| i.to_string())
            .collect::<Vec<_>>()
            .join(",")
    ))
    .await
    .expect("finish jobs");
    drop(conn);
    env.register_worker("app-1", &["default", "reports"]).await;
    env.register_worker("app-2", &["default"]).await;
    env.declare_schedule("reports.nightly", "reports.nightly", "0 30 3 * * *")
        .await;
    failed
}

#[tokio::test]
async fn retry_a_failed_job_in_chromium() {
    const TEST: &str = "retry_a_failed_job_in_chromium";
    let Some(chromium) = required_tool(
        "chromium",
        TEST,
        "apt-get install chromium chromium-driver",
        find_program(&["chromium", "chromium-browser"]),
    ) else {
        return;
    };
    let Some(chromedriver) = required_tool(
        "chromium",
        TEST,
        "apt-get install chromium-driver",
        find_program(&["chromedriver"]),
    ) else {
        return;
    };

    let env = support::env().await;
    let failed = fill(&env).await;
    let addr = support::serve(
        jobq_web::Dashboard::new(env.pool.clone())
            .token(TOKEN)
            .router(),
    )
    .await;
    let base = format!("http://{addr}");

    let profile = std::env::temp_dir().join(format!(
        "jobq-web-chromium-{}-{}",
        std::process::id(),
        fastrand_suffix()
    ));
    std::fs::create_dir_all(&profile).expect("profile directory");
    let driver = start_driver(&chromedriver).await;
    let c = browser(&driver, &chromium, &profile).await;

    let result = drive(&c, &base, &env, &failed).await;
    let _ = c.close().await;
    drop(driver);
    let _ = std::fs::remove_dir_all(&profile);
    result
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

async fn drive(c: &Client, base: &str, env: &support::Env, failed: &[jobq::JobId]) {
    // The overview.
    c.goto(&format!("{base}/"))
        .await
        .expect("open the overview");
    let overview = wait_for_text(c, "Queues and tasks").await;
    assert!(overview.contains("mail.send_welcome"));
    assert!(overview.contains("<svg class=\"chart\""));
    let shot = screenshot(c, "overview").await;
    if std::env::var_os("JOBQ_WEB_UPDATE_DOCS").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/dashboard.png");
        std::fs::copy(&shot, docs).expect("copy the screenshot to docs/");
    }

    // Filter the jobs to the failed ones with the form.
    c.find(Locator::LinkText("Jobs"))
        .await
        .expect("the Jobs link")
        .click()
        .await
        .expect("open the jobs");
    wait_for_text(c, "id=\"filter-state\"").await;
    c.find(Locator::Id("filter-state"))
        .await
        .expect("the state filter")
        .select_by_value("failed")
        .await
        .expect("choose failed");
    c.find(Locator::Id("filter-apply"))
        .await
        .expect("the filter button")
        .click()
        .await
        .expect("filter");
    let deadline = Instant::now() + SOON;
    while !c
        .current_url()
        .await
        .expect("url")
        .as_str()
        .contains("state=failed")
    {
        assert!(Instant::now() < deadline, "the filter never applied");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let source = wait_for_text(c, &format!("/jobs/{}\"", failed[0])).await;
    for id in failed {
        assert!(
            source.contains(&format!("/jobs/{id}\"")),
            "failed job {id} listed"
        );
    }
    assert!(source.contains("class=\"state failed\""));
    assert!(
        !source.contains("class=\"state completed\""),
        "only failed jobs"
    );
    screenshot(c, "jobs-failed").await;

    // Log in with the token.
    c.find(Locator::Id("login-link"))
        .await
        .expect("the login link")
        .click()
        .await
        .expect("open the login page");
    c.wait()
        .at_most(SOON)
        .for_element(Locator::Id("token"))
        .await
        .expect("the token field")
        .send_keys(TOKEN)
        .await
        .expect("type the token");
    screenshot(c, "login").await;
    c.find(Locator::Id("login"))
        .await
        .expect("the login button")
        .click()
        .await
        .expect("log in");
    wait_for_text(c, "Log out").await;

    // Retry one failed job from the failed jobs page.
    c.goto(&format!("{base}/failed"))
        .await
        .expect("open failed jobs");
    wait_for_text(c, "Retry all").await;
    screenshot(c, "failed").await;
    let target = failed[1];
    c.find(Locator::Css(&format!(
        "button.retry-one[data-id=\"{target}\"]"
    )))
    .await
    .expect("the job's retry button")
    .click()
    .await
    .expect("retry");
    let notice = c
        .wait()
        .at_most(SOON)
        .for_element(Locator::Id("notice"))
        .await
        .expect("the outcome notice")
        .text()
        .await
        .expect("notice text");
    assert!(notice.contains("1 retried"), "{notice}");
    assert_eq!(
        env.job(target).await.state,
        JobState::Pending,
        "pending again"
    );
    assert_eq!(
        env.job(failed[0]).await.state,
        JobState::Failed,
        "the others stay"
    );

    // The remaining pages, for the artifacts.
    c.goto(&format!("{base}/jobs/{}", failed[0]))
        .await
        .expect("job page");
    wait_for_text(c, "mailbox unavailable").await;
    screenshot(c, "job").await;
    // Pause a queue, then a schedule, with their buttons.
    c.goto(&format!("{base}/queues"))
        .await
        .expect("queues page");
    wait_for_text(c, "reports").await;
    c.find(Locator::Css("button.pause-queue[data-queue=\"reports\"]"))
        .await
        .expect("the queue's pause button")
        .click()
        .await
        .expect("pause");
    let notice = c
        .wait()
        .at_most(SOON)
        .for_element(Locator::Id("notice"))
        .await
        .expect("the outcome notice")
        .text()
        .await
        .expect("notice text");
    assert_eq!(notice, "paused");
    assert_eq!(env.paused_queues().await, ["reports"]);
    wait_for_text(c, "class=\"resume-queue\" data-queue=\"reports\"").await;
    screenshot(c, "queues").await;
    c.find(Locator::LinkText("Schedules"))
        .await
        .expect("the Schedules link")
        .click()
        .await
        .expect("open the schedules");
    wait_for_text(c, "0 30 3 * * *").await;
    c.find(Locator::Css(
        "button.pause-schedule[data-schedule=\"reports.nightly\"]",
    ))
    .await
    .expect("the schedule's pause button")
    .click()
    .await
    .expect("pause");
    wait_for_text(c, "class=\"resume-schedule\"").await;
    assert!(env.schedule("reports.nightly").await.paused);
    screenshot(c, "schedules").await;
    c.goto(&format!("{base}/workers"))
        .await
        .expect("workers page");
    wait_for_text(c, "app-2").await;
    screenshot(c, "workers").await;
}
