use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(_user: i64, _job: Welcome) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
