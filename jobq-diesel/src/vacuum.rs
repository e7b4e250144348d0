//! Vacuuming jobq's tables when the server's autovacuum does not, or
//! cannot keep up.
//!
//! Every job leaves dead row versions behind: its claim and its move to the
//! finished partition in `jobq.jobs_active`, its pruning in
//! `jobq.jobs_finished`. Autovacuum normally reclaims them (the migrations
//! tune it for both partitions); on a server or partition where autovacuum
//! is switched off nothing does, and the partitions grow by those dead row
//! versions for ever. Then jobq vacuums its own tables. Where autovacuum
//! runs, it visits a table at most once per `autovacuum_naptime` (a minute
//! by default): at tens of thousands of jobs a second the active partition
//! gathers millions of dead versions in between, and claims slow down
//! walking past them. When a partition's dead rows pass ten times the
//! threshold autovacuum would have acted on, jobq vacuums it too.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::sql_types::{BigInt, Bool, Double, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

/// Dead rows tolerated before a vacuum, besides [`DEAD_SHARE`] of the live
/// ones; the same rule as autovacuum's with the jobs table's settings.
const DEAD_BASE: i64 = 1_000;

/// Share of live rows that may be dead before a vacuum; the jobs table's
/// `autovacuum_vacuum_scale_factor`.
const DEAD_SHARE: f64 = 0.02;

/// Changed rows tolerated since a partition's last analyze, besides
/// [`ANALYZE_SHARE`] of its live ones: autovacuum's default rule.
const ANALYZE_BASE: i64 = 50;

/// Share of live rows that may change before an analyze is due.
const ANALYZE_SHARE: f64 = 0.1;

/// Least time between two analyzes of a partition, by anyone. A busy
/// active partition passes the rule above between any two vacuums, and an
/// analyze reads a sample of 30,000 rows: run with every vacuum of a
/// drain, the analyzes took 12 % of the server's CPU. Autovacuum itself
/// visits a table at most once a minute (`autovacuum_naptime`).
const ANALYZE_EVERY_SECS: f64 = 60.0;

/// How far past its threshold a partition autovacuum looks after may get
/// before jobq vacuums it too: far enough that autovacuum, working as
/// configured, always gets there first on a queue of ordinary pace.
const LAGGING: i64 = 10;

/// What [`vacuum`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Vacuum {
    /// Autovacuum looks after every partition of the jobs table and keeps
    /// up; nothing to do.
    Autovacuum,
    /// Too few dead rows to be worth a vacuum (or, where autovacuum runs,
    /// not enough to say it fell behind).
    NotNeeded {
        /// Dead rows in the partitions autovacuum leaves alone, from the
        /// statistics.
        dead_rows: i64,
    },
    /// A partition autovacuum leaves alone needs a vacuum, but this role
    /// may not run one (only the table's owner, the database's owner or a
    /// superuser may).
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

#[derive(QueryableByName, Debug)]
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
    /// Rows changed since the partition was last analyzed.
    #[diesel(sql_type = BigInt)]
    changed: i64,
    /// Seconds since anyone (autovacuum, a worker) last analyzed it; None
    /// when never.
    #[diesel(sql_type = Nullable<Double>)]
    analyzed_secs_ago: Option<f64>,
}

impl PartitionState {
    /// Dead rows past which autovacuum would have vacuumed the partition.
    fn threshold(&self) -> i64 {
        DEAD_BASE + (self.live.max(0) as f64 * DEAD_SHARE) as i64
    }

    /// Whether a vacuum of the partition should analyze it too: enough
    /// rows changed since its last analyze, and that was a while ago.
    fn analyze_due(&self) -> bool {
        let changed_enough =
            self.changed > ANALYZE_BASE + (self.live.max(0) as f64 * ANALYZE_SHARE) as i64;
        changed_enough
            && self
                .analyzed_secs_ago
                .is_none_or(|ago| ago >= ANALYZE_EVERY_SECS)
    }
}

