//! Vacuuming jobq's tables when the server's autovacuum does not.
//!
//! Every job leaves dead row versions behind: its claim and its move to the
//! finished partition in `jobq.jobs_active`, its pruning in
//! `jobq.jobs_finished`. Autovacuum normally reclaims them (the migrations
//! tune it for both partitions); on a server or partition where autovacuum
//! is switched off nothing does, and the partitions grow by those dead row
//! versions for ever. Then jobq vacuums its own tables.

use diesel::sql_types::{BigInt, Bool, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Dead rows tolerated before a vacuum, besides [`DEAD_SHARE`] of the live
/// ones; the same rule as autovacuum's with the jobs table's settings.
const DEAD_BASE: i64 = 1_000;

/// Share of live rows that may be dead before a vacuum; the jobs table's
/// `autovacuum_vacuum_scale_factor`.
const DEAD_SHARE: f64 = 0.02;

/// What [`vacuum`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuum {
    /// Autovacuum looks after both partitions of the jobs table; nothing to
    /// do.
    Autovacuum,
    /// Too few dead rows to be worth a vacuum.
    NotNeeded {
        /// Dead rows in the partitions autovacuum leaves alone, from the
        /// statistics.
        dead_rows: i64,
    },
    /// A partition needs a vacuum, but this role may not run one (only the
    /// table's owner, the database's owner or a superuser may).
    NotAllowed {
        /// Dead rows in the partitions that need a vacuum.
        dead_rows: i64,
    },
    /// Vacuumed and analyzed the partitions that needed it and the workers
    /// and claims tables (or found another session vacuuming them and left
    /// it at that).
    Vacuumed {
        /// Dead rows in the vacuumed partitions before the vacuum.
        dead_rows: i64,
    },
}

#[derive(QueryableByName)]
struct PartitionState {
    /// The partition's name, quoted for SQL.
    #[diesel(sql_type = Text)]
    name: String,
    #[diesel(sql_type = Bool)]
    autovacuum: bool,
    #[diesel(sql_type = Bool)]
    allowed: bool,
    #[diesel(sql_type = BigInt)]
    dead: i64,
    #[diesel(sql_type = BigInt)]
    live: i64,
}

impl PartitionState {
    /// Left to jobq: autovacuum is off for it and its dead rows passed the
    /// threshold.
    fn needs_vacuum(&self) -> bool {
        !self.autovacuum && self.dead > DEAD_BASE + (self.live as f64 * DEAD_SHARE) as i64
    }
}

/// Vacuums (and analyzes) the partitions of `jobq.jobs` that need it, with
/// `jobq.workers` and `jobq.claims`: a partition needs it when autovacuum
/// is off for it (server-wide, or by its `autovacuum_enabled` storage
/// parameter) and its dead rows exceed 1,000 plus 2 % of its live ones, by
/// the server's statistics. Each partition is judged on its own, so the
/// small, busy active partition is not vacuumed only as often as the
/// finished history can be. Not a transaction: `VACUUM` cannot run inside
/// one. `SKIP_LOCKED` makes a second worker's vacuum return at once instead
/// of queueing behind the first.
pub async fn vacuum(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vacuum> {
    let partitions: Vec<PartitionState> = diesel::sql_query(
        "SELECT l.oid::regclass::text AS name, \
             current_setting('autovacuum')::bool \
               AND coalesce((SELECT o.option_value::bool \
                             FROM pg_options_to_table(l.reloptions) o \
                             WHERE o.option_name = 'autovacuum_enabled'), true) AS autovacuum, \
             pg_has_role(l.relowner, 'USAGE') \
               OR pg_has_role((SELECT datdba FROM pg_database \
                               WHERE datname = current_database()), 'USAGE') AS allowed, \
             coalesce(s.n_dead_tup, 0) AS dead, \
             coalesce(s.n_live_tup, 0) AS live \
         FROM pg_partition_tree('jobq.jobs') t \
         JOIN pg_class l ON l.oid = t.relid \
         LEFT JOIN pg_stat_user_tables s ON s.relid = l.oid \
         WHERE t.isleaf \
         ORDER BY l.relname",
    )
    .load(conn)
    .await?;
    if partitions.iter().all(|p| p.autovacuum) {
        return Ok(Vacuum::Autovacuum);
    }
    let due: Vec<&PartitionState> = partitions.iter().filter(|p| p.needs_vacuum()).collect();
    if due.is_empty() {
        return Ok(Vacuum::NotNeeded {
            dead_rows: partitions
                .iter()
                .filter(|p| !p.autovacuum)
                .map(|p| p.dead)
                .sum(),
        });
    }
    let dead_rows = due.iter().map(|p| p.dead).sum();
    if due.iter().any(|p| !p.allowed) {
        return Ok(Vacuum::NotAllowed { dead_rows });
    }
    let tables: Vec<&str> = due.iter().map(|p| p.name.as_str()).collect();
    conn.batch_execute(&format!(
        "VACUUM (SKIP_LOCKED, ANALYZE) {}, jobq.workers, jobq.claims",
        tables.join(", ")
    ))
    .await?;
    Ok(Vacuum::Vacuumed { dead_rows })
}
