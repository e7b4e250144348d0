//! Installing the schema.

use diesel_async::AsyncPgConnection;

use crate::Error;

/// Installs or upgrades jobq's schema (the `jobq` PostgreSQL schema) on
/// this database.
///
/// Idempotent and safe when several workers start at once; refuses to run
/// against a schema written by a newer jobq. [`crate::Worker`] calls it
/// while building, so only call it yourself to migrate from a deploy step
/// or with a more privileged role than the workers'.
pub async fn migrate(conn: &mut AsyncPgConnection) -> Result<(), Error> {
    let applied = jobq_diesel::migrate(conn).await?;
    if !applied.is_empty() {
        tracing::info!(versions = ?applied, "applied jobq migrations");
    }
    Ok(())
}
