//! Schedules: periodic jobs that fire once per tick across every `oxbase
//! cron` process.
//!
//! A [`CronSchedule`] names a cron expression, a time zone and the job to
//! submit at each tick. Schedules are managed over HTTP under
//! `<mount>/cron/schedules` (master key) or in the config file, and kept in
//! the key-value bucket `<PREFIX>_CRON_SCHEDULES`.
//!
//! # Ticks
//!
//! A tick is one scheduled time of one schedule; its slot id is
//! `<schedule>@<unix milliseconds>` ([`slot_id`]). Every cron process
//! evaluates every schedule, and at each tick the processes race to create
//! the slot's key in the bucket `<PREFIX>_CRON_SLOTS`. The winner submits
//! the job with the slot id as its idempotency key, then records the
//! [`CronRun`]. A process that loses looks at the slot again after a lease;
//! if the winner never finished, it takes the slot over and does the same,
//! and the idempotency key keeps the job single.
//!
//! Each tick's outcome, fired or skipped, is published once (the slot id is
//! its `Nats-Msg-Id`) to `<prefix>.cron.runs.<schedule>` in the stream
//! `<PREFIX>_CRON_RUNS`, which keeps the last runs of each schedule.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::jobs::JobSpec;

/// A periodic job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CronSchedule {
    /// 1 to 64 ASCII letters, digits, `_` and `-`, not starting with `_`
    /// (names starting with `_` are Parse's `_JobSchedule` entries).
    #[serde(default)]
    pub name: String,
    /// A cron expression of 5 fields (minute first) or 6 (second first);
    /// a macro such as `@hourly` or `@daily`; `@every <duration>`
    /// (`@every 10s`, `@every 1h30m`), whose ticks fall on whole multiples
    /// of the duration since the Unix epoch, or since the time given with
    /// `@every 10m from 2030-01-01T00:00:00Z`; or `@at <RFC 3339 time>`,
    /// a single tick.
    pub cron: String,
    /// An IANA time zone such as `Europe/Paris`; cron fields are read in
    /// it. Default `UTC`.
    #[serde(default = "utc")]
    pub time_zone: String,
    /// The job each tick submits. `runAt`, `delayMs` and `idempotencyKey`
    /// are not allowed: the tick sets them.
    pub job: JobSpec,
    /// What happens to ticks that passed while no cron process was running.
    #[serde(default)]
    pub misfire: Misfire,
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Set by the server: when the schedule was created, or last changed
    /// its timing or enabled state (Unix milliseconds). Ticks before it
    /// belong to an earlier version of the schedule and never fire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
}

fn utc() -> String {
    "UTC".into()
}

fn yes() -> bool {
    true
}

/// What happens, on return, to the ticks that passed while every cron
/// process was down (ticks later than the misfire grace).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum Misfire {
    /// Record them as skipped; the schedule resumes at its next tick.
    #[default]
    Skip,
    /// Fire the latest of them once, and record the others as skipped.
    FireOnce,
}

/// What became of one tick.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CronRun {
    pub schedule: String,
    /// `<schedule>@<unix ms>`: the idempotency key of the job it fired.
    pub slot: String,
    /// The tick's time, RFC 3339 UTC with milliseconds.
    pub scheduled_at: String,
    pub outcome: RunOutcome,
    /// The cron process that settled the tick.
    pub process: String,
    /// The job it submitted, when it fired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    /// Why the job could not be submitted, when it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When it was settled, RFC 3339 UTC with milliseconds.
    pub at: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RunOutcome {
    Fired,
    /// A misfire the schedule's policy did not fire.
    Skipped,
    /// The job was refused (its queue was removed, say); see `error`.
    Failed,
}

/// `<schedule>@<unix ms>`.
pub fn slot_id(schedule: &str, tick_ms: i64) -> String {
    format!("{schedule}@{tick_ms}")
}
