use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

#[jobq::task(then = "notify_client")]
async fn charge(_job: Charge) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
