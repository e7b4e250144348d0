//! Claiming jobs of a task with a fleet-wide limit (`global_concurrency`,
//! `key_concurrency`, `rate`, `key_rate`): exact under any number of
//! concurrent claimers.
//!
//! Rates are token buckets in `jobq.rate_tokens` (see
//! [`crate::RateLimit`]), read and spent by the claim statement itself,
//! under the same lock, so the tokens a claim takes are the ones it saw.
//!
//! The limits are checked against the rows themselves: the attempts
//! running are the task's rows in state `running` that a limited claim
//! took (`limited`, counted through `jobs_limited_running_idx`). Nothing
//! is counted up or down elsewhere, so an outcome, a hand-back or the
//! rescue of a dead worker's job frees its slot by moving the row out of
//! `running`, in the same statement; no slot can leak.
//!
//! Exactness needs the claims of one task to be serialized: two claimers
//! that each see one free slot would otherwise both take it. Each limited
//! claim therefore first takes a transaction-scoped advisory lock keyed by
//! the task, in a statement of its own, and only then runs the claim: in
//! READ COMMITTED the claim's snapshot is taken after the lock was
//! granted, so it sees every row the previous holder claimed (PostgreSQL
//! makes a commit visible before it releases the transaction's locks).
//! Claims of unlimited tasks take no lock and go through
//! [`crate::claim()`], unchanged.

use std::sync::OnceLock;

use diesel::sql_types::{BigInt, Double, Integer, Nullable, Text};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::claim::{with_due, ClaimedJob};
use crate::prepared::prepared;
use crate::rate::RateLimit;

/// A claim of one task with fleet-wide limits.
#[derive(Debug, Clone, Copy)]
pub struct LimitedClaimRequest<'a> {
    /// The claiming worker's id.
    pub worker_id: i64,
    /// Queues the worker serves.
    pub queues: &'a [String],
    /// The task.
    pub task: &'a str,
    /// This worker's free slots of the task.
    pub slots: i32,
    /// Most attempts of the task running at once, fleet-wide.
    pub global_concurrency: Option<i32>,
    /// Most attempts running at once per partition key, fleet-wide.
    pub key_concurrency: Option<i32>,
    /// The claim's key among the worker's claims (see
    /// [`crate::ClaimRequest::claim_key`]).
    pub claim_key: i64,
    /// Also return each job's due time and limit of attempts (see
    /// [`crate::ClaimRequest::due`]).
    pub due: bool,
    /// Most starts of the task per unit of time, fleet-wide.
    pub rate: Option<RateLimit>,
    /// Most starts per partition key per unit of time, fleet-wide.
    pub key_rate: Option<RateLimit>,
}

/// First of the two keys of the advisory lock that serializes the limited
/// claims of one task (the second is the task name's hash). Two-key
/// advisory locks never collide with the one-key locks jobq's maintenance
/// and migrations take; a hash collision between two task names only
/// makes their claims wait for each other.
const LIMIT_LOCK_CLASS: i32 = 0x6a71_6c6d; // "jqlm"

const LOCK_SQL: &str = "SELECT pg_advisory_xact_lock($1, hashtext($2))";

/// The tail shared by both limited claims: the claim's row and the update
/// of the picked jobs (`$6` worker, `$7` claim key, `$1` queues).
macro_rules! limited_tail {
    () => {
        "), claim AS ( \
             INSERT INTO jobq.claims (worker_id, claim_key, jobs) \
             SELECT $6, $7, range_agg(int8range(id, id, '[]')) FROM picked HAVING count(*) > 0 \
             RETURNING id \
         ) \
         UPDATE jobq.jobs_active SET state = 'running', attempt = attempt + 1, \
             started_at = now(), worker_id = $6, limited = true \
         WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
         RETURNING id, NULL::text AS task, \
             CASE WHEN cardinality($1::text[]) > 1 THEN queue END AS queue, \
             payload::text AS payload, attempt, cancel_requested, \
             (SELECT id FROM claim) AS claim, handbacks, key, headers::text AS headers, \
             priority, run_at"
    };
}

