use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Push {
    user_id: i64,
}

#[jobq::task(rate = "10/s", key_rate = "2/m", burst = 3, concurrency = 4)]
async fn push(_job: Push) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task(key_rate = "1/h")]
async fn digest(ctx: jobq::Context, _job: Push) -> Result<(), jobq::TaskError> {
    Err(ctx.snooze(std::time::Duration::from_secs(5)))
}

fn main() {
    use jobq::Task;
    let options = push::OPTIONS;
    assert_eq!(options.rate_limit(), Some(jobq::Rate::per_second(10).with_burst(3)));
    assert_eq!(options.key_rate_limit(), Some(jobq::Rate::per_minute(2).with_burst(3)));
}
