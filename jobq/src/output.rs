//! Typed outputs: what a task fn returns, stored with its completed job
//! and read back typed.

use std::any::TypeId;

use diesel_async::AsyncPgConnection;
use serde::Serialize;

use crate::{EnqueueOptions, Error, JobId, Task, TaskError};

/// The largest output stored, as JSON text: the same limit as a payload's
/// default, [`EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE`]. Larger results
/// belong in the application's tables.
pub const MAX_OUTPUT_SIZE: usize = EnqueueOptions::DEFAULT_MAX_PAYLOAD_SIZE;

/// The output as JSON text for the outcome, `None` for `()` (no work at
/// all, so unit tasks keep the cheapest outcome path). An output that
/// cannot be stored faithfully fails the attempt permanently: the handler
/// has done its work, and running it again would most likely produce the
/// same output (and repeat its effects).
pub(crate) fn to_stored<O: Serialize + 'static>(
    task: &'static str,
    output: &O,
) -> Result<Option<String>, TaskError> {
    stored_json(output).map_err(|reason| {
        TaskError::permanent(anyhow::anyhow!(
            "task {task}: the handler succeeded but its output cannot be stored: {reason}"
        ))
    })
}

/// The output as the job row stores it (`None` for `()`), or why it
/// cannot be stored.
pub(crate) fn stored_json<O: Serialize + 'static>(output: &O) -> Result<Option<String>, String> {
    if TypeId::of::<O>() == TypeId::of::<()>() {
        return Ok(None);
    }
    crate::payload_check::check(output).map_err(|p| p.0)?;
    let json =
        serde_json::to_string(output).map_err(|e| format!("it does not serialize to JSON: {e}"))?;
    if json.len() > MAX_OUTPUT_SIZE {
        return Err(format!(
            "its JSON text is {} bytes, over the limit of {MAX_OUTPUT_SIZE} bytes",
            json.len()
        ));
    }
    Ok(Some(json))
}

/// The output of job `id` of task `T`, decoded: `None` while the job has
/// not completed (or does not exist, or was pruned). For tasks returning
/// `()`, always `None`.
///
/// Errors when the job belongs to another task or its stored output does
/// not decode into `T::Output` (the type changed since).
///
/// ```no_run
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { w: u32 }
/// #[jobq::task]
/// async fn resize(job: Resize) -> Result<String, jobq::TaskError> {
///     Ok(format!("thumbs/{}.png", job.w))
/// }
///
/// # async fn f(conn: &mut diesel_async::AsyncPgConnection, id: jobq::JobId) -> Result<(), jobq::Error> {
/// let path: Option<String> = resize::output(conn, id).await?;
/// # Ok(()) }
/// ```
pub async fn output<T: Task>(
    conn: &mut AsyncPgConnection,
    id: JobId,
) -> Result<Option<T::Output>, Error> {
    let row = jobq_diesel::find_output(conn, id.get())
        .await
        .map_err(Error::db(format!("reading the output of job {id}")))?;
    let Some(row) = row else {
        return Ok(None);
    };
    if row.task != T::NAME {
        return Err(Error::invalid(
            "job output",
            format!(
                "job {id} is a job of task {:?}, not of task {:?}",
                row.task,
                T::NAME
            ),
        ));
    }
    let Some(json) = row.output else {
        return Ok(None);
    };
    serde_json::from_str(&json).map(Some).map_err(|e| {
        Error::invalid(
            "job output",
            format!(
                "the output of job {id} does not decode into the output type of task {}: {e}",
                T::NAME
            ),
        )
    })
}
