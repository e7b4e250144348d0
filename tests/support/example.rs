//! Running an example program as a child process and reading what it
//! prints, line by line, with deadlines.
//!
//! The test binary (`harness = false`) includes the example's source as a
//! module and re-runs itself as the example, so the program under test is
//! always built from the current source, with no nested cargo.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Runs the example's `main` as this whole process when `var` is set (see
/// [`Running::start`]); `None` in the test process itself.
pub fn example_process<E: std::fmt::Display>(
    var: &str,
    main: impl FnOnce() -> Result<(), E>,
) -> Option<std::process::ExitCode> {
    std::env::var_os(var)?;
    Some(match main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("example: {e}");
            std::process::ExitCode::FAILURE
        }
    })
}

/// A running example whose stdout is read by a thread of its own.
pub struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line read so far, for assertions and failure messages.
    pub seen: Vec<String>,
}

impl Running {
    /// Starts this test binary again as the example: its `main` calls
    /// [`example_process`] first, which runs the example when `var` is set.
    pub fn start(var: &str, env: &[(&str, &str)]) -> Running {
        let mut command = Command::new(std::env::current_exe().expect("test binary"));
        command
            .env(var, "1")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = command.spawn().expect("starting the example");
        let stdout = child.stdout.take().expect("piped stdout");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `within` for a line that `matches`, and returns it.
    pub fn line(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no matching line within {within:?}; the example printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Sends SIGTERM, as a process manager would.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -TERM failed");
    }

    /// Waits up to `within` for the example to exit, reading the rest of
    /// its output.
    pub fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for the example") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(1)) {
                    self.seen.push(line);
                }
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the example did not exit within {within:?}; it printed:\n{}",
                self.seen.join("\n")
            );
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `psql` from `PATH`, or from the newest PostgreSQL installed under
/// `/usr/lib/postgresql`.
pub fn psql() -> PathBuf {
    if Command::new("psql")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        return PathBuf::from("psql");
    }
    let mut installed: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse().ok()?;
            let path = entry.path().join("bin/psql");
            path.exists().then_some((version, path))
        })
        .collect();
    installed.sort();
    installed
        .pop()
        .map(|(_, path)| path)
        .expect("psql is not installed (it comes with PostgreSQL's client package)")
}

/// Runs SQL through `psql`, as a program in another language would.
pub fn run_psql(url: &str, sql: &str) {
    let output = Command::new(psql())
        .args([url, "-v", "ON_ERROR_STOP=1", "-q", "-c", sql])
        .output()
        .expect("running psql");
    assert!(
        output.status.success(),
        "psql failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
