//! The latency floor: a minimal LISTEN worker through the same driver. One
//! connection LISTENs (jobq's own channel, notified by the insert trigger),
//! another claims with the minimal loop's `SKIP LOCKED` statement the moment
//! a notification arrives; a third inserts one job at a time. The time from
//! the insert's commit returning to the claim's commit returning is what any
//! queue that wakes on NOTIFY and commits its claim before running a
//! handler must spend; `latency` reports jobq's figures next to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use jobq_diesel::Listener;

use crate::db;
use crate::limit::LIMIT_TASK;

#[derive(QueryableByName)]
struct Id {
    #[diesel(sql_type = BigInt)]
    id: i64,
}

/// Inserts `samples` jobs `gap` apart and returns, per job, the time from
/// its insert's commit to its claim's commit.
pub async fn measure(url: &str, samples: usize, gap: Duration) -> anyhow::Result<Vec<Duration>> {
    let mut listener = Listener::connect_url(url).await?;
    let mut claimer = db::connect(url).await?;
    let claims = tokio::spawn(async move {
        let mut claimed_at: HashMap<i64, Instant> = HashMap::with_capacity(samples);
        while claimed_at.len() < samples {
            match listener.next().await {
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(anyhow::Error::new(e)),
                None => anyhow::bail!("the LISTEN connection closed"),
            }
            let ids: Vec<Id> = diesel::sql_query(
                "WITH picked AS ( \
                     SELECT id FROM jobq.jobs \
                     WHERE state = 'pending' AND task = $1 AND run_at <= now() \
                     ORDER BY priority DESC, run_at, id \
                     LIMIT 1000 FOR UPDATE SKIP LOCKED) \
                 UPDATE jobq.jobs SET state = 'running', attempt = attempt + 1, \
                     started_at = now() \
                 WHERE id = ANY(ARRAY(SELECT id FROM picked)) \
                 RETURNING id",
            )
            .bind::<diesel::sql_types::Text, _>(LIMIT_TASK)
            .load(&mut claimer)
            .await?;
            let now = Instant::now();
            for Id { id } in ids {
                claimed_at.insert(id, now);
            }
        }
        Ok(claimed_at)
    });
    let mut producer = db::connect(url).await?;
    let mut committed = Vec::with_capacity(samples);
    for _ in 0..samples {
        let Id { id } = diesel::sql_query(
            "INSERT INTO jobq.jobs (task, payload) VALUES ($1, '{}') RETURNING id",
        )
        .bind::<diesel::sql_types::Text, _>(LIMIT_TASK)
        .get_result(&mut producer)
        .await?;
        committed.push((id, Instant::now()));
        tokio::time::sleep(gap).await;
    }
    let claimed_at = tokio::time::timeout(Duration::from_secs(10), claims)
        .await
        .map_err(|_| anyhow::anyhow!("the minimal LISTEN worker missed jobs"))???;
    committed
        .into_iter()
        .map(|(id, at)| {
            claimed_at
                .get(&id)
                .map(|claimed| claimed.saturating_duration_since(at))
                .ok_or_else(|| anyhow::anyhow!("job {id} was never claimed"))
        })
        .collect()
}