/// Decides which partitions jobq vacuums, pass after pass. Left to jobq: a
/// partition autovacuum leaves alone, once its dead rows pass the
/// threshold; one autovacuum looks after, once they pass ten times that.
/// A vacuum that could not remove most dead rows (an open snapshot holds
/// them) is repeated once they have doubled, or [`HELD_BACK_RETRY`] after
/// it, whichever comes first: a held snapshot costs a pass over the
/// partition every half minute at most, not one per check, and once it is
/// released the dead rows go within about half a minute, not only after
/// they doubled again (ten minutes at 1,000 jobs/s after a ten-minute
/// snapshot). Keep one per process (each worker has its own) and hand it
/// to every [`vacuum`].
#[derive(Debug, Default)]
pub struct VacuumPace {
    /// What this process's last pass over each partition left behind.
    left: HashMap<String, Left>,
}

/// Dead rows a pass could not remove, and when.
#[derive(Debug, Clone, Copy)]
struct Left {
    dead: i64,
    at: Instant,
}

/// How soon a pass that a held snapshot kept from removing the dead rows
/// is tried again, at the latest. Autovacuum retries such a table once per
/// `autovacuum_naptime` (a minute).
const HELD_BACK_RETRY: Duration = Duration::from_secs(30);

impl VacuumPace {
    /// A pace that has vacuumed nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn due(&mut self, p: &PartitionState) -> bool {
        self.due_at(p, Instant::now())
    }

    /// Whether `p` is due for a vacuum at `now`. Less than half the dead
    /// rows the last pass left means someone else (autovacuum, another
    /// worker) vacuumed it since, and could remove them: what this
    /// process's pass left no longer counts. (A pass by someone else that
    /// the same snapshot held back leaves about as many, and keeps the
    /// pace.)
    fn due_at(&mut self, p: &PartitionState, now: Instant) -> bool {
        if self
            .left
            .get(&p.name)
            .is_some_and(|left| p.dead < left.dead / 2)
        {
            self.left.remove(&p.name);
        }
        let threshold = if p.autovacuum {
            p.threshold().saturating_mul(LAGGING)
        } else {
            p.threshold()
        };
        let held_back = match self.left.get(&p.name) {
            Some(left) if now.saturating_duration_since(left.at) < HELD_BACK_RETRY => {
                left.dead.saturating_mul(2)
            }
            _ => 0,
        };
        p.dead > threshold.max(held_back)
    }

    /// Records what a vacuum of partition `name` left behind.
    fn vacuumed(&mut self, name: &str, dead_left: i64) {
        self.vacuumed_at(name, dead_left, Instant::now());
    }

    fn vacuumed_at(&mut self, name: &str, dead_left: i64, at: Instant) {
        self.left.insert(
            name.to_owned(),
            Left {
                dead: dead_left,
                at,
            },
        );
    }
}

/// What [`vacuum`] does about the connection's statement timeout, which
/// would cancel a long pass and waste the work done so far (with
/// autovacuum off at 65,000 jobs/s, passes cancelled at 60 s let the active
/// partition's dead rows grow without end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StatementTimeout {
    /// The connection was opened without one (as jobq opens the one it
    /// vacuums on): nothing to do.
    NotSet,
    /// Lift it for the pass (`SET statement_timeout = 0`) and put the
    /// connection's own setting back after (`RESET`). These are session
    /// statements: behind a transaction-pooling PgBouncer they may reach
    /// different server connections.
    LiftForThePass,
}

/// The partitions of `jobq.jobs`, with what the statistics say of them.
async fn partition_states(
    conn: &mut AsyncPgConnection,
) -> diesel::QueryResult<Vec<PartitionState>> {
    diesel::sql_query(
        "SELECT l.oid::regclass::text AS name, \
             current_setting('autovacuum')::bool \
               AND coalesce((SELECT o.option_value::bool \
                             FROM pg_options_to_table(l.reloptions) o \
                             WHERE o.option_name = 'autovacuum_enabled'), true) AS autovacuum, \
             pg_has_role(l.relowner, 'USAGE') \
               OR pg_has_role((SELECT datdba FROM pg_database \
                               WHERE datname = current_database()), 'USAGE') AS allowed, \
             coalesce(s.n_dead_tup, 0) AS dead, \
             coalesce(s.n_live_tup, 0) AS live, \
             coalesce(s.n_mod_since_analyze, 0) AS changed, \
             extract(epoch FROM now() - greatest(s.last_analyze, s.last_autoanalyze))::float8 \
               AS analyzed_secs_ago \
         FROM pg_partition_tree('jobq.jobs') t \
         JOIN pg_class l ON l.oid = t.relid \
         LEFT JOIN pg_stat_user_tables s ON s.relid = l.oid \
         WHERE t.isleaf \
         ORDER BY l.relname",
    )
    .load(conn)
    .await
}

