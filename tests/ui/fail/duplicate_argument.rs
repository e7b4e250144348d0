use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task(retry = "1s", queue = "mail", retry = "2s")]
async fn send_welcome(_job: Welcome) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
