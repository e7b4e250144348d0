//! `jobq schedules`: the periodic tasks' schedules; pause and resume.

use serde::Serialize;

use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output::{self, Table};

/// What `pause` and `resume` did, for `--json`.
#[derive(Serialize)]
struct Changed<'a> {
    schedule: &'a str,
    paused: bool,
}

pub async fn list(url: Option<&str>, json: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let schedules = jobq::schedules(&mut conn).await?;
    if json {
        output::json(&schedules);
        return Ok(());
    }
    if schedules.is_empty() {
        output::print("no schedules (they appear once a worker declaring them has started)\n");
        return Ok(());
    }
    let mut table = Table::new(vec![
        "NAME",
        "TASK",
        "EXPRESSION",
        "TIME ZONE",
        "PAUSED",
        "LAST TICK",
        "NEXT TICK",
    ]);
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.as_ref().map_or_else(|| "-".to_owned(), output::time)
    };
    for s in &schedules {
        table.row([
            s.name.clone(),
            s.task.clone(),
            s.expression.clone(),
            s.timezone.clone(),
            if s.paused { "yes" } else { "no" }.to_owned(),
            time(s.last_tick),
            time(s.next_tick),
        ]);
    }
    output::print(&table.render());
    Ok(())
}

/// Pauses (`pause`) or resumes the schedule `name`.
pub async fn pause(url: Option<&str>, json: bool, name: &str, pause: bool) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let found = if pause {
        jobq::pause_schedule(&mut conn, name).await?
    } else {
        jobq::resume_schedule(&mut conn, name).await?
    };
    if !found {
        return Err(CliError::NoSchedule(name.to_owned()));
    }
    if json {
        output::json(&Changed {
            schedule: name,
            paused: pause,
        });
        return Ok(());
    }
    let shown = output::inert(name);
    output::print(&if pause {
        format!("paused schedule {shown} on every worker\n")
    } else {
        format!("resumed schedule {shown}; the ticks it missed are skipped\n")
    });
    Ok(())
}
