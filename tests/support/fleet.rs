//! Worker processes for the kill tests: the test binary re-runs itself as a
//! worker when an environment variable names the database, so the tests can
//! `kill -9` real processes and restart them.
//!
//! Such a test binary has `harness = false` and a `main` that starts with
//! [`worker_process`] and then hands its tests to [`run_tests`].

use std::future::Future;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::Duration;

use diesel_async::pooled_connection::AsyncDieselConnectionManager;
use diesel_async::AsyncPgConnection;

/// One test of a `harness = false` binary.
pub type TestFn = fn() -> Pin<Box<dyn Future<Output = ()>>>;

/// Runs `worker` as this process's whole life when `var` is set (to the
/// database URL the worker should use), and returns its exit code; returns
/// `None` in the test process itself.
///
/// The worker exits when its stdin closes, so a test that dies (even by
/// SIGKILL) takes its workers with it.
pub fn worker_process<F, Fut>(var: &str, worker: F) -> Option<ExitCode>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<(), jobq::Error>>,
{
    let url = std::env::var(var).ok()?;
    let url = url.replace("{pid}", &std::process::id().to_string());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn,jobq=info"))
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(3);
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("worker process: no runtime: {e}");
            return Some(ExitCode::FAILURE);
        }
    };
    match runtime.block_on(async move { worker(url).await }) {
        Ok(()) => Some(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("worker process: {e}: {e:?}");
            Some(ExitCode::FAILURE)
        }
    }
}

/// The worker of a kill test's process: polls, heartbeats and maintenance
/// every 250 ms, so that rescues follow `lease` closely, and a short
/// shutdown.
pub fn process_worker(url: &str, lease: Duration) -> jobq::WorkerBuilder {
    jobq::Worker::builder()
        .database_url(url)
        .poll_interval(Duration::from_millis(250))
        .lease(lease)
        .heartbeat_interval(Duration::from_millis(250))
        .maintenance_interval(Duration::from_millis(250))
        .shutdown_timeout(Duration::from_secs(2))
}

/// A small pool of a worker process's own, for what its handlers write
/// besides jobq (a ledger, effect rows).
pub fn side_pool(url: &str) -> jobq::Pool {
    bb8::Pool::builder()
        .max_size(4)
        .connection_timeout(Duration::from_secs(5))
        .build_unchecked(AsyncDieselConnectionManager::<AsyncPgConnection>::new(url))
}

/// A minimal libtest stand-in: answers `--list`, honours name filters, and
/// runs each selected test to completion on a two-thread runtime.
pub fn run_tests(tests: &[(&str, TestFn)]) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    super::init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    for (name, test) in tests {
        if !filters.is_empty() && !filters.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        runtime.block_on(test());
        println!("test {name} ... ok");
    }
    ExitCode::SUCCESS
}

struct Worker {
    child: Child,
    pid: u32,
    log: PathBuf,
    killed: bool,
}

/// The worker processes of one test; any still running when this drops
/// are killed, and their logs removed.
pub struct Fleet {
    var: &'static str,
    exe: PathBuf,
    dir: PathBuf,
    workers: Vec<Worker>,
}

impl Fleet {
    /// Workers started by this fleet run [`worker_process`] with `var`.
    pub fn new(var: &'static str) -> Fleet {
        use std::sync::atomic::{AtomicU32, Ordering};
        static FLEETS: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "jobq-fleet-{}-{}",
            std::process::id(),
            FLEETS.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("log dir");
        Fleet {
            var,
            exe: std::env::current_exe().expect("test binary"),
            dir,
            workers: Vec::new(),
        }
    }

    /// Starts a worker on `url` and returns its pid. A `{pid}` in the URL
    /// is replaced by the worker's own pid (for `application_name`).
    pub fn spawn(&mut self, url: &str) -> u32 {
        let log = self.dir.join(format!("worker-{}.log", self.workers.len()));
        let file = std::fs::File::create(&log).expect("worker log");
        let child = Command::new(&self.exe)
            .env(self.var, url)
            .env_remove("DATABASE_URL")
            .env_remove("RUST_LOG")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .expect("spawning a worker process");
        let pid = child.id();
        self.workers.push(Worker {
            child,
            pid,
            log,
            killed: false,
        });
        pid
    }

    /// The pids of the workers not killed; panics with its log when one
    /// exited by itself.
    pub fn live(&mut self) -> Vec<u32> {
        self.workers
            .iter_mut()
            .filter(|w| !w.killed)
            .map(|w| {
                if let Ok(Some(status)) = w.child.try_wait() {
                    panic!(
                        "worker {} exited by itself ({status}); its log:\n{}",
                        w.pid,
                        tail(&w.log)
                    );
                }
                w.pid
            })
            .collect()
    }

    /// SIGKILL, and reap.
    pub fn kill(&mut self, pid: u32) {
        let w = self
            .workers
            .iter_mut()
            .find(|w| w.pid == pid)
            .expect("known worker");
        w.child.kill().expect("SIGKILL");
        w.child.wait().expect("reaping a killed worker");
        w.killed = true;
    }

    /// The end of every worker's log, for a failure message.
    pub fn logs(&self) -> String {
        self.workers
            .iter()
            .map(|w| {
                format!(
                    "--- worker {} (killed: {}) ---\n{}",
                    w.pid,
                    w.killed,
                    tail(&w.log)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// How often `needle` occurs in all the workers' logs.
    pub fn count_in_logs(&self, needle: &str) -> usize {
        self.workers
            .iter()
            .map(|w| {
                std::fs::read_to_string(&w.log)
                    .unwrap_or_default()
                    .matches(needle)
                    .count()
            })
            .sum()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        for w in &mut self.workers {
            if !w.killed {
                let _ = w.child.kill();
                let _ = w.child.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
