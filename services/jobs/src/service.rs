//! The jobs service: a dispatcher per queue, the progress router, and the
//! NATS submission responder.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_hooks::{HookRegistry, RegistryError};
use oxbase_kit::{Config, MetricsSource, Readiness, Service, ServiceError, Shutdown};
use oxbase_proto::HookEntry;
use oxbase_proto::hooks::{HookError, HookReply};
use oxbase_proto::jobs::{JobProgress, JobSpec, Submitted};
use serde_json::value::RawValue;
use tokio::sync::Semaphore;

use crate::dispatch::{PriorityDispatcher, Runner};
use crate::handlers::{BuiltinJob, Handlers, JobStatusSink};
use crate::{JobQueue, JobsError, Metrics, Settings};

/// Jobs processes answer submissions as one queue group.
const SUBMIT_GROUP: &str = "oxbase-jobs";
/// Jobs in one NATS submission, at most.
const MAX_SUBMIT_BATCH: usize = 1000;

pub struct JobsService {
    queue: Arc<JobQueue>,
    client: async_nats::Client,
    registry: Option<Arc<HookRegistry>>,
    sink: Option<Arc<dyn JobStatusSink>>,
    builtins: HashMap<String, Arc<dyn BuiltinJob>>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for JobsService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsService").finish_non_exhaustive()
    }
}

impl JobsService {
    /// `registry` finds the webhooks registered for jobs.
    pub fn new(
        config: &Config,
        client: async_nats::Client,
        registry: Option<Arc<HookRegistry>>,
    ) -> Result<Self, JobsError> {
        let settings = Arc::new(Settings::from_config(config)?);
        Ok(Self {
            queue: JobQueue::new(async_nats::jetstream::new(client.clone()), settings),
            client,
            registry,
            sink: None,
            builtins: HashMap::new(),
            metrics: Arc::new(Metrics::default()),
        })
    }

