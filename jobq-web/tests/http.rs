//! The dashboard over real HTTP: every page, paging, the mount prefix,
//! read-only mode, login, CSRF and origin checks, the actions (checked in
//! the database), and hostile text from the database and the request.

mod support;

use jobq::{EnqueueOptions, JobState};
use serde_json::json;
use support::{env, serve, Client};

const TOKEN: &str = "correct horse battery staple";

async fn dashboard(env: &support::Env, token: Option<&str>) -> Client {
    let mut d = jobq_web::Dashboard::new(env.pool.clone());
    if let Some(t) = token {
        d = d.token(t);
    }
    Client::new(serve(d.router()).await)
}

#[tokio::test]
async fn every_page_shows_the_jobs_it_is_about() {
    let env = env().await;
    let done = env
        .enqueue("mail.send", json!({"to": "a@example.com"}))
        .await;
    let broken = env
        .enqueue("mail.send", json!({"to": "b@example.com"}))
        .await;
    env.fail(broken, "smtp said no").await;
    env.enqueue_with(
        "reports.nightly",
        json!({"day": 3}),
        EnqueueOptions::new().queue("reports"),
    )
    .await;
    env.register_worker("host-a", &["default", "reports"]).await;
    let c = dashboard(&env, None).await;

    let overview = c.get("/").await;
    assert_eq!(overview.status, 200);
    assert!(overview.body.contains("mail.send"), "{}", overview.body);
    assert!(overview.body.contains("reports.nightly"));
    assert!(
        overview.body.contains("<svg class=\"chart\""),
        "the throughput chart"
    );
    assert!(overview.body.contains("host-a"), "a live worker");
    assert!(
        overview
            .body
            .contains("href=\"/failed?queue=default&amp;task=mail.send\">1</a>"),
        "failed count links to the failed jobs"
    );

    let failed_only = c.get("/jobs?state=failed").await;
    assert_eq!(failed_only.status, 200);
    assert!(failed_only
        .body
        .contains(&format!("href=\"/jobs/{broken}\"")));
    assert!(!failed_only.body.contains(&format!("href=\"/jobs/{done}\"")));

    let all = c.get("/jobs").await;
    assert!(all.body.contains(&format!("href=\"/jobs/{done}\"")));
    assert!(all.body.contains(&format!("href=\"/jobs/{broken}\"")));

    let by_queue = c.get("/jobs?queue=reports").await;
    assert!(by_queue.body.contains("reports.nightly"));
    assert!(!by_queue.body.contains("mail.send</td>"));

    let detail = c.get(&format!("/jobs/{broken}")).await;
    assert_eq!(detail.status, 200);
    assert!(detail.body.contains("b@example.com"), "the payload");
    assert!(detail.body.contains("smtp said no"), "the error history");

    let failed = c.get("/failed").await;
    assert!(failed.body.contains(&format!("href=\"/jobs/{broken}\"")));
    assert!(!failed.body.contains(&format!("href=\"/jobs/{done}\"")));
    assert!(failed.body.contains("mail.send: 1 failed"));

    let queues = c.get("/queues").await;
    assert!(queues
        .body
        .contains("href=\"/jobs?state=pending&amp;queue=reports\""));
    assert!(queues.body.contains("href=\"/failed?queue=default\""));
    assert!(
        by_queue.body.contains("add a state"),
        "a filter without a state gets the hint"
    );
    assert!(!failed_only.body.contains("add a state"));
    let by_task = c.get("/jobs?task=mail.send").await;
    assert!(
        !by_task.body.contains("add a state"),
        "a task has an index of its own"
    );

    let workers = c.get("/workers").await;
    assert!(workers.body.contains("host-a"));
    assert!(workers.body.contains("default, reports"));

    let css = c.get("/assets/style.css").await;
    assert_eq!(css.status, 200);
    assert!(css.body.contains("table"));
    assert_eq!(c.get("/assets/app.js").await.status, 200);
    assert_eq!(c.get("/no/such/page").await.status, 404);
}

