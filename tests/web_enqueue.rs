//! `examples/web_enqueue.rs`, driven over real HTTP: orders placed through
//! the example's axum app, a failing request that leaves neither an order
//! nor a job, and the example run twice more as its two worker
//! deployments (`JOBQ_QUEUES=fast` and `JOBQ_QUEUES=slow`), each running
//! only its own queue's tasks.

mod support;

#[path = "../examples/web_enqueue.rs"]
#[allow(dead_code)]
mod example;

use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{RunQueryDsl, SimpleAsyncConnection};
use support::example::{example_process, Running};
use support::fleet::run_tests;

const EXAMPLE_ENV: &str = "JOBQ_TEST_RUN_EXAMPLE";

fn main() -> std::process::ExitCode {
    if let Some(code) = example_process(EXAMPLE_ENV, example::main) {
        return code;
    }
    run_tests(&[(
        "a_request_enqueues_in_its_transaction_and_each_pool_serves_its_queue",
        || Box::pin(a_request_enqueues_in_its_transaction_and_each_pool_serves_its_queue()),
    )])
}

#[derive(QueryableByName, Debug, PartialEq)]
struct Work {
    #[diesel(sql_type = BigInt)]
    order_id: i64,
    #[diesel(sql_type = Text)]
    task: String,
    #[diesel(sql_type = Text)]
    queue: String,
    #[diesel(sql_type = Nullable<Text>)]
    request_id: Option<String>,
}

async fn work(env: &support::Env) -> Vec<Work> {
    let mut conn = env.conn().await;
    diesel::sql_query(
        "SELECT order_id, task, queue, request_id FROM shop_work ORDER BY order_id, task",
    )
    .load(&mut conn)
    .await
    .expect("shop_work")
}

async fn order(client: &reqwest::Client, base: &str, body: &str, request: &str) -> u16 {
    client
        .post(format!("{base}/orders"))
        .header("content-type", "application/json")
        .header("x-request-id", request)
        .body(body.to_owned())
        .send()
        .await
        .expect("POST /orders")
        .status()
        .as_u16()
}

async fn a_request_enqueues_in_its_transaction_and_each_pool_serves_its_queue() {
    let env = support::env().await;
    env.conn()
        .await
        .batch_execute(example::SCHEMA)
        .await
        .expect("the example's tables");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("listener");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let app = example::app(env.pool.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let client = reqwest::Client::new();

    for (customer, request) in [("ada", "req-1"), ("ada", "req-2"), ("bob", "req-3")] {
        let body = format!(r#"{{"customer": "{customer}", "sku": "mug", "quantity": 1}}"#);
        assert_eq!(order(&client, &base, &body, request).await, 201);
    }
    let jobs_before = env.count("SELECT count(*) AS n FROM jobq.jobs").await;
    assert_eq!(jobs_before, 12, "four jobs per order");
    // One poster in stock, two asked for: the stock update fails last, and
    // the order and its four jobs go with it.
    let failing = r#"{"customer": "cy", "sku": "poster", "quantity": 2}"#;
    assert_eq!(order(&client, &base, failing, "req-4").await, 409);
    assert_eq!(
        env.count("SELECT count(*) AS n FROM shop_orders WHERE customer = 'cy'")
            .await,
        0
    );
    assert_eq!(
        env.count("SELECT count(*) AS n FROM jobq.jobs").await,
        jobs_before
    );

    // The fast deployment alone: receipts and points, nothing slow.
    let url = env.db.url().to_owned();
    let fast = Running::start(
        EXAMPLE_ENV,
        &[("JOBQ_QUEUES", "fast"), ("DATABASE_URL", &url)],
    );
    support::wait_until("the fast pool's six jobs", || async {
        work(&env).await.len() == 6
    })
    .await;
    let done = work(&env).await;
    assert!(
        done.iter()
            .all(|w| w.queue == "fast" && (w.task == "send_receipt" || w.task == "award_points")),
        "{done:#?}"
    );
    assert_eq!(
        env.count(
            "SELECT count(*) AS n FROM jobq.jobs \
             WHERE task IN ('render_invoice', 'ask_for_review') AND state IN ('pending', 'scheduled')"
        )
        .await,
        6,
        "the slow queue's jobs wait for their own pool"
    );

    // Then the slow deployment runs the rest.
    let slow = Running::start(
        EXAMPLE_ENV,
        &[("JOBQ_QUEUES", "slow"), ("DATABASE_URL", &url)],
    );
    support::wait_until("all twelve jobs", || async { work(&env).await.len() == 12 }).await;
    drop((fast, slow));
    let done = work(&env).await;
    for w in &done {
        let expected = match w.task.as_str() {
            "send_receipt" | "award_points" => "fast",
            "render_invoice" | "ask_for_review" => "slow",
            other => panic!("unknown task {other}"),
        };
        assert_eq!(w.queue, expected, "{done:#?}");
    }
    // Each job carries the id of the request that enqueued it.
    let requests: Vec<(i64, Option<&str>)> = done
        .iter()
        .map(|w| (w.order_id, w.request_id.as_deref()))
        .collect();
    for (order_id, request) in requests {
        assert_eq!(
            request,
            Some(format!("req-{order_id}").as_str()),
            "{done:#?}"
        );
    }
}
