use std::time::Duration;

use jobq::{Task, TaskOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    day: String,
}

#[jobq::task(
    name = "reports.nightly",
    queue = "reports",
    max_attempts = 3,
    timeout = "5m",
    priority = 5
)]
async fn nightly(ctx: jobq::Context, job: Report) -> Result<(), jobq::TaskError> {
    let _ = (ctx.attempt(), job.day);
    Ok(())
}

// The context may also be named through an import.
use jobq::Context;

#[jobq::task(priority = -32768, retry = "250ms")]
async fn cleanup(_ctx: Context, _job: u32) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {
    assert_eq!(nightly::NAME, "reports.nightly");
    assert_eq!(
        nightly::OPTIONS,
        TaskOptions::new()
            .queue("reports")
            .max_attempts(3)
            .timeout(Duration::from_secs(300))
            .priority(5)
    );
    assert_eq!(cleanup::OPTIONS.default_priority(), i16::MIN);
    assert_eq!(cleanup::OPTIONS.retry_base(), Duration::from_millis(250));
}
