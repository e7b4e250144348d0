use jobq::{Task, TaskOptions};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

/// Greets a new user.
#[jobq::task(concurrency = 4, retry = "30s")]
async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
    let _ = job.user_id;
    Ok(())
}

// Only the options that were given are set; the rest stay with the runtime.
const OPTIONS: TaskOptions = TaskOptions::new()
    .concurrency(4)
    .retry(std::time::Duration::from_secs(30));

fn main() {
    assert_eq!(send_welcome::NAME, "send_welcome");
    assert_eq!(send_welcome::OPTIONS, OPTIONS);
    let _: Option<<send_welcome as Task>::Payload> = None::<Welcome>;
}