/// The conditions every picked job meets: due, in a served queue that is
/// not paused, and claimed by a live worker (as in [`crate::CLAIM_SQL`]).
macro_rules! claimable {
    () => {
        "j.state = 'pending' AND j.task = $2 AND j.run_at <= now() \
         AND j.queue = ANY(ARRAY(SELECT q FROM unnest($1::text[]) AS q \
             WHERE NOT EXISTS (SELECT 1 FROM jobq.paused_queues p WHERE p.queue = q))) \
         AND NOT EXISTS (SELECT 1 FROM jobq.blocks b \
             WHERE b.task = $2 AND b.key = '' AND b.until > now()) \
         AND (j.key IS NULL OR j.key <> ALL(ARRAY(SELECT b.key FROM jobq.blocks b \
             WHERE b.task = $2 AND b.until > now()))) \
         AND EXISTS ( \
             SELECT 1 FROM jobq.workers me WHERE me.id = $6 \
               AND me.heartbeat_at >= now() - me.lease_ms * interval '1 millisecond')"
    };
}

/// The jobs a bucket of `jobq.rate_tokens` lets the claim start now (see
/// [`RateLimit`]): `$key` names the bucket ('' for the task's), `$interval`
/// and `$tau` are the statement's parameters for it. NULL without a rate
/// (which `least` ignores). The small epsilon keeps a claim that runs
/// exactly when a token falls due from losing it to rounding.
macro_rules! tokens {
    ($key:literal, $interval:literal, $tau:literal) => {
        concat!(
            "CASE WHEN ",
            $interval,
            "::float8 IS NULL THEN NULL ELSE greatest(0, floor(( \
                 ",
            $tau,
            "::float8 - coalesce((SELECT greatest(0, \
                     extract(epoch FROM r.tat - now()) * 1000000) \
                 FROM jobq.rate_tokens r WHERE r.task = $2 AND r.key = ",
            $key,
            "), 0) \
             ) / ",
            $interval,
            "::float8 + 0.000001) + 1)::int END"
        )
    };
}

/// Moves the buckets on for the jobs picked (see [`RateLimit`]): `$key` is
/// the bucket of each picked row ('' for the task's), grouped. Ends
/// without its closing parenthesis, which [`limited_tail`] opens with.
macro_rules! spend {
    ($name:literal, $key:literal, $interval:literal) => {
        concat!(
            "), ",
            $name,
            " AS ( \
                 INSERT INTO jobq.rate_tokens (task, key, tat) \
                 SELECT $2, ",
            $key,
            ", now() + count(*) * ",
            $interval,
            "::float8 \
                     * interval '1 microsecond' \
                 FROM picked p WHERE ",
            $interval,
            "::float8 IS NOT NULL AND ",
            $key,
            " IS NOT NULL \
                 GROUP BY 1, 2 \
                 ON CONFLICT (task, key) DO UPDATE \
                     SET tat = greatest(jobq.rate_tokens.tat, now()) + (excluded.tat - now()) "
        )
    };
}

/// The claim of a task without per-key limits, run after the lock. `$1`
/// queues, `$2` task, `$3` free slots, `$4` global limit or NULL, `$6`
/// worker, `$7` claim key (`$5` is unused), `$8`/`$9` the task's rate
/// interval and burst tolerance in microseconds, or NULL. In claim order,
/// at most `$4` minus the task's limited running rows, and at most the
/// tokens of the task's bucket, which the same statement spends.
#[doc(hidden)]
pub const GLOBAL_CLAIM_SQL: &str = concat!(
    "WITH running AS ( \
         SELECT count(*)::int AS n FROM jobq.jobs \
         WHERE task = $2 AND state = 'running' AND limited \
     ), picked AS ( \
         SELECT j.id FROM jobq.jobs j \
         WHERE $5::int IS NULL AND ",
    claimable!(),
    " ORDER BY j.priority DESC, j.run_at, j.id \
         LIMIT greatest(0, least($3, \
             CASE WHEN $4::int IS NULL THEN NULL ELSE $4 - (SELECT n FROM running) END, ",
    tokens!("''", "$8", "$9"),
    ")) FOR UPDATE OF j SKIP LOCKED ",
    spend!("spent", "''::text", "$8"),
    limited_tail!()
);

