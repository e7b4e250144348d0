//! Vacuuming jobq's tables when the server's autovacuum does not.
//!
//! Every job leaves dead row versions behind (its claim and its outcome are
//! updates, pruning is a delete). Autovacuum normally reclaims them (the
//! migration tunes it for the jobs table); on a server or table where
//! autovacuum is switched off nothing does, and the table grows by three
//! dead row versions per job for ever. Then jobq vacuums its own tables.

use diesel::sql_types::{BigInt, Bool};
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
    /// Autovacuum looks after the jobs table; nothing to do.
    Autovacuum,
    /// Too few dead rows to be worth a vacuum.
    NotNeeded {
        /// Dead rows in the jobs table, from the statistics.
        dead_rows: i64,
    },
    /// The table needs a vacuum, but this role may not run one (only the
    /// table's owner, the database's owner or a superuser may).
    NotAllowed {
        /// Dead rows in the jobs table, from the statistics.
        dead_rows: i64,
    },
    /// Vacuumed and analyzed the jobs, workers and claims tables (or found
    /// another session vacuuming them and left it at that).
    Vacuumed {
        /// Dead rows in the jobs table before the vacuum.
        dead_rows: i64,
    },
}

#[derive(QueryableByName)]
struct TableState {
    #[diesel(sql_type = Bool)]
    autovacuum: bool,
    #[diesel(sql_type = Bool)]
    allowed: bool,
    #[diesel(sql_type = BigInt)]
    dead: i64,
    #[diesel(sql_type = BigInt)]
    live: i64,
}

/// Vacuums (and analyzes) `jobq.jobs`, `jobq.workers` and `jobq.claims`
/// when autovacuum is off for the jobs table (server-wide, or by its
/// `autovacuum_enabled` storage parameter) and its dead rows exceed 1,000
/// plus 2 % of the live ones, by the server's statistics. Not a transaction: `VACUUM` cannot
/// run inside one. `SKIP_LOCKED` makes a second worker's vacuum return at
/// once instead of queueing behind the first.
pub async fn vacuum(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Vacuum> {
    let state: TableState = diesel::sql_query(
        "SELECT \
             current_setting('autovacuum')::bool \
               AND coalesce((SELECT o.option_value::bool \
                             FROM pg_options_to_table(c.reloptions) o \
                             WHERE o.option_name = 'autovacuum_enabled'), true) AS autovacuum, \
             pg_has_role(c.relowner, 'USAGE') \
               OR pg_has_role((SELECT datdba FROM pg_database \
                               WHERE datname = current_database()), 'USAGE') AS allowed, \
             coalesce(s.n_dead_tup, 0) AS dead, \
             coalesce(s.n_live_tup, 0) AS live \
         FROM pg_class c \
         LEFT JOIN pg_stat_user_tables s ON s.relid = c.oid \
         WHERE c.oid = 'jobq.jobs'::regclass",
    )
    .get_result(conn)
    .await?;
    if state.autovacuum {
        return Ok(Vacuum::Autovacuum);
    }
    let dead_rows = state.dead;
    let threshold = DEAD_BASE + (state.live as f64 * DEAD_SHARE) as i64;
    if dead_rows <= threshold {
        return Ok(Vacuum::NotNeeded { dead_rows });
    }
    if !state.allowed {
        return Ok(Vacuum::NotAllowed { dead_rows });
    }
    conn.batch_execute("VACUUM (SKIP_LOCKED, ANALYZE) jobq.jobs, jobq.workers, jobq.claims")
        .await?;
    Ok(Vacuum::Vacuumed { dead_rows })
}
