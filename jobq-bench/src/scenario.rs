//! One module per scenario; each creates its own fresh database and
//! returns its results (already printed as JSON lines).

pub mod backlog;
pub mod dashboard;
pub mod drain;
pub mod enqueue;
pub mod latency;
pub mod limits;
pub mod restart;
pub mod scale;
pub mod scheduled;
pub mod sustained;
pub mod tasks;
pub mod wait;
