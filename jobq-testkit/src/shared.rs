//! The process-wide shared private server behind [`crate::TestDatabase::create`]
//! when `DATABASE_URL` is not set.

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::server::ServerProcess;
use crate::{blocking, connect, TestkitError};

/// Started at most once per process, by whichever test gets there first;
/// the others wait. A failure is remembered so that a machine without
/// PostgreSQL fails every test quickly with the same message.
///
/// It holds no runtime-bound resources (a child process, paths, a URL), so
/// it is shared by the per-test runtimes of `#[tokio::test]`. It is never
/// dropped; the watchdog removes it when the process exits.
static SHARED: OnceCell<Result<ServerProcess, Arc<TestkitError>>> = OnceCell::const_new();

/// The URL of the shared server's `postgres` database, starting it if needed.
pub(crate) async fn url() -> Result<&'static str, TestkitError> {
    let started = SHARED
        .get_or_init(|| async {
            let server = blocking::run("starting the shared private PostgreSQL", || {
                ServerProcess::start(None)
            })
            .await
            .map_err(Arc::new)?;
            connect::wait_until_ready(server.url(), server.log_file())
                .await
                .map_err(|e| {
                    server.destroy();
                    Arc::new(e)
                })?;
            Ok(server)
        })
        .await;
    match started {
        Ok(server) => Ok(server.url()),
        Err(e) => Err(TestkitError::SharedServer(Arc::clone(e))),
    }
}
