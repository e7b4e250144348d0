//! [`Rate`]: how many jobs of a task (or of one partition key) may start
//! per unit of time across the fleet.

use std::fmt;
use std::time::Duration;

/// A rate limit: at most `starts` starts per `per`, fleet-wide, plus up to
/// `burst` more at once after a quiet spell. Written `rate = "10/s"` (or
/// `/m`, `/h`) and `burst = 5` in `#[jobq::task]`.
///
/// In any window of time `w`, at most `starts * w / per + burst` jobs
/// start (rounded down, and at least `1 + burst`): with `10/s` and no
/// burst, never more than 10 in any second. See the README's "Rate
/// limits" for what is exact and what can lag.
///
/// ```
/// use std::time::Duration;
/// let rate = jobq::Rate::per_second(10).with_burst(5);
/// assert_eq!(rate.interval(), Duration::from_millis(100));
/// assert_eq!("10/s".parse::<jobq::Rate>().unwrap(), jobq::Rate::per_second(10));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    starts: u32,
    per: Duration,
    burst: u32,
}

impl Rate {
    /// `starts` starts per `per`, no burst. `starts` of 0 is read as 1 and
    /// a zero `per` as one microsecond, so that a rate is never "nothing
    /// ever" or "unlimited" by accident (`#[jobq::task]` refuses both at
    /// compile time).
    pub const fn new(starts: u32, per: Duration) -> Self {
        let per = if per.is_zero() {
            Duration::from_micros(1)
        } else {
            per
        };
        Self {
            starts: if starts == 0 { 1 } else { starts },
            per,
            burst: 0,
        }
    }

    /// `starts` per second.
    pub const fn per_second(starts: u32) -> Self {
        Self::new(starts, Duration::from_secs(1))
    }

    /// `starts` per minute.
    pub const fn per_minute(starts: u32) -> Self {
        Self::new(starts, Duration::from_secs(60))
    }

    /// `starts` per hour.
    pub const fn per_hour(starts: u32) -> Self {
        Self::new(starts, Duration::from_secs(3600))
    }

    /// Also allows up to `burst` starts beyond the steady rate at once,
    /// after the task was quiet for long enough to save them up.
    pub const fn with_burst(mut self, burst: u32) -> Self {
        self.burst = burst;
        self
    }

    /// Starts per [`per`](Self::per).
    pub const fn starts(&self) -> u32 {
        self.starts
    }

    /// The unit of time.
    pub const fn per(&self) -> Duration {
        self.per
    }

    /// Starts allowed beyond the steady rate.
    pub const fn burst(&self) -> u32 {
        self.burst
    }

    /// The time between two starts at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.starts
    }

    /// As the claim binds it.
    pub(crate) fn as_limit(&self) -> jobq_diesel::RateLimit {
        jobq_diesel::RateLimit {
            interval_us: self.per.as_secs_f64() * 1e6 / f64::from(self.starts),
            burst: self.burst,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let unit = match self.per.as_secs() {
            1 if self.per.subsec_nanos() == 0 => "s".to_owned(),
            60 if self.per.subsec_nanos() == 0 => "m".to_owned(),
            3600 if self.per.subsec_nanos() == 0 => "h".to_owned(),
            _ => humantime::format_duration(self.per).to_string(),
        };
        write!(f, "{}/{unit}", self.starts)?;
        if self.burst > 0 {
            write!(f, " (burst {})", self.burst)?;
        }
        Ok(())
    }
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a rate like \"10/s\", \"100/m\" or \"5/h\": {reason}")]
pub struct ParseRateError {
    input: String,
    reason: &'static str,
}

impl std::str::FromStr for Rate {
    type Err = ParseRateError;

    /// `N/s`, `N/m` or `N/h`, `N` from 1 to `u32::MAX`; no burst.
    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let error = |reason| ParseRateError {
            input: input.to_owned(),
            reason,
        };
        let (starts, unit) = input
            .trim()
            .split_once('/')
            .ok_or_else(|| error("expected starts/unit"))?;
        let starts: u32 = starts
            .trim()
            .parse()
            .map_err(|_| error("the number of starts is not a whole number"))?;
        if starts == 0 {
            return Err(error("the number of starts must be at least 1"));
        }
        let per = match unit.trim() {
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            _ => return Err(error("the unit must be s, m or h")),
        };
        Ok(Self::new(starts, per))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_units_and_refuses_the_rest() {
        assert_eq!("10/s".parse(), Ok(Rate::per_second(10)));
        assert_eq!(" 100 / m ".parse(), Ok(Rate::per_minute(100)));
        assert_eq!("5/h".parse(), Ok(Rate::per_hour(5)));
        for bad in [
            "",
            "10",
            "0/s",
            "-1/s",
            "10/d",
            "10/",
            "/s",
            "1.5/s",
            "99999999999/s",
        ] {
            assert!(bad.parse::<Rate>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn the_interval_is_the_unit_over_the_starts() {
        assert_eq!(Rate::per_second(4).interval(), Duration::from_millis(250));
        let limit = Rate::per_minute(3).with_burst(2).as_limit();
        assert!((limit.interval_us - 20_000_000.0).abs() < 1e-6);
        assert!((limit.tau_us() - 40_000_000.0).abs() < 1e-6);
        assert_eq!(
            Rate::new(0, Duration::ZERO),
            Rate::new(1, Duration::from_micros(1))
        );
        assert_eq!(
            Rate::per_second(10).with_burst(5).to_string(),
            "10/s (burst 5)"
        );
    }
}
