//! Per-task settings an operator changes without recompiling: concurrency,
//! time limit and backoff base, from the builder or the environment.
//!
//! The attribute's values are the defaults. An override set on the builder
//! wins over one from the environment, which wins over the attribute; each
//! (task, setting) pair is resolved on its own, so `JOBQ_TASK_CONCURRENCY`
//! can tune one task while the code tunes another.
//!
//! The environment holds `name=value` entries separated by commas:
//! `JOBQ_TASK_CONCURRENCY="send_welcome=8,reports.nightly=2"`. An entry is
//! split at its last `=`, since values never hold one, so task names may
//! contain dots, colons or `=`; a task whose name contains a comma can only
//! be tuned on the builder.

use std::collections::BTreeMap;
use std::time::Duration;

use super::state::ServedTask;
use crate::registry::Registry;
use crate::state::States;
use crate::Error;

/// The environment variables, one per setting.
pub(crate) const CONCURRENCY_VAR: &str = "JOBQ_TASK_CONCURRENCY";
pub(crate) const TIMEOUT_VAR: &str = "JOBQ_TASK_TIMEOUT";
pub(crate) const RETRY_VAR: &str = "JOBQ_TASK_RETRY";

/// Overrides by task name, as given; checked against the tasks in
/// [`served_tasks`].
#[derive(Debug, Clone, Default)]
pub(crate) struct TaskOverrides {
    pub(crate) concurrency: BTreeMap<String, u32>,
    pub(crate) timeout: BTreeMap<String, Duration>,
    pub(crate) retry: BTreeMap<String, Duration>,
    /// Fleet-wide limits, from the builder only: a limit that differs
    /// between workers is no fleet-wide fact, so it belongs in code that
    /// every worker shares, not in one host's environment.
    pub(crate) global_concurrency: BTreeMap<String, u32>,
    pub(crate) key_concurrency: BTreeMap<String, u32>,
    pub(crate) rate: BTreeMap<String, crate::Rate>,
    pub(crate) key_rate: BTreeMap<String, crate::Rate>,
}

/// One setting's overrides and where they came from, for messages.
struct Source<'a, T> {
    what: &'static str,
    values: &'a BTreeMap<String, T>,
}

/// The tasks of `registry` with their effective settings, sorted by name.
///
/// Refuses an override that names no task of this binary (listing the
/// tasks there are), an out-of-range value, and a malformed environment
/// variable (naming it).
pub(crate) fn served_tasks(
    known: &Registry,
    registry: &Registry,
    explicit: &TaskOverrides,
    states: &States,
) -> Result<Vec<ServedTask>, Error> {
    let env = TaskOverrides {
        concurrency: env_map(CONCURRENCY_VAR, parse_concurrency)?,
        timeout: env_map(TIMEOUT_VAR, parse_duration)?,
        retry: env_map(RETRY_VAR, parse_duration)?,
        ..TaskOverrides::default()
    };
    let concurrency = [
        Source {
            what: "task_concurrency",
            values: &explicit.concurrency,
        },
        Source {
            what: CONCURRENCY_VAR,
            values: &env.concurrency,
        },
    ];
    let timeout = [
        Source {
            what: "task_timeout",
            values: &explicit.timeout,
        },
        Source {
            what: TIMEOUT_VAR,
            values: &env.timeout,
        },
    ];
    let retry = [
        Source {
            what: "task_retry",
            values: &explicit.retry,
        },
        Source {
            what: RETRY_VAR,
            values: &env.retry,
        },
    ];
    let fleet = [
        Source {
            what: "task_global_concurrency",
            values: &explicit.global_concurrency,
        },
        Source {
            what: "task_key_concurrency",
            values: &explicit.key_concurrency,
        },
    ];
    let rates = [
        Source {
            what: "task_rate",
            values: &explicit.rate,
        },
        Source {
            what: "task_key_rate",
            values: &explicit.key_rate,
        },
    ];
    // Against every task of the binary: an override for a task that
    // another deployment of it serves is no mistake.
    check_names(known, &fleet)?;
    check_names(known, &rates)?;
    for source in &fleet {
        for (task, &n) in source.values {
            check_concurrency(source.what, task, n)?;
        }
    }
    check_names(known, &concurrency)?;
    check_names(known, &timeout)?;
    check_names(known, &retry)?;
    for source in &concurrency {
        for (task, &n) in source.values {
            check_concurrency(source.what, task, n)?;
        }
    }
    for source in timeout.iter().chain(&retry) {
        for (task, d) in source.values {
            if d.is_zero() {
                return Err(Error::invalid(
                    source.what,
                    format!("task {task:?}: must be longer than zero"),
                ));
            }
        }
    }
    let mut tasks: Vec<ServedTask> = registry
        .iter()
        .map(|descriptor| {
            let name = descriptor.name;
            let options = descriptor.options;
            ServedTask {
                descriptor,
                limit: first(&concurrency, name).unwrap_or(options.concurrency_limit()),
                timeout: first(&timeout, name).or(options.time_limit()),
                retry_base: first(&retry, name).unwrap_or(options.retry_base()),
                fleet: super::state::FleetLimits::of(&options).with(super::state::FleetOverrides {
                    global: explicit.global_concurrency.get(name).copied(),
                    per_key: explicit.key_concurrency.get(name).copied(),
                    rate: explicit.rate.get(name).copied(),
                    key_rate: explicit.key_rate.get(name).copied(),
                }),
                states: states.clone(),
            }
        })
        .collect();
    tasks.sort_by_key(|t| t.descriptor.name);
    Ok(tasks)
}

