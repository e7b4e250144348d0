//! Set-up shared by jobq-diesel's integration tests: a migrated database
//! of the test's own, and one-value queries.
#![allow(dead_code)]

use diesel::sql_types::{BigInt, Bool};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use jobq_testkit::TestDatabase;

/// A database of the test's own with jobq's schema, and a connection to it.
pub async fn setup() -> (TestDatabase, AsyncPgConnection) {
    let db = TestDatabase::create().await.unwrap();
    let mut conn = AsyncPgConnection::establish(db.url()).await.unwrap();
    jobq_diesel::migrate(&mut conn).await.unwrap();
    (db, conn)
}

/// One `bigint` column named `n`.
#[derive(QueryableByName, Debug)]
pub struct N {
    #[diesel(sql_type = BigInt)]
    pub n: i64,
}

/// Runs `sql`, which returns one `bigint` column named `n`.
pub async fn number(conn: &mut AsyncPgConnection, sql: &str) -> i64 {
    diesel::sql_query(sql)
        .get_result::<N>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .n
}

#[derive(QueryableByName)]
struct Flag {
    #[diesel(sql_type = Bool)]
    yes: bool,
}

/// Runs `sql`, which returns one `boolean` column named `yes`.
pub async fn flag(conn: &mut AsyncPgConnection, sql: &str) -> bool {
    diesel::sql_query(sql)
        .get_result::<Flag>(conn)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .yes
}
