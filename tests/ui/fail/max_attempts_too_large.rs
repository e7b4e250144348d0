use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task(max_attempts = 2147483648)]
async fn send_welcome(_job: Welcome) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
