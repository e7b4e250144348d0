use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

#[jobq::task(then = notify_clinet)]
async fn charge(_job: Charge) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task]
async fn notify_client(_job: jobq::Finished) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
