#[jobq::task(cron = "0 */5 * * * * * *")]
async fn every_five_minutes(_job: jobq::Tick) -> Result<(), jobq::TaskError> {
    Ok(())
}

#[jobq::task(cron = "61 * * * *")]
async fn bad_minute(_job: jobq::Tick) -> Result<(), jobq::TaskError> {
    Ok(())
}

fn main() {}
