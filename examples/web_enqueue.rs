//! Enqueue inside a web request, and split worker pools.
//!
//! ```text
//! cargo run --example web_enqueue
//! ```
//!
//! `POST /orders` writes an order, takes the stock and enqueues the order's
//! follow-up work, all in one diesel-async transaction: a request that
//! fails (not enough stock) leaves neither an order nor a job.
//!
//! The work is split over two queues. Receipts and loyalty points are
//! `fast`; invoices and review requests are `slow` and may take seconds. In
//! production the same binary runs as two worker deployments, one with
//! `JOBQ_QUEUES=fast` and one with `JOBQ_QUEUES=slow` (with `JOBQ_QUEUES`
//! set and `DATABASE_URL` naming the application's database, this example
//! is such a worker and nothing else), so a burst of slow work never delays
//! a receipt. Run without `JOBQ_QUEUES`, it starts a throwaway database (or
//! a fresh one on `DATABASE_URL`'s server), the web app on 127.0.0.1:3000
//! (`PORT` changes it) and both pools in this one process, and serves until
//! Ctrl-C.
//!
//! The tasks show the flow-control options: concurrency limits (per worker
//! and fleet-wide), a rate limit, serialized dispatch per customer (a
//! partition key with `key_concurrency = 1`), a delay, priorities, a dedupe
//! key and headers.

use std::time::Duration;

use axum::extract::{Json, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use diesel::sql_types::{BigInt, Integer, Text};
use diesel::QueryableByName;
use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq::{EnqueueOptions, TaskError};
use serde::{Deserialize, Serialize};

/// The application's own tables. `shop_work` is where the tasks leave
/// their mark, so the demo (and its test) can see which pool did what.
pub const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS shop_stock (
        sku text PRIMARY KEY,
        available integer NOT NULL CHECK (available >= 0));
    CREATE TABLE IF NOT EXISTS shop_orders (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        customer text NOT NULL,
        sku text NOT NULL REFERENCES shop_stock,
        quantity integer NOT NULL CHECK (quantity > 0));
    CREATE TABLE IF NOT EXISTS shop_work (
        order_id bigint NOT NULL,
        task text NOT NULL,
        queue text NOT NULL,
        request_id text,
        done_at timestamptz NOT NULL DEFAULT clock_timestamp());
    INSERT INTO shop_stock VALUES ('mug', 100), ('poster', 1) ON CONFLICT DO NOTHING;
";

/// The payload of every follow-up task: which order.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OrderRef {
    pub order_id: i64,
    pub customer: String,
}

/// Records that `task` ran for the order, with the request id the web
/// handler passed along as a header.
async fn mark(pool: &jobq::Pool, ctx: &jobq::Context, order: &OrderRef) -> Result<(), TaskError> {
    let mut conn = pool.get().await?;
    diesel::sql_query(
        "INSERT INTO shop_work (order_id, task, queue, request_id) VALUES ($1, $2, $3, $4)",
    )
    .bind::<BigInt, _>(order.order_id)
    .bind::<Text, _>(ctx.task())
    .bind::<Text, _>(ctx.queue())
    .bind::<diesel::sql_types::Nullable<Text>, _>(ctx.header("request-id"))
    .execute(&mut conn)
    .await?;
    println!(
        "order {}: {} done by the {} pool",
        order.order_id,
        ctx.task(),
        ctx.queue()
    );
    Ok(())
}

/// Receipts go out first: the highest priority of the `fast` queue.
#[jobq::task(queue = "fast", priority = 10, concurrency = 8)]
async fn send_receipt(
    ctx: jobq::Context,
    jobq::State(pool): jobq::State<jobq::Pool>,
    order: OrderRef,
) -> Result<(), TaskError> {
    mark(&pool, &ctx, &order).await
}

/// A customer's points are updated one job at a time, in order, whichever
/// worker runs them: the customer is the job's partition key.
#[jobq::task(queue = "fast", key_concurrency = 1)]
async fn award_points(
    ctx: jobq::Context,
    jobq::State(pool): jobq::State<jobq::Pool>,
    order: OrderRef,
) -> Result<(), TaskError> {
    mark(&pool, &ctx, &order).await
}

/// Rendering is heavy: two per worker, four across the fleet.
#[jobq::task(
    queue = "slow",
    concurrency = 2,
    global_concurrency = 4,
    timeout = "2m"
)]
async fn render_invoice(
    ctx: jobq::Context,
    jobq::State(pool): jobq::State<jobq::Pool>,
    order: OrderRef,
) -> Result<(), TaskError> {
    tokio::time::sleep(Duration::from_millis(200)).await; // stands in for the PDF
    mark(&pool, &ctx, &order).await
}

/// Asked for a while after the order (the enqueue sets the delay), at
/// most five a second across the fleet: the review service's quota.
#[jobq::task(queue = "slow", priority = -5, rate = "5/s", burst = 5)]
async fn ask_for_review(
    ctx: jobq::Context,
    jobq::State(pool): jobq::State<jobq::Pool>,
    order: OrderRef,
) -> Result<(), TaskError> {
    mark(&pool, &ctx, &order).await
}

