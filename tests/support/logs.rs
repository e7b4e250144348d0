//! Capturing a test binary's log lines, to check what jobq says (and what
//! it never prints, such as a password). The first subscriber installed
//! wins, so every test of a binary calls [`capture`] with the same filter.

use std::io::Write;
use std::sync::Mutex;

static LOGS: Mutex<String> = Mutex::new(String::new());

struct Capture;

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push_str(&String::from_utf8_lossy(buf));
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Sends this binary's logs, as `filter` selects them, to the capture.
pub fn capture(filter: &str) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(false)
        .with_writer(|| Capture)
        .try_init();
}

/// Everything captured so far.
pub fn all() -> String {
    LOGS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The captured lines that contain every one of `containing`.
pub fn lines(containing: &[&str]) -> Vec<String> {
    all()
        .lines()
        .filter(|l| containing.iter().all(|c| l.contains(c)))
        .map(str::to_owned)
        .collect()
}
