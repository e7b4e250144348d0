//! `PrivateServer`: start, stop, start again, restart.

mod support;

use diesel_async::{AsyncConnection, AsyncPgConnection};
use jobq_testkit::{PrivateServer, TestDatabase};

async fn can_connect(url: &str) -> bool {
    AsyncPgConnection::establish(url).await.is_ok()
}

#[tokio::test]
async fn stop_start_again_and_restart() {
    let server = PrivateServer::start().await.expect("private server");
    assert!(server
        .url()
        .contains(&format!(":{}/postgres", server.port())));
    assert!(server.data_dir().join("PG_VERSION").is_file());
    assert!(server.bin_dir().join("pg_ctl").is_file());

    let db = TestDatabase::create_on(server.url())
        .await
        .expect("database");
    support::execute(
        db.url(),
        "CREATE TABLE kept (id int); INSERT INTO kept VALUES (1), (2)",
    )
    .await;

    server.stop().await.expect("stop");
    assert!(
        !can_connect(db.url()).await,
        "connected to a stopped server"
    );
    server.stop().await.expect("stopping twice is fine");

    server.start_again().await.expect("start again");
    assert_eq!(
        support::count(db.url(), "SELECT count(*) AS n FROM kept").await,
        2
    );

    let mut held = support::connect(db.url()).await;
    server.restart().await.expect("restart");
    assert!(
        diesel_async::SimpleAsyncConnection::batch_execute(&mut held, "SELECT 1")
            .await
            .is_err(),
        "a connection survived the restart"
    );
    assert_eq!(
        support::count(db.url(), "SELECT count(*) AS n FROM kept").await,
        2
    );
    assert_eq!(
        support::count(
            server.url(),
            "SELECT setting::bigint AS n FROM pg_settings WHERE name = 'max_connections'"
        )
        .await,
        300
    );
}

#[tokio::test]
async fn drop_removes_the_server() {
    let server = PrivateServer::start().await.expect("private server");
    let url = server.url().to_owned();
    let dir = server.data_dir().parent().expect("parent").to_path_buf();
    assert!(dir.is_dir());
    drop(server);
    assert!(!dir.exists(), "{} still exists", dir.display());
    assert!(!can_connect(&url).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_start_in_parallel() {
    let (a, b) = tokio::join!(PrivateServer::start(), PrivateServer::start());
    let (a, b) = (a.expect("first"), b.expect("second"));
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
    assert!(can_connect(a.url()).await && can_connect(b.url()).await);
}
