//! `TestDatabase::create` / `create_on`.

mod support;

use std::time::Instant;

use jobq_testkit::{PrivateServer, TestDatabase};

/// Under `DATABASE_URL` or the shared private server, whichever applies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parallel_databases_are_isolated() {
    let started = Instant::now();
    let (a, b) = tokio::join!(TestDatabase::create(), TestDatabase::create());
    let (a, b) = (a.expect("first database"), b.expect("second database"));
    eprintln!("two databases, cold: {:?}", started.elapsed());

    assert_ne!(a.name(), b.name());
    assert_ne!(a.url(), b.url());
    assert_eq!(support::current_database(a.url()).await, a.name());
    assert_eq!(support::current_database(b.url()).await, b.name());

    support::execute(
        a.url(),
        "CREATE TABLE only_in_a (id int); INSERT INTO only_in_a VALUES (1)",
    )
    .await;
    assert_eq!(
        support::count(a.url(), "SELECT count(*) AS n FROM only_in_a").await,
        1
    );
    let visible_in_b = support::count(
        b.url(),
        "SELECT count(*) AS n FROM pg_tables WHERE tablename = 'only_in_a'",
    )
    .await;
    assert_eq!(visible_in_b, 0);

    let started = Instant::now();
    let c = TestDatabase::create().await.expect("third database");
    eprintln!("one database, warm: {:?}", started.elapsed());
    assert_eq!(support::current_database(c.url()).await, c.name());
}

/// Separate `#[tokio::test]` runtimes share the one private server.
#[tokio::test]
async fn works_from_current_thread_runtimes_one() {
    let db = TestDatabase::create().await.expect("database");
    support::execute(db.url(), "CREATE TABLE t (id int)").await;
}

#[tokio::test]
async fn works_from_current_thread_runtimes_two() {
    let db = TestDatabase::create().await.expect("database");
    support::execute(db.url(), "CREATE TABLE t (id int)").await;
}

/// `create_on` drops its database again on drop, also when it is in use.
#[tokio::test]
async fn create_on_drops_the_database_afterwards() {
    let server = PrivateServer::start().await.expect("private server");
    let db = TestDatabase::create_on(server.url())
        .await
        .expect("database");
    let name = db.name().to_owned();
    assert!(db
        .url()
        .starts_with(&format!("postgres://postgres@127.0.0.1:{}/", server.port())));
    assert_eq!(db.url(), server.url_for(&name));
    assert!(support::database_exists(server.url(), &name).await);

    let _open = support::connect(db.url()).await;
    drop(db);
    assert!(!support::database_exists(server.url(), &name).await);
}

/// The `DATABASE_URL` code path, against the machine's system server if
/// there is one (passed explicitly: tests must not mutate the environment).
#[tokio::test]
async fn create_on_an_external_server() {
    let system = "postgres://postgres@127.0.0.1:5432/postgres";
    let reachable =
        <diesel_async::AsyncPgConnection as diesel_async::AsyncConnection>::establish(system)
            .await
            .is_ok();
    if !reachable {
        eprintln!("no system PostgreSQL on 127.0.0.1:5432, skipping");
        return;
    }
    let db = TestDatabase::create_on(system).await.expect("database");
    let name = db.name().to_owned();
    assert_eq!(support::current_database(db.url()).await, name);
    drop(db);
    assert!(!support::database_exists(system, &name).await);
}

#[tokio::test]
async fn errors_name_the_server_but_not_the_password() {
    let server = PrivateServer::start().await.expect("private server");
    let url = format!(
        "postgres://postgres:s3cret@127.0.0.1:{}/postgres",
        server.port()
    );
    server.stop().await.expect("stop");
    let error = TestDatabase::create_on(&url)
        .await
        .expect_err("server is down");
    let message = error.to_string();
    assert!(!message.contains("s3cret"), "{message}");
    assert!(message.contains(&server.port().to_string()), "{message}");
}
