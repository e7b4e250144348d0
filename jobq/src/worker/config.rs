//! Worker settings, their defaults and the environment variables that set
//! them.

use std::time::Duration;

use jobq_diesel::{ClaimLanes, Retention};

use crate::Error;

/// Every tunable of a worker, with the defaults documented on
/// [`crate::WorkerBuilder`].
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) poll_interval: Duration,
    pub(crate) shutdown_timeout: Duration,
    pub(crate) lease: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) maintenance_interval: Duration,
    pub(crate) retention: Retention,
    pub(crate) vacuum: bool,
    pub(crate) listen: bool,
    pub(crate) pool_size: u32,
    pub(crate) outcome_batch: usize,
    pub(crate) connect_timeout: Duration,
    pub(crate) listen_url: Option<ListenUrl>,
    /// Server-side `lock_timeout` of the connections jobq opens itself.
    pub(crate) lock_timeout: Option<Duration>,
    /// Server-side `statement_timeout` of the connections jobq opens
    /// itself.
    pub(crate) statement_timeout: Option<Duration>,
    /// How many claims may walk the claim index at once, fleet-wide
    /// (`None`: no bound).
    pub(crate) claim_lanes: Option<ClaimLanes>,
}

/// Claims at once, fleet-wide, by default: few enough that 32 worker
/// processes on a two-core server no longer step over each other's rows
/// (BENCHMARKS.md, "Claim lanes"), and a fleet of up to four workers
/// takes no lane at all.
pub(crate) const DEFAULT_CLAIM_LANES: u16 = 4;

/// How the LISTEN connection is made when it has a URL of its own (its
/// `Debug` hides the password).
#[derive(Clone, Debug)]
pub(crate) struct ListenUrl(pub(crate) jobq_diesel::Connector);

impl Default for Config {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            shutdown_timeout: Duration::from_secs(30),
            lease: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            maintenance_interval: Duration::from_secs(5),
            // Completed jobs are kept a minute (long enough for a caller
            // polling `jobq::job` to see the result), so that a busy
            // queue's table stays small; failed and cancelled ones a week,
            // for people to inspect.
            retention: Retention {
                completed: Duration::from_secs(60),
                failed: Duration::from_secs(7 * 24 * 60 * 60),
            },
            vacuum: true,
            listen: true,
            pool_size: 8,
            outcome_batch: 1000,
            connect_timeout: Duration::from_secs(30),
            listen_url: None,
            // An application transaction holding a job's row makes one of
            // jobq's writes fail after 5 s (and be retried) rather than
            // stall the batch behind it; a minute bounds any statement.
            lock_timeout: Some(Duration::from_secs(5)),
            statement_timeout: Some(Duration::from_secs(60)),
            claim_lanes: ClaimLanes::new(DEFAULT_CLAIM_LANES),
        }
    }
}

impl Config {
    pub(crate) fn validate(&self) -> Result<(), Error> {
        let positive = |what: &'static str, d: Duration| {
            if d.is_zero() {
                Err(Error::invalid(what, "must be longer than zero"))
            } else {
                Ok(())
            }
        };
        positive("poll_interval", self.poll_interval)?;
        positive("lease", self.lease)?;
        positive("heartbeat_interval", self.heartbeat_interval)?;
        positive("maintenance_interval", self.maintenance_interval)?;
        if self.heartbeat_interval * 2 > self.lease {
            return Err(Error::invalid(
                "lease",
                format!(
                    "the lease ({:?}) must be at least twice the heartbeat interval ({:?}), \
                     or one late heartbeat would get live jobs rescued",
                    self.lease, self.heartbeat_interval
                ),
            ));
        }
        if self.pool_size < 2 {
            return Err(Error::invalid(
                "pool_size",
                "a worker needs at least 2 connections",
            ));
        }
        Ok(())
    }
}

/// Reads a duration like `250ms`, `30s` or `5m` from an environment
/// variable; `None` when it is unset.
pub(crate) fn env_duration(name: &'static str) -> Result<Option<Duration>, Error> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(raw) => humantime::parse_duration(raw.trim())
            .map(Some)
            .map_err(|e| {
                Error::invalid(
                    name,
                    format!("{raw:?} is not a duration like 250ms, 30s or 5m: {e}"),
                )
            }),
    }
}

/// Reads a whole number from 0 to 65,535 from an environment variable;
/// `None` when it is unset.
pub(crate) fn env_u16(name: &'static str) -> Result<Option<u16>, Error> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(raw) => raw.trim().parse().map(Some).map_err(|_| {
            Error::invalid(
                name,
                format!("{raw:?} is not a whole number from 0 to {}", u16::MAX),
            )
        }),
    }
}

/// Reads `on`/`off` (or `true`/`false`, `1`/`0`) from an environment
/// variable; `None` when it is unset.
pub(crate) fn env_bool(name: &'static str) -> Result<Option<bool>, Error> {
    match std::env::var(name) {
        Err(_) => Ok(None),
        Ok(raw) => parse_switch(name, &raw).map(Some),
    }
}

fn parse_switch(name: &'static str, raw: &str) -> Result<bool, Error> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        _ => Err(Error::invalid(
            name,
            format!("{raw:?} is not on or off (true/false, 1/0, yes/no)"),
        )),
    }
}

/// Reads a comma-separated list from an environment variable.
pub(crate) fn env_list(name: &'static str) -> Option<Vec<String>> {
    let raw = std::env::var(name).ok()?;
    let items: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect();
    (!items.is_empty()).then_some(items)
}

#[cfg(test)]
mod tests {
    use super::parse_switch;

    #[test]
    fn switches_read_the_usual_spellings_and_refuse_the_rest() {
        for on in ["on", "ON", " true ", "1", "yes"] {
            assert!(parse_switch("JOBQ_VACUUM", on).unwrap(), "{on:?}");
        }
        for off in ["off", "False", "0", "no"] {
            assert!(!parse_switch("JOBQ_VACUUM", off).unwrap(), "{off:?}");
        }
        let err = parse_switch("JOBQ_VACUUM", "sometimes")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("JOBQ_VACUUM") && err.contains("sometimes"),
            "{err}"
        );
    }
}