    /// Where Parse's `_JobStatus` is written.
    pub fn status_sink(mut self, sink: Arc<dyn JobStatusSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Runs jobs named `name` in this process.
    pub fn builtin(mut self, name: &str, job: Arc<dyn BuiltinJob>) -> Self {
        self.builtins.insert(name.to_owned(), job);
        self
    }

    pub fn queue(&self) -> Arc<JobQueue> {
        Arc::clone(&self.queue)
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown`, then lets running jobs finish.
    pub async fn run(self, readiness: Readiness, shutdown: Shutdown) -> Result<(), JobsError> {
        readiness.register("jobs");
        let settings = Arc::clone(self.queue.settings());
        if let Some(registry) = &self.registry {
            tokio::spawn(register_builtins(
                Arc::clone(registry),
                self.builtins.keys().cloned().collect(),
                shutdown.clone(),
            ));
        }
        let runner = Arc::new(Runner {
            queue: Arc::clone(&self.queue),
            handlers: Handlers::new(
                self.builtins,
                self.registry,
                self.client.clone(),
                Arc::clone(&settings),
            )?,
            sink: self.sink,
            metrics: self.metrics,
            process: uuid::Uuid::now_v7().simple().to_string(),
            progress: Mutex::new(HashMap::new()),
            global: Arc::new(Semaphore::new(settings.concurrency)),
        });
        let mut tasks = tokio::task::JoinSet::new();
        tasks.spawn(route_progress(
            Arc::clone(&runner),
            self.client.clone(),
            shutdown.clone(),
        ));
        tasks.spawn(answer_submissions(
            Arc::clone(&self.queue),
            self.client.clone(),
            shutdown.clone(),
        ));
        for (name, config) in &settings.queues {
            let dispatcher =
                PriorityDispatcher::new(Arc::clone(&runner), name.clone(), config.clone());
            tasks.spawn(dispatcher.run(shutdown.clone()));
        }
        // Ready once the stream and the bucket answer.
        let ready = async {
            let mut backoff = std::time::Duration::from_millis(100);
            while self.queue.records().await.is_err() {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
            }
            readiness.set("jobs", true);
        };
        tokio::select! {
            () = ready => {}
            () = shutdown.wait() => {}
        }
        while tasks.join_next().await.is_some() {}
        Ok(())
    }
}

#[async_trait::async_trait]
impl Service for JobsService {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn metrics(&self) -> MetricsSource {
        let metrics = JobsService::metrics(self);
        Arc::new(move || metrics.render())
    }

    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError> {
        Ok(JobsService::run(*self, readiness, shutdown).await?)
    }
}

/// Lists each built-in job in the hook registry (as served over NATS, by
/// this service), so `POST /jobs/<name>` knows it has a handler.
async fn register_builtins(registry: Arc<HookRegistry>, names: Vec<String>, shutdown: Shutdown) {
    let mut backoff = std::time::Duration::from_millis(100);
    let mut left = names;
    while !left.is_empty() {
        let mut failed = Vec::new();
        for name in left {
            let entry = HookEntry {
                function_name: None,
                class_name: None,
                trigger_name: None,
                job_name: Some(name.clone()),
                url: None,
                nats: true,
                rate_limit: None,
            };
            match registry.create(entry).await {
                Ok(_) | Err(RegistryError::Exists) => {}
                Err(err) => {
                    tracing::debug!(%err, job = %name, "cannot list a built-in job yet");
                    failed.push(name);
                }
            }
        }
        left = failed;
        if left.is_empty() {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    }
}

/// Sends each progress report a NATS worker publishes to the run it is
/// about.
async fn route_progress(runner: Arc<Runner>, client: async_nats::Client, shutdown: Shutdown) {
    let subject = runner
        .queue
        .settings()
        .subjects
        .job_progress_wildcard(&runner.process);
    let Ok(mut reports) = client.subscribe(subject).await else {
        tracing::error!("cannot subscribe to job progress reports");
        return;
    };
    loop {
        let message = tokio::select! {
            message = reports.next() => match message {
                Some(message) => message,
                None => return,
            },
            () = shutdown.wait() => return,
        };
        let Some(id) = message.subject.rsplit('.').next() else {
            continue;
        };
        let report = if message.payload.is_empty() {
            JobProgress::default()
        } else {
            match serde_json::from_slice::<JobProgress>(&message.payload) {
                Ok(report) => report,
                Err(_) => continue,
            }
        };
        let target = runner
            .progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .cloned();
        if let Some(target) = target {
            let _ = target.send(report);
        }
    }
}

/// The NATS face of [`JobQueue::submit_many`]: a [`JobSpec`] or an array of
/// them on `<prefix>.jobs.submit`, answered with `{"success": ...}` (a
/// `Submitted`, or an array whose items are each a `Submitted` or an
/// `{"error": ...}`) or `{"error": {"code", "message"}}`.
async fn answer_submissions(queue: Arc<JobQueue>, client: async_nats::Client, shutdown: Shutdown) {
    let subject = queue.settings().subjects.jobs_submit();
    let mut backoff = std::time::Duration::from_millis(100);
    let mut requests = loop {
        match client
            .queue_subscribe(subject.clone(), SUBMIT_GROUP.into())
            .await
        {
            Ok(requests) => break requests,
            Err(err) => tracing::warn!(%err, "cannot answer job submissions yet"),
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = shutdown.wait() => return,
        }
        backoff = (backoff * 2).min(std::time::Duration::from_secs(5));
    };
    loop {
        let request = tokio::select! {
            request = requests.next() => match request {
                Some(request) => request,
                None => return,
            },
            () = shutdown.wait() => return,
        };
        let Some(reply) = request.reply.clone() else {
            continue;
        };
        let queue = Arc::clone(&queue);
        let client = client.clone();
        tokio::spawn(async move {
            let body = submit(&queue, &request.payload).await;
            if let Err(err) = client.publish(reply, Bytes::from(body)).await {
                tracing::debug!(%err, "cannot answer a job submission");
            }
        });
    }
}

/// One submission's answer, for one job or for each of an array:
/// `{"success": Submitted}` or a hook error.
struct Answer(Result<Submitted, JobsError>);

impl serde::Serialize for Answer {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match &self.0 {
            Ok(done) => {
                let mut map = serializer.serialize_map(Some(1))?;
                map.serialize_entry("success", done)?;
                map.end()
            }
            Err(err) => HookReply {
                success: None,
                error: Some(HookError::Coded {
                    code: Some(err.code()),
                    message: Some(err.to_string()),
                }),
                context: None,
            }
            .serialize(serializer),
        }
    }
}

/// Answers a NATS submission: `{"success": Submitted}` (or `{"error"}`)
/// for one job, `{"success": [...]}` with one of those per job for an
/// array. Each spec is parsed straight from the body and each answer
/// written straight out: a batch of a thousand is the hot path.
async fn submit(queue: &JobQueue, body: &[u8]) -> Vec<u8> {
    let failed = |err: JobsError| to_json(&Answer(Err(err)));
    let limit = queue.settings().max_payload_bytes * 4;
    if body.len() > limit.max(1024 * 1024) {
        return failed(JobsError::TooLarge {
            size: body.len(),
            limit,
        });
    }
    let (items, many) = match serde_json::from_slice::<Vec<&RawValue>>(body) {
        Ok(items) if items.len() <= MAX_SUBMIT_BATCH => (items, true),
        Ok(_) => {
            return failed(JobsError::Invalid(format!(
                "submit at most {MAX_SUBMIT_BATCH} jobs at once"
            )));
        }
        Err(_) => match serde_json::from_slice::<&RawValue>(body) {
            Ok(item) => (vec![item], false),
            Err(err) => return failed(JobsError::Invalid(format!("not JSON: {err}"))),
        },
    };
    let mut answers: Vec<Option<Result<Submitted, JobsError>>> = Vec::with_capacity(items.len());
    let mut specs = Vec::with_capacity(items.len());
    for item in items {
        match serde_json::from_str::<JobSpec>(item.get()) {
            Ok(spec) => {
                let name = spec.queue.clone().unwrap_or_else(|| "default".into());
                specs.push((name, spec, None));
                answers.push(None);
            }
            Err(err) => answers.push(Some(Err(JobsError::Invalid(format!("not a job: {err}"))))),
        }
    }
    let mut done = queue.submit_many(specs).await.into_iter();
    let mut answers = answers.into_iter().map(|answer| {
        Answer(
            answer
                .or_else(|| done.next())
                .unwrap_or_else(|| Err(JobsError::Invalid("nothing to submit".into()))),
        )
    });
    if many {
        to_json(&Many {
            success: answers.collect(),
        })
    } else {
        to_json(&answers.next())
    }
}

#[derive(serde::Serialize)]
struct Many {
    success: Vec<Answer>,
}

fn to_json(value: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_default()
}
