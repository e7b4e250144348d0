//! The cheapest statement there is, to tell "the database is away" from
//! "the database refuses this statement".

use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

/// Runs `SELECT 1`; `Ok` when the connection and the server work.
pub async fn ping(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    conn.batch_execute("SELECT 1").await
}
