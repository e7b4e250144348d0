//! Where a measured phase's CPU went, read from Linux's `/proc`: the
//! database server's processes (when the server runs on this machine) and
//! the machine as a whole.
//!
//! On a 2-core machine the server and the workers share the cores, so a
//! throughput figure alone cannot tell "more work per job" from "cores
//! left idle". These two numbers can: server CPU per job (every process
//! named `postgres`, including backends that exited during the phase,
//! whose time the postmaster collects), and the share of the machine's
//! CPU time that was busy. Both are `None` where `/proc` does not tell
//! (another OS, or a server on another machine).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

/// Long enough for the postmaster to reap the backends of connections that
/// just closed (it does so on SIGCHLD, within milliseconds).
const REAP_PAUSE: Duration = Duration::from_millis(100);

/// Clock ticks per second of `/proc`'s CPU times (`USER_HZ`, 100 on every
/// Linux in use).
const TICKS_PER_SECOND: f64 = 100.0;

/// CPU counters at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    at: SystemTime,
    /// Ticks used by the server's processes so far, if any were found.
    server: Option<u64>,
    /// Busy and total ticks of all cores (`/proc/stat`), if readable.
    machine: Option<(u64, u64)>,
}

impl Sample {
    /// Reads the counters now.
    pub fn now() -> Self {
        Self {
            at: SystemTime::now(),
            server: server_ticks(),
            machine: machine_ticks(),
        }
    }

    /// Reads the counters now, the server's once the processes that just
    /// ended have been accounted: a backend's CPU time moves to the
    /// postmaster's children's times only when the postmaster reaps it, a
    /// moment after its client disconnected; read at once, its time is in
    /// neither place. (The machine's counters are not read after that
    /// pause, which would add idle time to the phase.)
    pub async fn after_disconnect() -> Self {
        let mut sample = Self::now();
        tokio::time::sleep(REAP_PAUSE).await;
        sample.server = server_ticks();
        sample
    }

    /// Reads only the machine's counters: cheap enough to sample every few
    /// milliseconds during a run without disturbing it.
    pub fn machine_now() -> Self {
        Self {
            at: SystemTime::now(),
            server: None,
            machine: machine_ticks(),
        }
    }

    /// What was spent from `self` to `later`.
    pub fn until(&self, later: &Sample) -> Spent {
        let server_s = match (self.server, later.server) {
            (Some(a), Some(b)) => Some(b.saturating_sub(a) as f64 / TICKS_PER_SECOND),
            _ => None,
        };
        let busy = match (self.machine, later.machine) {
            (Some((busy_a, total_a)), Some((busy_b, total_b))) if total_b > total_a => {
                Some(busy_b.saturating_sub(busy_a) as f64 / (total_b - total_a) as f64)
            }
            _ => None,
        };
        Spent { server_s, busy }
    }
}

/// CPU spent over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct Spent {
    /// Seconds of CPU used by the database server's processes.
    pub server_s: Option<f64>,
    /// Share of the machine's CPU time that was busy, 0 to 1.
    pub busy: Option<f64>,
}

impl Spent {
    /// Server CPU per job, in microseconds.
    pub fn server_us_per_job(&self, jobs: usize) -> Option<f64> {
        self.server_s
            .filter(|_| jobs > 0)
            .map(|s| s * 1e6 / jobs as f64)
    }
}

/// Samples the machine's counters every 10 ms on a thread of its own, so
/// that the busy share of a window known only afterwards (a drain's first
/// claim to its last outcome, by the database's clock) can be computed.
pub struct MachineSampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Vec<Sample>>,
}

impl MachineSampler {
    /// Starts sampling.
    pub fn start() -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut samples = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    samples.push(Sample::machine_now());
                    std::thread::sleep(Duration::from_millis(10));
                }
                samples.push(Sample::machine_now());
                samples
            })
        };
        Self { stop, thread }
    }

    /// Stops sampling and returns the samples.
    pub fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or_default()
    }
}

/// Machine busy share between `from` and `to` (seconds since the epoch),
/// from samples taken during a run: the first and last sample inside the
/// window bound it.
pub fn busy_within(samples: &[Sample], from: f64, to: f64) -> Option<f64> {
    let secs = |s: &Sample| {
        s.at.duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or(Duration::ZERO)
            .as_secs_f64()
    };
    let inside: Vec<&Sample> = samples
        .iter()
        .filter(|s| (from..=to).contains(&secs(s)))
        .collect();
    match (inside.first(), inside.last()) {
        (Some(first), Some(last)) => first.until(last).busy,
        _ => None,
    }
}