#[tokio::test]
async fn jobs_are_paged_by_id() {
    let env = env().await;
    let mut ids = Vec::new();
    for n in 0..7 {
        ids.push(env.enqueue("paged", json!({ "n": n })).await.get());
    }
    ids.reverse(); // newest first, as listed
    let c = dashboard(&env, None).await;
    let mut path = "/jobs?task=paged&limit=3".to_owned();
    let mut seen = Vec::new();
    for _ in 0..5 {
        let page = c.get(&path).await;
        assert_eq!(page.status, 200, "{}", page.body);
        for id in &ids {
            if page.body.contains(&format!("href=\"/jobs/{id}\"")) {
                seen.push(*id);
            }
        }
        let Some(start) = page
            .body
            .find("href=\"/jobs?task=paged&#38;limit=3&#38;before=")
        else {
            break;
        };
        let href = &page.body[start + 6..];
        path = href[..href.find('"').unwrap()].replace("&#38;", "&");
    }
    assert_eq!(
        seen, ids,
        "{path} each job once, newest first, over three pages"
    );
}

#[tokio::test]
async fn links_cookie_and_redirects_follow_the_mount_prefix() {
    let env = env().await;
    let id = env.enqueue("nested", json!({})).await;
    env.fail(id, "x").await;
    let app = axum::Router::new().nest(
        "/admin/queue",
        jobq_web::Dashboard::new(env.pool.clone())
            .token(TOKEN)
            .router(),
    );
    let mut c = Client::new(serve(app).await);

    let overview = c.get("/admin/queue").await;
    assert_eq!(overview.status, 200);
    assert!(overview
        .body
        .contains("href=\"/admin/queue/assets/style.css\""));
    assert!(overview.body.contains("href=\"/admin/queue/jobs\""));
    assert!(overview
        .body
        .contains("href=\"/admin/queue/failed?queue=default&amp;task=nested\""));
    let jobs = c.get("/admin/queue/jobs").await;
    assert!(jobs
        .body
        .contains(&format!("href=\"/admin/queue/jobs/{id}\"")));
    assert_eq!(c.get("/admin/queue/assets/style.css").await.status, 200);

    let login = c.login("/admin/queue", TOKEN).await;
    assert_eq!(login.location.as_deref(), Some("/admin/queue/"));
    let cookie = login.set_cookie.unwrap();
    assert!(cookie.contains("Path=/admin/queue;"), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));

    let csrf = c.csrf("/admin/queue/failed").await;
    let r = c
        .post(
            "/admin/queue/actions/retry",
            &[
                ("csrf", &csrf),
                ("only", &id.to_string()),
                ("back", "/failed?"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.location.as_deref(),
        Some("/admin/queue/failed?retried=1&skipped=0")
    );
    assert_eq!(env.job(id).await.state, JobState::Pending);

    // The pause actions too.
    assert!(c
        .get("/admin/queue/queues")
        .await
        .body
        .contains("action=\"/admin/queue/actions/pause-queue\""));
    let r = c
        .post(
            "/admin/queue/actions/pause-queue",
            &[("csrf", &csrf), ("queue", "default"), ("back", "/queues?")],
            None,
        )
        .await;
    assert_eq!(r.location.as_deref(), Some("/admin/queue/queues?paused=1"));
    assert_eq!(env.paused_queues().await, ["default"]);
    assert!(c
        .get("/admin/queue/schedules")
        .await
        .body
        .contains("href=\"/admin/queue/schedules\" class=\"here\""));
}

#[tokio::test]
async fn without_a_token_the_dashboard_is_read_only() {
    let env = env().await;
    let id = env.enqueue("ro", json!({})).await;
    env.fail(id, "x").await;
    let c = dashboard(&env, None).await;

    let failed = c.get("/failed").await;
    assert!(failed.body.contains("read-only"));
    assert!(
        !failed.body.contains("/actions/retry"),
        "no action forms: {}",
        failed.body
    );
    let r = c
        .post("/actions/retry", &[("only", &id.to_string())], None)
        .await;
    assert_eq!(r.status, 403);
    let r = c.post("/login", &[("token", "")], None).await;
    assert_eq!(r.status, 403, "no token logs in");
    assert_eq!(env.job(id).await.state, JobState::Failed);

    // An empty token (an unset variable) does not open the dashboard.
    let c = dashboard(&env, Some("  ")).await;
    assert_eq!(c.post("/login", &[("token", "  ")], None).await.status, 403);
    assert!(c.get("/").await.body.contains("read-only"));
}

#[tokio::test]
async fn actions_need_the_session_its_csrf_token_and_the_same_origin() {
    let env = env().await;
    let id = env.enqueue("guarded", json!({})).await;
    env.fail(id, "x").await;
    let mut c = dashboard(&env, Some(TOKEN)).await;
    let only = id.to_string();

    // Logged out: refused, and the page offers no action.
    assert!(c.get("/failed").await.body.contains("Log in"));
    assert_eq!(
        c.post("/actions/retry", &[("only", &only)], None)
            .await
            .status,
        403
    );
    // A wrong token does not log in.
    let wrong = c.post("/login", &[("token", "guess")], None).await;
    assert_eq!(wrong.status, 403);
    assert!(wrong.set_cookie.is_none());
    assert!(wrong.body.contains("Wrong token"));
    // A login from another site is refused.
    let foreign = c
        .post("/login", &[("token", TOKEN)], Some("http://evil.example"))
        .await;
    assert_eq!(foreign.status, 403);
    assert!(foreign.set_cookie.is_none());

    c.login("", TOKEN).await;
    let csrf = c.csrf("/failed").await;
    assert_eq!(csrf.len(), 64);
    // Logged in, but without the form's token, with a wrong one, or from
    // another origin: refused.
    for (fields, origin) in [
        (vec![("only", only.as_str())], None),
        (vec![("only", only.as_str()), ("csrf", "0000")], None),
        (
            vec![("only", only.as_str()), ("csrf", csrf.as_str())],
            Some("http://evil.example"),
        ),
        (
            vec![("only", only.as_str()), ("csrf", csrf.as_str())],
            Some("null"),
        ),
    ] {
        let r = c.post("/actions/retry", &fields, origin).await;
        assert_eq!(r.status, 403, "{fields:?} from {origin:?}");
    }
    assert_eq!(env.job(id).await.state, JobState::Failed, "nothing changed");
    // Another client's cookie value guessed: refused.
    let mut stranger = Client::new(c.origin.trim_start_matches("http://").parse().unwrap());
    stranger.cookie = Some("jobq_session=00".to_owned());
    assert_eq!(
        stranger
            .post("/actions/retry", &[("only", &only), ("csrf", &csrf)], None)
            .await
            .status,
        403
    );

    let r = c
        .post("/actions/retry", &[("only", &only), ("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(env.job(id).await.state, JobState::Pending);
    let back = c.get(r.location.as_deref().unwrap()).await;
    assert!(back.body.contains("1 retried"), "{}", back.body);

    // Logging out ends the session.
    assert_eq!(
        c.post("/logout", &[("csrf", &csrf)], None).await.status,
        303
    );
    assert_eq!(
        c.post("/actions/cancel", &[("only", &only), ("csrf", &csrf)], None)
            .await
            .status,
        403
    );
    assert_eq!(env.job(id).await.state, JobState::Pending);
}

#[tokio::test]
async fn retry_and_cancel_one_or_many() {
    let env = env().await;
    let mut failed = Vec::new();
    for _ in 0..3 {
        let id = env.enqueue("bulk.a", json!({})).await;
        env.fail(id, "x").await;
        failed.push(id);
    }
    let other = env.enqueue("bulk.b", json!({})).await;
    env.fail(other, "x").await;
    let pending: Vec<_> = [
        env.enqueue("bulk.c", json!({})).await,
        env.enqueue("bulk.c", json!({})).await,
    ]
    .into();
    let mut c = dashboard(&env, Some(TOKEN)).await;
    c.login("", TOKEN).await;
    let csrf = c.csrf("/jobs").await;

    // Ticked boxes: two of the failed ones.
    let (a, b) = (failed[0].to_string(), failed[1].to_string());
    let r = c
        .post(
            "/actions/retry",
            &[
                ("csrf", &csrf),
                ("id", &a),
                ("id", &b),
                ("back", "/jobs?state=failed"),
            ],
            None,
        )
        .await;
    assert_eq!(
        r.location.as_deref(),
        Some("/jobs?state=failed&retried=2&skipped=0")
    );
    assert_eq!(env.job(failed[0]).await.state, JobState::Pending);
    assert_eq!(env.job(failed[1]).await.state, JobState::Pending);
    assert_eq!(env.job(failed[2]).await.state, JobState::Failed);

    // Cancel both pending jobs at once; a finished one is skipped.
    let (p, q, f) = (
        pending[0].to_string(),
        pending[1].to_string(),
        failed[2].to_string(),
    );
    let r = c
        .post(
            "/actions/cancel",
            &[("csrf", &csrf), ("id", &p), ("id", &q), ("id", &f)],
            None,
        )
        .await;
    assert_eq!(r.status, 303);
    assert!(r.location.unwrap().ends_with("cancelled=2&skipped=1"));
    assert_eq!(env.job(pending[0]).await.state, JobState::Cancelled);
    assert_eq!(env.job(pending[1]).await.state, JobState::Cancelled);

    // Every failed job of one task.
    let r = c
        .post(
            "/actions/retry-failed",
            &[("csrf", &csrf), ("task", "bulk.a")],
            None,
        )
        .await;
    assert!(r.location.unwrap().ends_with("retried=1"));
    assert_eq!(env.job(failed[2]).await.state, JobState::Pending);
    assert_eq!(
        env.job(other).await.state,
        JobState::Failed,
        "another task's job stays"
    );

    // A return path to another site is not followed.
    let r = c
        .post(
            "/actions/retry",
            &[
                ("csrf", &csrf),
                ("only", &other.to_string()),
                ("back", "//evil.example/x"),
            ],
            None,
        )
        .await;
    assert!(r.location.unwrap().starts_with("/jobs?"));
    assert_eq!(env.job(other).await.state, JobState::Pending);

    // Bad ids are refused before anything runs.
    for fields in [vec![("id", "abc")], vec![("id", "1"), ("id", "x")], vec![]] {
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend(fields.iter().copied());
        assert_eq!(
            c.post("/actions/retry", &all, None).await.status,
            400,
            "{fields:?}"
        );
    }
}

#[tokio::test]
async fn hostile_text_is_escaped_everywhere() {
    let env = env().await;
    let script = "<script>alert(1)</script>";
    let task = format!("t{script}\"'&");
    let long = "x".repeat(300_000);
    let id = env
        .enqueue_with(
            &task,
            json!({"html": format!("</pre>{script}"), "ctl": "\u{1b}[2J\u{7}", "long": long}),
            EnqueueOptions::new()
                .queue(format!("q{script}"))
                .dedupe_key(format!("k{script}")),
        )
        .await;
    env.fail(id, &format!("boom {script}\n{}", "e".repeat(100_000)))
        .await;
    env.register_worker(&format!("h{script}"), &[&format!("q{script}")])
        .await;
    let mut c = dashboard(&env, Some(TOKEN)).await;
    c.login("", TOKEN).await;

    let pages = [
        "/".to_owned(),
        "/jobs".to_owned(),
        "/failed".to_owned(),
        "/queues".to_owned(),
        "/workers".to_owned(),
        "/schedules".to_owned(),
        format!("/jobs/{id}"),
        // Filters are shown back in the form; NUL and controls included.
        "/jobs?task=%3Cscript%3Ealert(1)%3C/script%3E%00&queue=%00&key=%1b".to_owned(),
        "/failed?task=a%22%3E%3Cscript%3E".to_owned(),
    ];
    for path in &pages {
        let page = c.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(
            !page.body.contains("<script>alert"),
            "{path} has a raw script"
        );
        assert!(!page.body.contains('\0'), "{path} has a NUL");
        assert!(
            !page.body.contains('\u{1b}'),
            "{path} has an escape character"
        );
        assert!(
            page.body.len() < 1_000_000,
            "{path} is {} bytes",
            page.body.len()
        );
    }
    let detail = c.get(&format!("/jobs/{id}")).await;
    assert!(
        detail
            .body
            .contains("&#60;script&#62;alert(1)&#60;/script&#62;"),
        "{}",
        &detail.body[..3000]
    );
    assert!(detail.body.contains("boom &#60;script&#62;"));
    assert!(detail.body.contains('…'), "the long payload is cut");
    let list = c.get("/jobs").await;
    assert!(
        list.body
            .contains("t&#60;script&#62;alert(1)&#60;/script&#62;&#34;&#39;&#38;"),
        "{}",
        list.body
    );
    let echoed = c.get("/jobs?task=%3Cb%3E%00").await;
    assert!(
        echoed.body.contains("value=\"&#60;b&#62;\\u{0}\""),
        "{}",
        echoed.body
    );

    // Retrying by a hostile task name works: it is data.
    let csrf = c.csrf("/failed").await;
    let r = c
        .post(
            "/actions/retry-failed",
            &[("csrf", &csrf), ("task", &task)],
            None,
        )
        .await;
    assert!(r.location.unwrap().ends_with("retried=1"));
    assert_eq!(env.job(id).await.state, JobState::Pending);
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let env = env().await;
    let c = dashboard(&env, None).await;
    for (path, status) in [
        ("/jobs/abc", 400),
        ("/jobs/99999999", 404),
        ("/jobs?state=done", 400),
        ("/jobs?limit=0", 400),
        ("/jobs?limit=100000", 400),
        ("/jobs?before=x", 400),
        ("/jobs?since=yesterday-ish", 400),
        ("/jobs?since=1h", 200),
        ("/jobs?since=2026-11-30T12:00:00Z", 200),
        ("/jobs?state=", 200),
    ] {
        let r = c.get(path).await;
        assert_eq!(r.status, status, "{path}: {}", r.body);
    }
    let r = c.get("/jobs?state=%3Cscript%3E").await;
    assert!(
        r.body.contains("&#60;script&#62;") && !r.body.contains("<script>"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn an_unreachable_database_is_an_error_page_without_the_password() {
    let pool = support::pool_for(
        "postgres://jobq:hunter2-secret@127.0.0.1:1/jobq?connect_timeout=1",
        std::time::Duration::from_millis(300),
    );
    let c = Client::new(serve(jobq_web::router(pool)).await);
    for path in ["/", "/jobs", "/jobs/1", "/workers", "/queues", "/schedules"] {
        let r = c.get(path).await;
        assert_eq!(r.status, 503, "{path}");
        assert!(r.body.contains("no database connection"), "{}", r.body);
        assert!(!r.body.contains("hunter2"), "{path} shows the password");
    }
}

#[tokio::test]
async fn pages_forbid_framing_and_foreign_scripts() {
    let env = env().await;
    let c = dashboard(&env, None).await;
    let r = c.http_headers("/").await;
    assert!(
        r.contains("content-security-policy: default-src 'none'"),
        "{r}"
    );
    assert!(r.contains("x-frame-options: DENY"), "{r}");
}

#[tokio::test]
async fn only_the_allowed_host_names_are_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let env = env().await;
    let app = jobq_web::Dashboard::new(env.pool.clone())
        .allowed_hosts(["localhost", "127.0.0.1"])
        .router();
    let addr = serve(app).await;
    let get = |host: String| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    };
    assert!(get(format!("127.0.0.1:{}", addr.port()))
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(get("localhost:1234".to_owned())
        .await
        .starts_with("HTTP/1.1 200"));
    // A rebinding site sends its own name.
    let r = get(format!("evil.example:{}", addr.port())).await;
    assert!(r.starts_with("HTTP/1.1 403"), "{r}");
}

/// A name as the dashboard's forms carry it.
fn encoded(name: &str) -> String {
    form_urlencoded::byte_serialize(name.as_bytes()).collect()
}

#[tokio::test]
async fn queues_are_paused_and_resumed_behind_the_same_guards() {
    let env = env().await;
    env.enqueue_with(
        "reports.nightly",
        json!({}),
        EnqueueOptions::new().queue("reports"),
    )
    .await;

    // Read-only: the state is shown, no action is offered or taken.
    let ro = dashboard(&env, None).await;
    let page = ro.get("/queues").await;
    assert!(page.body.contains("state active"), "{}", page.body);
    assert!(!page.body.contains("/actions/pause-queue"));
    let r = ro
        .post("/actions/pause-queue", &[("queue", "reports")], None)
        .await;
    assert_eq!(r.status, 403);
    assert!(env.paused_queues().await.is_empty());

    let mut c = dashboard(&env, Some(TOKEN)).await;
    assert!(!c.get("/queues").await.body.contains("/actions/pause-queue"));
    assert_eq!(
        c.post("/actions/pause-queue", &[("queue", "reports")], None)
            .await
            .status,
        403,
        "logged out"
    );
    c.login("", TOKEN).await;
    let csrf = c.csrf("/queues").await;
    for (fields, origin) in [
        (vec![("queue", "reports")], None),
        (vec![("queue", "reports"), ("csrf", "0000")], None),
        (
            vec![("queue", "reports"), ("csrf", csrf.as_str())],
            Some("http://evil.example"),
        ),
    ] {
        for action in ["/actions/pause-queue", "/actions/resume-queue"] {
            let r = c.post(action, &fields, origin).await;
            assert_eq!(r.status, 403, "{action} {fields:?} from {origin:?}");
        }
    }
    assert!(env.paused_queues().await.is_empty(), "nothing changed");

    let form = [
        ("csrf", csrf.as_str()),
        ("queue", "reports"),
        ("back", "/queues?"),
    ];
    let r = c.post("/actions/pause-queue", &form, None).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/queues?paused=1"));
    assert_eq!(env.paused_queues().await, ["reports"]);
    let page = c.get("/queues?paused=1").await;
    assert!(page.body.contains("state paused"), "{}", page.body);
    assert!(page
        .body
        .contains("class=\"resume-queue\" data-queue=\"reports\""));
    assert!(page.body.contains("id=\"notice\">paused<"), "{}", page.body);
    // Pausing twice changes nothing and says so.
    let r = c.post("/actions/pause-queue", &form, None).await;
    assert_eq!(r.location.as_deref(), Some("/queues?paused=0"));
    assert!(c
        .get("/queues?paused=0")
        .await
        .body
        .contains("already paused"));
    assert_eq!(env.paused_queues().await, ["reports"]);

    let r = c.post("/actions/resume-queue", &form, None).await;
    assert_eq!(r.location.as_deref(), Some("/queues?resumed=1"));
    assert!(env.paused_queues().await.is_empty());
    assert!(c
        .get("/queues")
        .await
        .body
        .contains("class=\"pause-queue\" data-queue=\"reports\""));
}

#[tokio::test]
async fn any_queue_name_is_paused_byte_for_byte_and_bad_ones_are_refused() {
    let env = env().await;
    let mut c = dashboard(&env, Some(TOKEN)).await;
    c.login("", TOKEN).await;
    let csrf = c.csrf("/").await;
    // Markup, quotes, CR LF, edge blanks, an escape character, a '+' and
    // a '%', which form decoding would otherwise change.
    let hostile = " q<script>alert(1)</script>\"'&\r\n\u{1b}[2J+%20 ";
    let r = c
        .post(
            "/actions/pause-queue",
            &[("csrf", &csrf), ("queue", &encoded(hostile))],
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(env.paused_queues().await, [hostile]);

    // A paused queue without jobs is listed, escaped, with its resume
    // form carrying the name as it was.
    let page = c.get("/queues").await;
    assert_eq!(page.status, 200);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains('\u{1b}'));
    assert!(page.body.contains("q&#60;script&#62;alert(1)"));
    let marker = "class=\"resume-queue\" data-queue=\"";
    let start = page.body.find(marker).expect("a resume button") + marker.len();
    let from_page = &page.body[start..start + page.body[start..].find('"').unwrap()];
    let r = c
        .post(
            "/actions/resume-queue",
            &[("csrf", &csrf), ("queue", from_page)],
            None,
        )
        .await;
    assert_eq!(r.location.as_deref(), Some("/jobs?resumed=1"));
    assert!(env.paused_queues().await.is_empty());

    // Refused before the database: no name, NUL, too long, not encoded.
    let long = "q".repeat(201);
    for queue in ["", "%00", "a%00b", long.as_str(), "a&b", "a=b"] {
        let r = c
            .post(
                "/actions/pause-queue",
                &[("csrf", &csrf), ("queue", queue)],
                None,
            )
            .await;
        assert_eq!(r.status, 400, "{queue:?}: {}", r.body);
    }
    let r = c
        .post("/actions/pause-queue", &[("csrf", &csrf)], None)
        .await;
    assert_eq!(r.status, 400);
    assert!(env.paused_queues().await.is_empty());
}

#[tokio::test]
async fn schedules_are_listed_paused_and_resumed() {
    let env = env().await;
    env.declare_schedule("reports.nightly", "reports.build", "0 0 3 * * *")
        .await;
    let hostile = "s<script>alert(1)</script>\u{1b}\r\n'\" ";
    env.declare_schedule(hostile, "t<script>", "*/5 * * * *")
        .await;

    let ro = dashboard(&env, None).await;
    let page = ro.get("/schedules").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/schedules\" class=\"here\""));
    assert!(page.body.contains("reports.nightly"));
    assert!(page.body.contains("<code>0 0 3 * * *</code>"));
    assert!(page
        .body
        .contains("href=\"/jobs?task=reports.build\">reports.build</a>"));
    assert!(
        page.body.contains("03:00:00"),
        "the next tick: {}",
        page.body
    );
    assert!(!page.body.contains("/actions/pause-schedule"));
    assert!(!page.body.contains("<script>alert") && !page.body.contains('\u{1b}'));
    assert!(page
        .body
        .contains("s&#60;script&#62;alert(1)&#60;/script&#62;\\u{1b}"));
    assert_eq!(
        ro.post(
            "/actions/pause-schedule",
            &[("schedule", "reports.nightly")],
            None
        )
        .await
        .status,
        403
    );

    let mut c = dashboard(&env, Some(TOKEN)).await;
    assert_eq!(
        c.post(
            "/actions/pause-schedule",
            &[("schedule", "reports.nightly")],
            None
        )
        .await
        .status,
        403,
        "logged out"
    );
    c.login("", TOKEN).await;
    let csrf = c.csrf("/schedules").await;
    for (fields, origin) in [
        (vec![("schedule", "reports.nightly")], None),
        (
            vec![("schedule", "reports.nightly"), ("csrf", csrf.as_str())],
            Some("http://evil.example"),
        ),
    ] {
        let r = c.post("/actions/pause-schedule", &fields, origin).await;
        assert_eq!(r.status, 403, "{fields:?} from {origin:?}");
    }
    assert!(!env.schedule("reports.nightly").await.paused);

    let form = [
        ("csrf", csrf.as_str()),
        ("schedule", "reports.nightly"),
        ("back", "/schedules?"),
    ];
    let r = c.post("/actions/pause-schedule", &form, None).await;
    assert_eq!(r.location.as_deref(), Some("/schedules?paused=1"));
    assert!(env.schedule("reports.nightly").await.paused);
    assert!(!env.schedule(hostile).await.paused, "only the one named");
    let page = c.get("/schedules?paused=1").await;
    assert!(page
        .body
        .contains("class=\"resume-schedule\" data-schedule=\"reports.nightly\""));
    assert!(page.body.contains("state paused"));
    let r = c.post("/actions/resume-schedule", &form, None).await;
    assert_eq!(r.location.as_deref(), Some("/schedules?resumed=1"));
    assert!(!env.schedule("reports.nightly").await.paused);

    // The hostile name round-trips through the page's own form.
    let page = c.get("/schedules").await;
    let marker = format!("data-schedule=\"{}\"", encoded(hostile));
    assert!(page.body.contains(&marker), "{}", page.body);
    let r = c
        .post(
            "/actions/pause-schedule",
            &[("csrf", &csrf), ("schedule", &encoded(hostile))],
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(env.schedule(hostile).await.paused);

    // An unknown name, or one PostgreSQL could not hold, is not found.
    for name in ["no-such-schedule", "a%00b"] {
        let r = c
            .post(
                "/actions/pause-schedule",
                &[("csrf", &csrf), ("schedule", name)],
                None,
            )
            .await;
        assert_eq!(r.status, 404, "{name}: {}", r.body);
    }
}

#[tokio::test]
async fn the_job_page_shows_keys_headers_and_output_escaped() {
    let env = env().await;
    let script = "<script>alert(1)</script>";
    let id = env
        .enqueue_with(
            "with.extras",
            json!({}),
            EnqueueOptions::new()
                .key(format!("tenant{script}"))
                .unique_key(format!("once{script}"))
                .header("request-id", "7f3a")
                .header(format!("h{script}"), format!("v{script}\u{1b}[2J\r\n"))
                .header("long", "y".repeat(60_000)),
        )
        .await;
    let c = dashboard(&env, None).await;
    let page = c.get(&format!("/jobs/{id}")).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(!page.body.contains('\u{1b}'));
    let escaped = "&#60;script&#62;alert(1)&#60;/script&#62;";
    assert!(page
        .body
        .contains(&format!("id=\"partition-key\">tenant{escaped}<")));
    assert!(page
        .body
        .contains(&format!("id=\"unique-key\">once{escaped}<")));
    assert!(page.body.contains("<td>request-id</td>"));
    assert!(page.body.contains("7f3a"));
    assert!(page.body.contains(&format!("<td>h{escaped}</td>")));
    assert!(page
        .body
        .contains(&format!("v{escaped}\\u{{1b}}[2J\\u{{d}}\n")));
    assert!(
        page.body.contains(&format!("{}…", "y".repeat(2_000))),
        "long values are cut"
    );
    assert!(page.body.contains("No output yet."));

    env.complete_with(id, &json!({"html": script, "n": 7}))
        .await;
    let page = c.get(&format!("/jobs/{id}")).await;
    assert!(!page.body.contains("<script>alert"), "{}", page.body);
    assert!(page.body.contains("id=\"output\">"));
    assert!(
        page.body
            .contains(&format!("&#34;html&#34;: &#34;{escaped}&#34;")),
        "{}",
        page.body
    );
    assert!(page.body.contains("&#34;n&#34;: 7"));

    let plain = env.enqueue("plain", json!({})).await;
    let page = c.get(&format!("/jobs/{plain}")).await;
    assert!(page.body.contains("No header."));
}

#[tokio::test]
async fn limits_show_blocks_and_buckets_and_a_block_is_lifted_behind_the_guards() {
    let env = env().await;
    let hostile = "k<script>alert(1)</script>\u{1b}'\" ";
    // As workers leave them: a key blocked for an hour (with two jobs it
    // moved out of the claim path, due at its end), a whole task blocked,
    // a key's rate bucket that is not full.
    env.execute(&format!(
        "INSERT INTO jobq.blocks (task, key, until) VALUES \
             ('mail.send', {k}, date_trunc('second', now()) + interval '1 hour'), \
             ('reports', '', now() + interval '30 minutes'); \
         INSERT INTO jobq.jobs (task, payload, key, state, run_at) \
         SELECT 'mail.send', '{{}}', {k}, 'scheduled', \
             date_trunc('second', now()) + interval '1 hour' FROM generate_series(1, 2); \
         INSERT INTO jobq.rate_tokens (task, key, tat) \
         VALUES ('mail.send', 'acme', now() + interval '20 seconds');",
        k = format!("'{}'", hostile.replace('\'', "''"))
    ))
    .await;

    let ro = dashboard(&env, None).await;
    let page = ro.get("/limits").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("href=\"/limits\" class=\"here\""));
    assert!(page.body.contains("not stored in the database"));
    assert!(page
        .body
        .contains("href=\"/jobs?task=mail.send\">mail.send</a>"));
    assert!(page.body.contains("<em>whole task</em>"), "{}", page.body);
    assert!(page.body.contains("id=\"buckets\"") && page.body.contains(">acme<"));
    assert!(page.body.contains("59m"), "time left: {}", page.body);
    assert!(!page.body.contains("<script>alert") && !page.body.contains('\u{1b}'));
    assert!(!page.body.contains("/actions/unblock"));
    let form = [("task", "reports")];
    assert_eq!(ro.post("/actions/unblock", &form, None).await.status, 403);

    let mut c = dashboard(&env, Some(TOKEN)).await;
    assert_eq!(
        c.post("/actions/unblock", &form, None).await.status,
        403,
        "logged out"
    );
    c.login("", TOKEN).await;
    let csrf = c.csrf("/limits").await;
    let r = c
        .post(
            "/actions/unblock",
            &[("task", "reports"), ("csrf", csrf.as_str())],
            Some("http://evil.example"),
        )
        .await;
    assert_eq!(r.status, 403, "another origin");
    let mut conn = env.pool.get().await.expect("connection");
    assert_eq!(jobq::blocks(&mut conn).await.expect("blocks").len(), 2);

    // The hostile key round-trips through the page's own form.
    let page = c.get("/limits").await;
    let marker = format!(
        "class=\"unblock\" data-task=\"mail.send\" data-key=\"{}\"",
        encoded(hostile)
    );
    assert!(page.body.contains(&marker), "{}", page.body);
    let r = c
        .post(
            "/actions/unblock",
            &[
                ("csrf", csrf.as_str()),
                ("task", "mail.send"),
                ("key", &encoded(hostile)),
                ("back", "/limits?"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location.as_deref(), Some("/limits?lifted=1&back=2"));
    let left = jobq::blocks(&mut conn).await.expect("blocks");
    assert_eq!(left.len(), 1);
    assert_eq!(
        (left[0].task.as_str(), left[0].key.as_deref()),
        ("reports", None)
    );
    let page = c.get("/limits?lifted=1&back=2").await;
    assert!(
        page.body.contains("block lifted, 2 jobs pending again"),
        "{}",
        page.body
    );
    let pending = jobq::jobs(&mut conn, &jobq::JobFilter::new().state(JobState::Pending))
        .await
        .expect("jobs");
    assert_eq!(pending.len(), 2);

    // The whole task's block (no key), then nothing left to lift.
    let whole = [
        ("csrf", csrf.as_str()),
        ("task", "reports"),
        ("back", "/limits?"),
    ];
    let r = c.post("/actions/unblock", &whole, None).await;
    assert_eq!(r.location.as_deref(), Some("/limits?lifted=1&back=0"));
    let r = c.post("/actions/unblock", &whole, None).await;
    assert_eq!(r.location.as_deref(), Some("/limits?lifted=0"));
    assert!(c
        .get("/limits?lifted=0")
        .await
        .body
        .contains("was not blocked"));
    assert!(c.get("/limits").await.body.contains("id=\"no-blocks\""));
}
