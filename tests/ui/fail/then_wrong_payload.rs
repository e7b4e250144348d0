use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

#[jobq::task(then = refund)]
async fn charge(_job: Charge) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task]
async fn refund(_job: Charge) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
