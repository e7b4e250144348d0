//! `jobq jobs list|show|retry|cancel|purge`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::args::{ListArgs, RetryArgs};
use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output::{self, Table};

fn state(s: &str) -> Result<jobq::JobState, CliError> {
    s.trim()
        .to_ascii_lowercase()
        .parse()
        .map_err(|e: jobq::Error| CliError::Usage(e.to_string()))
}

/// `--since`: an age (`1h`) or a time (RFC 3339).
fn since(s: &str) -> Result<DateTime<Utc>, CliError> {
    if let Ok(ago) = humantime::parse_duration(s) {
        let ago = chrono::Duration::from_std(ago)
            .map_err(|_| CliError::Usage(format!("--since {s}: too long ago")))?;
        return Utc::now()
            .checked_sub_signed(ago)
            .ok_or_else(|| CliError::Usage(format!("--since {s}: too long ago")));
    }
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| {
            CliError::Usage(format!(
                "--since {}: write an age (30m, 1h, 2d) or a time (2026-11-30T12:00:00Z)",
                output::cell(s, 80)
            ))
        })
}

pub async fn list(url: Option<&str>, json: bool, args: ListArgs) -> Result<(), CliError> {
    let mut filter = jobq::JobFilter::new().limit(args.limit);
    if let Some(s) = &args.state {
        filter = filter.state(state(s)?);
    }
    if let Some(task) = args.task {
        filter = filter.task(task);
    }
    if let Some(queue) = args.queue {
        filter = filter.queue(queue);
    }
    if let Some(key) = args.key {
        filter = filter.dedupe_key(key);
    }
    if let Some(s) = &args.since {
        filter = filter.since(since(s)?);
    }
    if let Some(before) = args.before {
        filter = filter.before(jobq::JobId::from(before));
    }
    if args.limit == 0 || args.limit > 10_000 {
        return Err(CliError::Usage(format!(
            "--limit {} is not between 1 and 10000",
            args.limit
        )));
    }
    let mut conn = connect_ready(url).await?;
    let jobs = jobq::jobs(&mut conn, &filter).await?;
    if json {
        output::json(&jobs);
        return Ok(());
    }
    if jobs.is_empty() {
        output::print("no jobs match\n");
        return Ok(());
    }
    let mut table = Table::new(vec![
        "ID", "STATE", "QUEUE", "TASK", "PRI", "ATTEMPT", "RUN AT", "CREATED", "KEY",
    ]);
    for j in &jobs {
        table.row([
            j.id.to_string(),
            j.state.to_string(),
            j.queue.clone(),
            j.task.clone(),
            j.priority.to_string(),
            format!("{}/{}", j.attempt, j.max_attempts),
            output::time(&j.run_at),
            output::time(&j.created_at),
            j.dedupe_key.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    let mut text = table.render();
    if let (Some(last), true) = (jobs.last(), jobs.len() == args.limit as usize) {
        text.push_str(&format!("\nmore may follow: add --before {}\n", last.id));
    }
    output::print(&text);
    Ok(())
}

pub async fn show(url: Option<&str>, json: bool, id: i64) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let Some(job) = jobq::job(&mut conn, jobq::JobId::from(id)).await? else {
        return Err(CliError::NoJob(id));
    };
    if json {
        output::json(&job);
        return Ok(());
    }
    let opt = |t: Option<DateTime<Utc>>| t.as_ref().map_or_else(|| "-".into(), output::time);
    let inert = output::inert;
    let mut text = format!(
        "id:           {}\nstate:        {}\ntask:         {}\nqueue:        {}\n\
         priority:     {}\nattempts:     {} of {}\nrun at:       {}\ncreated:      {}\n\
         started:      {}\nfinished:     {}\ndedupe key:   {}\n",
        job.id,
        job.state,
        inert(&job.task),
        inert(&job.queue),
        job.priority,
        job.attempt,
        job.max_attempts,
        output::time(&job.run_at),
        output::time(&job.created_at),
        opt(job.started_at),
        opt(job.finished_at),
        job.dedupe_key.as_deref().map_or_else(|| "-".into(), inert),
    );
    let or_dash = |s: Option<&str>| s.map_or_else(|| "-".into(), inert);
    text.push_str(&format!(
        "unique key:   {}\npartition:    {}\n",
        or_dash(job.unique_key.as_deref()),
        or_dash(job.key.as_deref()),
    ));
    if job.headers.is_empty() {
        text.push_str("headers:      none\n");
    } else {
        text.push_str("headers:\n");
        for (name, value) in &job.headers {
            text.push_str(&format!("  {}: {}\n", inert(name), inert(value)));
        }
    }
    let mut json_block = |title: &str, value: &serde_json::Value| {
        let pretty = serde_json::to_string_pretty(value).unwrap_or_default();
        text.push_str(title);
        text.push_str(":\n");
        for line in pretty.lines() {
            text.push_str("  ");
            text.push_str(&output::inert_json(line));
            text.push('\n');
        }
    };
    json_block("payload", &job.payload);
    match &job.output {
        Some(value) => json_block("output", value),
        None => text.push_str("output:       -\n"),
    }
    if job.errors.is_empty() {
        text.push_str("errors:       none\n");
    } else {
        text.push_str("errors:\n");
        for e in &job.errors {
            text.push_str(&format!(
                "  attempt {} at {}: {}\n",
                e.attempt,
                output::time(&e.at),
                inert(&e.message)
            ));
        }
    }
    output::print(&text);
    Ok(())
}

#[derive(Serialize)]
struct Retried {
    id: jobq::JobId,
    #[serde(flatten)]
    outcome: jobq::RetryOutcome,
}

#[derive(Serialize)]
struct RetriedAll {
    task: String,
    retried: u64,
}

pub async fn retry(url: Option<&str>, json: bool, args: RetryArgs) -> Result<(), CliError> {
    if args.all_failed && !args.ids.is_empty() {
        return Err(CliError::Usage(
            "give job ids or --all-failed --task T, not both".into(),
        ));
    }
    let mut conn = connect_ready(url).await?;
    if let (true, Some(task)) = (args.all_failed, args.task) {
        let retried = jobq::retry_failed(&mut conn, &task).await?;
        if json {
            output::json(&RetriedAll { task, retried });
        } else {
            output::print(&format!(
                "retried {retried} failed job(s) of task {}\n",
                output::cell(&task, 200)
            ));
        }
        return Ok(());
    }
    let mut results = Vec::new();
    let mut refused = 0;
    for id in args.ids {
        let id = jobq::JobId::from(id);
        let outcome = jobq::retry(&mut conn, id).await?;
        if outcome != jobq::RetryOutcome::Retried {
            refused += 1;
        }
        if !json {
            output::print(&match outcome {
                jobq::RetryOutcome::Retried => format!("job {id}: pending again\n"),
                jobq::RetryOutcome::DedupeKeyHeld { by } => format!(
                    "job {id}: not retried: job {by} holds its dedupe key and is still live\n"
                ),
                _ => format!(
                    "job {id}: not retried: it is not failed or cancelled, or does not exist\n"
                ),
            });
        }
        results.push(Retried { id, outcome });
    }
    if json {
        output::json(&results);
    }
    if refused > 0 {
        return Err(CliError::Partial(format!(
            "{refused} of {} job(s) not retried",
            results.len()
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct Cancelled {
    id: jobq::JobId,
    cancelled: bool,
}

pub async fn cancel(url: Option<&str>, json: bool, ids: Vec<i64>) -> Result<(), CliError> {
    let mut conn = connect_ready(url).await?;
    let mut results = Vec::new();
    for id in ids {
        let id = jobq::JobId::from(id);
        let cancelled = jobq::cancel(&mut conn, id).await?;
        if !json {
            output::print(&if cancelled {
                format!("job {id}: cancelled (a running job stops when its handler checks)\n")
            } else {
                format!("job {id}: not cancelled: it has finished or does not exist\n")
            });
        }
        results.push(Cancelled { id, cancelled });
    }
    if json {
        output::json(&results);
    }
    let refused = results.iter().filter(|r| !r.cancelled).count();
    if refused > 0 {
        return Err(CliError::Partial(format!(
            "{refused} of {} job(s) not cancelled",
            results.len()
        )));
    }
    Ok(())
}

#[derive(Serialize)]
struct Purged {
    purged: u64,
}

pub async fn purge(
    url: Option<&str>,
    json: bool,
    states: &[String],
    older_than: Duration,
) -> Result<(), CliError> {
    let states = states
        .iter()
        .map(|s| state(s))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(active) = states.iter().find(|s| !s.is_terminal()) {
        return Err(CliError::Usage(format!(
            "--state {active}: only completed, failed and cancelled jobs can be purged"
        )));
    }
    let mut conn = connect_ready(url).await?;
    let purged = jobq::purge(&mut conn, &states, older_than).await?;
    if json {
        output::json(&Purged { purged });
    } else {
        output::print(&format!("purged {purged} job(s)\n"));
    }
    Ok(())
}