/// Vacuums (and analyzes) the partitions of `jobq.jobs` that `pace` finds
/// due, with `jobq.workers` and `jobq.claims`: a partition autovacuum
/// leaves alone (server-wide, or by its `autovacuum_enabled` storage
/// parameter) when its dead rows exceed 1,000 plus 2 % of its live ones,
/// by the server's statistics; one autovacuum looks after when they exceed
/// ten times that (autovacuum fell behind). Each partition is judged on its
/// own, so the small, busy active partition is not vacuumed only as often
/// as the finished history can be. Not a transaction: `VACUUM` cannot run
/// inside one. `SKIP_LOCKED` makes the call return at once for a partition
/// another session (a second worker, autovacuum) is vacuuming, instead of
/// queueing behind it. `timeout` says whether the connection has a
/// statement timeout to lift for the pass. The same as [`check_vacuum`]
/// followed, when it finds partitions due, by [`VacuumDue::run`] on the
/// same connection.
pub async fn vacuum(
    conn: &mut AsyncPgConnection,
    pace: &mut VacuumPace,
    timeout: StatementTimeout,
) -> diesel::QueryResult<Vacuum> {
    match check_vacuum(conn, pace).await? {
        Ok(due) => due.run(conn, pace, timeout).await,
        Err(nothing_to_do) => Ok(nothing_to_do),
    }
}

/// Partitions [`check_vacuum`] found due, to vacuum with [`VacuumDue::run`].
#[derive(Debug)]
#[must_use = "nothing is vacuumed until `run` is called"]
pub struct VacuumDue {
    tables: Vec<String>,
    /// Of `tables`, those to analyze as well.
    analyze: Vec<String>,
    dead_rows: i64,
}

/// Reads the statistics and decides, as [`vacuum`] does, which partitions
/// are due: `Ok` with them, or `Err` with why there is nothing to vacuum
/// ([`Vacuum::Autovacuum`], [`Vacuum::NotNeeded`], [`Vacuum::NotAllowed`]).
/// One cheap read, so that the connection the vacuum runs on (one without
/// a statement timeout) is needed only when a vacuum is due.
pub async fn check_vacuum(
    conn: &mut AsyncPgConnection,
    pace: &mut VacuumPace,
) -> diesel::QueryResult<Result<VacuumDue, Vacuum>> {
    let partitions = partition_states(conn).await?;
    let mut due: Vec<&PartitionState> = partitions.iter().filter(|p| pace.due(p)).collect();
    // Where autovacuum runs, a role that may not vacuum leaves it to
    // autovacuum, late as it is.
    due.retain(|p| p.allowed || !p.autovacuum);
    if due.is_empty() {
        if partitions.iter().all(|p| p.autovacuum) {
            return Ok(Err(Vacuum::Autovacuum));
        }
        return Ok(Err(Vacuum::NotNeeded {
            dead_rows: partitions
                .iter()
                .filter(|p| !p.autovacuum)
                .map(|p| p.dead)
                .sum(),
        }));
    }
    let dead_rows = due.iter().map(|p| p.dead).sum();
    if due.iter().any(|p| !p.allowed) {
        return Ok(Err(Vacuum::NotAllowed { dead_rows }));
    }
    Ok(Ok(VacuumDue {
        tables: due.iter().map(|p| p.name.clone()).collect(),
        analyze: due
            .iter()
            .filter(|p| p.analyze_due())
            .map(|p| p.name.clone())
            .collect(),
        dead_rows,
    }))
}