/// A key's share of a keyed claim: how many of its first pending jobs
/// may start now, given its running attempts (`$5` minus `$running`, the
/// SQL expression that counts them) and its rate bucket's tokens; never
/// more than the claim's slots. `$key` is the key's SQL expression.
macro_rules! allowed {
    ($key:literal, $running:literal) => {
        concat!(
            "greatest(0, least($3, \
                 CASE WHEN $5::int IS NULL THEN NULL \
                 ELSE $5 - ",
            $running,
            " END, ",
            tokens!($key, "$10", "$11"),
            "))"
        )
    };
}

/// One step of the key walk: the first pending job, in the key's order, of
/// the next key after `$prev` (one descent of `jobs_key_pending_idx`).
macro_rules! next_key {
    ($prev:literal) => {
        concat!(
            "SELECT k.key, k.id FROM jobq.jobs k \
             WHERE k.task = $2 AND k.state = 'pending' AND k.key IS NOT NULL AND k.key > ",
            $prev,
            " ORDER BY k.key, k.priority DESC, k.id LIMIT 1"
        )
    };
}

/// The most keys one keyed claim's walk visits (see [`KEYED_CLAIM_SQL`]).
macro_rules! walk_budget {
    () => {
        "256"
    };
}

/// The claim of a task with a per-key limit or rate (and maybe global
/// ones), run after the lock. `$1` queues, `$2` task, `$3` free slots, `$4`
/// global limit or NULL, `$5` key limit or NULL, `$6` worker, `$7` claim
/// key, `$8`/`$9` the task's rate interval and burst tolerance in
/// microseconds, `$10`/`$11` the same per key, each NULL without that
/// rate. A key's candidates are also bounded by its bucket's tokens, and
/// blocked keys are passed over; the statement spends the tokens of the
/// task's bucket and of each key's for the jobs it picked.
///
/// Two ways to find candidates, the cheap one first:
///
/// - **Head window.** The task's first `2 × $3` pending keyed jobs in key
///   order (priority, then id; `jobs_key_order_idx`, one range scan),
///   numbered per key: a job is a candidate when its number is within its
///   key's share. The window starts at the very first pending job, so a
///   key's first job in the window is its first pending job overall: the
///   per-key order is exact without a lookup per key. When the keys near
///   the head are free this fills the claim for the price of one scan and
///   a sort of the window (measured: one claim of 1,000 jobs over 1,000
///   keys 14 ms instead of 26 ms; an unlimited claim of as many, 9 ms).
/// - **Key walk**, only when the window was full and still gave fewer than
///   `$3` candidates (keys at their limit crowd the head, or one key's
///   backlog fills it), and at most once per task every 50 ms: the
///   distinct keys with pending jobs, found by skipping through
///   `jobs_key_pending_idx` (one descent per key, which also yields the
///   key's first job), at most 256 keys, starting after the
///   key where the task's previous walk stopped (`jobq.key_walks`, written
///   by this statement under the task's lock) and wrapping around, so that
///   successive walks, by any worker, reach every key in turn. Its cost is
///   bounded whatever the backlog: walking jobs instead would pass over
///   every waiting job of every key at its limit (measured: 2.9 s for one
///   claim over 100,000 jobs of 1,000 keys), and walking every key on
///   every claim cost 8 µs a key even when all were busy.
///
/// Running attempts per key are read once per claim for the head (`busy`:
/// the task's running limited rows, grouped by key, hash-joined to the
/// window; measured: 0.3 ms for 640 running keys, where building them into
/// a JSON object and looking each key up in it took 0.6 ms), once per key
/// for the walk's at most 256 keys (one probe of
/// `jobs_limited_running_idx`), and blocked keys once (`blocked`). The
/// task's running total is counted only under a global limit (`$4`).
///
/// Within a key the order is exact either way: a job is a candidate only
/// when every pending job of its key ahead of it is one too, and running
/// attempts of the key are counted first. Candidates are then taken in
/// claim order. Jobs of the task without a key are taken when they are
/// among its first `$3` pending jobs in claim order.
#[doc(hidden)]
pub const KEYED_CLAIM_SQL: &str = concat!(
    "WITH RECURSIVE busy AS ( \
         SELECT key, count(*)::int AS n FROM jobq.jobs \
         WHERE $5::int IS NOT NULL AND task = $2 AND state = 'running' AND limited \
           AND key IS NOT NULL \
         GROUP BY key \
     ), blocked AS ( \
         SELECT ARRAY(SELECT b.key FROM jobq.blocks b \
             WHERE b.task = $2 AND b.until > now()) AS keys \
     ), head AS ( \
         SELECT id, key, priority FROM jobq.jobs \
         WHERE task = $2 AND state = 'pending' AND key IS NOT NULL \
         ORDER BY priority DESC, id LIMIT 2 * $3 \
     ), head_candidates AS ( \
         SELECT ranked.id FROM ( \
             SELECT id, key, row_number() OVER (PARTITION BY key ORDER BY priority DESC, id) AS n \
             FROM head) ranked \
         LEFT JOIN busy ON busy.key = ranked.key \
         WHERE ranked.key <> ALL((SELECT keys FROM blocked)::text[]) AND ranked.n <= ",
    allowed!("ranked.key", "coalesce(busy.n, 0)"),
    " ), walk AS ( \
         SELECT (SELECT count(*) FROM head) = 2 * $3 \
             AND (SELECT count(*) FROM head_candidates) < $3 \
             AND coalesce((SELECT w.walked_at < now() - interval '50 milliseconds' \
                 FROM jobq.key_walks w WHERE w.task = $2), true) AS needed, \
             coalesce((SELECT w.after_key FROM jobq.key_walks w WHERE w.task = $2), '') AS start \
     ), after AS ( \
         (SELECT key, id, 1 AS n FROM jobq.jobs \
          WHERE task = $2 AND state = 'pending' AND key IS NOT NULL \
            AND key > (SELECT start FROM walk) \
          ORDER BY key, priority DESC, id LIMIT 1) \
         UNION ALL \
         SELECT s.key, s.id, after.n + 1 FROM after CROSS JOIN LATERAL (",
    next_key!("after.key"),
    ") s WHERE after.n < ",
    walk_budget!(),
    " ), up_to AS ( \
         (SELECT key, id, (SELECT count(*) FROM after) + 1 AS n FROM jobq.jobs \
          WHERE task = $2 AND state = 'pending' AND key IS NOT NULL \
          ORDER BY key, priority DESC, id LIMIT 1) \
         UNION ALL \
         SELECT s.key, s.id, up_to.n + 1 FROM up_to CROSS JOIN LATERAL (",
    next_key!("up_to.key"),
    ") s WHERE up_to.key <= (SELECT start FROM walk) AND up_to.n < ",
    walk_budget!(),
    " ), visited AS ( \
         SELECT key, id, n FROM after \
         UNION ALL \
         SELECT key, id, n FROM up_to \
         WHERE key <= (SELECT start FROM walk) AND n <= ",
    walk_budget!(),
    " ), walked AS ( \
         SELECT c.id FROM visited h \
         CROSS JOIN LATERAL (SELECT ",
    allowed!(
        "h.key",
        "(SELECT count(*)::int FROM jobq.jobs r \
          WHERE r.task = $2 AND r.key = h.key AND r.state = 'running' AND r.limited)"
    ),
    // OFFSET 0 keeps the share a subquery of its own, computed once per
    // key: flattened, each use of `a.n` would count the key's running
    // attempts again.
    " AS n OFFSET 0) a \
         CROSS JOIN LATERAL ( \
             SELECT h.id AS id WHERE a.n = 1 \
             UNION ALL \
             (SELECT x.id FROM jobq.jobs x \
              WHERE a.n > 1 AND x.task = $2 AND x.key = h.key AND x.state = 'pending' \
              ORDER BY x.priority DESC, x.id LIMIT a.n) \
         ) c \
         WHERE a.n >= 1 AND h.key <> ALL((SELECT keys FROM blocked)::text[]) \
     ), moved AS ( \
         INSERT INTO jobq.key_walks (task, after_key, walked_at) \
         SELECT $2, v.key, now() FROM visited v WHERE (SELECT needed FROM walk) \
         ORDER BY v.n DESC LIMIT 1 \
         ON CONFLICT (task) DO UPDATE \
             SET after_key = excluded.after_key, walked_at = excluded.walked_at \
     ), candidates AS ( \
         SELECT id FROM head_candidates \
         UNION \
         SELECT id FROM walked WHERE (SELECT needed FROM walk) \
         UNION ALL \
         SELECT f.id FROM ( \
             SELECT id, key FROM jobq.jobs WHERE task = $2 AND state = 'pending' \
             ORDER BY priority DESC, run_at, id LIMIT $3) f \
         WHERE f.key IS NULL \
     ), running AS ( \
         SELECT count(*)::int AS n FROM jobq.jobs \
         WHERE task = $2 AND state = 'running' AND limited \
     ), picked AS ( \
         SELECT j.id, j.key FROM jobq.jobs j \
         WHERE j.id = ANY(ARRAY(SELECT id FROM candidates)) \
           AND ",
    claimable!(),
    " ORDER BY j.priority DESC, j.run_at, j.id \
         LIMIT greatest(0, least($3, \
             CASE WHEN $4::int IS NULL THEN NULL ELSE $4 - (SELECT n FROM running) END, ",
    tokens!("''", "$8", "$9"),
    ")) FOR UPDATE OF j SKIP LOCKED ",
    spend!("spent", "''::text", "$8"),
    spend!("key_spent", "p.key", "$10"),
    limited_tail!()
);

