//! Cron expressions read in a time zone, and which ticks are due.
//!
//! Parsing and the calendar arithmetic are croner's; this module only
//! decides which ticks a schedule owes at a given instant, as pure
//! functions of the schedule, the last settled instant and the clock, so
//! that daylight-saving days are tested without waiting for them.
//!
//! Daylight saving is handled as croner defines it: a fixed-time tick that
//! falls into the spring-forward gap runs at the first valid instant after
//! the gap; a wall-clock time that happens twice at a fall-back runs once,
//! at its first occurrence, so the repeated hour's second pass has no
//! ticks at all (an hourly schedule has 24 ticks on that 25-hour day, and
//! 23 on the 23-hour spring-forward day). The unit tests below pin this
//! down for Europe/Berlin.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::Cron;

/// The time zone of a schedule that names none.
pub(crate) const DEFAULT_TIMEZONE: &str = "UTC";

/// A parsed cron expression in its time zone.
#[derive(Debug, Clone)]
pub(crate) struct CronSchedule {
    cron: Cron,
    tz: Tz,
}

impl CronSchedule {
    /// Parses `expression` (five fields, or six with seconds first) read in
    /// the IANA time zone `timezone`.
    pub(crate) fn parse(expression: &str, timezone: &str) -> Result<Self, String> {
        let cron = Cron::from_str(expression)
            .map_err(|e| format!("invalid cron expression {expression:?}: {e}"))?;
        let tz = Tz::from_str(timezone).map_err(|_| {
            format!("unknown time zone {timezone:?}: expected an IANA name like \"Europe/Berlin\" or \"UTC\"")
        })?;
        Ok(Self { cron, tz })
    }

