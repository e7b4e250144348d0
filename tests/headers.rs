//! Partition keys and headers: stored at enqueue, shown in `JobInfo`,
//! handed to the attempt's `Context`, for strings of every class; the ones
//! PostgreSQL cannot store are refused before anything is sent.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use diesel_async::RunQueryDsl;
use jobq::{EnqueueOptions, JobId, JobState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Probe {
    n: u32,
}

/// What each attempt saw, by payload number (unique across the tests of
/// this binary, which run at once on databases of their own, where job ids
/// repeat).
static SEEN: Mutex<Option<HashMap<u32, Seen>>> = Mutex::new(None);

#[derive(Debug, Clone, PartialEq)]
struct Seen {
    key: Option<String>,
    headers: BTreeMap<String, String>,
    one: Option<String>,
}

#[jobq::task]
async fn see_labels(ctx: jobq::Context, job: Probe) -> Result<(), jobq::TaskError> {
    let seen = Seen {
        key: ctx.key().map(str::to_owned),
        headers: ctx
            .headers()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        one: ctx.header("x-one").map(str::to_owned),
    };
    SEEN.lock()
        .unwrap()
        .get_or_insert_with(HashMap::new)
        .insert(job.n, seen);
    Ok(())
}

fn seen(n: u32) -> Option<Seen> {
    SEEN.lock().unwrap().as_ref()?.get(&n).cloned()
}

/// Strings of every class a header or key may hold (besides U+0000).
fn hostile() -> Vec<(String, String)> {
    vec![
        ("x-one".into(), "1".into()),
        (
            "quote\"back\\slash".into(),
            "'; DROP TABLE jobq.jobs; --".into(),
        ),
        ("emoji 🦀 ключ".into(), "\u{7f}\u{1b}[31m\r\n\t\u{1}".into()),
        ("bidi".into(), "\u{FEFF}\u{202E}txet\u{200B}".into()),
        ("json".into(), r#"{"a": [1, "\u0000"]}"#.into()),
        ("empty".into(), String::new()),
        ("n".repeat(200), "long name".into()),
        ("big".into(), "v".repeat(60 * 1024)),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_and_headers_reach_job_info_and_the_context() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;

    let mut options = EnqueueOptions::new().key("customer-🦀-'\"\\");
    for (name, value) in hostile() {
        options = options.header(name, value);
    }
    let with = see_labels::enqueue_with(&mut conn, &Probe { n: 1 }, options)
        .await
        .unwrap();
    let without = see_labels::enqueue(&mut conn, &Probe { n: 2 })
        .await
        .unwrap();
    let longest_key = "é".repeat(200);
    let batch = see_labels::enqueue_many_with(
        &mut conn,
        &[Probe { n: 3 }, Probe { n: 4 }],
        EnqueueOptions::new()
            .key(longest_key.clone())
            .header("x-one", "a")
            .header("x-one", "b"),
    )
    .await
    .unwrap();

    // The dedupe path is a statement of its own: it stores them too, and
    // a second enqueue under the key returns the same job.
    let deduped = || {
        EnqueueOptions::new()
            .dedupe_key("once")
            .key("k-dedupe")
            .header("x-one", "d")
    };
    let once = see_labels::enqueue_with(&mut conn, &Probe { n: 5 }, deduped())
        .await
        .unwrap();
    let info = env.wait_state(once, JobState::Completed).await;
    assert_eq!(info.key.as_deref(), Some("k-dedupe"));
    assert_eq!(info.headers.get("x-one").map(String::as_str), Some("d"));
    assert_eq!(seen(5).expect("ran").key.as_deref(), Some("k-dedupe"));

    let expected: BTreeMap<String, String> = hostile().into_iter().collect();
    let info = env.wait_state(with, JobState::Completed).await;
    assert_eq!(info.key.as_deref(), Some("customer-🦀-'\"\\"));
    assert_eq!(info.headers, expected);
    let ctx = seen(1).expect("the attempt ran");
    assert_eq!(ctx.key.as_deref(), Some("customer-🦀-'\"\\"));
    assert_eq!(ctx.headers, expected);
    assert_eq!(ctx.one.as_deref(), Some("1"));

    let info = env.wait_state(without, JobState::Completed).await;
    assert_eq!(info.key, None);
    assert!(info.headers.is_empty());
    let ctx = seen(2).expect("the attempt ran");
    assert_eq!(
        ctx,
        Seen {
            key: None,
            headers: BTreeMap::new(),
            one: None
        }
    );
    assert_eq!(
        env.count(&format!(
            "SELECT count(*) AS n FROM jobq.jobs WHERE id = {} AND headers IS NULL AND key IS NULL",
            without.get()
        ))
        .await,
        1,
        "a job without key or headers stores NULLs"
    );

    for (id, n) in batch.into_iter().zip([3, 4]) {
        let info = env.wait_state(id, JobState::Completed).await;
        assert_eq!(info.key.as_deref(), Some(longest_key.as_str()));
        // The later value of a name set twice wins.
        assert_eq!(info.headers.get("x-one").map(String::as_str), Some("b"));
        assert_eq!(seen(n).expect("ran").one.as_deref(), Some("b"));
    }
    drop(conn);
    handle.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unstorable_keys_and_headers_are_refused_before_the_insert() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let secret = "token-s3cr3t\0";
    let refused = [
        ("key", EnqueueOptions::new().key("a\0b")),
        ("key", EnqueueOptions::new().key("")),
        ("key", EnqueueOptions::new().key("k".repeat(201))),
        ("header", EnqueueOptions::new().header("a\0b", "v")),
        (
            "header",
            EnqueueOptions::new().header("authorization", secret),
        ),
        ("header", EnqueueOptions::new().header("", "v")),
        ("header", EnqueueOptions::new().header("n".repeat(201), "v")),
        (
            "header",
            EnqueueOptions::new().header("big", "v".repeat(64 * 1024)),
        ),
    ];
    for (what, options) in refused {
        let one = see_labels::enqueue_with(&mut conn, &Probe { n: 0 }, options.clone()).await;
        let many =
            see_labels::enqueue_many_with(&mut conn, &[Probe { n: 0 }, Probe { n: 1 }], options)
                .await;
        for result in [one.map(|_| ()), many.map(|_| ())] {
            match result {
                Err(jobq::Error::InvalidOptions { what: w, reason }) => {
                    assert_eq!(w, what, "{reason}");
                    assert!(
                        !reason.contains("s3cr3t"),
                        "a header value leaked into the error: {reason}"
                    );
                }
                other => panic!("expected a refusal of the {what}, got {other:?}"),
            }
        }
    }
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs").await,
        0,
        "nothing may be inserted"
    );
}

/// A row written by raw SQL with headers that are not all strings is still
/// readable: the values come back as their JSON text, and the job runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_headers_of_any_json_are_read_leniently() {
    let env = support::env().await;
    let handle = env.worker().build().await.unwrap().spawn();
    let mut conn = env.conn().await;
    #[derive(diesel::QueryableByName)]
    struct Id {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
    }
    let row: Id = diesel::sql_query(
        "INSERT INTO jobq.jobs (task, payload, key, headers) \
         VALUES ('see_labels', '{\"n\": 9}', 'k', '{\"x-one\": 5, \"o\": {\"a\": null}}') \
         RETURNING id",
    )
    .get_result(&mut conn)
    .await
    .unwrap();
    let id = JobId::from(row.id);
    let info = env.wait_state(id, JobState::Completed).await;
    assert_eq!(info.headers["x-one"], "5");
    assert_eq!(info.headers["o"], r#"{"a":null}"#);
    assert_eq!(seen(9).expect("ran").one.as_deref(), Some("5"));
    // A non-object is refused by the table itself.
    let refused = diesel::sql_query(
        "INSERT INTO jobq.jobs (task, payload, headers) VALUES ('see_labels', '{}', '[1]')",
    )
    .execute(&mut conn)
    .await;
    assert!(refused.is_err(), "headers must be a JSON object");
    drop(conn);
    handle.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_job_submitted_under_a_unique_key_keeps_its_partition_key_and_headers() {
    let env = support::env().await;
    let mut conn = env.conn().await;
    let options = jobq::EnqueueOptions::new()
        .unique_key("request-1")
        .key("customer-42")
        .header("request-id", "r1");
    let id = see_labels::enqueue_unique(&mut conn, &Probe { n: 1 }, options)
        .await
        .unwrap()
        .id;
    let info = jobq::job(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(info.key.as_deref(), Some("customer-42"));
    assert_eq!(
        info.headers.get("request-id").map(String::as_str),
        Some("r1")
    );
}
