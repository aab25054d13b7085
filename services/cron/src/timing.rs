//! When a schedule's ticks fall. croner, the evaluator inside
//! tokio-cron-scheduler, reads cron expressions; `@every` and Parse's
//! schedules are plain arithmetic.

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

use crate::CronError;

/// The shortest `@every` period.
const MIN_PERIOD_MS: i64 = 1_000;

#[derive(Debug, Clone)]
pub enum Timing {
    Cron {
        cron: Box<Cron>,
        zone: Tz,
    },
    /// Ticks at `anchor + k * period`.
    Every {
        period_ms: i64,
        anchor_ms: i64,
    },
    Once {
        at_ms: i64,
    },
}

impl Timing {
    /// Reads a schedule's `cron` and `timeZone`.
    pub fn parse(expression: &str, zone: &str) -> Result<Self, CronError> {
        let zone: Tz = zone.parse().map_err(|_| {
            CronError::Invalid(format!(
                "unknown time zone {zone:?}: use an IANA name such as UTC or Europe/Paris"
            ))
        })?;
        let expression = expression.trim();
        if let Some(rest) = expression.strip_prefix("@every") {
            let (duration, anchor_ms) = match rest.split_once(" from ") {
                Some((duration, anchor)) => (duration, parse_time(anchor)?),
                None => (rest, 0),
            };
            let period_ms = parse_duration(duration.trim())?;
            return Ok(Self::Every {
                period_ms,
                anchor_ms,
            });
        }
        if let Some(at) = expression.strip_prefix("@at") {
            return Ok(Self::Once {
                at_ms: parse_time(at)?,
            });
        }
        let fields = expression.split_whitespace().count();
        if !expression.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(CronError::Invalid(format!(
                "invalid cron expression {expression:?}: it needs 5 fields (minute hour day month weekday) or 6 (second first)"
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expression)
            .map_err(|err| {
                CronError::Invalid(format!("invalid cron expression {expression:?}: {err}"))
            })?;
        let timing = Self::Cron {
            cron: Box::new(cron),
            zone,
        };
        // An expression that can match no date (`0 0 30 2 *`) is refused
        // rather than kept as a schedule that never fires.
        if timing.next_after(Utc::now().timestamp_millis()).is_none() {
            return Err(CronError::Invalid(format!(
                "the cron expression {expression:?} never fires"
            )));
        }
        Ok(timing)
    }

    /// The first tick strictly after `after_ms` (Unix milliseconds).
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        match self {
            Self::Cron { cron, zone } => {
                // croner keeps the input's fraction of a second in what it
                // returns: ticks must fall on whole seconds.
                let after = zone.timestamp_millis_opt(whole_second(after_ms)).single()?;
                cron.find_next_occurrence(&after, false)
                    .ok()
                    .map(|at| at.timestamp_millis())
            }
            Self::Every {
                period_ms,
                anchor_ms,
            } => {
                let k = (after_ms - anchor_ms).div_euclid(*period_ms) + 1;
                Some(anchor_ms + k * period_ms)
            }
            Self::Once { at_ms } => (*at_ms > after_ms).then_some(*at_ms),
        }
    }
}

fn whole_second(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

fn parse_time(text: &str) -> Result<i64, CronError> {
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|at| at.timestamp_millis())
        .map_err(|_| {
            CronError::Invalid(format!(
                "invalid time {:?}: use RFC 3339, such as 2030-01-01T00:00:00Z",
                text.trim()
            ))
        })
}

impl Timing {
    /// The last tick at or before `at_ms`.
    fn last_at_or_before(&self, at_ms: i64) -> Option<i64> {
        match self {
            Self::Cron { cron, zone } => {
                let at = zone.timestamp_millis_opt(whole_second(at_ms)).single()?;
                cron.find_previous_occurrence(&at, true)
                    .ok()
                    .map(|at| at.timestamp_millis())
            }
            Self::Every {
                period_ms,
                anchor_ms,
            } => Some(anchor_ms + (at_ms - anchor_ms).div_euclid(*period_ms) * period_ms),
            Self::Once { at_ms: once } => (*once <= at_ms).then_some(*once),
        }
    }

