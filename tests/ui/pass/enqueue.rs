use diesel_async::AsyncPgConnection;
use jobq::{EnqueueOptions, JobId};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Welcome {
    user_id: i64,
}

#[jobq::task(concurrency = 4, retry = "30s")]
async fn send_welcome(job: Welcome) -> Result<(), jobq::TaskError> {
    let _ = job.user_id;
    Ok(())
}

// Type-checked only: enqueueing needs a database.
#[allow(dead_code)]
async fn signup(conn: &mut AsyncPgConnection) -> Result<Vec<JobId>, jobq::Error> {
    let first: JobId = send_welcome::enqueue(conn, &Welcome { user_id: 7 }).await?;
    let second = send_welcome::enqueue_with(
        conn,
        &Welcome { user_id: 8 },
        EnqueueOptions::new().priority(3),
    )
    .await?;
    let mut ids = send_welcome::enqueue_many(conn, &[Welcome { user_id: 9 }]).await?;
    let more = send_welcome::enqueue_many_with(
        conn,
        &[Welcome { user_id: 10 }],
        EnqueueOptions::new().queue("other"),
    )
    .await?;
    ids.extend([first, second]);
    ids.extend(more);
    Ok(ids)
}

// The enqueue futures are `Send`, so a multi-threaded web server can hold them.
#[allow(dead_code)]
fn assert_send(conn: &mut AsyncPgConnection) -> impl std::future::Future + Send + '_ {
    signup(conn)
}

fn main() {}
