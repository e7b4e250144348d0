//! The latency floor: a minimal LISTEN worker through the same driver. One
//! connection LISTENs (jobq's own channel, notified by the insert trigger),
//! another claims with the minimal loop's statement ([`limit::claim_batch`]) the moment
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
use crate::limit::{self, LIMIT_TASK};

/// The id an insert returns.
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
            let claimed = limit::claim_batch(&mut claimer, LIMIT_TASK).await?;
            let now = Instant::now();
            for job in claimed {
                claimed_at.insert(job.id, now);
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
