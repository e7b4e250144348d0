use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(
    _ctx: jobq::Context,
    _job: Welcome,
    _retries: u32,
) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
