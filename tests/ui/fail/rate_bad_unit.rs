use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Push {
    user_id: i64,
}

#[jobq::task(rate = "10/d")]
async fn push(_job: Push) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task(key_rate = "0/s")]
async fn push_per_user(_job: Push) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
