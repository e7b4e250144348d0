#[jobq::task(cron = "0 */5 * * * *", timezone = "Europe/Berlin", catch_up = "1h")]
async fn every_five_minutes(job: jobq::Tick) -> Result<(), jobq::TaskError> {
    let _ = (job.at(), job.schedule());
    Ok(())
}

#[jobq::task(cron = "30 3 * * MON-FRI", queue = "reports")]
async fn weekdays(ctx: jobq::Context, _job: jobq::Tick) -> Result<(), jobq::TaskError> {
    let _ = ctx;
    Ok(())
}

fn main() {
    use jobq::Task;
    let options = every_five_minutes::OPTIONS;
    assert_eq!(options.cron_expression(), Some("0 */5 * * * *"));
    assert_eq!(options.cron_timezone(), "Europe/Berlin");
    assert_eq!(
        options.catch_up_window(),
        Some(std::time::Duration::from_secs(3600))
    );
    assert_eq!(weekdays::OPTIONS.cron_timezone(), "UTC");
}
