//! oxbase's jobs service: priority background jobs on JetStream.
//!
//! - [`JobQueue`] submits, reads, lists, cancels and retries jobs. The API
//!   and the service's own NATS responder use it; it needs NATS only.
//! - [`JobsService`] runs jobs: a dispatcher per queue takes ready jobs
//!   highest priority first, runs each on its handler (a built-in job, a
//!   webhook, or a NATS worker), and retries, finishes or buries it.
//!
//! The protocol workers speak is in [`oxbase_proto::jobs`].

mod config;
mod dispatch;
mod handlers;
mod metrics;
mod parse_status;
mod queue;
mod records;
mod service;

use std::collections::BTreeMap;
use std::time::Duration;

use oxbase_hooks::TriggersConfig;
use oxbase_kit::{Config, NatsError, Secret};
use oxbase_objects::code;
use oxbase_proto::Subjects;

pub use config::{JobsConfig, QueueConfig};
pub use handlers::{BuiltinJob, JobFailure, JobStatusError, JobStatusSink, Progress, StatusUpdate};
pub use metrics::Metrics;
pub use queue::JobQueue;
pub use service::JobsService;

/// What went wrong, in words a client can act on. The API maps each kind
/// to a Parse error code; the [internal](Self::is_internal) ones are the
/// server's, not the client's.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("{0}")]
    Invalid(String),
    #[error("there is no job queue {0:?}")]
    UnknownQueue(String),
    #[error("the job's payload is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("job not found")]
    NotFound,
    /// The job is not in a state the operation applies to.
    #[error("{0}")]
    WrongState(String),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    /// A job's record in the bucket is not a job record.
    #[error("job {id} has an unreadable record: {source}")]
    Unreadable {
        id: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot encode a job record: {0}")]
    Encode(#[source] serde_json::Error),
    /// The client webhook jobs are called with cannot be made.
    #[error("HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl JobsError {
    /// The Parse error code a client sees.
    pub fn code(&self) -> i64 {
        let code = match self {
            Self::Invalid(_)
            | Self::UnknownQueue(_)
            | Self::TooLarge { .. }
            | Self::WrongState(_) => code::VALIDATION_ERROR,
            Self::NotFound => code::OBJECT_NOT_FOUND,
            Self::Nats(_) | Self::Unreadable { .. } | Self::Encode(_) | Self::HttpClient(_) => {
                code::INTERNAL_SERVER_ERROR
            }
        };
        code.into()
    }

    /// The server failed (NATS, or a record it cannot read), not the
    /// request: worth retrying, and no fault of the client's.
    pub fn is_internal(&self) -> bool {
        self.code() == i64::from(code::INTERNAL_SERVER_ERROR)
    }
}

/// The jobs settings every part shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub subjects: Subjects,
    pub queues: BTreeMap<String, QueueConfig>,
    pub concurrency: usize,
    pub max_payload_bytes: usize,
    pub idempotency_window: Duration,
    pub retention: Duration,
    pub ack_wait: Duration,
    pub parse_queue: String,
    pub replicas: usize,
    pub webhook_key: Option<Secret>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Self, JobsError> {
        let jobs = &config.section::<JobsConfig>();
        Ok(Self {
            subjects: Subjects::new(config.events.prefix.as_str())
                .map_err(|e| JobsError::Invalid(e.to_string()))?,
            queues: jobs.queues.clone(),
            concurrency: jobs.concurrency,
            max_payload_bytes: jobs.max_payload_bytes,
            idempotency_window: Duration::from_secs(jobs.idempotency_window_secs.max(1)),
            retention: Duration::from_secs(jobs.retention_secs.max(1)),
            ack_wait: Duration::from_millis(jobs.ack_wait_ms),
            parse_queue: jobs.parse_queue.clone(),
            replicas: jobs.replicas,
            webhook_key: config.section::<TriggersConfig>().webhook_key,
        })
    }

    pub(crate) fn queue(&self, name: &str) -> Result<&QueueConfig, JobsError> {
        self.queues
            .get(name)
            .ok_or_else(|| JobsError::UnknownQueue(name.to_owned()))
    }

    /// `<PREFIX>_JOBS`, the name of both the jobs stream and the records
    /// bucket (a bucket's stream is `KV_<bucket>`, so they do not clash).
    pub fn stream_name(&self) -> String {
        oxbase_proto::stream_name(&self.subjects, "JOBS")
    }
}