    /// The ticks after `after_ms` up to and including `until_ms`, at most
    /// the `limit` latest, latest first. It walks back from `until_ms`, so
    /// a long gap costs no more than `limit` steps.
    pub fn due_between(&self, after_ms: i64, until_ms: i64, limit: usize) -> Vec<i64> {
        let mut due = Vec::new();
        let mut cursor = until_ms;
        while due.len() < limit {
            match self.last_at_or_before(cursor) {
                Some(at) if at > after_ms => {
                    due.push(at);
                    cursor = at - 1;
                }
                _ => break,
            }
        }
        due
    }
}

/// `10s`, `5m`, `1h30m`, `1d`, `250ms`: a sum of whole numbers with units.
fn parse_duration(text: &str) -> Result<i64, CronError> {
    let bad = || {
        CronError::Invalid(format!(
            "invalid @every duration {text:?}: use whole numbers with units, such as 10s, 5m or 1h30m"
        ))
    };
    if text.is_empty() {
        return Err(bad());
    }
    let mut total: i64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total = number
            .checked_mul(unit_ms)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(bad)?;
    }
    if total < MIN_PERIOD_MS {
        return Err(CronError::Invalid(format!(
            "@every {text} is too short: the shortest period is 1s"
        )));
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis()
    }

    #[test]
    fn five_and_six_fields_and_macros() {
        let t = Timing::parse("*/15 * * * *", "UTC").unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:07:12Z")),
            Some(ms("2026-01-01T00:15:00Z"))
        );
        let t = Timing::parse("30 * * * * *", "UTC").unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:00:30Z")),
            Some(ms("2026-01-01T00:01:30Z"))
        );
        // A time within a second still gives whole-second ticks.
        let t = Timing::parse("* * * * *", "UTC").unwrap();
        let start = ms("2026-01-01T00:00:12Z") + 860;
        assert_eq!(t.next_after(start), Some(ms("2026-01-01T00:01:00Z")));
        assert_eq!(
            t.due_between(start, ms("2026-01-01T00:02:00Z") + 862, 10),
            vec![ms("2026-01-01T00:02:00Z"), ms("2026-01-01T00:01:00Z")]
        );
        let t = Timing::parse("@daily", "UTC").unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T10:00:00Z")),
            Some(ms("2026-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn time_zones_follow_daylight_saving() {
        let t = Timing::parse("0 9 * * *", "Europe/Paris").unwrap();
        // Winter: UTC+1; summer: UTC+2.
        assert_eq!(
            t.next_after(ms("2026-01-10T00:00:00Z")),
            Some(ms("2026-01-10T08:00:00Z"))
        );
        assert_eq!(
            t.next_after(ms("2026-07-10T00:00:00Z")),
            Some(ms("2026-07-10T07:00:00Z"))
        );
    }

    #[test]
    fn every_falls_on_multiples_of_its_period() {
        let t = Timing::parse("@every 1m30s", "UTC").unwrap();
        assert_eq!(t.next_after(0), Some(90_000));
        assert_eq!(t.next_after(90_000), Some(180_000));
        assert_eq!(t.next_after(179_999), Some(180_000));
        let t = Timing::parse("@every 10m from 2026-01-01T00:03:00Z", "UTC").unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:04:00Z")),
            Some(ms("2026-01-01T00:13:00Z"))
        );
        let t = Timing::parse("@at 2026-01-01T00:03:00Z", "UTC").unwrap();
        assert_eq!(
            t.next_after(ms("2026-01-01T00:00:00Z")),
            Some(ms("2026-01-01T00:03:00Z"))
        );
        assert_eq!(t.next_after(ms("2026-01-01T00:03:00Z")), None);
    }

    #[test]
    fn due_ticks_are_the_latest_within_the_limit() {
        let t = Timing::parse("@every 1s", "UTC").unwrap();
        assert_eq!(t.due_between(1_000, 4_500, 10), vec![4_000, 3_000, 2_000]);
        assert_eq!(t.due_between(0, 1_000_000, 2), vec![1_000_000, 999_000]);
        let t = Timing::parse("0 * * * *", "UTC").unwrap();
        assert_eq!(
            t.due_between(ms("2026-01-01T00:00:00Z"), ms("2026-01-01T02:30:00Z"), 10),
            vec![ms("2026-01-01T02:00:00Z"), ms("2026-01-01T01:00:00Z")]
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, zone, needle) in [
            ("* * *", "UTC", "5 fields"),
            ("0 0 0 * * * 2030", "UTC", "5 fields"),
            ("61 * * * *", "UTC", "invalid cron expression"),
            ("0 0 30 2 *", "UTC", "never fires"),
            ("@every", "UTC", "@every"),
            ("@every 10x", "UTC", "@every"),
            ("@every 10ms", "UTC", "too short"),
            ("* * * * *", "Mars/Olympus", "unknown time zone"),
        ] {
            let err = Timing::parse(expr, zone).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
        }
    }
}