/// Claims jobs of one task within its fleet-wide limits: the lock, then
/// the claim, in one short transaction (three round trips besides the
/// claim's own: BEGIN, the lock, COMMIT). The returned jobs name no task
/// (it is the request's) and name their queue when the request named
/// several, as [`crate::claim()`]'s do.
///
/// With neither limit set it claims without limit, as [`crate::claim()`]
/// does, only at a higher cost.
pub async fn claim_limited(
    conn: &mut AsyncPgConnection,
    request: &LimitedClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    if request.slots <= 0 {
        return Ok(Vec::new());
    }
    // Run again when a row moved between partitions, as `claim` does.
    crate::moved_row::rerun_if_moved!(conn, claim_limited_once(conn, request).await)
}

async fn claim_limited_once(
    conn: &mut AsyncPgConnection,
    request: &LimitedClaimRequest<'_>,
) -> diesel::QueryResult<Vec<ClaimedJob>> {
    conn.transaction::<_, diesel::result::Error, _>(async |conn| {
        prepared(
            diesel::sql_query(LOCK_SQL)
                .bind::<Integer, _>(LIMIT_LOCK_CLASS)
                .bind::<Text, _>(request.task),
        )
        .execute(conn)
        .await?;
        // READ COMMITTED: a new snapshot, taken with the lock held.
        static KEYED_DUE: OnceLock<String> = OnceLock::new();
        static GLOBAL_DUE: OnceLock<String> = OnceLock::new();
        let keyed = request.key_concurrency.is_some() || request.key_rate.is_some();
        let sql = match (keyed, request.due) {
            (true, false) => KEYED_CLAIM_SQL,
            (true, true) => with_due(KEYED_CLAIM_SQL, &KEYED_DUE),
            (false, false) => GLOBAL_CLAIM_SQL,
            (false, true) => with_due(GLOBAL_CLAIM_SQL, &GLOBAL_DUE),
        };
        let query = diesel::sql_query(sql)
            .bind::<diesel::sql_types::Array<Text>, _>(request.queues)
            .bind::<Text, _>(request.task)
            .bind::<Integer, _>(request.slots)
            .bind::<Nullable<Integer>, _>(request.global_concurrency)
            .bind::<Nullable<Integer>, _>(request.key_concurrency)
            .bind::<BigInt, _>(request.worker_id)
            .bind::<BigInt, _>(request.claim_key);
        let interval = |r: Option<RateLimit>| r.map(|r| r.interval_us);
        let tau = |r: Option<RateLimit>| r.map(|r| r.tau_us());
        if keyed {
            let query = query
                .bind::<Nullable<Double>, _>(interval(request.rate))
                .bind::<Nullable<Double>, _>(tau(request.rate))
                .bind::<Nullable<Double>, _>(interval(request.key_rate))
                .bind::<Nullable<Double>, _>(tau(request.key_rate));
            prepared(query).load(conn).await
        } else {
            let query = query
                .bind::<Nullable<Double>, _>(interval(request.rate))
                .bind::<Nullable<Double>, _>(tau(request.rate));
            prepared(query).load(conn).await
        }
    })
    .await
}
