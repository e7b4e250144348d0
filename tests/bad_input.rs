//! Bad input: each case gets a clear error that says what was wrong and
//! where, and nothing else is lost or disturbed.

mod support;

use std::collections::BTreeMap;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, JobState};
use jobq_testkit::PrivateServer;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Measurement {
    label: String,
    values: Vec<f64>,
    extra: BTreeMap<String, String>,
}

fn good(label: &str) -> Measurement {
    Measurement {
        label: label.into(),
        values: vec![1.5],
        extra: BTreeMap::new(),
    }
}

#[jobq::task(name = "bad_input.measure")]
async fn measure(job: Measurement) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

/// Runs `bad` between two good enqueues in one transaction, which must
/// still commit both good jobs; returns the error of `bad`.
async fn refused_in_transaction(env: &support::Env, bad: Measurement) -> jobq::Error {
    let mut conn = env.conn().await;
    let err = conn
        .transaction::<_, jobq::Error, _>(async |c| {
            measure::enqueue(c, &good("before")).await?;
            let err = measure::enqueue(c, &bad)
                .await
                .expect_err("the bad payload was accepted");
            measure::enqueue(c, &good("after")).await?;
            Ok(err)
        })
        .await
        .expect("the transaction goes on after a refused payload");
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs").await,
        2,
        "the good jobs around the refused one must be committed"
    );
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_is_refused_at_enqueue_naming_the_task_and_field() {
    let env = support::env().await;
    let mut bad = good("x");
    bad.extra.insert("note".into(), "a\u{0}b".into());
    let err = refused_in_transaction(&env, bad).await;
    let msg = err.to_string();
    assert!(matches!(err, jobq::Error::InvalidPayload { .. }), "{err:?}");
    assert!(msg.contains("bad_input.measure"), "{msg}");
    assert!(
        msg.contains("$.extra[\"note\"]") && msg.contains("U+0000"),
        "{msg}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nan_and_infinity_are_refused_instead_of_silently_stored_as_null() {
    let env = support::env().await;
    let mut bad = good("x");
    bad.values = vec![1.0, 2.0, f64::NAN];
    let err = refused_in_transaction(&env, bad).await;
    let msg = err.to_string();
    assert!(msg.contains("bad_input.measure"), "{msg}");
    assert!(msg.contains("$.values[2]") && msg.contains("NaN"), "{msg}");
    assert!(msg.contains("null"), "the message says why: {msg}");

    // In a batch, the error names which payload.
    let mut conn = env.conn().await;
    let mut inf = good("y");
    inf.values = vec![f64::NEG_INFINITY];
    let err = measure::enqueue_many(&mut conn, &[good("a"), inf])
        .await
        .expect_err("infinity accepted");
    let msg = err.to_string();
    assert!(msg.contains("payload #1") && msg.contains("inf"), "{msg}");
    assert_eq!(env.count("SELECT count(*) AS n FROM jobq.jobs").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payloads_over_the_size_limit_are_refused_and_the_limit_is_configurable() {
    let env = support::env().await;
    let mut big = good("big");
    big.label = "x".repeat(EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE + 1);
    let err = refused_in_transaction(&env, big.clone()).await;
    let msg = err.to_string();
    assert!(msg.contains("bad_input.measure"), "{msg}");
    assert!(
        msg.contains(&format!(
            "over the limit of {} bytes",
            EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE
        )),
        "{msg}"
    );

    let mut conn = env.conn().await;
    // A larger limit lets it through; a smaller one refuses small payloads.
    let id = jobq::enqueue_with::<measure>(
        &mut conn,
        &big,
        EnqueueOptions::new().max_payload_size(2 * 1024 * 1024),
    )
    .await
    .expect("allowed by a larger limit");
    assert_eq!(env.job(id).await.state, JobState::Pending);
    let err = jobq::enqueue_with::<measure>(
        &mut conn,
        &good("small"),
        EnqueueOptions::new().max_payload_size(10),
    )
    .await
    .expect_err("over a 10-byte limit");
    assert!(
        err.to_string().contains("over the limit of 10 bytes"),
        "{err}"
    );
    let err = jobq::enqueue_many_with::<measure>(
        &mut conn,
        &[good("a"), good("b")],
        EnqueueOptions::new().max_payload_size(10),
    )
    .await
    .expect_err("over a 10-byte limit");
    assert!(err.to_string().contains("payload #0"), "{err}");
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tiny {
    n: u32,
}

#[jobq::task]
async fn tiny(job: Tiny) -> Result<(), jobq::TaskError> {
    let _ = job;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_many_takes_more_rows_than_postgres_has_bind_parameters() {
    let env = support::env().await;
    let payloads: Vec<Tiny> = (0..70_000).map(|n| Tiny { n }).collect();
    let mut conn = env.conn().await;
    let ids = tiny::enqueue_many(&mut conn, &payloads)
        .await
        .expect("70,000 rows in one call");
    assert_eq!(ids.len(), 70_000);
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs WHERE task = 'tiny'")
            .await,
        70_000
    );
    // In order: the last id carries the last payload.
    let last = env.job(*ids.last().expect("ids")).await;
    assert_eq!(last.payload["n"], 69_999);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_database_urls_are_refused_with_the_reason_and_no_password() {
    let cases = [
        ("mysql://app:s3cret-pw@db/app", "scheme"),
        ("not a url at all", "expected postgres://"),
        ("", "empty"),
        ("postgres://", "no host"),
    ];
    for (url, reason) in cases {
        let err = jobq::Worker::builder()
            .database_url(url)
            .connect_timeout(std::time::Duration::ZERO)
            .build()
            .await
            .expect_err(url);
        let text = format!("{err} {err:?}");
        assert!(
            matches!(err, jobq::Error::InvalidUrl { .. }),
            "{url}: {err:?}"
        );
        assert!(text.contains(reason), "{url}: {text}");
        assert!(!text.contains("s3cret-pw"), "{url}: {text}");
    }
}

fn full_chain(err: &dyn std::error::Error) -> String {
    let mut out = format!("{err} / {err:?}");
    let mut source = err.source();
    while let Some(s) = source {
        out.push_str(&format!(" / {s} / {s:?}"));
        source = s.source();
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_at_once_and_the_error_never_shows_it() {
    support::init_tracing();
    let server = PrivateServer::start().await.expect("server");
    let role = format!("pw_{:08x}", fastrand::u32(..));
    {
        let mut conn = AsyncPgConnection::establish(server.url())
            .await
            .expect("connect");
        conn.batch_execute(&format!(
            "SET password_encryption = 'scram-sha-256'; \
             CREATE ROLE {role} LOGIN PASSWORD 'the-right-one'"
        ))
        .await
        .expect("role");
        // Password authentication for this role, ahead of the trust lines.
        let hba = server.data_dir().join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("pg_hba.conf");
        std::fs::write(
            &hba,
            format!("host all {role} 127.0.0.1/32 scram-sha-256\n{old}"),
        )
        .expect("pg_hba.conf");
        diesel::sql_query("SELECT pg_reload_conf()")
            .execute(&mut conn)
            .await
            .expect("reload");
    }
    let secret = "Wr0ng-Pa55word-xyzzy";
    let url = format!(
        "postgres://{role}:{secret}@127.0.0.1:{}/postgres",
        server.port()
    );
    let started = std::time::Instant::now();
    let err = jobq::Worker::builder()
        .database_url(&url)
        .connect_timeout(std::time::Duration::from_secs(30))
        .build()
        .await
        .expect_err("wrong password accepted");
    // Authentication errors are not retried for the connect timeout.
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    let text = full_chain(&err);
    assert!(text.contains("password authentication failed"), "{text}");
    assert!(text.contains(&role), "names the role: {text}");
    assert!(!text.contains(secret), "the password leaked: {text}");

    // The right password works (so the failure above was the password).
    let url = format!(
        "postgres://{role}:the-right-one@127.0.0.1:{}/postgres",
        server.port()
    );
    let mut conn = AsyncPgConnection::establish(&url)
        .await
        .expect("right password");
    conn.batch_execute("SELECT 1").await.expect("query");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_from_a_newer_jobq_makes_build_fail_naming_both_versions() {
    let env = support::env().await;
    let newer = jobq_diesel::LATEST_VERSION + 1;
    let applied = env
        .count("SELECT count(*) AS n FROM jobq.schema_migrations")
        .await;
    {
        let mut conn = env.conn().await;
        diesel::sql_query(
            "INSERT INTO jobq.schema_migrations (version, name) VALUES ($1, 'from_the_future')",
        )
        .bind::<diesel::sql_types::BigInt, _>(newer)
        .execute(&mut conn)
        .await
        .expect("insert version");
    }
    let err = env
        .worker()
        .build()
        .await
        .expect_err("newer schema accepted");
    let text = full_chain(&err);
    assert!(text.contains(&newer.to_string()), "{text}");
    assert!(
        text.contains(&jobq_diesel::LATEST_VERSION.to_string()),
        "{text}"
    );
    // Nothing was changed: the history holds what it held, and the newer row.
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.schema_migrations")
            .await,
        applied + 1
    );
}
