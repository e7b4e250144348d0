//! One module per scenario; each creates its own fresh database and
//! returns its results (already printed as JSON lines).

pub mod backlog;
pub mod dashboard;
pub mod drain;
pub mod enqueue;
pub mod latency;
pub mod limits;
pub mod pinned;
pub mod restart;
pub mod rtt;
pub mod scale;
pub mod scheduled;
pub mod soak;
pub mod sustained;
pub mod tasks;
pub mod wait;