#[derive(Debug, Deserialize)]
pub struct NewOrder {
    pub customer: String,
    pub sku: String,
    pub quantity: i32,
}

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

#[derive(Debug, thiserror::Error)]
enum OrderError {
    #[error("not enough stock")]
    OutOfStock,
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
    #[error(transparent)]
    Jobq(#[from] jobq::Error),
}

/// `POST /orders`: one transaction for the order, the stock and the jobs.
async fn place_order(
    State(pool): State<jobq::Pool>,
    headers: HeaderMap,
    Json(new): Json<NewOrder>,
) -> (StatusCode, String) {
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("none")
        .to_owned();
    let Ok(mut conn) = pool.get().await else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "database unavailable".into(),
        );
    };
    let placed = conn
        .transaction::<i64, OrderError, _>(async |conn| {
            let order = diesel::sql_query(
                "INSERT INTO shop_orders (customer, sku, quantity) VALUES ($1, $2, $3) \
                     RETURNING id",
            )
            .bind::<Text, _>(&new.customer)
            .bind::<Text, _>(&new.sku)
            .bind::<Integer, _>(new.quantity)
            .get_result::<Id>(conn)
            .await?;
            let job = OrderRef {
                order_id: order.id,
                customer: new.customer.clone(),
            };
            let traced = || EnqueueOptions::new().header("request-id", &request_id);
            send_receipt::enqueue_with(conn, &job, traced()).await?;
            award_points::enqueue_with(conn, &job, traced().key(&new.customer)).await?;
            render_invoice::enqueue_with(
                conn,
                &job,
                traced().dedupe_key(format!("invoice-{}", order.id)),
            )
            .await?;
            ask_for_review::enqueue_with(conn, &job, traced().delay(Duration::from_secs(2)))
                .await?;
            // Last, and it may fail: then the order and the four jobs
            // above are rolled back with it.
            let taken = diesel::sql_query(
                "UPDATE shop_stock SET available = available - $2 \
                     WHERE sku = $1 AND available >= $2",
            )
            .bind::<Text, _>(&new.sku)
            .bind::<Integer, _>(new.quantity)
            .execute(conn)
            .await?;
            if taken == 0 {
                return Err(OrderError::OutOfStock);
            }
            Ok(order.id)
        })
        .await;
    match placed {
        Ok(id) => (StatusCode::CREATED, format!("order {id}")),
        Err(OrderError::OutOfStock) => (StatusCode::CONFLICT, "not enough stock".into()),
        Err(e) => {
            tracing::error!(error = %e, "placing an order failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not place the order".into(),
            )
        }
    }
}

/// The web app: what an application mounts.
pub fn app(pool: jobq::Pool) -> Router {
    Router::new()
        .route("/orders", post(place_order))
        .with_state(pool)
}

/// A pool on the application's database (handlers and requests share it).
pub fn pool(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(8)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

/// A worker deployment serving `queues` (`JOBQ_QUEUES` when `None`).
pub fn worker(url: &str, pool: &jobq::Pool, queues: Option<&str>) -> jobq::WorkerBuilder {
    let builder = jobq::Worker::builder()
        .database_url(url)
        .state(pool.clone());
    match queues {
        Some(queue) => builder.queues([queue]),
        None => builder,
    }
}

// `pub`: tests/web_enqueue.rs runs this very program as its child.
#[tokio::main]
pub async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("jobq=warn")),
        )
        .with_writer(std::io::stderr)
        .init();

    if std::env::var_os("JOBQ_QUEUES").is_some() {
        // A worker deployment on the application's database.
        let url = std::env::var("DATABASE_URL").map_err(|_| "JOBQ_QUEUES needs DATABASE_URL")?;
        let pool = pool(&url);
        worker(&url, &pool, None).build().await?.run().await?;
        return Ok(());
    }

    let db = jobq_testkit::TestDatabase::create().await?;
    let mut conn = AsyncPgConnection::establish(db.url()).await?;
    jobq::migrate(&mut conn).await?;
    conn.batch_execute(SCHEMA).await?;
    let pool = pool(db.url());
    let fast = worker(db.url(), &pool, Some("fast")).build().await?.spawn();
    let slow = worker(db.url(), &pool, Some("slow")).build().await?.spawn();

    let port = std::env::var("PORT").unwrap_or_else(|_| "3000".into());
    let listener = tokio::net::TcpListener::bind(format!("127.0.0.1:{port}")).await?;
    let address = listener.local_addr()?;
    println!("listening on http://{address}");
    println!(
        "  curl -i -H 'content-type: application/json' -d '{{\"customer\": \"ada\", \
         \"sku\": \"mug\", \"quantity\": 1}}' http://{address}/orders"
    );
    println!("stop with Ctrl-C");
    axum::serve(listener, app(pool.clone()))
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    fast.shutdown().await?;
    slow.shutdown().await?;
    Ok(())
}
