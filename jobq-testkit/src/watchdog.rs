//! The watchdog that throws a private server away once the test process is gone.
//!
//! Rust never drops statics, and a killed or aborted process runs no
//! destructors at all, so the cleanup cannot live in this process. Each
//! private server gets a tiny `sh` loop that polls `/proc/<our pid>`; once
//! we are gone it stops PostgreSQL (`pg_ctl stop -m immediate`) and deletes
//! the server's directory. (`PR_SET_PDEATHSIG` is no substitute: it fires
//! when the spawning *thread* ends, and test threads end all the time.)

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Stdio};

use crate::run_as::RunAs;
use crate::TestkitError;

const SCRIPT: &str = r#"
while [ -d "/proc/$1" ]; do sleep 0.5; done
"$2" stop -D "$3" -m immediate -s >/dev/null 2>&1
rm -rf "$4"
"#;

/// Starts the watchdog for the server in `dir` (data directory `data_dir`).
///
/// It runs as the user PostgreSQL runs as (`pg_ctl` refuses root), in its
/// own process group so that a Ctrl-C aimed at the tests does not kill it
/// before it has cleaned up, with no stdio so it never holds a test
/// harness's output pipes open.
pub(crate) fn spawn(
    run_as: &RunAs,
    pg_ctl: &Path,
    data_dir: &Path,
    dir: &Path,
) -> Result<Child, TestkitError> {
    run_as
        .command("sh", dir)
        .arg("-c")
        .arg(SCRIPT)
        .arg("jobq-testkit-watchdog")
        .arg(std::process::id().to_string())
        .arg(pg_ctl)
        .arg(data_dir)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| TestkitError::io("starting the cleanup watchdog (`sh`)", e))
}
