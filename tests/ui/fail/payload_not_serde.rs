struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
    let _ = job.user_id;
    Ok(())
}

fn main() {}
