use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task(global_concurrency = 0)]
async fn send_welcome(_job: Welcome) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
