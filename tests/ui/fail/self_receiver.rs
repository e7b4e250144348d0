use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

struct Mailer;

impl Mailer {
    #[jobq::task]
    async fn send_welcome(&self, job: Welcome) -> Result<(), jobq::TaskError> {
        let _ = job.user_id;
        Ok(())
    }
}

fn main() {}
