//! Where a job runs: a built-in job of this process, a webhook registered
//! with `/hooks/jobs`, or a NATS worker on `<prefix>.jobs.run.<queue>.<name>`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{HeaderMap, client::RequestErrorKind};
use bytes::Bytes;
use oxbase_hooks::HookRegistry;
use oxbase_proto::hooks::{HookError, IDEMPOTENCY_KEY, WEBHOOK_KEY};
use oxbase_proto::jobs::{JobProgress, JobRun};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Settings;

/// A job implemented in Rust and run inside the jobs process.
#[async_trait::async_trait]
pub trait BuiltinJob: Send + Sync {
    /// Runs one attempt. An `Err` is the attempt's error message.
    async fn run(&self, run: JobRun, progress: Progress) -> Result<Value, String>;
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

/// Writes `_JobStatus` (the API's store does; the jobs crate has none).
#[async_trait::async_trait]
pub trait JobStatusSink: Send + Sync {
    async fn update(&self, status_id: &str, update: StatusUpdate) -> Result<(), String>;
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
            .map_err(|e| crate::JobsError::Nats(format!("HTTP client: {e}")))?;
        Ok(Self {
            builtins,
            registry,
            client,
            http,
            settings,
        })
    }

    /// Runs one attempt to its answer; the caller bounds it in time.
    pub(crate) async fn call(&self, run: JobRun, progress: Progress) -> Result<Value, String> {
        if let Some(job) = self.builtins.get(&run.name) {
            return job.run(run, progress).await;
        }
        let webhook = self
            .registry
            .as_ref()
            .and_then(|registry| registry.job(&run.name))
            .and_then(|entry| entry.url);
        let body = serde_json::to_vec(&run).map_err(|e| e.to_string())?;
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
                Err(serde_json::from_value::<HookError>(error)
                    .map(|e| e.message())
                    .unwrap_or_else(|_| "the handler failed".into()))
            }
            Some(mut reply) if reply.contains_key("success") => {
                Ok(reply.remove("success").unwrap_or_default())
            }
            _ => {
                Err(r#"the handler's answer is not {"success": ...} or {"error": ...} JSON"#.into())
            }
        }
    }

    async fn request(&self, run: &JobRun, body: Vec<u8>) -> Result<Bytes, String> {
        let subject = self.settings.subjects.job_run(&run.queue, &run.name);
        let mut headers = HeaderMap::new();
        headers.insert(IDEMPOTENCY_KEY, run.id.as_str());
        let request = async_nats::Request::new()
            .payload(Bytes::from(body))
            .headers(headers)
            // The run's own deadline bounds it: one timer per run is enough.
            .timeout(None);
        match self.client.send_request(subject.clone(), request).await {
            Ok(message) => Ok(message.payload),
            Err(err) if err.kind() == RequestErrorKind::NoResponders => {
                Err(format!("no worker is listening on {subject}"))
            }
            Err(err) => Err(format!("NATS: {err}")),
        }
    }

    async fn post(&self, url: &str, run: &JobRun, body: Vec<u8>) -> Result<Bytes, String> {
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
        let response = request.send().await.map_err(|err| {
            if err.is_timeout() {
                format!("the webhook did not answer within {} ms", run.timeout_ms)
            } else {
                format!("cannot reach the webhook: {}", innermost(&err))
            }
        })?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("the webhook answered HTTP {}", status.as_u16()));
        }
        response
            .bytes()
            .await
            .map_err(|err| format!("cannot read the webhook's answer: {}", innermost(&err)))
    }
}

fn innermost(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
