use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Push {
    user_id: i64,
}

#[jobq::task(burst = 5)]
async fn push(_job: Push) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task(rate = "5/s", burst = -2)]
async fn push_again(_job: Push) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
