use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

// The application's own `State`, not jobq's.
#[derive(Clone)]
struct State<T>(T);

#[jobq::task]
async fn send_welcome(State(_n): State<u32>, _job: Welcome) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
