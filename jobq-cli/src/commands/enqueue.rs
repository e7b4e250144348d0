//! `jobq enqueue TASK --payload JSON`.

use serde::Serialize;

use crate::args::EnqueueArgs;
use crate::connect::connect_ready;
use crate::error::CliError;
use crate::output;

#[derive(Serialize)]
struct Enqueued {
    id: jobq::JobId,
    /// Whether the database held pending, failed or cancelled jobs of the
    /// task already (the CLI's only hint that the name is right).
    task_seen: bool,
}

pub async fn enqueue(url: Option<&str>, json: bool, args: EnqueueArgs) -> Result<(), CliError> {
    // Read as serde_json reads any payload: NaN, Infinity and numbers out
    // of range are not JSON and are refused here.
    let text = if args.payload == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
            .map_err(|e| CliError::Usage(format!("--payload -: cannot read stdin: {e}")))?;
        text
    } else {
        args.payload
    };
    let payload: serde_json::Value = serde_json::from_str(&text).map_err(CliError::Payload)?;
    let mut options = jobq::EnqueueOptions::new();
    if let Some(queue) = args.queue {
        options = options.queue(queue);
    }
    if let Some(priority) = args.priority {
        options = options.priority(priority);
    }
    if let Some(delay) = args.delay {
        options = options.delay(delay);
    }
    if let Some(key) = args.key {
        options = options.dedupe_key(key);
    }
    if let Some(max_attempts) = args.max_attempts {
        options = options.max_attempts(max_attempts);
    }
    let mut conn = connect_ready(url).await?;
    let task_seen = jobq::task_has_jobs(&mut conn, &args.task).await?;
    if !task_seen {
        eprintln!(
            "warning: no pending, failed or cancelled job of task {} is in the database, and \
             the jobq CLI has no registered tasks to check the name against; the job runs only \
             if a worker has a task of exactly this name",
            output::cell(&format!("{:?}", args.task), 120)
        );
    }
    let id = jobq::enqueue_json(&mut conn, &args.task, &payload, options).await?;
    if json {
        output::json(&Enqueued { id, task_seen });
    } else {
        output::print(&format!("enqueued job {id}\n"));
    }
    Ok(())
}
