use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

struct Mailer;

#[jobq::task(then = Mailer)]
async fn charge(_job: Charge) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