    /// The first tick strictly after `t`; `None` when the expression never
    /// matches again.
    pub(crate) fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_from(t, false)
    }

    fn next_from(&self, t: DateTime<Utc>, inclusive: bool) -> Option<DateTime<Utc>> {
        // croner keeps the sub-second part of its start; ticks are whole
        // seconds, and an instant inside a second is past its tick.
        let whole = whole_second(t);
        let inclusive = inclusive && whole == t;
        self.cron
            .find_next_occurrence(&whole.with_timezone(&self.tz), inclusive)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The latest tick at or before `t`.
    fn latest_at(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&whole_second(t).with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The ticks owed at `now` by a schedule whose ticks up to `settled`
    /// (exclusive of later ones) are done, oldest first, at most `limit`:
    /// the most recent missed tick always, and older missed ones only
    /// when they are at most `catch_up` old.
    pub(crate) fn due(
        &self,
        settled: DateTime<Utc>,
        now: DateTime<Utc>,
        catch_up: Option<Duration>,
        limit: usize,
    ) -> Vec<DateTime<Utc>> {
        let Some(latest) = self.latest_at(now).filter(|&l| l > settled) else {
            return Vec::new();
        };
        let mut ticks = Vec::new();
        let oldest = catch_up
            .and_then(|age| chrono::Duration::from_std(age).ok())
            .and_then(|age| now.checked_sub_signed(age));
        if let Some(oldest) = oldest {
            let mut next = if oldest > settled {
                self.next_from(oldest, true)
            } else {
                self.next_after(settled)
            };
            while let Some(tick) = next.filter(|&t| t < latest) {
                if ticks.len() + 1 >= limit.max(1) {
                    // The cap leaves the newest for a later batch.
                    ticks.push(tick);
                    return ticks;
                }
                ticks.push(tick);
                next = self.next_after(tick);
            }
        }
        ticks.push(latest);
        ticks
    }
}

/// `t` without its fraction of a second.
fn whole_second(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn berlin(expression: &str) -> CronSchedule {
        CronSchedule::parse(expression, "Europe/Berlin").unwrap()
    }

    /// Every tick in (from, to], the way the scheduler walks them.
    fn ticks_between(s: &CronSchedule, from: DateTime<Utc>, to: DateTime<Utc>) -> Vec<String> {
        let mut out = Vec::new();
        let mut t = from;
        while let Some(next) = s.next_after(t).filter(|&n| n <= to) {
            out.push(next.to_rfc3339());
            t = next;
        }
        out
    }

    #[test]
    fn parse_refuses_bad_expressions_and_zones() {
        assert!(CronSchedule::parse("0 */5 * * * *", "UTC").is_ok());
        assert!(CronSchedule::parse("*/5 * * * *", "Europe/Berlin").is_ok());
        let e = CronSchedule::parse("61 * * * *", "UTC").unwrap_err();
        assert!(e.contains("invalid cron expression"), "{e}");
        let e = CronSchedule::parse("* * * * *", "Mars/Olympus").unwrap_err();
        assert!(e.contains("unknown time zone \"Mars/Olympus\""), "{e}");
        assert!(CronSchedule::parse("", "UTC").is_err());
        assert!(CronSchedule::parse("\0", "UTC").is_err());
    }

    #[test]
    fn seconds_field_is_optional() {
        let five = CronSchedule::parse("*/5 * * * *", "UTC").unwrap();
        let six = CronSchedule::parse("0 */5 * * * *", "UTC").unwrap();
        let t = utc("2026-01-01T10:02:30Z");
        assert_eq!(five.next_after(t), Some(utc("2026-01-01T10:05:00Z")));
        assert_eq!(six.next_after(t), Some(utc("2026-01-01T10:05:00Z")));
        let every_second = CronSchedule::parse("* * * * * *", "UTC").unwrap();
        assert_eq!(
            every_second.next_after(utc("2026-01-01T10:00:00.250Z")),
            Some(utc("2026-01-01T10:00:01Z"))
        );
    }

    #[test]
    fn spring_forward_in_berlin() {
        // 2026-03-29: at 02:00 CET the clocks jump to 03:00 CEST.
        let day_start = Utc.with_ymd_and_hms(2026, 3, 28, 23, 0, 0).unwrap();
        let day_end = Utc.with_ymd_and_hms(2026, 3, 29, 22, 0, 0).unwrap();
        // Hourly: the day has 23 hours and 23 ticks; 02:00 local does not
        // exist, 01:00 CET is followed by 03:00 CEST one real hour later.
        let hourly = ticks_between(&berlin("0 0 * * * *"), day_start, day_end);
        assert_eq!(hourly.len(), 23, "{hourly:?}");
        assert!(hourly.contains(&"2026-03-29T00:00:00+00:00".to_owned()));
        assert!(hourly.contains(&"2026-03-29T01:00:00+00:00".to_owned()));
        // Daily at 02:30, a time that does not exist that day: it still runs
        // once, right after the gap (03:00 CEST = 01:00 UTC).
        let daily = ticks_between(&berlin("30 2 * * *"), day_start, day_end);
        assert_eq!(daily, ["2026-03-29T01:00:00+00:00"]);
        // Every 30 minutes runs on through the gap in real time: 01:30 CET
        // is followed by 03:00 CEST.
        assert_eq!(
            ticks_between(
                &berlin("*/30 * * * *"),
                utc("2026-03-29T00:00:00Z"),
                utc("2026-03-29T01:30:00Z")
            ),
            [
                "2026-03-29T00:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-29T01:30:00+00:00",
            ]
        );
        // The days around it run at 02:30 local as usual.
        let week = ticks_between(
            &berlin("30 2 * * *"),
            utc("2026-03-27T00:00:00Z"),
            utc("2026-03-31T00:00:00Z"),
        );
        assert_eq!(
            week,
            [
                "2026-03-27T01:30:00+00:00",
                "2026-03-28T01:30:00+00:00",
                "2026-03-29T01:00:00+00:00",
                "2026-03-30T00:30:00+00:00",
            ]
        );
    }

    #[test]
    fn fall_back_in_berlin() {
        // 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET.
        let day_start = Utc.with_ymd_and_hms(2026, 10, 24, 22, 0, 0).unwrap();
        let day_end = Utc.with_ymd_and_hms(2026, 10, 25, 23, 0, 0).unwrap();
        // Daily at 02:30, a time that happens twice: once, at the first.
        let daily = ticks_between(&berlin("30 2 * * *"), day_start, day_end);
        assert_eq!(daily, ["2026-10-25T00:30:00+00:00"]);
        let hourly = ticks_between(&berlin("0 * * * *"), day_start, day_end);
        // The 25-hour day has 24 hourly ticks: 02:00 local happens twice
        // and runs once, at its first occurrence (00:00 UTC, still CEST);
        // the repeated 02:00 CET (01:00 UTC) has no tick.
        assert_eq!(hourly.len(), 24, "{hourly:?}");
        assert!(hourly.contains(&"2026-10-25T00:00:00+00:00".to_owned()));
        assert!(!hourly.contains(&"2026-10-25T01:00:00+00:00".to_owned()));
        assert!(hourly.contains(&"2026-10-25T02:00:00+00:00".to_owned()));
        assert_eq!(hourly.first().unwrap(), "2026-10-24T23:00:00+00:00");
        // Every 30 minutes: the repeated hour's second pass has no ticks.
        assert_eq!(
            ticks_between(
                &berlin("*/30 * * * *"),
                utc("2026-10-24T23:30:00Z"),
                utc("2026-10-25T02:30:00Z")
            ),
            [
                "2026-10-25T00:00:00+00:00",
                "2026-10-25T00:30:00+00:00",
                "2026-10-25T02:00:00+00:00",
                "2026-10-25T02:30:00+00:00",
            ]
        );
        assert_eq!(hourly.last().unwrap(), "2026-10-25T23:00:00+00:00");
    }

    #[test]
    fn default_policy_runs_only_the_most_recent_missed_tick() {
        let s = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let settled = utc("2026-01-01T00:00:00Z");
        let now = utc("2026-01-01T05:30:00Z");
        assert_eq!(
            s.due(settled, now, None, 100),
            [utc("2026-01-01T05:00:00Z")]
        );
        // Nothing missed: nothing due.
        let settled = utc("2026-01-01T05:00:00Z");
        assert!(s.due(settled, now, None, 100).is_empty());
        // A tick exactly now is due.
        let now = utc("2026-01-01T06:00:00Z");
        assert_eq!(s.due(settled, now, None, 100), [now]);
    }

    #[test]
    fn catch_up_runs_missed_ticks_up_to_its_age() {
        let s = CronSchedule::parse("0 * * * *", "UTC").unwrap();
        let settled = utc("2026-01-01T00:00:00Z");
        let now = utc("2026-01-01T05:30:00Z");
        let two_hours = Some(Duration::from_secs(2 * 3600));
        // 03:30 is the oldest age allowed: 04:00 and 05:00.
        assert_eq!(
            s.due(settled, now, two_hours, 100),
            [utc("2026-01-01T04:00:00Z"), utc("2026-01-01T05:00:00Z")]
        );
        // A tick exactly as old as the window is included.
        let now = utc("2026-01-01T06:00:00Z");
        assert_eq!(
            s.due(settled, now, two_hours, 100),
            [
                utc("2026-01-01T04:00:00Z"),
                utc("2026-01-01T05:00:00Z"),
                utc("2026-01-01T06:00:00Z")
            ]
        );
        // A window reaching before the settled instant starts after it.
        let settled = utc("2026-01-01T04:00:00Z");
        assert_eq!(
            s.due(settled, now, Some(Duration::from_secs(86_400)), 100),
            [utc("2026-01-01T05:00:00Z"), utc("2026-01-01T06:00:00Z")]
        );
        // The cap keeps the oldest; the rest come in the next batch.
        let settled = utc("2026-01-01T00:00:00Z");
        let day = Some(Duration::from_secs(86_400));
        let first = s.due(settled, now, day, 2);
        assert_eq!(
            first,
            [utc("2026-01-01T01:00:00Z"), utc("2026-01-01T02:00:00Z")]
        );
        let rest = s.due(*first.last().unwrap(), now, day, 100);
        assert_eq!(rest.len(), 4, "{rest:?}");
        assert_eq!(rest.last(), Some(&now));
    }

    #[test]
    fn an_expression_that_never_matches_has_no_ticks() {
        // February 30th: parses, never happens.
        let s = CronSchedule::parse("0 0 30 2 *", "UTC").unwrap();
        let started = std::time::Instant::now();
        let now = utc("2026-06-01T00:00:00Z");
        assert_eq!(s.next_after(now), None);
        assert!(s.due(utc("2020-01-01T00:00:00Z"), now, None, 10).is_empty());
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }
}