/// The value of the first source (highest precedence) that sets one.
fn first<T: Copy>(sources: &[Source<'_, T>], task: &str) -> Option<T> {
    sources
        .iter()
        .find_map(|source| source.values.get(task).copied())
}

fn check_names<T>(registry: &Registry, sources: &[Source<'_, T>]) -> Result<(), Error> {
    for source in sources {
        if let Some(unknown) = source.values.keys().find(|t| registry.get(t).is_none()) {
            let known = registry
                .names()
                .iter()
                .map(|n| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::invalid(
                source.what,
                format!("no task is named {unknown:?} in this binary; its tasks are {known}"),
            ));
        }
    }
    Ok(())
}

/// A worker claims at most `i32::MAX` jobs of a task at once (the claim's
/// slot count is an `int4`); zero would never run the task.
fn check_concurrency(what: &'static str, task: &str, n: u32) -> Result<(), Error> {
    if n == 0 || i32::try_from(n).is_err() {
        return Err(Error::invalid(
            what,
            format!("task {task:?}: {n} is not between 1 and {}", i32::MAX),
        ));
    }
    Ok(())
}

fn parse_concurrency(raw: &str) -> Result<u32, String> {
    raw.parse::<u32>()
        .map_err(|_| format!("{raw:?} is not a whole number of attempts"))
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("{raw:?} is not a duration like 250ms, 30s or 5m: {e}"))
}

/// Reads one override variable; empty when it is unset.
fn env_map<T>(
    var: &'static str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, Error> {
    match std::env::var(var) {
        Err(_) => Ok(BTreeMap::new()),
        Ok(raw) => parse_map(&raw, parse).map_err(|reason| Error::invalid(var, reason)),
    }
}

/// Parses `name=value,name=value`, refusing entries without a name or a
/// value and names given twice.
fn parse_map<T>(
    raw: &str,
    parse: fn(&str) -> Result<T, String>,
) -> Result<BTreeMap<String, T>, String> {
    let mut map = BTreeMap::new();
    for entry in raw.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((name, value)) = entry.rsplit_once('=') else {
            return Err(format!(
                "the entry {entry:?} is not task=value (e.g. send_welcome=8,reports.nightly=2)"
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        if name.is_empty() {
            return Err(format!("the entry {entry:?} names no task"));
        }
        let value = parse(value).map_err(|e| format!("task {name:?}: {e}"))?;
        if map.insert(name.to_owned(), value).is_some() {
            return Err(format!("task {name:?} is given twice"));
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_split_at_the_last_equals_sign() {
        let map = parse_map(
            " send_welcome=8 , reports.nightly = 2,a=b=3,",
            parse_concurrency,
        )
        .unwrap();
        assert_eq!(
            map.into_iter().collect::<Vec<_>>(),
            [
                ("a=b".to_owned(), 3),
                ("reports.nightly".to_owned(), 2),
                ("send_welcome".to_owned(), 8)
            ]
        );
        let map = parse_map("reports.nightly=5m", parse_duration).unwrap();
        assert_eq!(map["reports.nightly"], Duration::from_secs(300));
        assert!(parse_map("", parse_concurrency).unwrap().is_empty());
    }

    #[test]
    fn malformed_entries_are_refused_with_the_entry() {
        let cases = [
            ("send_welcome", "is not task=value"),
            ("=8", "names no task"),
            (
                "send_welcome=many",
                "\"send_welcome\": \"many\" is not a whole number",
            ),
            ("send_welcome=-1", "is not a whole number"),
            ("a=1,a=2", "given twice"),
        ];
        for (raw, expected) in cases {
            let err = parse_map(raw, parse_concurrency).unwrap_err();
            assert!(err.contains(expected), "{raw:?}: {err}");
        }
        let err = parse_map("x=soon", parse_duration).unwrap_err();
        assert!(err.contains("\"soon\" is not a duration"), "{err}");
    }

    #[test]
    fn concurrency_must_fit_a_claim() {
        assert!(check_concurrency("w", "t", 1).is_ok());
        assert!(check_concurrency("w", "t", i32::MAX as u32).is_ok());
        for n in [0, i32::MAX as u32 + 1] {
            let err = check_concurrency("task_concurrency", "t", n)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("task_concurrency") && err.contains("\"t\""),
                "{err}"
            );
        }
    }
}
