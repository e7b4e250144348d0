//! How a waited-on job ended, as the driver hands it to its waits, and its
//! conversion into what a typed wait returns.

use jobq_diesel::WaitedJob;

use super::WaitError;
use crate::{JobId, Task};

/// The end of a waited-on job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Finish {
    /// In a terminal state.
    Ended(WaitedJob),
    /// No such job: never committed, or pruned or purged since.
    NotFound,
}

impl Finish {
    /// What [`Finish`] means for a wait of task `T`.
    pub(crate) fn to_result<T: Task>(&self, id: JobId) -> Result<T::Output, WaitError> {
        let job = match self {
            Finish::NotFound => return Err(WaitError::NotFound { id }),
            Finish::Ended(job) => job,
        };
        if job.task != T::NAME {
            return Err(WaitError::WrongTask {
                id,
                task: job.task.clone(),
                expected: T::NAME,
            });
        }
        match job.state.as_str() {
            "completed" => {
                // `()` outputs are not stored, and a job completed by SQL
                // has none: JSON null then, which decodes into `()` and
                // `Option`s and is refused by anything else.
                let json = job.output.as_deref().unwrap_or("null");
                serde_json::from_str(json).map_err(|e| WaitError::Output {
                    id,
                    task: T::NAME,
                    reason: match &job.output {
                        Some(_) => format!("it does not decode into the task's output type: {e}"),
                        None => "the job completed without an output (completed outside its \
                                 handler?)"
                            .to_owned(),
                    },
                })
            }
            "cancelled" => Err(WaitError::Cancelled { id }),
            _ => Err(WaitError::Failed {
                id,
                error: job.last_error.clone(),
            }),
        }
    }
}
