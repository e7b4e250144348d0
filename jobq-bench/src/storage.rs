//! Storage figures of the long-running scenarios (`soak`, `pinned`): the
//! jobs table's size and tuples, the claim index's size, jobs finished in
//! a span of the database clock, and turning autovacuum off for jobq's own
//! tables.

use diesel::sql_types::{BigInt, Double, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db;

/// One look at jobq's storage.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Storage {
    /// Heap, indexes and TOAST of every partition of `jobq.jobs`.
    #[diesel(sql_type = BigInt)]
    pub total_bytes: i64,
    /// Heap, indexes and TOAST of `jobq.jobs_active`, the partition that
    /// claims, promotions and outcomes work on.
    #[diesel(sql_type = BigInt)]
    pub active_bytes: i64,
    /// `n_dead_tup` of `jobq.jobs_active`.
    #[diesel(sql_type = BigInt)]
    pub active_dead: i64,
    /// Size of the claim index (`jobs_claim_idx`). pgstattuple is not
    /// installed, so its dead entries show as growth beyond the pending
    /// jobs it indexes.
    #[diesel(sql_type = BigInt)]
    pub claim_index_bytes: i64,
    /// `pg_stat_user_tables.n_live_tup`, every partition.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// `pg_stat_user_tables.n_dead_tup`, every partition.
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    /// Vacuums so far of any partition, autovacuum's and others (jobq's
    /// maintenance).
    #[diesel(sql_type = BigInt)]
    pub vacuums: i64,
}

/// Mebibytes.
pub fn mib(bytes: i64) -> f64 {
    bytes as f64 / 1_048_576.0
}

/// The current figures (the statistics collector lags by a second or so).
pub async fn storage(conn: &mut AsyncPgConnection) -> anyhow::Result<Storage> {
    Ok(diesel::sql_query(
        "SELECT sum(pg_total_relation_size(relid))::bigint AS total_bytes, \
             pg_total_relation_size('jobq.jobs_active') AS active_bytes, \
             sum(n_dead_tup) FILTER (WHERE relname = 'jobs_active')::bigint AS active_dead, \
             pg_relation_size('jobq.jobs_claim_idx') AS claim_index_bytes, \
             sum(n_live_tup)::bigint AS live, sum(n_dead_tup)::bigint AS dead, \
             sum(autovacuum_count + vacuum_count)::bigint AS vacuums \
         FROM pg_stat_user_tables \
         WHERE relid IN (SELECT relid FROM pg_partition_tree('jobq.jobs') WHERE isleaf)",
    )
    .get_result(conn)
    .await?)
}

/// Now by the database clock, seconds since the epoch.
pub async fn db_now(conn: &mut AsyncPgConnection) -> anyhow::Result<f64> {
    db::seconds(conn, "SELECT extract(epoch FROM now())::float8 AS s").await
}

/// The statement naming the completed no-op jobs finished in
/// `(after, upto]` (epoch seconds) with `columns`. Finished jobs live in
/// two partial indexes (with and without a held unique key), so both
/// halves are read: each is answered by its own index.
fn finished_between(columns: &str, after: f64, upto: f64) -> String {
    let half = |held: &str| {
        format!(
            "SELECT {columns} FROM jobq.jobs \
             WHERE state IN ('completed', 'failed', 'cancelled') AND unique_until IS {held} \
               AND finished_at > to_timestamp({after}) AND finished_at <= to_timestamp({upto}) \
               AND state = 'completed' AND task = 'bench.noop'"
        )
    };
    format!("{} UNION ALL {}", half("NULL"), half("NOT NULL"))
}

/// How many no-op jobs completed in `(after, upto]`, epoch seconds.
pub async fn finished_count(
    conn: &mut AsyncPgConnection,
    after: f64,
    upto: f64,
) -> anyhow::Result<u64> {
    let sql = format!(
        "SELECT count(*) AS n FROM ({}) f",
        finished_between("1 AS one", after, upto)
    );
    Ok(db::count(conn, &sql).await?.max(0) as u64)
}

/// A finished job's creation and pickup latency.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct Pickup {
    /// `created_at`, epoch seconds.
    #[diesel(sql_type = Double)]
    pub created: f64,
    /// `finished_at`, epoch seconds.
    #[diesel(sql_type = Double)]
    pub finished: f64,
    /// `started_at - created_at`, milliseconds (both set by the server).
    #[diesel(sql_type = Double)]
    pub latency_ms: f64,
}

/// Every no-op job completed in `(after, upto]`, epoch seconds.
pub async fn pickups(
    conn: &mut AsyncPgConnection,
    after: f64,
    upto: f64,
) -> anyhow::Result<Vec<Pickup>> {
    let sql = finished_between(
        "extract(epoch FROM created_at)::float8 AS created, \
         extract(epoch FROM finished_at)::float8 AS finished, \
         extract(epoch FROM started_at - created_at)::float8 * 1000 AS latency_ms",
        after,
        upto,
    );
    Ok(diesel::sql_query(sql).load(conn).await?)
}

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = Text)]
    name: String,
}

/// Turns autovacuum off for every table of the `jobq` schema (and their
/// TOAST tables) in this database only: the server's setting stays as it
/// is. jobq's maintenance pass still vacuums, as on a server with
/// autovacuum off. Returns the tables changed.
pub async fn disable_autovacuum(conn: &mut AsyncPgConnection) -> anyhow::Result<Vec<String>> {
    let tables: Vec<Name> = diesel::sql_query(
        "SELECT format('%I.%I', n.nspname, c.relname) AS name FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'jobq' AND c.relkind = 'r' ORDER BY 1",
    )
    .load(conn)
    .await?;
    for t in &tables {
        db::exec(
            conn,
            &format!(
                "ALTER TABLE {} SET (autovacuum_enabled = false, \
                 toast.autovacuum_enabled = false)",
                t.name
            ),
        )
        .await?;
    }
    Ok(tables.into_iter().map(|t| t.name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finished_jobs_are_read_through_both_finished_indexes() {
        let sql = finished_between("1", 1.0, 2.0);
        assert!(sql.contains("unique_until IS NULL"));
        assert!(sql.contains("unique_until IS NOT NULL"));
        assert_eq!(sql.matches("finished_at > to_timestamp(1)").count(), 2);
    }
}