impl VacuumDue {
    /// Vacuums the partitions found due, and records in `pace` what the
    /// pass could not remove.
    pub async fn run(
        self,
        conn: &mut AsyncPgConnection,
        pace: &mut VacuumPace,
        timeout: StatementTimeout,
    ) -> diesel::QueryResult<Vacuum> {
        let statements = self.statements();
        match timeout {
            StatementTimeout::NotSet => {
                for statement in &statements {
                    conn.batch_execute(statement).await?;
                }
            }
            StatementTimeout::LiftForThePass => {
                // RESET goes back to the connection's own setting (its
                // startup value, or the server's), also after a failed pass.
                conn.batch_execute("SET statement_timeout = 0").await?;
                let mut vacuumed = Ok(());
                for statement in &statements {
                    vacuumed = conn.batch_execute(statement).await;
                    if vacuumed.is_err() {
                        break;
                    }
                }
                let reset = conn.batch_execute("RESET statement_timeout").await;
                vacuumed?;
                reset?;
            }
        }
        // Read in a transaction of its own, the statistics show what the
        // vacuum could not remove.
        for after in partition_states(conn).await? {
            if self.tables.contains(&after.name) {
                pace.vacuumed(&after.name, after.dead);
            }
        }
        Ok(Vacuum::Vacuumed {
            dead_rows: self.dead_rows,
        })
    }

