//! Claim lanes: how many claims may walk the claim index at once,
//! fleet-wide.
//!
//! Claims that run at the same time all start at the head of the same
//! task's range and step over each other: a `SKIP LOCKED` walk passes every
//! row another claim in flight has locked, and it locks (and keeps locked
//! until it commits) rows that another claim took and committed after its
//! snapshot, which then delays those jobs' outcomes. The work grows with
//! the square of the claims in flight: 32 worker processes on two cores
//! drained at 0.23 of one process's rate, the server spending 78 µs per
//! job against 20. Claims one after the other skip nothing and never find a
//! row claimed after their snapshot.
//!
//! So a claim first takes a lane, one of `n` transaction-scoped advisory
//! locks: any free one, else it waits for its own (the worker id modulo
//! `n`). The lock is taken by a statement of its own before the claim's,
//! in one transaction: the claim's snapshot is then taken after the lane
//! is held, when every claim that held it before has committed. That is
//! three round trips where a claim alone is one, so a worker takes a lane
//! only while the fleet has more workers than lanes (each worker runs one
//! claim at a time): a small fleet never pays for them.
//!
//! Transaction-scoped, so a transaction pooler (PgBouncer) keeps the lock
//! and the claim on one server connection, and a lost client holds a lane
//! no longer than its transaction lives: the lane's statement limits how
//! long the transaction may sit idle (see [`IDLE_LIMIT_MS`]). A lane
//! waited for longer than the connection's `lock_timeout` fails the
//! claim, which the worker runs again later.
//!
//! A claim whose reply is lost may now have rolled back instead of
//! committed: the worker's hand-back by the claim's key (see
//! [`crate::release_claim`]) then finds nothing to hand back, and the
//! jobs are pending as they were.

use std::num::NonZeroU16;

use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, SimpleAsyncConnection};

/// How many claims may walk the claim index at once across every worker of
/// the database (see the [module](self) notes). Every worker of a fleet
/// should use the same number; workers that disagree only make the bound
/// looser.
///
/// ```
/// use jobq_diesel::ClaimLanes;
/// assert_eq!(ClaimLanes::new(2).map(ClaimLanes::get), Some(2));
/// assert_eq!(ClaimLanes::new(0), None);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClaimLanes(NonZeroU16);

impl ClaimLanes {
    /// `n` lanes; `None` for zero.
    pub fn new(n: u16) -> Option<Self> {
        NonZeroU16::new(n).map(Self)
    }

    /// The number of lanes.
    pub fn get(self) -> u16 {
        self.0.get()
    }
}

/// First of the two keys of the lanes' advisory locks (the second is the
/// lane's number, from 0). Two-key locks never collide with the one-key
/// locks of maintenance and migrations; the limited claims use another
/// first key. Public so that tests can hold a lane.
#[doc(hidden)]
pub const LANE_LOCK_CLASS: i32 = 0x6a71_6c6e; // "jqln"

/// How long the claim's transaction may sit idle before the server ends
/// the session (`idle_in_transaction_session_timeout`, for this
/// transaction only). It idles for a round trip between its statements;
/// but a client cut off after its claim and before its COMMIT reached the
/// server (a network partition, no reset) would otherwise hold its lane
/// and the claimed rows until TCP gives up on it, hours by default.
pub(crate) const IDLE_LIMIT_MS: i32 = 2_000;

/// `$1` the lock class, `$2` the number of lanes, `$3` the worker's id,
/// `$4` [`IDLE_LIMIT_MS`]. The first free lane is taken by the `LIMIT 1`
/// scan, which stops trying at the first success; if none is free, the
/// worker's own lane is waited for. The lane taken by a successful try is
/// taken a second time by the outer call (advisory locks stack; both go at
/// commit). Public so that tests can run a lane's transaction by hand.
#[doc(hidden)]
pub const CLAIM_LANE_SQL: &str = "SELECT \
        set_config('idle_in_transaction_session_timeout', $4::text, true), \
        pg_advisory_xact_lock($1, coalesce( \
            (SELECT l FROM generate_series(0, $2 - 1) AS l \
             WHERE pg_try_advisory_xact_lock($1, l) LIMIT 1), \
            ($3 % $2)::int))";

/// Begins a transaction and takes one of `lanes` for `worker_id`, in one
/// simple query; the claim follows, then [`leave`]. Three round trips, one
/// after the other: pipelined, the statements would not reliably reach the
/// server in order (one not yet prepared on the connection waits for its
/// parse while the next goes out).
pub(crate) async fn enter(
    conn: &mut AsyncPgConnection,
    lanes: ClaimLanes,
    worker_id: i64,
) -> QueryResult<()> {
    // Literals from numbers only.
    let begin = format!(
        "BEGIN; {}",
        CLAIM_LANE_SQL
            .replace("$1", &LANE_LOCK_CLASS.to_string())
            .replace("$2", &lanes.get().to_string())
            .replace("$3", &worker_id.to_string())
            .replace("$4", &format!("'{IDLE_LIMIT_MS}'"))
    );
    let entered = conn.batch_execute(&begin).await;
    if entered.is_err() {
        rollback(conn).await;
    }
    entered
}

/// Ends the lane's transaction: commits what the claim did, or rolls back
/// after its failure.
pub(crate) async fn leave<T>(
    conn: &mut AsyncPgConnection,
    claimed: QueryResult<T>,
) -> QueryResult<T> {
    let left = match claimed {
        Ok(claimed) => conn.batch_execute("COMMIT").await.map(|()| claimed),
        Err(e) => Err(e),
    };
    if left.is_err() {
        rollback(conn).await;
    }
    left
}

/// Whatever failed, the connection must not stay in the transaction (nor
/// hold the lane). On a broken connection this fails too, and the
/// connection goes anyway.
async fn rollback(conn: &mut AsyncPgConnection) {
    let _ = conn.batch_execute("ROLLBACK").await;
}
