//! Running the blocking process work off the async executor.

use crate::TestkitError;

/// Runs `work` on tokio's blocking pool and returns its result.
pub(crate) async fn run<T, F>(what: &str, work: F) -> Result<T, TestkitError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, TestkitError> + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        TestkitError::io(
            format!("{what} (background task)"),
            std::io::Error::other(e),
        )
    })?
}
