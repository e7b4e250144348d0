use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
    if job.user_id < 0 {
        return Err(jobq::TaskError::msg("negative id"));
    }
    Ok(())
}

// A task fn named like the generated locals still works.
#[jobq::task]
async fn job(job: Welcome) -> Result<(), jobq::TaskError> {
    send_welcome(job).await
}

fn main() {
    // The attribute keeps the fn a plain fn: tests can call it directly.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    assert!(runtime
        .block_on(send_welcome(Welcome { user_id: 7 }))
        .is_ok());
    assert!(runtime.block_on(job(Welcome { user_id: -1 })).is_err());
}
