//! Where a job runs: a built-in job of this process, a webhook registered
//! with `/hooks/jobs`, or a NATS worker on `<prefix>.jobs.run.<queue>.<name>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, client::RequestErrorKind};
use bytes::Bytes;
use oxbase_hooks::HookRegistry;
use oxbase_kit::{NatsError, PortError, trace_context};
use oxbase_proto::hooks::{HookError, IDEMPOTENCY_KEY, WEBHOOK_KEY};
use oxbase_proto::jobs::{JobProgress, JobRun};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Settings;

/// Why an attempt of a [`BuiltinJob`] failed. Its text is the attempt's
/// error message, which the job's record and `_JobStatus` show: make one
/// with `JobFailure::from("payload.numbers must be an array")` (or
/// `.into()`, or `?` on an `Option::ok_or("...")`), or from an error with
/// `.map_err(JobFailure::new)`, which keeps it as the source.
pub type JobFailure = PortError;

/// A job implemented in Rust and run inside the jobs process.
#[async_trait::async_trait]
pub trait BuiltinJob: Send + Sync {
    /// Runs one attempt. An `Err` is the attempt's error message.
    async fn run(&self, run: JobRun, progress: Progress) -> Result<Value, JobFailure>;
}

/// Why one attempt of a job failed; its text is the attempt's error
/// message, which the job's record and `_JobStatus` show.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// A built-in job's own failure, as it worded it.
    #[error(transparent)]
    Builtin(JobFailure),
    #[error(transparent)]
    Encode(serde_json::Error),
    #[error("no worker is listening on {0}")]
    NoWorker(String),
    #[error("NATS: {0}")]
    Nats(#[source] NatsError),
    #[error("the webhook did not answer within {0} ms")]
    WebhookTimeout(u64),
    #[error("cannot reach the webhook: {}", innermost(.0))]
    Unreachable(#[source] reqwest::Error),
    #[error("the webhook answered HTTP {0}")]
    WebhookStatus(u16),
    #[error("cannot read the webhook's answer: {}", innermost(.0))]
    UnreadableAnswer(#[source] reqwest::Error),
    /// The error message the handler answered.
    #[error("{0}")]
    Handler(String),
    #[error(r#"the handler's answer is not {{"success": ...}} or {{"error": ...}} JSON"#)]
    NotAnAnswer,
    #[error("the job did not finish within {0} ms")]
    Deadline(u64),
    #[error("the worker sent no heartbeat for {0} ms")]
    NoHeartbeat(u64),
}

/// How a running job reports progress; each report is also a heartbeat.
#[derive(Debug, Clone)]
pub struct Progress {
    tx: mpsc::UnboundedSender<JobProgress>,
}

impl Progress {
    pub(crate) fn channel() -> (Self, mpsc::UnboundedReceiver<JobProgress>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (Self { tx }, rx)
    }

    pub(crate) fn sender(&self) -> mpsc::UnboundedSender<JobProgress> {
        self.tx.clone()
    }

    pub fn report(&self, progress: JobProgress) {
        let _ = self.tx.send(progress);
    }

    pub fn heartbeat(&self) {
        self.report(JobProgress::default());
    }
}

/// A change to Parse's `_JobStatus` object of a job.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StatusUpdate {
    /// `running`, `succeeded` or `failed`.
    pub status: Option<&'static str>,
    pub message: Option<String>,
    /// Sets `finishedAt` to now.
    pub finished: bool,
}

/// Why a [`JobStatusSink`] could not write: the store's error, made with
/// `.map_err(JobStatusError::new)`. The jobs service logs it and goes on.
pub type JobStatusError = PortError;

/// Writes `_JobStatus`; the object layer does (`parse_status.rs`).
#[async_trait::async_trait]
pub trait JobStatusSink: Send + Sync {
    async fn update(&self, status_id: &str, update: StatusUpdate) -> Result<(), JobStatusError>;
}

/// Finds and calls a job's handler.
pub(crate) struct Handlers {
    builtins: HashMap<String, Arc<dyn BuiltinJob>>,
    registry: Option<Arc<HookRegistry>>,
    client: async_nats::Client,
    http: reqwest::Client,
    settings: Arc<Settings>,
}

impl Handlers {
    pub(crate) fn new(
        builtins: HashMap<String, Arc<dyn BuiltinJob>>,
        registry: Option<Arc<HookRegistry>>,
        client: async_nats::Client,
        settings: Arc<Settings>,
    ) -> Result<Self, crate::JobsError> {
        let http = reqwest::Client::builder()
            // A redirect would turn the POST into a GET on most servers.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .tcp_nodelay(true)
            .build()
            .map_err(crate::JobsError::HttpClient)?;
        Ok(Self {
            builtins,
            registry,
            client,
            http,
            settings,
        })
    }

    /// Runs one attempt to its answer; the caller bounds it in time.
    pub(crate) async fn call(&self, run: JobRun, progress: Progress) -> Result<Value, RunError> {
        if let Some(job) = self.builtins.get(&run.name) {
            return job.run(run, progress).await.map_err(RunError::Builtin);
        }
        let webhook = self
            .registry
            .as_ref()
            .and_then(|registry| registry.job(&run.name))
            .and_then(|entry| entry.url);
        let body = serde_json::to_vec(&run).map_err(RunError::Encode)?;
        let reply = match webhook {
            Some(url) => self.post(&url, &run, body).await?,
            None => self.request(&run, body).await?,
        };
        // `{"success": null}` is a success, so look for the member rather
        // than at its value.
        let reply: Option<serde_json::Map<String, Value>> = serde_json::from_slice(&reply).ok();
        match reply {
            Some(mut reply) if reply.contains_key("error") => {
                let error = reply.remove("error").unwrap_or_default();
                Err(RunError::Handler(
                    serde_json::from_value::<HookError>(error)
                        .map(|e| e.message())
                        .unwrap_or_else(|_| "the handler failed".into()),
                ))
            }
            Some(mut reply) if reply.contains_key("success") => {
                Ok(reply.remove("success").unwrap_or_default())
            }
            _ => Err(RunError::NotAnAnswer),
        }
    }

    async fn request(&self, run: &JobRun, body: Vec<u8>) -> Result<Bytes, RunError> {
        let subject = self.settings.subjects.job_run(&run.queue, &run.name);
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, run.id.as_str());
        trace_context::inject_current(&mut headers);
        let request = async_nats::Request::new()
            .payload(Bytes::from(body))
            .headers(headers)
            // The run's own deadline bounds it: one timer per run is enough.
            .timeout(None);
        match self.client.send_request(subject.clone(), request).await {
            Ok(message) => Ok(message.payload),
            Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                Err(RunError::NoWorker(subject))
            }
            Err(err) => Err(RunError::Nats(err.into())),
        }
    }

    async fn post(&self, url: &str, run: &JobRun, body: Vec<u8>) -> Result<Bytes, RunError> {
        let mut request = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header(IDEMPOTENCY_KEY, run.id.as_str())
            .timeout(Duration::from_millis(run.timeout_ms))
            .body(body);
        if let Some(key) = &self.settings.webhook_key {
            request = request.header(WEBHOOK_KEY, key.expose());
        }
        for (name, value) in trace_context::current_headers() {
            request = request.header(name, value);
        }
        let response = request.send().await.map_err(|err| {
            if err.is_timeout() {
                RunError::WebhookTimeout(run.timeout_ms)
            } else {
                RunError::Unreachable(err)
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(RunError::WebhookStatus(status.as_u16()));
        }
        response.bytes().await.map_err(RunError::UnreadableAnswer)
    }
}

fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
