//! `jobq limits`: the rate limits and downstream blocks the database
//! knows of, and lifting a block early.

use serde::Serialize;

use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output::{self, Table};

/// Said with every listing: the limits themselves are not in the database.
const LIMITS_NOTE: &str =
    "rates (rate, key_rate, burst) are configured in the worker binaries and \
     not stored in the database; shown here is what it holds: blocks and rate buckets";

#[derive(Serialize)]
struct BlockJson<'a> {
    task: &'a str,
    key: Option<&'a str>,
    until: chrono::DateTime<chrono::Utc>,
    remaining_ms: u128,
}

#[derive(Serialize)]
struct BucketJson<'a> {
    task: &'a str,
    key: Option<&'a str>,
    full_at: chrono::DateTime<chrono::Utc>,
    full_in_ms: u128,
}

#[derive(Serialize)]
struct ListJson<'a> {
    blocks: Vec<BlockJson<'a>>,
    rate_buckets: Vec<BucketJson<'a>>,
    note: &'static str,
}

fn key_cell(key: Option<&str>) -> String {
    key.map_or_else(|| "(whole task)".to_owned(), |k| output::cell(k, 40))
}

/// Lists the live blocks and the rate buckets that are not full.
pub async fn list(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let blocks = jobq::blocks(&mut conn).await?;
    let buckets = jobq::rate_buckets(&mut conn).await?;
    if json {
        output::json(&ListJson {
            blocks: blocks
                .iter()
                .map(|b| BlockJson {
                    task: &b.task,
                    key: b.key.as_deref(),
                    until: b.until,
                    remaining_ms: b.remaining.as_millis(),
                })
                .collect(),
            rate_buckets: buckets
                .iter()
                .map(|b| BucketJson {
                    task: &b.task,
                    key: b.key.as_deref(),
                    full_at: b.full_at,
                    full_in_ms: b.full_in.as_millis(),
                })
                .collect(),
            note: LIMITS_NOTE,
        });
        return Ok(());
    }
    let mut text = String::new();
    if blocks.is_empty() {
        text.push_str("no task or key is blocked\n");
    } else {
        let mut table = Table::new(vec!["BLOCKED TASK", "KEY", "UNTIL (UTC)", "LEFT"]);
        for b in &blocks {
            table.row([
                output::cell(&b.task, 60),
                key_cell(b.key.as_deref()),
                output::time(&b.until),
                output::age(b.remaining),
            ]);
        }
        text.push_str(&table.render());
    }
    text.push('\n');
    if buckets.is_empty() {
        text.push_str("every rate bucket is full (no rate-limited task started jobs lately)\n");
    } else {
        let mut table = Table::new(vec![
            "RATE BUCKET OF TASK",
            "KEY",
            "FULL AGAIN AT (UTC)",
            "IN",
        ]);
        for b in &buckets {
            table.row([
                output::cell(&b.task, 60),
                key_cell(b.key.as_deref()),
                output::time(&b.full_at),
                output::age(b.full_in),
            ]);
        }
        text.push_str(&table.render());
    }
    text.push_str(&format!("\nnote: {LIMITS_NOTE}\n"));
    output::print(&text);
    Ok(())
}

/// What `unblock` did, for `--json`.
#[derive(Serialize)]
struct Unblocked<'a> {
    task: &'a str,
    key: Option<&'a str>,
    /// Whether there was a live block to lift.
    lifted: bool,
    /// Jobs the block held back that are pending again.
    jobs_back: u64,
}

/// Lifts the block of `task` (or of its `key`) now.
pub async fn unblock(
    url: Option<&str>,
    json: bool,
    task: &str,
    key: Option<&str>,
) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let back = jobq::unblock(&mut conn, task, key).await?;
    if json {
        output::json(&Unblocked {
            task,
            key,
            lifted: back.is_some(),
            jobs_back: back.unwrap_or(0),
        });
        return Ok(());
    }
    let what = match key {
        Some(key) => format!("task {}, key {}", output::inert(task), output::inert(key)),
        None => format!("task {}", output::inert(task)),
    };
    let text = match back {
        Some(n) => format!("lifted the block of {what}: {n} jobs are pending again\n"),
        None => format!("{what} was not blocked\n"),
    };
    output::print(&text);
    Ok(())
}