fn machine_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let cpu: Vec<u64> = stat
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: idle and iowait are
    // the idle time (a backend waiting for its commit's fsync is idle).
    let total: u64 = cpu.iter().take(8).sum();
    let idle = cpu.get(3)? + cpu.get(4)?;
    Some((total - idle, total))
}

/// The postmaster of the server the run uses, when it runs on this
/// machine (see [`watch_server`]).
static POSTMASTER: OnceLock<u32> = OnceLock::new();

/// Counts only the processes of the server whose backend `backend_pid` is
/// (the postmaster, its parent, and the postmaster's other children).
/// Without it every process named `postgres` counts, and a server that
/// another run is still shutting down takes its CPU time with it as its
/// processes go: the first phase of a run measured no server time at all.
/// Does nothing when the backend is not on this machine.
pub fn watch_server(backend_pid: u32) {
    let parent = std::fs::read_to_string(format!("/proc/{backend_pid}/stat"))
        .ok()
        .and_then(|stat| parent_pid(&stat));
    if let Some(postmaster) = parent {
        let _ = POSTMASTER.set(postmaster);
    }
}

/// The parent's pid in the text of a `/proc/<pid>/stat` (the second field
/// after the name).
fn parent_pid(stat: &str) -> Option<u32> {
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn server_ticks() -> Option<u64> {
    let postmaster = POSTMASTER.get().copied();
    let mut ticks = 0u64;
    let mut found = false;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(("postgres", used)) = stat_ticks(&stat, true) else {
            continue;
        };
        if let Some(postmaster) = postmaster {
            let own = pid.parse() == Ok(postmaster) || parent_pid(&stat) == Some(postmaster);
            if !own {
                continue;
            }
        }
        found = true;
        ticks += used;
    }
    found.then_some(ticks)
}

/// The command name and CPU ticks in the text of a `/proc/<pid>/stat`:
/// user and system time, and with `children` those of its reaped children
/// too (the postmaster's backends, once they exit).
pub fn stat_ticks(stat: &str, children: bool) -> Option<(&str, u64)> {
    // The name is in parentheses and may itself hold spaces or ')'.
    let (head, rest) = stat.rsplit_once(')')?;
    let name = head.split_once('(')?.1;
    // utime, stime, cutime, cstime: fields 14 to 17, 12 to 15 after ')'.
    let ticks = rest
        .split_whitespace()
        .skip(11)
        .take(if children { 4 } else { 2 })
        .filter_map(|v| v.parse::<u64>().ok())
        .sum();
    Some((name, ticks))
}

/// CPU time (user + system) this process used so far, in seconds.
pub fn own_cpu_seconds() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|stat| stat_ticks(&stat, false).map(|(_, t)| t))
        .map_or(0.0, |t| t as f64 / TICKS_PER_SECOND)
}

/// The machine's 1-minute load average (`/proc/loadavg`), which the
/// long scenarios report beside their figures: above 2 on this 2-core
/// machine, other work competed with the run. `None` where unreadable.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parent_pid_follows_a_name_with_spaces_and_parentheses() {
        let stat = "4242 (postgres: x) y) S 977 4242 4242 0 -1 4194560 0 0 0 0 7 3 0 0 20";
        assert_eq!(parent_pid(stat), Some(977));
        assert_eq!(parent_pid("garbage"), None);
    }

    #[test]
    fn spent_between_samples() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(10);
        let a = Sample {
            at,
            server: Some(100),
            machine: Some((50, 200)),
        };
        let b = Sample {
            at: at + Duration::from_secs(1),
            server: Some(250),
            machine: Some((200, 400)),
        };
        let spent = a.until(&b);
        assert_eq!(spent.server_s, Some(1.5));
        assert_eq!(spent.busy, Some(0.75));
        assert_eq!(spent.server_us_per_job(1000), Some(1500.0));
        assert_eq!(busy_within(&[a, b], 9.0, 12.0), Some(0.75));
        assert_eq!(busy_within(&[a, b], 10.5, 12.0), None);
    }

    #[test]
    fn ticks_from_a_stat_line_whose_name_holds_a_parenthesis() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime ...
        let stat = "42 (odd) name) S 1 42 42 0 -1 4194560 10 0 0 0 7 3 20 5 20 0";
        assert_eq!(stat_ticks(stat, false), Some(("odd) name", 10)));
        assert_eq!(stat_ticks(stat, true), Some(("odd) name", 35)));
        assert_eq!(stat_ticks("garbage", true), None);
    }
}
