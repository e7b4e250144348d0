//! The scheduler loop: enqueues the ticks of periodic tasks.
//!
//! Every worker runs it for the schedules it knows. It sleeps until the
//! next tick of any of them, then enqueues each due schedule's ticks with
//! one compare-and-set statement (`jobq_diesel::enqueue_ticks`), which
//! makes the database, not the workers, the judge of which ticks are
//! taken: a worker that loses the race reads the row again and finds the
//! tick done. Ticks are computed from the schedule and the row's last
//! tick, never from when the worker woke up, so a restart neither skips
//! nor repeats one.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobq_diesel::{ScheduleDef, ScheduleRow, TickBatch};

use super::error_text::error_chain;
use super::state::Shared;
use crate::cron::CronSchedule;
use crate::registry::{Registry, TaskDescriptor};
use crate::{Error, Schedule, Tick};

/// Ticks enqueued per statement; a longer catch-up takes several.
const TICK_BATCH: usize = 500;

/// Statements per schedule per wake-up before leaving it to the next one
/// (a loser of a race needs two; a long catch-up needs more).
const ROUNDS: usize = 20;

/// How long to wait before trying again after a database error, at first
/// and at most (doubling in between), so that a lasting problem (a role
/// without rights on `jobq.schedules`) does not flood the log.
const RETRY: Duration = Duration::from_secs(1);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// A schedule this worker enqueues the ticks of.
#[derive(Debug, Clone)]
pub(crate) struct ScheduleSpec {
    def: ScheduleDef,
    cron: CronSchedule,
    catch_up: Option<Duration>,
    queue: String,
    priority: i16,
    max_attempts: i32,
    /// The task's follow-up, as the `follow_up` column holds it.
    follow_up: Option<String>,
}

/// The schedules of a worker: the `cron = ...` of the tasks it serves and
/// the ones given at run time, checked before anything connects.
pub(crate) fn plan(
    all: &Registry,
    served: &Registry,
    runtime: &[Schedule],
) -> Result<Vec<ScheduleSpec>, Error> {
    let mut specs = Vec::new();
    let mut served_tasks: Vec<&'static TaskDescriptor> = served.iter().collect();
    served_tasks.sort_by_key(|d| d.name);
    for descriptor in served_tasks {
        let Some(expression) = descriptor.options.cron_expression() else {
            continue;
        };
        let timezone = descriptor.options.cron_timezone();
        let cron = CronSchedule::parse(expression, timezone)
            .map_err(|e| Error::invalid("schedule", format!("task {}: {e}", descriptor.name)))?;
        specs.push(spec(
            descriptor.name.to_owned(),
            descriptor,
            expression.to_owned(),
            timezone.to_owned(),
            cron,
            descriptor.options.catch_up_window(),
        ));
    }
    for schedule in runtime {
        let name = schedule.schedule_name();
        let Some(descriptor) = all.get(&schedule.task) else {
            return Err(Error::invalid(
                "schedule",
                format!(
                    "schedule {name:?}: no task named {:?} is registered in this binary (registered: {})",
                    schedule.task,
                    all.names().join(", ")
                ),
            ));
        };
        if !descriptor.takes_tick() {
            return Err(Error::invalid(
                "schedule",
                format!(
                    "schedule {name:?}: task {} ({}) does not take a jobq::Tick, \
                     the payload of a periodic task's jobs",
                    descriptor.name,
                    descriptor.site()
                ),
            ));
        }
        // What the schedules table cannot hold is refused here, not
        // retried forever by the scheduler.
        if name.is_empty() || name.chars().count() > 200 || name.contains('\0') {
            return Err(Error::invalid(
                "schedule",
                format!("schedule name {name:?} must be 1 to 200 characters, without NUL"),
            ));
        }
        if schedule.expression.chars().count() > 1000 {
            return Err(Error::invalid(
                "schedule",
                format!("schedule {name:?}: the cron expression is longer than 1000 characters"),
            ));
        }
        let cron = CronSchedule::parse(&schedule.expression, &schedule.timezone)
            .map_err(|e| Error::invalid("schedule", format!("schedule {name:?}: {e}")))?;
        specs.push(spec(
            name.to_owned(),
            descriptor,
            schedule.expression.clone(),
            schedule.timezone.clone(),
            cron,
            schedule.catch_up,
        ));
    }
    let mut names = HashSet::new();
    for spec in &specs {
        if !names.insert(spec.def.name.as_str()) {
            return Err(Error::invalid(
                "schedule",
                format!(
                    "two schedules are named {:?}; give the run-time one another name \
                     with Schedule::name",
                    spec.def.name
                ),
            ));
        }
    }
    Ok(specs)
}

fn spec(
    name: String,
    descriptor: &TaskDescriptor,
    expression: String,
    timezone: String,
    cron: CronSchedule,
    catch_up: Option<Duration>,
) -> ScheduleSpec {
    let options = descriptor.options;
    ScheduleSpec {
        def: ScheduleDef {
            name,
            task: descriptor.name.to_owned(),
            expression,
            timezone,
        },
        cron,
        catch_up,
        queue: options.queue_name().to_owned(),
        priority: options.default_priority(),
        max_attempts: i32::try_from(options.attempt_limit()).unwrap_or(i32::MAX),
        follow_up: options.follow_up().map(crate::FollowUp::column_text),
    }
}

