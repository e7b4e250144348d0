//! Installs and upgrades jobq's schema.
//!
//! The migrations are the diesel migrations under the repository's
//! `migrations/` folder, embedded in the binary. They are applied by this
//! small runner rather than by `diesel_migrations`' harness because jobq
//! needs three things the harness does not give on an async connection:
//! the history table inside jobq's own schema (so it never mixes with the
//! application's `__diesel_schema_migrations`), a lock that makes
//! concurrent worker start-ups safe, and a refusal to run against a schema
//! written by a newer jobq.
//!
//! Each migration is applied and recorded in a transaction of its own,
//! all under one session-level advisory lock: PostgreSQL cannot use an
//! enum value in the transaction that added it (`ALTER TYPE ... ADD
//! VALUE`), so a migration that adds one must commit before the next one
//! uses it. A failure leaves the migrations before it applied and
//! recorded, and the next start carries on from there.

use diesel::sql_types::{BigInt, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// A migration: its version (the folder's timestamp as a number) and SQL.
struct Migration {
    version: i64,
    name: &'static str,
    up: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 20261125000001,
        name: "create_jobq",
        up: include_str!("../../migrations/2026-11-25-000001_create_jobq/up.sql"),
    },
    Migration {
        version: 20261126000001,
        name: "claims",
        up: include_str!("../../migrations/2026-11-26-000001_claims/up.sql"),
    },
    Migration {
        version: 20261130000001,
        name: "scheduled_state",
        up: include_str!("../../migrations/2026-11-30-000001_scheduled_state/up.sql"),
    },
    Migration {
        version: 20261130000002,
        name: "scheduled_jobs",
        up: include_str!("../../migrations/2026-11-30-000002_scheduled_jobs/up.sql"),
    },
    Migration {
        version: 20261130000003,
        name: "liveness",
        up: include_str!("../../migrations/2026-11-30-000003_liveness/up.sql"),
    },
    Migration {
        version: 20261201000010,
        name: "stats",
        up: include_str!("../../migrations/2026-12-01-000010_stats/up.sql"),
    },
    Migration {
        version: 20261201000020,
        name: "flow_control",
        up: include_str!("../../migrations/2026-12-01-000020_flow_control/up.sql"),
    },
    Migration {
        version: 20261201000030,
        name: "unique_keys_and_outputs",
        up: include_str!("../../migrations/2026-12-01-000030_unique_keys_and_outputs/up.sql"),
    },
    Migration {
        version: 20261201000031,
        name: "held_finished",
        up: include_str!("../../migrations/2026-12-01-000031_held_finished/up.sql"),
    },
    Migration {
        version: 20261201000032,
        name: "unique_labels",
        up: include_str!("../../migrations/2026-12-01-000032_unique_labels/up.sql"),
    },
    Migration {
        version: 20261201000050,
        name: "schedules",
        up: include_str!("../../migrations/2026-12-01-000050_schedules/up.sql"),
    },
    Migration {
        version: 20261202000100,
        name: "listing_indexes",
        up: include_str!("../../migrations/2026-12-02-000100_listing_indexes/up.sql"),
    },
    Migration {
        version: 20261202000200,
        name: "finished_notify",
        up: include_str!("../../migrations/2026-12-02-000200_finished_notify/up.sql"),
    },
    Migration {
        version: 20261202000400,
        name: "follow_ups",
        up: include_str!("../../migrations/2026-12-02-000400_follow_ups/up.sql"),
    },
    Migration {
        version: 20261202000500,
        name: "rate_limits",
        up: include_str!("../../migrations/2026-12-02-000500_rate_limits/up.sql"),
    },
    Migration {
        version: 20261203000100,
        name: "key_order",
        up: include_str!("../../migrations/2026-12-03-000100_key_order/up.sql"),
    },
    Migration {
        version: 20261203000200,
        name: "awaited_jobs",
        up: include_str!("../../migrations/2026-12-03-000200_awaited_jobs/up.sql"),
    },
    Migration {
        version: 20261203000300,
        name: "blocked_backlogs",
        up: include_str!("../../migrations/2026-12-03-000300_blocked_backlogs/up.sql"),
    },
    Migration {
        version: 20261204000200,
        name: "claim_floors",
        up: include_str!("../../migrations/2026-12-04-000200_claim_floors/up.sql"),
    },
    Migration {
        version: 20261205000100,
        name: "split_finished_jobs",
        up: include_str!("../../migrations/2026-12-05-000100_split_finished_jobs/up.sql"),
    },
    Migration {
        version: 20261206000100,
        name: "finish_by_insert",
        up: include_str!("../../migrations/2026-12-06-000100_finish_by_insert/up.sql"),
    },
    Migration {
        version: 20261207000100,
        name: "completed_segments",
        up: include_str!("../../migrations/2026-12-07-000100_completed_segments/up.sql"),
    },
];

/// The newest schema version this build knows.
pub const LATEST_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].version;

/// Key of the session-level advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x6a6f_6271_6d69_6772; // "jobqmigr"

/// Why [`migrate`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The database holds a schema written by a newer jobq.
    #[error(
        "the jobq schema in this database is at version {found}, newer than the \
         {supported} this binary knows; upgrade jobq in this binary (or point it at \
         another database) instead of running an old worker against a new schema"
    )]
    SchemaTooNew {
        /// Version found in `jobq.schema_migrations`.
        found: i64,
        /// [`LATEST_VERSION`].
        supported: i64,
    },
    /// A statement failed.
    #[error("applying jobq migration {version} ({name}) failed")]
    Apply {
        /// The migration's version.
        version: i64,
        /// The migration's name.
        name: &'static str,
        /// The database's error.
        #[source]
        source: diesel::result::Error,
    },
    /// Reading or locking the history failed.
    #[error("reading jobq's migration history failed")]
    History(#[source] diesel::result::Error),
}

