//! `jobq status` and `jobq workers`.

use std::time::Duration;

use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output::{self, Table};

pub async fn status(
    url: Option<&str>,
    json: bool,
    watch: bool,
    interval: Duration,
) -> Result<(), CliError> {
    if interval.is_zero() {
        return Err(CliError::Usage(
            "--interval must be longer than zero".into(),
        ));
    }
    let mut conn = connect_ready(url).await?;
    loop {
        let stats = jobq::stats(&mut conn).await?;
        if json {
            // One JSON document per refresh (JSON lines with --watch).
            if watch {
                match serde_json::to_string(&stats) {
                    Ok(line) => output::print(&format!("{line}\n")),
                    Err(e) => eprintln!("error: cannot write JSON: {e}"),
                }
            } else {
                output::json(&stats);
            }
        } else {
            let mut text = String::new();
            if watch {
                // Clear the screen and go home, as `watch` does.
                text.push_str("\x1b[2J\x1b[H");
                text.push_str(&format!("{}\n\n", output::time(&chrono::Utc::now())));
            }
            text.push_str(&render(&stats));
            output::print(&text);
        }
        if !watch {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn render(stats: &jobq::Stats) -> String {
    let mut table = Table::new(vec![
        "QUEUE",
        "TASK",
        "SCHEDULED",
        "PENDING",
        "RUNNING",
        "FAILED",
        "CANCELLED",
        "OLDEST DUE",
        "DONE 1M",
        "FAILED 1M",
        "DONE 1H",
        "FAILED 1H",
    ]);
    for t in &stats.tasks {
        table.row([
            t.queue.clone(),
            t.task.clone(),
            t.scheduled.to_string(),
            t.pending.to_string(),
            t.running.to_string(),
            t.failed.to_string(),
            t.cancelled.to_string(),
            t.oldest_due_age.map_or_else(|| "-".into(), output::age),
            t.completed_last_minute.to_string(),
            t.failed_last_minute.to_string(),
            t.completed_last_hour.to_string(),
            t.failed_last_hour.to_string(),
        ]);
    }
    let mut text = if table.is_empty() {
        "no active jobs, and none finished in the last hour\n".to_owned()
    } else {
        table.render()
    };
    text.push_str(&format!(
        "\nlive workers: {}\ncompleted jobs in the table: {}\n",
        stats.live_workers,
        match stats.completed_estimate {
            Some(n) => format!("about {n} (planner estimate)"),
            None => "unknown until the table is analyzed".to_owned(),
        }
    ));
    text
}

pub async fn workers(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let workers = jobq::workers(&mut conn).await?;
    if json {
        output::json(&workers);
        return Ok(());
    }
    if workers.is_empty() {
        output::print("no workers registered\n");
        return Ok(());
    }
    let now = chrono::Utc::now();
    let mut table = Table::new(vec![
        "ID",
        "HOST",
        "PID",
        "QUEUES",
        "STARTED",
        "HEARTBEAT",
        "ALIVE",
        "RUNNING",
    ]);
    for w in &workers {
        let since = (now - w.heartbeat_at).to_std().unwrap_or_default();
        table.row([
            w.id.to_string(),
            w.hostname.clone(),
            w.pid.to_string(),
            w.queues.join(","),
            output::time(&w.started_at),
            format!("{} ago", output::age(since)),
            if w.alive { "yes" } else { "no" }.to_owned(),
            w.running.to_string(),
        ]);
    }
    output::print(&table.render());
    Ok(())
}
