use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[derive(Clone)]
struct Mailer;

use jobq::State;

#[jobq::task]
async fn send_welcome(_job: Welcome, State(_mailer): State<Mailer>) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
