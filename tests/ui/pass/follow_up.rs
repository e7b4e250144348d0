use jobq::Task;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Charge {
    cents: u64,
}

mod callbacks {
    #[jobq::task(queue = "callbacks", priority = 2, max_attempts = 5, then = super::audit)]
    pub async fn notify_client(_job: jobq::Finished) -> Result<(), jobq::TaskError> {
        Ok(())
    }
}

#[jobq::task(then = callbacks::notify_client)]
async fn charge(_job: Charge) -> Result<u64, jobq::TaskError> {
    Ok(1)
}

#[jobq::task(name = "audit.log")]
async fn audit(_job: jobq::Finished) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {
    // The follow-up and its chain are known at compile time.
    const FOLLOW_UP: &jobq::FollowUp = match charge::OPTIONS.follow_up() {
        Some(f) => f,
        None => panic!("no follow-up"),
    };
    assert_eq!(FOLLOW_UP.task(), "notify_client");
    assert_eq!(FOLLOW_UP.queue(), "callbacks");
    assert_eq!(FOLLOW_UP.priority(), 2);
    assert_eq!(FOLLOW_UP.max_attempts(), 5);
    assert_eq!(FOLLOW_UP.then().map(|f| f.task()), Some("audit.log"));
    assert!(audit::OPTIONS.follow_up().is_none());
}
