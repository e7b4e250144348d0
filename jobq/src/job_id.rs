//! [`JobId`], the id of a job row.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The id of a job: the `id` column of `jobq.jobs`.
///
/// ```
/// let id = jobq::JobId::from(42);
/// assert_eq!(id.to_string(), "42");
/// assert_eq!(i64::from(id), 42);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(i64);

impl JobId {
    /// The raw row id.
    pub const fn get(self) -> i64 {
        self.0
    }
}

impl From<i64> for JobId {
    fn from(id: i64) -> Self {
        Self(id)
    }
}

impl From<JobId> for i64 {
    fn from(id: JobId) -> Self {
        id.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
