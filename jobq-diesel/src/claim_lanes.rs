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
//! So each claim first takes a lane, one of `n` transaction-scoped advisory
//! locks: any free one, else it waits for its own (the worker id modulo
//! `n`). While no more than `n` claims run at once nobody waits, so a small
//! fleet pays only the lock (and the transaction around it). The lock is
//! taken by a statement of its own before the claim's, in one transaction:
//! the claim's snapshot is then taken after the lane is held, when every
//! claim that held it before has committed. The four statements (begin,
//! lane, claim, commit) go out together on one round trip.
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

use diesel::sql_types::{BigInt, Integer};
use std::future::Future;

use diesel::QueryResult;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::prepared::prepared;

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
/// transaction only). The four statements arrive together, so it never
/// idles in the normal course; but a client cut off after its claim and
/// before its COMMIT reached the server (a network partition, no reset)
/// would otherwise hold its lane and the claimed rows until TCP gives up
/// on it, hours by default.
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

/// Runs `statement` (one claim) in a transaction of its own, after taking
/// one of `lanes` for `worker_id`.
pub(crate) async fn in_lane<'c, T, F, Fut>(
    conn: &'c AsyncPgConnection,
    lanes: ClaimLanes,
    worker_id: i64,
    statement: F,
) -> QueryResult<T>
where
    F: FnOnce(&mut &'c AsyncPgConnection) -> Fut,
    Fut: Future<Output = QueryResult<T>>,
{
    let lane = prepared(
        diesel::sql_query(CLAIM_LANE_SQL)
            .bind::<Integer, _>(LANE_LOCK_CLASS)
            .bind::<Integer, _>(i32::from(lanes.get()))
            .bind::<BigInt, _>(worker_id)
            .bind::<Integer, _>(IDLE_LIMIT_MS),
    );
    // Polled together, the four go out before the first answer is back;
    // the server runs them in order.
    let (begun, laned, done, committed) = futures_util::join!(
        diesel::sql_query("BEGIN").execute(&mut &*conn),
        lane.execute(&mut &*conn),
        statement(&mut &*conn),
        diesel::sql_query("COMMIT").execute(&mut &*conn),
    );
    // The first failure is the cause: after it the transaction is aborted,
    // the later statements fail because of it and COMMIT rolls back.
    begun?;
    laned?;
    let done = done?;
    committed?;
    Ok(done)
}
