//! Pausing and resuming queues across the whole fleet.

use diesel_async::AsyncPgConnection;

use crate::Error;

fn check_queue(queue: &str) -> Result<(), Error> {
    if queue.is_empty() {
        return Err(Error::invalid("queue", "the queue name is empty"));
    }
    if queue.contains('\0') {
        return Err(Error::invalid(
            "queue",
            "the queue name contains the character U+0000, which PostgreSQL text cannot hold",
        ));
    }
    if queue.chars().count() > 200 {
        return Err(Error::invalid(
            "queue",
            "the queue name is longer than 200 characters",
        ));
    }
    Ok(())
}

/// Pauses `queue` for every worker: from the moment this commits, no claim
/// takes a job of the queue; attempts already running finish as usual, and
/// jobs can still be enqueued (they wait). The pause is a row in the
/// database, so it holds across worker restarts until [`resume_queue`].
/// Returns whether the queue was running until now.
///
/// Runs on `conn`, so inside a transaction it takes effect at commit.
///
/// ```no_run
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection) -> Result<(), jobq::Error> {
/// jobq::pause_queue(conn, "reports").await?;
/// assert!(jobq::paused_queues(conn).await?.contains(&"reports".to_owned()));
/// jobq::resume_queue(conn, "reports").await?;
/// # Ok(()) }
/// ```
pub async fn pause_queue(conn: &mut AsyncPgConnection, queue: &str) -> Result<bool, Error> {
    check_queue(queue)?;
    jobq_diesel::pause_queue(conn, queue)
        .await
        .map_err(Error::db(format!("pausing queue {queue:?}")))
}

/// Resumes a paused `queue`: its workers are woken at commit (a
/// notification on the channel enqueues use) and claim its jobs at once.
/// Returns whether the queue was paused.
pub async fn resume_queue(conn: &mut AsyncPgConnection, queue: &str) -> Result<bool, Error> {
    check_queue(queue)?;
    jobq_diesel::resume_queue(conn, queue)
        .await
        .map_err(Error::db(format!("resuming queue {queue:?}")))
}

/// The paused queues, sorted by name.
pub async fn paused_queues(conn: &mut AsyncPgConnection) -> Result<Vec<String>, Error> {
    jobq_diesel::paused_queues(conn)
        .await
        .map_err(Error::db("listing paused queues"))
}
