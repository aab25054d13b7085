//! `[jobs]`: the job queues and the jobs service.

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Background jobs (`[jobs]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Off, the jobs routes answer that jobs are off and no jobs process
    /// runs jobs.
    pub enabled: bool,
    /// The queues jobs may be submitted to, by name (letters, digits, `_`
    /// and `-`). `default` always exists.
    pub queues: std::collections::BTreeMap<String, QueueConfig>,
    /// Jobs one jobs process runs at once, over every queue.
    pub concurrency: usize,
    /// Largest payload a job may carry, in bytes of JSON.
    pub max_payload_bytes: usize,
    /// How long an idempotency key is remembered.
    pub idempotency_window_secs: u64,
    /// How long a finished job (succeeded, dead or cancelled) stays
    /// readable. A dead job retried within this time runs again.
    pub retention_secs: u64,
    /// How long a jobs process may go silent on a run before NATS hands the
    /// job to another process. Running jobs are kept alive well within it,
    /// so it bounds how late a job held by a killed process runs again.
    pub ack_wait_ms: u64,
    /// The queue of Parse's `POST /jobs/<name>`.
    pub parse_queue: String,
    /// Servers holding a copy of the job streams: 1 on a single server, 3
    /// in a cluster.
    pub replicas: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            queues: [("default".to_owned(), QueueConfig::default())].into(),
            concurrency: 256,
            max_payload_bytes: 256 * 1024,
            idempotency_window_secs: 24 * 3600,
            retention_secs: 7 * 24 * 3600,
            ack_wait_ms: 30_000,
            parse_queue: "default".into(),
            replicas: 1,
        }
    }
}

/// One job queue (`[jobs.queues.<name>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue one jobs process runs at once.
    pub concurrency: usize,
    /// At most this many jobs of the queue start per `rate_period_ms`,
    /// across every jobs process; 0 means no limit.
    pub rate_limit: u32,
    pub rate_period_ms: u64,
    /// A job waiting this long at one priority moves up one; 0 turns aging
    /// off.
    pub aging_ms: u64,
    /// Defaults of the queue's jobs.
    pub max_attempts: u32,
    pub timeout_ms: u64,
    /// A run fails when its worker is silent this long (no answer, no
    /// progress message).
    pub heartbeat_ms: u64,
    /// The default backoff: exponential from `backoff_ms`, doubling up to
    /// `backoff_max_ms`, with jitter.
    pub backoff_ms: u64,
    pub backoff_max_ms: u64,
    /// Keep a record of each succeeded job (for `jobs.retention_secs`).
    /// Off, a succeeded job is forgotten once done, as Sidekiq and
    /// BullMQ's `removeOnComplete` do: one write fewer per job, and a job
    /// id that is no longer found once its job succeeded.
    pub keep_succeeded: bool,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            rate_limit: 0,
            rate_period_ms: 1000,
            aging_ms: 0,
            max_attempts: 3,
            timeout_ms: 5 * 60 * 1000,
            heartbeat_ms: 60 * 1000,
            backoff_ms: 1000,
            backoff_max_ms: 5 * 60 * 1000,
            keep_succeeded: true,
        }
    }
}

impl Section for JobsConfig {
    const KEY: &'static str = "jobs";

    fn validate(&self) -> Result<(), String> {
        let invalid = |text: String| Err(text);
        for (name, queue) in &self.queues {
            if name.len() > 64 || !oxbase_proto::valid_token(name) {
                return invalid(format!(
                    "queues: {name:?} is not a queue name (1 to 64 ASCII letters, digits, '_' or '-')"
                ));
            }
            if queue.concurrency == 0 || queue.max_attempts == 0 || queue.heartbeat_ms == 0 {
                return invalid(format!(
                    "queues.{name}: concurrency, max_attempts and heartbeat_ms must be positive"
                ));
            }
            if queue.rate_limit > 0 && queue.rate_period_ms == 0 {
                return invalid(format!(
                    "queues.{name}: rate_period_ms must be positive with a rate_limit"
                ));
            }
        }
        if !self.queues.contains_key("default") {
            return invalid("queues must keep the `default` queue".into());
        }
        if !self.queues.contains_key(&self.parse_queue) {
            return invalid(format!(
                "parse_queue: there is no queue {:?}",
                self.parse_queue
            ));
        }
        if self.concurrency == 0 || self.ack_wait_ms < 1000 {
            return invalid("concurrency must be positive and ack_wait_ms at least 1000".into());
        }
        Ok(())
    }

    fn entry_default(path: &str) -> Option<Value> {
        match path {
            "queues" => serde_json::to_value(QueueConfig::default()).ok(),
            _ => None,
        }
    }
}
