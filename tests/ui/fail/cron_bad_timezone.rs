#[jobq::task(cron = "0 0 * * *", timezone = "Europe/Atlantis", catch_up = "1 hour")]
async fn nightly(_job: jobq::Tick) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task(timezone = "UTC")]
async fn not_periodic(_job: jobq::Tick) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
