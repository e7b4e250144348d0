//! `jobq queues`: pause, resume and list paused queues.

use serde::Serialize;

use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output::{self, Table};

/// What `pause` and `resume` did, for `--json`.
#[derive(Serialize)]
struct Changed<'a> {
    queue: &'a str,
    paused: bool,
    /// Whether the call changed anything (false: it already was so).
    changed: bool,
}

pub async fn list(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let paused = jobq::paused_queues(&mut conn).await?;
    if json {
        output::json(&paused);
        return Ok(());
    }
    if paused.is_empty() {
        output::print("no queue is paused\n");
        return Ok(());
    }
    let mut table = Table::new(vec!["PAUSED QUEUE"]);
    for queue in &paused {
        table.row([queue.clone()]);
    }
    output::print(&table.render());
    Ok(())
}

/// Pauses (`pause`) or resumes the queue `name`.
pub async fn pause(url: Option<&str>, json: bool, name: &str, pause: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let changed = if pause {
        jobq::pause_queue(&mut conn, name).await?
    } else {
        jobq::resume_queue(&mut conn, name).await?
    };
    if json {
        output::json(&Changed {
            queue: name,
            paused: pause,
            changed,
        });
        return Ok(());
    }
    let shown = output::inert(name);
    let text = match (pause, changed) {
        (true, true) => format!("paused queue {shown}: workers stop claiming its jobs\n"),
        (true, false) => format!("queue {shown} was already paused\n"),
        (false, true) => format!("resumed queue {shown}\n"),
        (false, false) => format!("queue {shown} was not paused\n"),
    };
    output::print(&text);
    Ok(())
}
