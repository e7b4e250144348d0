//! One module per command group; each takes its parsed arguments and
//! prints its result as a table or, with `--json`, as JSON.

mod dashboard;
mod enqueue;
mod jobs;
mod limits;
mod queues;
mod schedules;
mod schema;
mod status;

use crate::args::{Cli, Command, JobsCommand, LimitsCommand, QueuesCommand, SchedulesCommand};
use crate::error::CliError;

/// Runs the command the user asked for.
pub async fn run(cli: Cli) -> Result<(), CliError> {
    let url = cli.database_url.as_deref();
    let json = cli.json;
    match cli.command {
        Command::Migrate => schema::migrate(url, json).await,
        Command::Uninstall { yes } => schema::uninstall(url, yes, json).await,
        Command::Version => schema::version(url, json).await,
        Command::Status { watch, interval } => status::status(url, json, watch, interval).await,
        Command::Workers => status::workers(url, json).await,
        Command::Queues(command) => match command {
            QueuesCommand::List => queues::list(url, json).await,
            QueuesCommand::Pause { name } => queues::pause(url, json, &name, true).await,
            QueuesCommand::Resume { name } => queues::pause(url, json, &name, false).await,
        },
        Command::Schedules(command) => match command {
            SchedulesCommand::List => schedules::list(url, json).await,
            SchedulesCommand::Pause { name } => schedules::pause(url, json, &name, true).await,
            SchedulesCommand::Resume { name } => schedules::pause(url, json, &name, false).await,
        },
        Command::Limits(command) => match command {
            LimitsCommand::List => limits::list(url, json).await,
            LimitsCommand::Unblock { task, key } => {
                limits::unblock(url, json, &task, key.as_deref()).await
            }
        },
        Command::Enqueue(args) => enqueue::enqueue(url, json, args).await,
        Command::Dashboard(args) => dashboard::dashboard(url, args).await,
        Command::Jobs(command) => match command {
            JobsCommand::List(args) => jobs::list(url, json, args).await,
            JobsCommand::Show { id } => jobs::show(url, json, id).await,
            JobsCommand::Retry(args) => jobs::retry(url, json, args).await,
            JobsCommand::Cancel { ids } => jobs::cancel(url, json, ids).await,
            JobsCommand::Purge { states, older_than } => {
                jobs::purge(url, json, &states, older_than).await
            }
        },
    }
}
