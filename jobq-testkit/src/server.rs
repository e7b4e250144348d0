//! A throwaway PostgreSQL server process: create, start, stop, destroy.
//!
//! Everything here is blocking (`std::process`); the async API wraps it in
//! `spawn_blocking`.

use std::fs::DirBuilder;
use std::io::Write;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use crate::binaries::PgBinaries;
use crate::run_as::RunAs;
use crate::{watchdog, TestkitError};

/// How long `pg_ctl` may wait for a start or stop, in seconds.
const PG_CTL_TIMEOUT_SECS: &str = "60";

/// Attempts at finding a port nobody grabs between our probe and postgres' bind.
const PORT_ATTEMPTS: usize = 5;

/// Settings that make a disposable server fast; durability is pointless here.
const SETTINGS: &str = "\
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 300
listen_addresses = '127.0.0.1'
";

/// A certificate and its private key, PEM-encoded, for a server with
/// `ssl = on`.
#[derive(Clone)]
pub struct ServerTls {
    /// The server's certificate, followed by any intermediates.
    pub cert_pem: String,
    /// The certificate's private key.
    pub key_pem: String,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

/// One private PostgreSQL server living in a temporary directory.
#[derive(Debug)]
pub(crate) struct ServerProcess {
    bins: &'static PgBinaries,
    run_as: RunAs,
    dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    url: String,
    tls: Option<ServerTls>,
    watchdog: Mutex<Option<Child>>,
}

impl ServerProcess {
    /// Creates a new cluster in a fresh temporary directory and starts it,
    /// with `ssl = on` and this certificate when `tls` is given.
    pub(crate) fn start(tls: Option<ServerTls>) -> Result<ServerProcess, TestkitError> {
        let bins = PgBinaries::find()?;
        let run_as = RunAs::detect()?;
        let dir = create_temp_dir()?;
        let mut server = ServerProcess {
            bins,
            run_as,
            data_dir: dir.join("data"),
            log_file: dir.join("postgres.log"),
            dir,
            port: 0,
            url: String::new(),
            tls,
            watchdog: Mutex::new(None),
        };
        match server.init_and_start() {
            Ok(()) => Ok(server),
            Err(e) => {
                server.destroy();
                Err(e)
            }
        }
    }

    fn init_and_start(&mut self) -> Result<(), TestkitError> {
        self.run_as.give(&self.dir)?;
        let watchdog = watchdog::spawn(
            &self.run_as,
            &self.bins.tool("pg_ctl"),
            &self.data_dir,
            &self.dir,
        )?;
        *self.watchdog.lock().unwrap_or_else(|e| e.into_inner()) = Some(watchdog);

        let mut initdb = self.command("initdb");
        initdb
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .arg("--no-sync");
        self.run(initdb, false)?;
        self.append_to_config(
            "postgresql.conf",
            "\n# added by jobq-testkit\ninclude 'jobq_testkit.conf'\n",
        )?;
        if let Some(tls) = &self.tls {
            self.write_private_file("server.crt", &tls.cert_pem)?;
            // PostgreSQL refuses a key readable by anyone but its owner.
            self.write_private_file("server.key", &tls.key_pem)?;
        }

        let mut attempt = 0;
        loop {
            attempt += 1;
            self.port = free_port()?;
            self.write_settings()?;
            match self.pg_ctl_start() {
                Ok(()) => break,
                Err(e) if attempt < PORT_ATTEMPTS && self.port_was_taken() => {
                    tracing::debug!(port = self.port, error = %e, "port taken, retrying");
                }
                Err(e) => return Err(e),
            }
        }
        self.url = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        tracing::debug!(url = %self.url, dir = %self.dir.display(), "private PostgreSQL started");
        Ok(())
    }

    fn write_settings(&self) -> Result<(), TestkitError> {
        let path = self.data_dir.join("jobq_testkit.conf");
        let mut contents = format!(
            "{SETTINGS}port = {}\nunix_socket_directories = '{}'\n",
            self.port,
            self.dir.display().to_string().replace('\'', "''")
        );
        if self.tls.is_some() {
            // Relative paths are read from the data directory.
            contents
                .push_str("ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n");
        }
        std::fs::write(&path, contents)
            .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
        self.run_as.give(&path)
    }

    /// Writes `contents` to `name` in the data directory, readable by the
    /// server's user only.
    fn write_private_file(&self, name: &str, contents: &str) -> Result<(), TestkitError> {
        use std::os::unix::fs::OpenOptionsExt;
        let path = self.data_dir.join(name);
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .and_then(|mut f| f.write_all(contents.as_bytes()))
            .map_err(|e| TestkitError::io(format!("writing {}", path.display()), e))?;
        self.run_as.give(&path)
    }

    fn append_to_config(&self, file: &str, text: &str) -> Result<(), TestkitError> {
        let path = self.data_dir.join(file);
        std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(text.as_bytes()))
            .map_err(|e| TestkitError::io(format!("appending to {}", path.display()), e))
    }

