//! The benchmark's databases: a fresh one per scenario, the server's
//! settings, and a few statistics queries.

use diesel::sql_types::{BigInt, Double, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use jobq_testkit::TestDatabase;

/// Creates a fresh database with jobq's schema installed.
pub async fn fresh() -> anyhow::Result<TestDatabase> {
    let db = TestDatabase::create().await?;
    let mut conn = connect(db.url()).await?;
    jobq::migrate(&mut conn).await?;
    Ok(db)
}

/// Opens a connection.
pub async fn connect(url: &str) -> anyhow::Result<AsyncPgConnection> {
    Ok(AsyncPgConnection::establish(url).await?)
}

#[derive(QueryableByName)]
struct Settings {
    #[diesel(sql_type = Text)]
    version: String,
    #[diesel(sql_type = Text)]
    fsync: String,
    #[diesel(sql_type = Text)]
    synchronous_commit: String,
    #[diesel(sql_type = Text)]
    full_page_writes: String,
    #[diesel(sql_type = Text)]
    shared_buffers: String,
    #[diesel(sql_type = Text)]
    port: String,
    #[diesel(sql_type = Text)]
    autovacuum: String,
    #[diesel(sql_type = diesel::sql_types::Integer)]
    backend_pid: i32,
}

/// Prints which server the run uses and its durability settings
/// (`SHOW fsync, synchronous_commit`, ...).
pub async fn print_server() -> anyhow::Result<()> {
    let source = match std::env::var("DATABASE_URL") {
        Ok(url) if !url.trim().is_empty() => {
            format!("DATABASE_URL ({})", jobq_diesel::redact(&url))
        }
        _ => "private throwaway server from jobq-testkit (tuned for speed, NOT durable)".into(),
    };
    let db = TestDatabase::create().await?;
    let mut conn = connect(db.url()).await?;
    let s: Settings = diesel::sql_query(
        "SELECT version() AS version, current_setting('fsync') AS fsync, \
             current_setting('synchronous_commit') AS synchronous_commit, \
             current_setting('full_page_writes') AS full_page_writes, \
             current_setting('shared_buffers') AS shared_buffers, \
             current_setting('port') AS port, \
             current_setting('autovacuum') AS autovacuum, \
             pg_backend_pid() AS backend_pid",
    )
    .get_result(&mut conn)
    .await?;
    // Server CPU is counted on this server's processes only.
    if let Ok(pid) = u32::try_from(s.backend_pid) {
        crate::cpu::watch_server(pid);
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("server:  {source}");
    println!("         {}", s.version);
    println!(
        "         port={} fsync={} synchronous_commit={} full_page_writes={} shared_buffers={} \
         autovacuum={}",
        s.port, s.fsync, s.synchronous_commit, s.full_page_writes, s.shared_buffers, s.autovacuum
    );
    if s.autovacuum != "on" {
        println!(
            "         NOTE: autovacuum is off on this server: jobq's maintenance pass vacuums \
             its tables itself (the `vacuum` setting, on by default)"
        );
    }
    println!(
        "machine: {cores} cores; build: {}",
        if cfg!(debug_assertions) {
            "DEBUG (use --release for real numbers)"
        } else {
            "release"
        }
    );
    println!();
    Ok(())
}

/// Size and dead tuples of the jobs table.
#[derive(Debug, Clone, Copy, QueryableByName)]
pub struct TableStats {
    /// Heap, indexes and TOAST of every partition of `jobq.jobs`.
    #[diesel(sql_type = BigInt)]
    pub total_bytes: i64,
    /// Live rows by the statistics collector.
    #[diesel(sql_type = BigInt)]
    pub live: i64,
    /// `pg_stat_user_tables.n_dead_tup`.
    #[diesel(sql_type = BigInt)]
    pub dead: i64,
    /// Autovacuum runs so far.
    #[diesel(sql_type = BigInt)]
    pub autovacuums: i64,
    /// Other vacuums so far (jobq's own, where autovacuum is off).
    #[diesel(sql_type = BigInt)]
    pub vacuums: i64,
}

/// Current statistics of `jobq.jobs` (the statistics collector lags by up
/// to a second or so).
pub async fn table_stats(conn: &mut AsyncPgConnection) -> anyhow::Result<TableStats> {
    Ok(diesel::sql_query(
        "SELECT sum(pg_total_relation_size(relid))::bigint AS total_bytes, \
             sum(n_live_tup)::bigint AS live, sum(n_dead_tup)::bigint AS dead, \
             sum(autovacuum_count)::bigint AS autovacuums, \
             sum(vacuum_count)::bigint AS vacuums \
         FROM pg_stat_user_tables \
         WHERE relid IN (SELECT relid FROM pg_partition_tree('jobq.jobs') WHERE isleaf)",
    )
    .get_result(conn)
    .await?)
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Runs a query returning one `bigint` column named `n`.
pub async fn count(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<i64> {
    let row: Count = diesel::sql_query(sql).get_result(conn).await?;
    Ok(row.n)
}

#[derive(QueryableByName)]
struct Seconds {
    #[diesel(sql_type = Double)]
    s: f64,
}

/// Runs a query returning one `double precision` column named `s`.
pub async fn seconds(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<f64> {
    let row: Seconds = diesel::sql_query(sql).get_result(conn).await?;
    Ok(row.s)
}

/// Runs statements without results.
pub async fn exec(conn: &mut AsyncPgConnection, sql: &str) -> anyhow::Result<()> {
    conn.batch_execute(sql).await?;
    Ok(())
}

/// Readies the jobs table for a measured phase: `VACUUM ANALYZE` (so that
/// an earlier phase's dead rows and stale statistics do not slow this one
/// down), then a `CHECKPOINT`. A phase writes far less WAL than it takes to
/// trigger a checkpoint, so none starts half-way through it, and every
/// phase pays the same full-page writes on its first touch of each page.
/// Otherwise a checkpoint requested by an earlier phase's WAL lands in a
/// random phase and swings its figure by tens of percent. A role that may
/// not checkpoint (PostgreSQL 15+: `pg_checkpoint`) skips it.
pub async fn settle(conn: &mut AsyncPgConnection) -> anyhow::Result<()> {
    exec(conn, "VACUUM ANALYZE jobq.jobs").await?;
    let _ = conn.batch_execute("CHECKPOINT").await;
    Ok(())
}

/// The rate at which the workers ran every job of the database (all
/// `jobs` of them, which must all have completed), by the rows' own
/// timestamps: from the first claim to the last outcome.
pub async fn drained_rate(
    conn: &mut AsyncPgConnection,
    scenario: &str,
    jobs: usize,
) -> anyhow::Result<f64> {
    let completed = count(
        conn,
        "SELECT count(*) AS n FROM jobq.jobs WHERE state = 'completed'",
    )
    .await?;
    anyhow::ensure!(
        completed == jobs as i64,
        "{scenario}: {completed} of {jobs} jobs completed"
    );
    let span = seconds(
        conn,
        "SELECT extract(epoch FROM max(finished_at) - min(started_at))::float8 AS s \
         FROM jobq.jobs",
    )
    .await?;
    Ok(jobs as f64 / span.max(1e-9))
}

/// 1 while jobs are left to drain: a pending job (the claim index's first
/// entry) or a claim holding jobs; 0 once all are done. Cheap while workers
/// run: it reads no finished row. A claim that failed leaves an empty row
/// (its key's tombstone) for as long as its worker lives; it holds no job.
pub const BUSY_SQL: &str = "\
    SELECT ((SELECT id FROM jobq.jobs WHERE state = 'pending' \
               ORDER BY task, priority DESC, run_at, id LIMIT 1) IS NOT NULL \
          OR EXISTS (SELECT 1 FROM jobq.claims WHERE NOT isempty(jobs)))::int::int8 AS n";
