use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

// Each attempt gets a clone of the state: it must be `Clone`.
struct Mailer;

#[jobq::task]
async fn send_welcome(
    jobq::State(_mailer): jobq::State<Mailer>,
    _job: Welcome,
) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