    fn port_was_taken(&self) -> bool {
        let log = std::fs::read_to_string(&self.log_file).unwrap_or_default();
        log.contains("could not bind") || log.contains("Address already in use")
    }

    /// `postgres://postgres@127.0.0.1:<port>/postgres`
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub(crate) fn bin_dir(&self) -> &Path {
        &self.bins.bin_dir
    }

    pub(crate) fn log_file(&self) -> &Path {
        &self.log_file
    }

    fn pg_ctl_start(&self) -> Result<(), TestkitError> {
        let mut start = self.pg_ctl("start");
        start.arg("-l").arg(&self.log_file);
        self.run(start, true).map(drop)
    }

    /// Starts the stopped server again, same data and port; waits until ready.
    pub(crate) fn start_again(&self) -> Result<(), TestkitError> {
        self.pg_ctl_start()
    }

    /// `pg_ctl stop -m <mode>`, waiting; stopping a stopped server is fine.
    pub(crate) fn stop(&self, mode: &str) -> Result<(), TestkitError> {
        let mut stop = self.pg_ctl("stop");
        stop.args(["-m", mode]);
        match self.run(stop, true) {
            Ok(_) => Ok(()),
            Err(_) if !self.is_running() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// `pg_ctl restart -m fast`, waiting until ready.
    pub(crate) fn restart(&self) -> Result<(), TestkitError> {
        let mut restart = self.pg_ctl("restart");
        restart.args(["-m", "fast"]).arg("-l").arg(&self.log_file);
        self.run(restart, true).map(drop)
    }

    fn is_running(&self) -> bool {
        let mut status = self.command("pg_ctl");
        status.arg("status").arg("-D").arg(&self.data_dir);
        // Exit status 3 means "not running"; anything else we treat as running.
        !matches!(status.output(), Ok(out) if out.status.code() == Some(3))
    }

    /// Stops the server immediately, deletes its directory and ends the
    /// watchdog. Best effort, never panics.
    pub(crate) fn destroy(&self) {
        if self.data_dir.join("postmaster.pid").exists() {
            let mut stop = self.pg_ctl("stop");
            stop.args(["-m", "immediate"]);
            if let Err(e) = self.run(stop, false) {
                tracing::warn!(error = %e, "could not stop private PostgreSQL");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(dir = %self.dir.display(), error = %e, "could not remove private PostgreSQL directory");
            }
        }
        let watchdog = self
            .watchdog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(mut watchdog) = watchdog {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
    }

    fn command(&self, tool: &str) -> Command {
        self.run_as.command(self.bins.tool(tool), &self.dir)
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut command = self.command("pg_ctl");
        command
            .arg(action)
            .arg("-D")
            .arg(&self.data_dir)
            .args(["-w", "-t", PG_CTL_TIMEOUT_SECS, "-s"])
            // A terminal's Ctrl-C must not hit the postmaster pg_ctl forks:
            // the watchdog shuts it down in order.
            .process_group(0);
        command
    }

    /// Runs `command` to completion; a failure carries its output and,
    /// with `with_log`, the tail of the server log.
    fn run(&self, mut command: Command, with_log: bool) -> Result<String, TestkitError> {
        let description = describe(&command);
        tracing::trace!(command = %description, "running");
        let output = command
            .stdin(Stdio::null())
            .output()
            .map_err(|e| TestkitError::io(format!("running `{description}`"), e))?;
        let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&output.stderr));
        if output.status.success() {
            return Ok(text);
        }
        if with_log {
            text.push_str(&format!(
                "\n--- last lines of {} ---\n{}",
                self.log_file.display(),
                log_tail(&self.log_file)
            ));
        }
        Err(TestkitError::Command {
            command: description,
            status: output.status.to_string(),
            output: text,
        })
    }
}

/// The last lines of a server log, for error messages.
pub(crate) fn log_tail(path: &Path) -> String {
    const LINES: usize = 30;
    match std::fs::read_to_string(path) {
        Ok(log) => {
            let lines: Vec<&str> = log.lines().collect();
            lines[lines.len().saturating_sub(LINES)..].join("\n")
        }
        Err(e) => format!("(could not read the log: {e})"),
    }
}

fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A fresh, private (0700) directory under the system temp directory.
fn create_temp_dir() -> Result<PathBuf, TestkitError> {
    let base = std::env::temp_dir();
    let mut last_error = None;
    for _ in 0..10 {
        let dir = base.join(format!(
            "jobq-testkit-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        match DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) => last_error = Some(e),
        }
    }
    Err(TestkitError::io(
        format!("creating a temporary directory in {}", base.display()),
        last_error.unwrap_or_else(|| std::io::Error::other("no attempt made")),
    ))
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
fn free_port() -> Result<u16, TestkitError> {
    std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| TestkitError::io("finding a free TCP port on 127.0.0.1", e))
}
