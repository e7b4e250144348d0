use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(
    _ctx: jobq::Context,
    _again: jobq::Context,
    _job: Welcome,
) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
