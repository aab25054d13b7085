//! oxbase's cron service: schedules whose every tick fires exactly once
//! across any number of cron processes.
//!
//! - [`ScheduleBook`] creates, reads, changes and deletes schedules, and
//!   reads their last runs. The API uses it; it needs NATS only.
//! - [`CronService`] fires the ticks: every process evaluates every
//!   schedule and races to claim each group of due ticks with a key-value
//!   `create`; the winner submits the jobs, each with its tick's slot id
//!   as its idempotency key.
//!
//! The contract is in [`oxbase_proto::cron`].

mod book;
mod config;
mod parse;
mod parse_schedules;
mod service;
mod slots;
mod timing;

use std::sync::Arc;
use std::time::Duration;

use oxbase_jobs::JobsError;
use oxbase_kit::{Config, NatsError};
use oxbase_objects::code;
use oxbase_proto::Subjects;

pub use book::ScheduleBook;
pub use config::CronConfig;
pub use parse::from_job_schedule;
pub use service::{CronService, ParseSchedules, ParseSchedulesError};
pub use timing::Timing;

/// What went wrong, in words a client can act on; the
/// [internal](Self::is_internal) ones are the server's.
#[derive(Debug, thiserror::Error)]
pub enum CronError {
    #[error("{0}")]
    Invalid(String),
    #[error("a schedule named {0:?} already exists")]
    Duplicate(String),
    #[error("schedule not found")]
    NotFound,
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    /// A schedule or a claim in its bucket that does not parse; `what`
    /// names it (`schedule nightly`, `claim b.1700000000000.3`).
    #[error("{what} is unreadable: {source}")]
    Unreadable {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// The job queue failed to take a tick's job (not a refusal of the
    /// job, which is recorded as the tick's run).
    #[error("jobs: {0}")]
    Jobs(#[source] JobsError),
    /// Parse's `_JobSchedule` or `_JobStatus` could not be read or written.
    #[error("Parse schedules: {0}")]
    ParseSchedules(#[from] ParseSchedulesError),
}

impl CronError {
    /// The Parse error code a client sees.
    pub fn code(&self) -> i64 {
        let code = match self {
            Self::Invalid(_) => code::VALIDATION_ERROR,
            Self::Duplicate(_) => code::DUPLICATE_VALUE,
            Self::NotFound => code::OBJECT_NOT_FOUND,
            Self::Nats(_)
            | Self::Unreadable { .. }
            | Self::Encode { .. }
            | Self::Jobs(_)
            | Self::ParseSchedules(_) => code::INTERNAL_SERVER_ERROR,
        };
        code.into()
    }

    /// The server failed (NATS, a record it cannot read, the store), not
    /// the request.
    pub fn is_internal(&self) -> bool {
        self.code() == i64::from(code::INTERNAL_SERVER_ERROR)
    }
}

/// The cron settings every part shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub subjects: Subjects,
    pub history: i64,
    pub lease: Duration,
    pub slot_ttl: Duration,
    pub misfire_grace: Duration,
    pub max_catch_up: usize,
    pub replicas: usize,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Arc<Self>, CronError> {
        let cron = &config.section::<CronConfig>();
        Ok(Arc::new(Self {
            subjects: Subjects::new(config.events.prefix.as_str())
                .map_err(|e| CronError::Invalid(e.to_string()))?,
            history: cron.history,
            lease: Duration::from_millis(cron.lease_ms),
            slot_ttl: Duration::from_secs(cron.slot_ttl_secs),
            misfire_grace: Duration::from_millis(cron.misfire_grace_ms),
            max_catch_up: cron.max_catch_up.max(1),
            replicas: cron.replicas,
        }))
    }

    fn name(&self, suffix: &str) -> String {
        oxbase_proto::stream_name(&self.subjects, suffix)
    }

    /// `<PREFIX>_CRON_SCHEDULES`.
    pub fn schedules_bucket(&self) -> String {
        self.name("CRON_SCHEDULES")
    }

    /// `<PREFIX>_CRON_SLOTS`.
    pub fn slots_bucket(&self) -> String {
        self.name("CRON_SLOTS")
    }

    /// `<PREFIX>_CRON_RUNS`.
    pub fn runs_stream(&self) -> String {
        self.name("CRON_RUNS")
    }
}

/// Unix milliseconds now.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}