    /// The partitions to analyze as well in one statement, the rest in
    /// another; the small workers and claims tables go with the first
    /// when there is one. TRUNCATE false: giving the empty pages at a busy
    /// partition's end back to the system needs its exclusive lock, which
    /// every claim then waits for, and the next jobs need the pages again
    /// at once.
    fn statements(&self) -> Vec<String> {
        let (mut with_analyze, mut without): (Vec<&str>, Vec<&str>) = self
            .tables
            .iter()
            .map(String::as_str)
            .partition(|t| self.analyze.iter().any(|a| a == t));
        let small = if with_analyze.is_empty() {
            &mut without
        } else {
            &mut with_analyze
        };
        small.extend(["jobq.workers", "jobq.claims"]);
        let mut statements = Vec::new();
        if !with_analyze.is_empty() {
            statements.push(format!(
                "VACUUM (SKIP_LOCKED, ANALYZE, TRUNCATE false) {}",
                with_analyze.join(", ")
            ));
        }
        if !without.is_empty() {
            statements.push(format!(
                "VACUUM (SKIP_LOCKED, TRUNCATE false) {}",
                without.join(", ")
            ));
        }
        statements
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn partition(autovacuum: bool, dead: i64, live: i64) -> PartitionState {
        PartitionState {
            name: "jobq.jobs_active".to_owned(),
            autovacuum,
            allowed: true,
            dead,
            live,
            changed: 0,
            analyzed_secs_ago: None,
        }
    }

    fn changed(changed: i64, live: i64, analyzed_secs_ago: Option<f64>) -> PartitionState {
        PartitionState {
            changed,
            analyzed_secs_ago,
            ..partition(false, 0, live)
        }
    }

    #[test]
    fn an_analyze_is_due_once_enough_rows_changed_and_at_most_once_a_minute() {
        // 50 + 10 % of 10,000 = 1,050.
        assert!(!changed(1_050, 10_000, None).analyze_due());
        assert!(changed(1_051, 10_000, None).analyze_due(), "never analyzed");
        assert!(changed(1_051, 10_000, Some(60.0)).analyze_due());
        assert!(
            !changed(1_000_000, 10_000, Some(59.9)).analyze_due(),
            "analyzed less than a minute ago"
        );
        assert!(changed(51, -1, Some(600.0)).analyze_due(), "bad statistics");
    }

    #[test]
    fn partitions_that_need_no_analyze_are_vacuumed_in_a_statement_of_their_own() {
        let due = |analyze: &[&str]| VacuumDue {
            tables: vec!["jobq.jobs_active".into(), "jobq.jobs_finished_kept".into()],
            analyze: analyze.iter().map(|t| t.to_string()).collect(),
            dead_rows: 0,
        };
        assert_eq!(
            due(&[]).statements(),
            ["VACUUM (SKIP_LOCKED, TRUNCATE false) jobq.jobs_active, \
              jobq.jobs_finished_kept, jobq.workers, jobq.claims"]
        );
        assert_eq!(
            due(&["jobq.jobs_finished_kept"]).statements(),
            [
                "VACUUM (SKIP_LOCKED, ANALYZE, TRUNCATE false) jobq.jobs_finished_kept, \
                 jobq.workers, jobq.claims",
                "VACUUM (SKIP_LOCKED, TRUNCATE false) jobq.jobs_active"
            ]
        );
        assert_eq!(
            due(&["jobq.jobs_active", "jobq.jobs_finished_kept"]).statements(),
            [
                "VACUUM (SKIP_LOCKED, ANALYZE, TRUNCATE false) jobq.jobs_active, \
              jobq.jobs_finished_kept, jobq.workers, jobq.claims"
            ]
        );
    }

    #[test]
    fn without_autovacuum_a_partition_is_due_past_the_threshold() {
        let mut pace = VacuumPace::new();
        // 1,000 + 2 % of 100,000 = 3,000.
        assert!(!pace.due(&partition(false, 3_000, 100_000)));
        assert!(pace.due(&partition(false, 3_001, 100_000)));
        assert!(!pace.due(&partition(false, 1_000, 0)));
        assert!(pace.due(&partition(false, 1_001, -1)), "bad statistics");
    }

    #[test]
    fn with_autovacuum_only_ten_times_past_the_threshold() {
        let mut pace = VacuumPace::new();
        assert!(!pace.due(&partition(true, 3_001, 100_000)));
        assert!(!pace.due(&partition(true, 30_000, 100_000)));
        assert!(pace.due(&partition(true, 30_001, 100_000)));
    }

    #[test]
    fn a_pass_that_left_dead_rows_is_repeated_once_they_doubled() {
        let mut pace = VacuumPace::new();
        assert!(pace.due(&partition(false, 50_000, 10_000)));
        // A snapshot held the rows: the vacuum removed none.
        pace.vacuumed("jobq.jobs_active", 50_000);
        assert!(!pace.due(&partition(false, 60_000, 10_000)));
        assert!(!pace.due(&partition(false, 100_000, 10_000)));
        assert!(pace.due(&partition(false, 100_001, 10_000)));
        // A pass that removed them all leaves the usual threshold.
        pace.vacuumed("jobq.jobs_active", 0);
        assert!(pace.due(&partition(false, 1_201, 10_000)));
    }

    #[test]
    fn a_pass_that_left_dead_rows_is_repeated_half_a_minute_later_at_the_latest() {
        let mut pace = VacuumPace::new();
        let start = Instant::now();
        pace.vacuumed_at("jobq.jobs_active", 1_200_000, start);
        let later = |secs| start + Duration::from_secs(secs);
        assert!(!pace.due_at(&partition(false, 1_250_000, 10_000), later(29)));
        // The snapshot may be gone by now: the retry finds out.
        assert!(pace.due_at(&partition(false, 1_250_000, 10_000), later(30)));
        // Not below the usual threshold, though.
        assert!(!pace.due_at(&partition(false, 1_000, 0), later(3_600)));
    }

    #[test]
    fn a_vacuum_by_someone_else_resets_what_the_last_pass_left() {
        let mut pace = VacuumPace::new();
        pace.vacuumed("jobq.jobs_active", 500_000);
        assert!(!pace.due(&partition(false, 900_000, 10_000)));
        // Autovacuum (or another worker) cleaned up since.
        assert!(!pace.due(&partition(false, 1_000, 10_000)));
        assert!(pace.due(&partition(false, 1_300, 10_000)));
    }

    #[test]
    fn a_vacuum_by_someone_else_held_back_as_well_keeps_the_pace() {
        let mut pace = VacuumPace::new();
        pace.vacuumed("jobq.jobs_active", 500_000);
        // Autovacuum's pass could not remove them either.
        assert!(!pace.due(&partition(false, 480_000, 10_000)));
        assert!(!pace.due(&partition(false, 1_000_000, 10_000)));
        assert!(pace.due(&partition(false, 1_000_001, 10_000)));
    }

    #[test]
    fn partitions_are_paced_each_on_its_own() {
        let mut pace = VacuumPace::new();
        pace.vacuumed("jobq.jobs_finished", 1_000_000);
        assert!(pace.due(&partition(false, 5_000, 10_000)));
    }
}