#[derive(QueryableByName)]
struct HistoryExists {
    #[diesel(sql_type = diesel::sql_types::Bool)]
    present: bool,
}

#[derive(QueryableByName)]
struct CurrentVersion {
    #[diesel(sql_type = diesel::sql_types::Nullable<BigInt>)]
    version: Option<i64>,
}

#[derive(QueryableByName)]
struct Version {
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// Brings the `jobq` schema up to [`LATEST_VERSION`], one transaction per
/// migration.
///
/// Idempotent, and safe when several workers start at once: they queue on
/// an advisory lock and the later ones find nothing left to do. Returns the
/// versions it applied.
pub async fn migrate(conn: &mut AsyncPgConnection) -> Result<Vec<i64>, MigrateError> {
    // Read-only first: a schema that is already current needs no DDL, so a
    // least-privileged worker role (no CREATE on the database or schema)
    // can start, and a newer schema is refused without taking any lock.
    let exists: HistoryExists =
        diesel::sql_query("SELECT to_regclass('jobq.schema_migrations') IS NOT NULL AS present")
            .get_result(conn)
            .await
            .map_err(MigrateError::History)?;
    let current = if exists.present {
        diesel::sql_query("SELECT max(version) AS version FROM jobq.schema_migrations")
            .get_result::<CurrentVersion>(conn)
            .await
            .map_err(MigrateError::History)?
    } else {
        CurrentVersion { version: None }
    };
    match current.version {
        Some(found) if found > LATEST_VERSION => {
            return Err(MigrateError::SchemaTooNew {
                found,
                supported: LATEST_VERSION,
            })
        }
        Some(found) if found == LATEST_VERSION => return Ok(Vec::new()),
        _ => {}
    }
    diesel::sql_query("SELECT pg_advisory_lock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(conn)
        .await
        .map_err(MigrateError::History)?;
    let result = migrate_locked(conn, LATEST_VERSION).await;
    // A session lock outlives errors and transactions: give it back on
    // every path, or the connection (pooled, maybe) would keep it.
    let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
        .bind::<BigInt, _>(MIGRATION_LOCK)
        .execute(conn)
        .await;
    match (result, unlocked) {
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(MigrateError::History(e)),
        (Ok(done), Ok(_)) => Ok(done),
    }
}

/// Applies the migrations up to and including `version` only, as an older
/// jobq would have left the schema: for tests of upgrades from it. Takes no
/// lock; use [`migrate`] everywhere else.
#[doc(hidden)]
pub async fn migrate_to(
    conn: &mut AsyncPgConnection,
    version: i64,
) -> Result<Vec<i64>, MigrateError> {
    migrate_locked(conn, version).await
}

/// The work of [`migrate`] once it holds the migration lock: the
/// migrations up to `until` that are not applied yet.
async fn migrate_locked(
    conn: &mut AsyncPgConnection,
    until: i64,
) -> Result<Vec<i64>, MigrateError> {
    conn.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS jobq;
         CREATE TABLE IF NOT EXISTS jobq.schema_migrations (
             version bigint PRIMARY KEY,
             name text NOT NULL,
             applied_at timestamptz NOT NULL DEFAULT now()
         );",
    )
    .await
    .map_err(MigrateError::History)?;
    let applied: Vec<i64> = diesel::sql_query("SELECT version FROM jobq.schema_migrations")
        .load::<Version>(conn)
        .await
        .map_err(MigrateError::History)?
        .into_iter()
        .map(|v| v.version)
        .collect();
    if let Some(&found) = applied.iter().max() {
        if found > LATEST_VERSION {
            return Err(MigrateError::SchemaTooNew {
                found,
                supported: LATEST_VERSION,
            });
        }
    }
    let mut done = Vec::new();
    for migration in MIGRATIONS.iter().take_while(|m| m.version <= until) {
        if applied.contains(&migration.version) {
            continue;
        }
        conn.transaction::<_, MigrateError, _>(async |conn| {
            let apply_err = |source| MigrateError::Apply {
                version: migration.version,
                name: migration.name,
                source,
            };
            conn.batch_execute(migration.up).await.map_err(apply_err)?;
            diesel::sql_query("INSERT INTO jobq.schema_migrations (version, name) VALUES ($1, $2)")
                .bind::<BigInt, _>(migration.version)
                .bind::<Text, _>(migration.name)
                .execute(conn)
                .await
                .map_err(apply_err)?;
            Ok(())
        })
        .await?;
        done.push(migration.version);
    }
    Ok(done)
}

/// The newest schema version applied to this database, `None` when jobq's
/// schema is not installed. Read-only, for workers that do not migrate
/// (added for `WorkerBuilder::migrate(false)`, issue 11).
pub async fn schema_version(conn: &mut AsyncPgConnection) -> Result<Option<i64>, MigrateError> {
    let exists: HistoryExists =
        diesel::sql_query("SELECT to_regclass('jobq.schema_migrations') IS NOT NULL AS present")
            .get_result(conn)
            .await
            .map_err(MigrateError::History)?;
    if !exists.present {
        return Ok(None);
    }
    let current: CurrentVersion =
        diesel::sql_query("SELECT max(version) AS version FROM jobq.schema_migrations")
            .get_result(conn)
            .await
            .map_err(MigrateError::History)?;
    Ok(current.version)
}

impl From<diesel::result::Error> for MigrateError {
    fn from(source: diesel::result::Error) -> Self {
        MigrateError::History(source)
    }
}
