use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Report {
    day: u32,
}

#[jobq::task(cron = "0 0 * * *")]
async fn nightly(_job: Report) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