/// What this worker last read of a schedule's row.
#[derive(Debug, Clone, Copy)]
struct Known {
    revision: i64,
    /// Ticks at or before this are enqueued or skipped.
    settled: DateTime<Utc>,
    paused: bool,
    /// When to look at the schedule next; `None` for never (an
    /// expression that matches no future instant).
    check_at: Option<DateTime<Utc>>,
}

impl Known {
    fn from_row(row: &ScheduleRow) -> Self {
        Self {
            revision: row.revision,
            settled: row.last_tick.map_or(row.since, |t| t.max(row.since)),
            paused: row.paused,
            check_at: Some(DateTime::<Utc>::MIN_UTC),
        }
    }
}

pub(crate) async fn run(shared: Arc<Shared>, specs: Arc<[ScheduleSpec]>) {
    if specs.is_empty() {
        return;
    }
    let mut known: Vec<Option<Known>> = vec![None; specs.len()];
    let mut retry = RETRY;
    loop {
        let wait = match round(&shared, &specs, &mut known).await {
            Ok(next) => {
                retry = RETRY;
                next.map_or(Duration::from_secs(3600), |at| {
                    (at - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                })
            }
            Err(e) => {
                tracing::warn!(
                    error = %e,
                    retry_in = ?retry,
                    "the scheduler could not enqueue ticks; trying again (no tick is lost: \
                     missed ones follow the catch-up policy)"
                );
                let wait = retry;
                retry = (retry * 2).min(MAX_RETRY);
                wait
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = shared.stopping.cancelled() => return,
        }
    }
}

/// Looks at every schedule that is due and returns when to look next.
async fn round(
    shared: &Shared,
    specs: &[ScheduleSpec],
    known: &mut [Option<Known>],
) -> Result<Option<DateTime<Utc>>, String> {
    let mut conn = shared.pool.get().await.map_err(|e| error_chain(&e))?;
    if known.iter().any(Option::is_none) {
        let defs: Vec<ScheduleDef> = specs.iter().map(|s| s.def.clone()).collect();
        let rows = jobq_diesel::declare_schedules(&mut conn, &defs)
            .await
            .map_err(|e| format!("declaring schedules: {e}"))?;
        for (spec, slot) in specs.iter().zip(known.iter_mut()) {
            *slot = rows
                .iter()
                .find(|r| r.name == spec.def.name)
                .map(Known::from_row);
        }
    }
    let mut next: Option<DateTime<Utc>> = None;
    for (spec, slot) in specs.iter().zip(known.iter_mut()) {
        let Some(state) = slot.as_mut() else {
            continue;
        };
        if state.check_at.is_some_and(|at| at <= Utc::now()) {
            if let Err(e) = settle(&mut conn, spec, state).await {
                // Declared again at the next round, in case it was removed.
                *slot = None;
                return Err(e);
            }
        }
        if let Some(at) = state.check_at {
            next = Some(next.map_or(at, |n| n.min(at)));
        }
    }
    Ok(next)
}

/// Enqueues the due ticks of one schedule, and sets when it is due next.
async fn settle(
    conn: &mut jobq_diesel::PooledConnection<'_>,
    spec: &ScheduleSpec,
    state: &mut Known,
) -> Result<(), String> {
    let name = &spec.def.name;
    for _ in 0..ROUNDS {
        let now = Utc::now();
        if state.paused {
            // Read at each tick, to notice a resume.
            let row = jobq_diesel::find_schedule(conn, name)
                .await
                .map_err(|e| format!("reading schedule {name:?}: {e}"))?
                .ok_or_else(|| format!("schedule {name:?} is gone"))?;
            *state = Known::from_row(&row);
            if state.paused {
                state.check_at = spec.cron.next_after(now);
                return Ok(());
            }
            continue;
        }
        let ticks = spec.cron.due(state.settled, now, spec.catch_up, TICK_BATCH);
        if ticks.is_empty() {
            state.check_at = spec.cron.next_after(state.settled.max(now));
            return Ok(());
        }
        let payloads = ticks
            .iter()
            .map(|&at| serde_json::to_string(&Tick::new(at, name.as_str())))
            .collect::<Result<Vec<String>, _>>()
            .map_err(|e| format!("schedule {name:?}: a tick does not serialize: {e}"))?;
        let result = jobq_diesel::enqueue_ticks(
            conn,
            &TickBatch {
                schedule: name,
                revision: state.revision,
                task: &spec.def.task,
                queue: &spec.queue,
                priority: spec.priority,
                max_attempts: spec.max_attempts,
                ticks: &ticks,
                payloads: &payloads,
                follow_up: spec.follow_up.as_deref(),
            },
        )
        .await
        .map_err(|e| format!("enqueueing ticks of schedule {name:?}: {e}"))?;
        if result.advanced {
            tracing::debug!(
                schedule = %name,
                ticks = ticks.len(),
                last = %ticks[ticks.len() - 1],
                "enqueued ticks"
            );
            state.revision += 1;
            state.settled = ticks[ticks.len() - 1];
        } else {
            // Another worker took the ticks, or the schedule changed.
            let row = jobq_diesel::find_schedule(conn, name)
                .await
                .map_err(|e| format!("reading schedule {name:?}: {e}"))?
                .ok_or_else(|| format!("schedule {name:?} is gone"))?;
            *state = Known::from_row(&row);
        }
    }
    // More to do than one wake-up takes: come back at once.
    state.check_at = Some(Utc::now());
    Ok(())
}
