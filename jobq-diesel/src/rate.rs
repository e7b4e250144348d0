//! Rate limits: the token buckets a limited claim spends (see
//! [`crate::claim_limited`]), and when the next token of a task falls due,
//! so that a worker whose claim was cut short by its rate sleeps until
//! then instead of polling.

use std::time::Duration;

use diesel::sql_types::{Double, Nullable, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// A rate limit as the claim binds it: one start per `interval_us`
/// microseconds on average, and up to `burst` starts beyond that at once
/// after a quiet spell.
///
/// Enforced as a GCRA token bucket ("generic cell rate algorithm"): one
/// timestamp per bucket, `tat`, in `jobq.rate_tokens`. A claim may take
/// `floor((tau - max(0, tat - now)) / interval) + 1` jobs (`tau` =
/// `burst * interval`) and moves `tat` to `max(tat, now) + n * interval`
/// for the `n` it took. In any window of `k` intervals, at most
/// `k + burst` jobs start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Microseconds between starts at the steady rate.
    pub interval_us: f64,
    /// Starts allowed at once beyond the steady rate.
    pub burst: u32,
}

impl RateLimit {
    /// The burst tolerance `tau`, in microseconds.
    pub fn tau_us(&self) -> f64 {
        f64::from(self.burst) * self.interval_us
    }
}

/// When the next start of `$1` may happen, in microseconds from now: the
/// task's bucket (interval `$2`, tau `$3`) when it is empty, and the
/// earliest key bucket (interval `$4`, tau `$5`) that is empty while its
/// key has jobs waiting. NULL or not positive: a token is there now.
///
/// The keys looked at are those with an empty bucket, i.e. those that
/// started a job within the last interval: bounded by the rate, not by the
/// backlog.
const NEXT_TOKEN_SQL: &str = "SELECT greatest( \
        (SELECT extract(epoch FROM t.tat - now()) * 1000000 - $3::float8 \
         FROM jobq.rate_tokens t WHERE $2::float8 IS NOT NULL AND t.task = $1 AND t.key = ''), \
        (SELECT min(extract(epoch FROM r.tat - now()) * 1000000) - $5::float8 \
         FROM jobq.rate_tokens r \
         WHERE $4::float8 IS NOT NULL AND r.task = $1 AND r.key <> '' \
           AND r.tat > now() + $5::float8 * interval '1 microsecond' \
           AND EXISTS (SELECT 1 FROM jobq.jobs k \
               WHERE k.task = $1 AND k.key = r.key AND k.state = 'pending')) \
    )::float8 AS wait_us";

#[derive(QueryableByName)]
struct Wait {
    #[diesel(sql_type = Nullable<Double>)]
    wait_us: Option<f64>,
}

/// How long until the task's rates let another job of `task` start, if
/// they hold it back now (`None`: a token is there, or the task has no
/// rate). A worker asks after a claim of a rate-limited task came back
/// short, and wakes then.
pub async fn next_token(
    conn: &mut AsyncPgConnection,
    task: &str,
    rate: Option<RateLimit>,
    key_rate: Option<RateLimit>,
) -> diesel::QueryResult<Option<Duration>> {
    if rate.is_none() && key_rate.is_none() {
        return Ok(None);
    }
    let wait: Wait = diesel::sql_query(NEXT_TOKEN_SQL)
        .bind::<Text, _>(task)
        .bind::<Nullable<Double>, _>(rate.map(|r| r.interval_us))
        .bind::<Nullable<Double>, _>(rate.map(|r| r.tau_us()))
        .bind::<Nullable<Double>, _>(key_rate.map(|r| r.interval_us))
        .bind::<Nullable<Double>, _>(key_rate.map(|r| r.tau_us()))
        .get_result(conn)
        .await?;
    Ok(wait
        .wait_us
        .filter(|us| us.is_finite() && *us > 0.0)
        // Rounded up: waking a microsecond early finds no token.
        .map(|us| Duration::from_micros(us.ceil() as u64)))
}
