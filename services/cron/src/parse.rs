//! Parse's `_JobSchedule` as schedules. Parse Server only stores these;
//! oxbase fires them. The fields, as Parse Dashboard writes them:
//!
//! - `jobName`: the Parse job (`POST /jobs/<jobName>`) to run;
//! - `params`: its parameters, a JSON object as a string;
//! - `startAfter`: an ISO date, the first possible run;
//! - `repeatMinutes`: repeat every that many minutes from `startAfter`
//!   (from `timeOfDay` on `startAfter`'s day, when given);
//! - `timeOfDay` (`HH:MM:SS.sssZ`, UTC) without `repeatMinutes`: daily at
//!   that time, on the days `daysOfWeek` flags (7 flags, Sunday first);
//! - neither: once, at `startAfter`.
//!
//! A Parse schedule fires its latest missed run once on return
//! ([`Misfire::FireOnce`]): a schedule set to run once must run.

use oxbase_proto::cron::{CronSchedule, Misfire};
use oxbase_proto::jobs::JobSpec;
use serde_json::{Map, Value};

use crate::CronError;
use crate::service::PARSE_PREFIX;

pub fn from_job_schedule(
    object: &Map<String, Value>,
    parse_queue: &str,
) -> Result<CronSchedule, CronError> {
    let bad = |text: String| Err(CronError::Invalid(text));
    let Some(id) = object.get("objectId").and_then(Value::as_str) else {
        return bad("a _JobSchedule without an objectId".into());
    };
    let Some(job_name) = object.get("jobName").and_then(Value::as_str) else {
        return bad("jobName is missing".into());
    };
    let payload = match object.get("params") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::String(text)) if text.trim().is_empty() => Value::Object(Map::new()),
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(value @ Value::Object(_)) => value,
            _ => return bad("params must be a JSON object".into()),
        },
        Some(value @ Value::Object(_)) => value.clone(),
        Some(_) => return bad("params must be a JSON object".into()),
    };
    let start = match object.get("startAfter").or_else(|| object.get("createdAt")) {
        Some(value) => date_ms(value)
            .ok_or_else(|| CronError::Invalid("startAfter must be an ISO date".into()))?,
        None => crate::now_ms(),
    };
    let repeat = match object.get("repeatMinutes") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_f64() {
            Some(m) if m >= 1.0 && m.fract() == 0.0 => Some(m as i64),
            Some(0.0) => None,
            _ => return bad("repeatMinutes must be a whole number of minutes".into()),
        },
    };
    let time_of_day = match object.get("timeOfDay") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(parse_time_of_day(text).ok_or_else(|| {
            CronError::Invalid(format!("timeOfDay {text:?} is not HH:MM:SS.sssZ"))
        })?),
        Some(_) => return bad("timeOfDay must be a string".into()),
    };
    let cron = match (repeat, time_of_day) {
        (Some(minutes), time) => {
            let anchor = match time {
                Some((h, m, s)) => {
                    start.div_euclid(86_400_000) * 86_400_000 + (h * 3600 + m * 60 + s) * 1000
                }
                None => start,
            };
            format!("@every {minutes}m from {}", crate::rfc3339(anchor))
        }
        (None, Some((h, m, s))) => format!("{s} {m} {h} * * {}", days_of_week(object)?),
        (None, None) => format!("@at {}", crate::rfc3339(start)),
    };
    Ok(CronSchedule {
        name: format!("{PARSE_PREFIX}{id}"),
        cron,
        time_zone: "UTC".into(),
        job: JobSpec {
            queue: Some(parse_queue.to_owned()),
            name: job_name.to_owned(),
            payload,
            ..JobSpec::default()
        },
        misfire: Misfire::FireOnce,
        enabled: true,
        since: Some(start),
    })
}

/// A REST date: `{"__type": "Date", "iso": ...}` or an ISO string.
fn date_ms(value: &Value) -> Option<i64> {
    let text = match value {
        Value::String(text) => text.as_str(),
        Value::Object(map) => map.get("iso")?.as_str()?,
        _ => return None,
    };
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|at| at.timestamp_millis())
}

/// `HH:MM:SS.sssZ`, `HH:MM:SSZ` or `HH:MM`.
fn parse_time_of_day(text: &str) -> Option<(i64, i64, i64)> {
    let text = text.trim_end_matches('Z');
    let text = text.split('.').next()?;
    let mut parts = text.split(':').map(|p| p.parse::<i64>().ok());
    let h = parts.next()??;
    let m = parts.next()??;
    let s = parts.next().unwrap_or(Some(0))?;
    ((0..24).contains(&h) && (0..60).contains(&m) && (0..60).contains(&s)).then_some((h, m, s))
}

/// The cron weekday field of `daysOfWeek`: 7 flags, Sunday first; absent
/// means every day.
fn days_of_week(object: &Map<String, Value>) -> Result<String, CronError> {
    let Some(Value::Array(flags)) = object.get("daysOfWeek") else {
        return Ok("*".into());
    };
    if flags.len() != 7 {
        return Err(CronError::Invalid(
            "daysOfWeek must have 7 flags, Sunday first".into(),
        ));
    }
    let days: Vec<String> = flags
        .iter()
        .enumerate()
        .filter(|(_, flag)| match flag {
            Value::Bool(on) => *on,
            Value::Number(n) => n.as_f64() != Some(0.0),
            Value::String(s) => s != "0" && !s.is_empty(),
            _ => false,
        })
        .map(|(day, _)| day.to_string())
        .collect();
    if days.is_empty() {
        return Err(CronError::Invalid("daysOfWeek has no day on".into()));
    }
    Ok(days.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schedule(object: Value) -> Result<CronSchedule, CronError> {
        from_job_schedule(object.as_object().unwrap(), "default")
    }

    #[test]
    fn dashboard_schedules_become_timings() {
        let once = schedule(
            json!({"objectId": "a1", "jobName": "j", "params": "{\"x\":1}",
            "startAfter": "2030-01-01T10:00:00.000Z"}),
        )
        .unwrap();
        assert_eq!(once.name, "_parse_a1");
        assert_eq!(once.cron, "@at 2030-01-01T10:00:00.000Z");
        assert_eq!(once.job.payload, json!({"x": 1}));
        let every = schedule(json!({"objectId": "a1", "jobName": "j",
            "startAfter": "2030-01-01T10:00:00.000Z", "repeatMinutes": 15}))
        .unwrap();
        assert_eq!(every.cron, "@every 15m from 2030-01-01T10:00:00.000Z");
        let daily = schedule(json!({"objectId": "a1", "jobName": "j",
            "startAfter": "2030-01-01T10:00:00.000Z", "timeOfDay": "03:30:00.000Z",
            "daysOfWeek": [0, 1, 1, 1, 1, 1, 0]}))
        .unwrap();
        assert_eq!(daily.cron, "0 30 3 * * 1,2,3,4,5");
        for s in [once, every, daily] {
            crate::Timing::parse(&s.cron, &s.time_zone).unwrap();
        }
    }

    #[test]
    fn broken_schedules_are_refused() {
        for object in [
            json!({"objectId": "a1"}),
            json!({"objectId": "a1", "jobName": "j", "params": "[1]"}),
            json!({"objectId": "a1", "jobName": "j", "timeOfDay": "25:00:00.000Z"}),
            json!({"objectId": "a1", "jobName": "j", "repeatMinutes": 1.5}),
        ] {
            assert!(schedule(object).is_err());
        }
    }
}
