use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task]
async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
    let not_send = std::rc::Rc::new(job.user_id);
    std::future::ready(()).await;
    let _ = not_send;
    Ok(())
}

fn main() {}
