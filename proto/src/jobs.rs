//! Background jobs: what a client submits, the record the jobs service
//! keeps, and the protocol between the jobs service and a worker.
//!
//! # Submitting
//!
//! Over HTTP, `POST <mount>/queues/<queue>/jobs` with the master key, or a
//! NATS request to `<prefix>.jobs.submit` with a [`JobSpec`] (or an array of
//! them) as the body. Both answer [`Submitted`]; NATS wraps it in
//! `{"success": ...}` or answers `{"error": {"code", "message"}}`.
//!
//! # Priority
//!
//! Priorities run from 0 to 9 and **9 runs first**; the default is
//! [`DEFAULT_PRIORITY`]. Whenever a jobs process has a free slot for a
//! queue it takes the oldest job of the highest priority waiting in that
//! queue, so under contention a higher priority always starts first and one
//! priority is first in, first out. With aging turned on for a queue, a job
//! that has waited `aging_ms` at one priority moves up to the next one (and
//! to the back of its line).
//!
//! # Workers
//!
//! A job runs on the first handler found for its name: a built-in job of
//! the jobs process, a webhook registered with `POST /hooks/jobs`, or else
//! a NATS worker. A NATS worker subscribes (best in a queue group) to
//! `<prefix>.jobs.run.<queue>.<name>` and answers each request, whose body
//! is a [`JobRun`], with `{"success": result}` or `{"error": ...}` (the
//! body functions answer). A webhook receives the same [`JobRun`] as a
//! POST and answers the same way.
//!
//! While it works, a worker may publish [`JobProgress`] messages to the
//! run's `progressSubject`. Each one is a heartbeat; its `progress` and
//! `message`, when set, are stored on the job (and on Parse's `_JobStatus`).
//! A run fails, and is retried, when it has no answer after `timeoutMs`, or
//! when `heartbeatMs` pass without an answer or a progress message.
//! Delivery is at least once: a run can be repeated after a crash or a
//! timeout, so handlers should be idempotent (by job `id`).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Priorities are `0..PRIORITY_LEVELS`, the highest running first.
pub const PRIORITY_LEVELS: u8 = 10;
pub const DEFAULT_PRIORITY: u8 = 5;

/// A job to run. Fields left out take the queue's defaults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct JobSpec {
    /// The queue; over HTTP the path names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Which handler runs it: letters, digits, `_` and `-`.
    pub name: String,
    /// Given to the handler as is.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub payload: Value,
    /// 0 to 9; 9 runs first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    /// When to run it, RFC 3339 (`2030-01-01T00:00:00Z`). Not with `delayMs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<String>,
    /// Run it this many milliseconds from now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<i64>,
    /// Runs before it is given up (dead), counting the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
    /// How long one run may take.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// A second submission with the same key to the same queue, within the
    /// configured window, returns the first job instead of adding one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
}

/// The wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Backoff {
    /// The same delay before every retry.
    #[serde(rename_all = "camelCase")]
    Fixed { delay_ms: u64 },
    /// `delayMs`, doubled at each retry up to `maxMs`; with `jitter`, a
    /// random part of up to half the delay is added, so that jobs failing
    /// together do not retry together.
    #[serde(rename_all = "camelCase")]
    Exponential {
        delay_ms: u64,
        max_ms: u64,
        #[serde(default = "yes")]
        jitter: bool,
    },
}

fn yes() -> bool {
    true
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum JobState {
    /// Ready, waiting for a free worker.
    Waiting,
    /// Waiting for its time: a `runAt` or `delayMs`, or a retry's backoff.
    Delayed,
    /// Running.
    Active,
    Succeeded,
    /// Failed its last attempt; `POST .../retry` runs it again.
    Dead,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        Self::Waiting,
        Self::Delayed,
        Self::Active,
        Self::Succeeded,
        Self::Dead,
        Self::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Whether the job will not run again by itself.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptError {
    pub attempt: u32,
    pub error: String,
    /// When it failed, RFC 3339.
    pub at: String,
}

/// A job as the jobs service keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    pub id: String,
    pub queue: String,
    pub name: String,
    #[serde(default)]
    pub payload: Value,
    pub priority: u8,
    pub state: JobState,
    /// Runs started so far. On a queued message: the runs before it, so
    /// that a run is attempt `attempts` + its delivery count.
    pub attempts: u32,
    pub max_attempts: u32,
    pub backoff: Backoff,
    pub timeout_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    pub created_at: String,
    /// When it becomes (or became) ready to run.
    pub run_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// The last progress a worker reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// What the handler answered, once it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Every failed attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<AttemptError>,
    /// Parse's `_JobStatus` object that mirrors this job, for jobs started
    /// through `POST /jobs/<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_status_id: Option<String>,
    /// Internal: which queued message may run the job. Each queuing (the
    /// first, a retry) takes the next number, and a message carrying an
    /// older one is stale and dropped.
    pub ticket: u32,
}

/// What a submission answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Submitted {
    pub job: JobRecord,
    /// The idempotency key was seen within its window: `job` is the job
    /// submitted then, and nothing new was queued.
    pub duplicate: bool,
}

/// The body of a run request to a worker or a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRun {
    /// The job's id: the same on every attempt, so a handler can
    /// deduplicate by it.
    pub id: String,
    pub queue: String,
    pub name: String,
    pub payload: Value,
    /// 1 on the first run.
    pub attempt: u32,
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// The longest silence allowed between progress messages.
    pub heartbeat_ms: u64,
    /// Where to publish [`JobProgress`] messages (NATS workers only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_subject: Option<String>,
}

/// A worker's progress report; an empty object `{}` is a bare heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobProgress {
    /// Percent done, 0 to 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_is_tagged_and_jitter_defaults_on() {
        let exp: Backoff =
            serde_json::from_str(r#"{"type":"exponential","delayMs":100,"maxMs":1000}"#).unwrap();
        assert_eq!(
            exp,
            Backoff::Exponential {
                delay_ms: 100,
                max_ms: 1000,
                jitter: true
            }
        );
        let fixed: Backoff = serde_json::from_str(r#"{"type":"fixed","delayMs":5}"#).unwrap();
        assert_eq!(fixed, Backoff::Fixed { delay_ms: 5 });
    }

    #[test]
    fn a_spec_refuses_unknown_fields() {
        let err = serde_json::from_str::<JobSpec>(r#"{"name":"a","priorty":3}"#).unwrap_err();
        assert!(err.to_string().contains("priorty"), "{err}");
    }

    #[test]
    fn states_round_trip_as_text() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                Value::from(state.as_str())
            );
        }
        assert!(JobState::Dead.is_final() && !JobState::Delayed.is_final());
    }
}
