//! Helpers shared by the integration tests.

#![allow(dead_code)]

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

pub async fn connect(url: &str) -> AsyncPgConnection {
    AsyncPgConnection::establish(url)
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

pub async fn execute(url: &str, sql: &str) {
    connect(url)
        .await
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

pub async fn count(url: &str, sql: &str) -> i64 {
    let mut conn = connect(url).await;
    diesel::sql_query(sql)
        .get_result::<Count>(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

pub async fn current_database(url: &str) -> String {
    let mut conn = connect(url).await;
    diesel::sql_query("SELECT current_database()::text AS name")
        .get_result::<Name>(&mut conn)
        .await
        .expect("current_database()")
        .name
}

pub async fn database_exists(server_url: &str, name: &str) -> bool {
    count(
        server_url,
        &format!("SELECT count(*) AS n FROM pg_database WHERE datname = '{name}'"),
    )
    .await
        == 1
}
