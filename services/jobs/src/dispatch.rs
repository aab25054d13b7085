//! Taking ready jobs off the queues, highest priority first, and running
//! them to an outcome.
//!
//! Each (queue, priority) has a durable pull consumer. A dispatcher with a
//! free slot asks priority 9's consumer first and works down, so the job
//! it starts is always the oldest of the highest priority waiting.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::pull};
use futures_util::StreamExt;
use oxbase_kit::{NatsError, Shutdown, trace_context};

use crate::QueueConfig;
use oxbase_proto::jobs::{
    AttemptError, Backoff, JobProgress, JobRecord, JobRun, JobState, PRIORITY_LEVELS,
};
use rand::Rng;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tracing::{Instrument, Span};

use crate::handlers::{Handlers, JobStatusSink, Progress, RunError, StatusUpdate};
use crate::queue::{JobQueue, now, timestamp};
use crate::records::{Records, Versioned, Write};
use crate::{JobsError, Metrics};

/// Ready jobs taken in one round, at most.
const BATCH: usize = 64;
/// How often an idle dispatcher looks again without being woken: the
/// latest a scheduled job or a retry starts after its time.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long the answer to a fetch of ready jobs may take.
const FETCH_ANSWER: Duration = Duration::from_secs(5);
/// Failed attempts kept on a record.
const MAX_ERRORS: usize = 50;

pub(crate) fn consumer_name(queue: &str, priority: u8) -> String {
    format!("jobs-{queue}-{priority}")
}

/// What every dispatcher of a process shares.
pub(crate) struct Runner {
    pub(crate) queue: Arc<JobQueue>,
    pub(crate) handlers: Handlers,
    pub(crate) sink: Option<Arc<dyn JobStatusSink>>,
    pub(crate) metrics: Arc<Metrics>,
    /// This process's name in progress subjects.
    pub(crate) process: String,
    /// Running job id → where its worker's progress reports go.
    pub(crate) progress: Mutex<HashMap<String, mpsc::UnboundedSender<JobProgress>>>,
    pub(crate) global: Arc<Semaphore>,
}

/// How one message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Retrying,
    Dead,
    /// Stale or duplicate: acked without running.
    Dropped,
}

impl Runner {
    /// Runs the job a message names, if the message is current, and acks
    /// it once the outcome is recorded. An error leaves it unacked, so
    /// JetStream hands it out again.
    pub(crate) async fn process(
        &self,
        message: &jetstream::Message,
        config: &QueueConfig,
    ) -> Result<Outcome, JobsError> {
        let Ok(queued) = serde_json::from_slice::<JobRecord>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "dropping a message that is not a job");
            message.ack().await.map_err(NatsError::from)?;
            return Ok(Outcome::Dropped);
        };
        let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
        let records = self.queue.records().await?;
        let Some((record, revision)) = self.claim(records, queued, delivered).await? else {
            message.ack().await.map_err(NatsError::from)?;
            return Ok(Outcome::Dropped);
        };
        let span = run_span(message, &record);
        let outcome = self
            .attempt(message, config, record, revision, records)
            .instrument(span.clone())
            .await;
        if !matches!(outcome, Ok(Outcome::Succeeded)) {
            span.record("otel.status_code", "ERROR");
        }
        outcome
    }

    /// Runs a claimed job once and records the outcome, then acks its
    /// message.
    async fn attempt(
        &self,
        message: &jetstream::Message,
        config: &QueueConfig,
        mut record: JobRecord,
        mut revision: u64,
        records: &Records,
    ) -> Result<Outcome, JobsError> {
        self.metrics.started.fetch_add(1, Ordering::Relaxed);
        self.metrics.running.fetch_add(1, Ordering::Relaxed);
        if record.attempts == 1 {
            self.status(&record, StatusUpdate::default()).await;
        }
        let result = self
            .run(message, config, &mut record, &mut revision, records)
            .await;
        self.metrics.running.fetch_sub(1, Ordering::Relaxed);
        let outcome = self
            .finish(
                records,
                &mut record,
                revision,
                result,
                config.keep_succeeded,
            )
            .await?;
        message.ack().await.map_err(NatsError::from)?;
        Ok(outcome)
    }

    /// Decides whether the message runs its job: `None` means drop it.
    /// Otherwise the job as it runs now, and its record's revision (0: it
    /// has none). Nothing is written: the message, held by this process
    /// until acknowledged, is what says the job is running.
    async fn claim(
        &self,
        records: &Records,
        queued: JobRecord,
        delivered: i64,
    ) -> Result<Option<(JobRecord, u64)>, JobsError> {
        let mut revision = 0;
        // The first delivery of a job's first message: nothing can have
        // happened to the job yet (a cancel takes the message out before
        // any dispatcher has it), so it needs no look at the bucket.
        if (queued.ticket > 1 || delivered > 1)
            && let Some(Versioned {
                record,
                revision: at,
            }) = records.get(&queued.id).await?
        {
            if queued.ticket < record.ticket {
                // An older message. If the job is queued again but
                // the process that queued it died before publishing,
                // publish it now (duplicates are dropped).
                if matches!(record.state, JobState::Waiting | JobState::Delayed)
                    && queued.ticket + 1 == record.ticket
                {
                    self.queue.queue_job(&record).await?;
                }
                return Ok(None);
            }
            // Same ticket: it runs if it has not run, or if it was
            // running where the message was held before (delivered
            // again: that process stopped).
            let runnable = match record.state {
                JobState::Waiting | JobState::Delayed => true,
                JobState::Active => delivered > 1,
                _ => false,
            };
            if queued.ticket == record.ticket && !runnable {
                return Ok(None);
            }
            if queued.ticket == record.ticket && record.state == JobState::Active {
                tracing::info!(id = %record.id, "running again a job whose process stopped");
            }
            revision = at;
        }
        let mut record = queued;
        record.state = JobState::Active;
        record.attempts += u32::try_from(delivered.max(1)).unwrap_or(u32::MAX);
        record.started_at = Some(timestamp(now()));
        record.progress = None;
        Ok(Some((record, revision)))
    }

    /// One attempt, bounded by the job's timeout and its heartbeat, with
    /// the message kept alive meanwhile.
    async fn run(
        &self,
        message: &jetstream::Message,
        config: &QueueConfig,
        record: &mut JobRecord,
        revision: &mut u64,
        records: &Records,
    ) -> Result<serde_json::Value, RunError> {
        let (progress, mut reports) = Progress::channel();
        let settings = self.queue.settings();
        let subject = settings.subjects.job_progress(&self.process, &record.id);
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(record.id.clone(), progress.sender());
        let run = JobRun {
            id: record.id.clone(),
            queue: record.queue.clone(),
            name: record.name.clone(),
            payload: record.payload.clone(),
            attempt: record.attempts,
            max_attempts: record.max_attempts,
            timeout_ms: record.timeout_ms,
            heartbeat_ms: config.heartbeat_ms,
            progress_subject: Some(subject),
        };
        let timeout = Duration::from_millis(record.timeout_ms);
        let silence = Duration::from_millis(config.heartbeat_ms);
        let call = self.handlers.call(run, progress);
        tokio::pin!(call);
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        let heartbeat = tokio::time::sleep(silence);
        tokio::pin!(heartbeat);
        let mut keepalive = tokio::time::interval(settings.ack_wait / 3);
        keepalive.tick().await;
        let result = loop {
            tokio::select! {
                result = &mut call => break result,
                () = &mut deadline => break Err(RunError::Deadline(record.timeout_ms)),
                () = &mut heartbeat => break Err(RunError::NoHeartbeat(config.heartbeat_ms)),
                Some(report) = reports.recv() => {
                    heartbeat.as_mut().reset(tokio::time::Instant::now() + silence);
                    if report.progress.is_some() || report.message.is_some() {
                        self.report(records, record, revision, report).await;
                    }
                }
                _ = keepalive.tick() => {
                    if let Err(err) = message.ack_with(AckKind::Progress).await {
                        tracing::debug!(%err, "cannot keep a running job's message");
                    }
                }
            }
        };
        self.progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&record.id);
        // Reports sent just before the answer still count.
        while let Ok(report) = reports.try_recv() {
            if report.progress.is_some() || report.message.is_some() {
                self.report(records, record, revision, report).await;
            }
        }
        result
    }

    async fn report(
        &self,
        records: &Records,
        record: &mut JobRecord,
        revision: &mut u64,
        report: JobProgress,
    ) {
        if let Some(progress) = report.progress {
            record.progress = Some(progress.clamp(0.0, 100.0));
        }
        if report.message.is_some() {
            record.message = report.message.clone();
        }
        match records.put(record, *revision).await {
            Ok(Write::Done(next)) => *revision = next,
            Ok(Write::Conflict) => {
                tracing::debug!(id = %record.id, "progress lost to a newer write")
            }
            Err(err) => tracing::debug!(%err, "cannot store progress"),
        }
        if let Some(text) = report.message {
            self.status(
                record,
                StatusUpdate {
                    message: Some(text),
                    ..StatusUpdate::default()
                },
            )
            .await;
        }
    }

    /// Records the attempt's outcome: succeeded, queued again after its
    /// backoff, or dead.
    async fn finish(
        &self,
        records: &Records,
        record: &mut JobRecord,
        revision: u64,
        result: Result<serde_json::Value, RunError>,
        keep_succeeded: bool,
    ) -> Result<Outcome, JobsError> {
        let finished = timestamp(now());
        let (outcome, update) = match result {
            Ok(value) => {
                let message = match &value {
                    serde_json::Value::String(text) => text.clone(),
                    serde_json::Value::Null => String::new(),
                    other => other.to_string(),
                };
                record.state = JobState::Succeeded;
                record.result = Some(value);
                record.finished_at = Some(finished);
                (
                    Outcome::Succeeded,
                    StatusUpdate {
                        status: Some("succeeded"),
                        message: Some(message),
                        finished: true,
                    },
                )
            }
            Err(error) => {
                tracing::info!(id = %record.id, attempt = record.attempts, %error, "job attempt failed");
                // What the record and `_JobStatus` keep of it.
                let error = error.to_string();
                record.errors.push(AttemptError {
                    attempt: record.attempts,
                    error: error.clone(),
                    at: finished.clone(),
                });
                if record.errors.len() > MAX_ERRORS {
                    record.errors.remove(0);
                }
                if record.attempts < record.max_attempts {
                    let delay = backoff_delay(record.backoff, record.attempts);
                    record.ticket += 1;
                    record.run_at = timestamp(now() + delay);
                    record.state = if delay.is_zero() {
                        JobState::Waiting
                    } else {
                        JobState::Delayed
                    };
                    (
                        Outcome::Retrying,
                        StatusUpdate {
                            message: Some(format!(
                                "attempt {} failed: {error}; retrying",
                                record.attempts
                            )),
                            ..StatusUpdate::default()
                        },
                    )
                } else {
                    record.state = JobState::Dead;
                    record.finished_at = Some(finished);
                    (
                        Outcome::Dead,
                        StatusUpdate {
                            status: Some("failed"),
                            message: Some(error),
                            finished: true,
                        },
                    )
                }
            }
        };
        if outcome == Outcome::Succeeded {
            // Nothing else writes the record of a job while it runs. One
            // that is not kept is still written over when it has a record
            // (of progress, or of a failed attempt), which would be stale.
            if keep_succeeded || revision > 0 {
                records.overwrite(record).await?;
            }
        } else {
            let mut revision = revision;
            loop {
                match records.put(record, revision).await? {
                    Write::Done(_) => break,
                    Write::Conflict => match records.get(&record.id).await? {
                        // A newer revision of this ticket is this run's own
                        // progress write, racing: the outcome wins.
                        Some(current)
                            if current.record.ticket == record.ticket
                                || (outcome == Outcome::Retrying
                                    && current.record.ticket + 1 == record.ticket) =>
                        {
                            revision = current.revision;
                        }
                        _ => return Ok(Outcome::Dropped),
                    },
                }
            }
        }
        match outcome {
            Outcome::Retrying => {
                // The record first, then the message: a crash between the
                // two is repaired when the old message comes back.
                self.queue.queue_job(record).await?;
                self.metrics.retried.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Succeeded => {
                self.metrics.succeeded.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Dead => {
                self.metrics.dead.fetch_add(1, Ordering::Relaxed);
            }
            Outcome::Dropped => {}
        }
        self.status(record, update).await;
        Ok(outcome)
    }

    /// Mirrors a change on Parse's `_JobStatus`, for jobs that have one.
    async fn status(&self, record: &JobRecord, update: StatusUpdate) {
        let (Some(sink), Some(id)) = (&self.sink, &record.job_status_id) else {
            return;
        };
        let update = StatusUpdate {
            status: update.status.or(Some("running")),
            ..update
        };
        if let Err(err) = sink.update(id, update).await {
            tracing::warn!(%err, job = %record.id, "cannot update _JobStatus");
        }
    }
}

/// The span of one attempt of a job: a child of the span that queued it
/// (the request that submitted it, or the attempt before a retry).
fn run_span(message: &jetstream::Message, record: &JobRecord) -> Span {
    trace_context::span(|| {
        let span = tracing::info_span!(
            "job.run",
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            oxbase.job.id = %record.id,
            oxbase.job.name = %record.name,
            oxbase.job.queue = %record.queue,
            oxbase.job.attempt = record.attempts,
        );
        trace_context::continue_from_headers(&span, message.headers.as_ref());
        span
    })
}

/// The wait before the retry that follows failed attempt `attempt`.
pub(crate) fn backoff_delay(backoff: Backoff, attempt: u32) -> Duration {
    match backoff {
        Backoff::Fixed { delay_ms } => Duration::from_millis(delay_ms),
        Backoff::Exponential {
            delay_ms,
            max_ms,
            jitter,
        } => {
            let doublings = attempt.saturating_sub(1).min(40);
            let base = delay_ms.saturating_mul(1u64 << doublings).min(max_ms);
            let extra = if jitter && base > 1 {
                rand::rng().random_range(0..=base / 2)
            } else {
                0
            };
            Duration::from_millis(base + extra)
        }
    }
}

/// Takes one queue's ready jobs, highest priority first, while it has
/// free slots.
pub(crate) struct PriorityDispatcher {
    runner: Arc<Runner>,
    queue: String,
    config: QueueConfig,
    slots: Arc<Semaphore>,
    /// One consumer per priority, lowest first.
    consumers: Vec<jetstream::consumer::Consumer<pull::Config>>,
    stream: Option<jetstream::stream::Stream>,
    waiting: Arc<Waiting>,
}

/// Which priorities may hold ready jobs: set when a job is announced or
/// when the idle poll comes round, cleared when a fetch finds a priority
/// drained.
#[derive(Debug)]
struct Waiting([std::sync::atomic::AtomicBool; PRIORITY_LEVELS as usize]);

impl Waiting {
    fn all() -> Self {
        Self(std::array::from_fn(|_| {
            std::sync::atomic::AtomicBool::new(true)
        }))
    }

    fn mark(&self, priority: usize) {
        if let Some(flag) = self.0.get(priority) {
            flag.store(true, Ordering::Release);
        }
    }

    fn mark_all(&self) {
        for flag in &self.0 {
            flag.store(true, Ordering::Release);
        }
    }

    /// Whether the priority may hold jobs; clears it.
    fn take(&self, priority: usize) -> bool {
        self.0[priority].swap(false, Ordering::AcqRel)
    }
}

impl PriorityDispatcher {
    pub(crate) fn new(runner: Arc<Runner>, queue: String, config: QueueConfig) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(config.concurrency)),
            runner,
            queue,
            config,
            consumers: Vec::new(),
            stream: None,
            waiting: Arc::new(Waiting::all()),
        }
    }

    /// Creates (or finds) the queue's consumers, one per priority.
    pub(crate) async fn connect(&mut self) -> Result<(), JobsError> {
        let settings = self.runner.queue.settings().clone();
        let stream = self.runner.queue.store().await?.stream.clone();
        let mut consumers = Vec::with_capacity(PRIORITY_LEVELS as usize);
        for priority in 0..PRIORITY_LEVELS {
            let name = consumer_name(&self.queue, priority);
            // Created or, when an older version made it, updated.
            let consumer = stream
                .create_consumer(pull::Config {
                    durable_name: Some(name.clone()),
                    filter_subject: settings.subjects.job_ready_priority(&self.queue, priority),
                    ack_policy: jetstream::consumer::AckPolicy::Explicit,
                    ack_wait: settings.ack_wait,
                    max_deliver: -1,
                    max_ack_pending: 100_000,
                    ..Default::default()
                })
                .await
                .map_err(NatsError::from)?;
            consumers.push(consumer);
        }
        self.consumers = consumers;
        self.stream = Some(stream);
        Ok(())
    }

    /// Up to `wanted` ready jobs, highest priority first. Only priorities
    /// that may hold jobs are asked: each ask costs NATS a pull request.
    /// Once `shutdown` fires it takes no more; what it took is returned.
    async fn fetch(
        &self,
        wanted: usize,
        shutdown: &Shutdown,
    ) -> Result<Vec<jetstream::Message>, JobsError> {
        let mut out = Vec::with_capacity(wanted);
        for (priority, consumer) in self.consumers.iter().enumerate().rev() {
            if out.len() == wanted {
                break;
            }
            if !self.waiting.take(priority) {
                continue;
            }
            let asked = wanted - out.len();
            let mut batch = consumer
                .fetch()
                .max_messages(asked)
                .messages()
                .await
                .map_err(NatsError::from)?;
            let mut got = 0;
            loop {
                // The answer comes at once; one lost with a NATS node that
                // went away must not hold the dispatcher, or its stop.
                let next = tokio::select! {
                    biased;
                    () = shutdown.wait() => break,
                    next = tokio::time::timeout(FETCH_ANSWER, batch.next()) => next,
                };
                match next {
                    Ok(Some(Ok(message))) => {
                        out.push(message);
                        got += 1;
                    }
                    Ok(Some(Err(err))) => {
                        tracing::debug!(%err, "fetch");
                        break;
                    }
                    Ok(None) => break,
                    Err(_) => {
                        tracing::warn!(queue = %self.queue, "a fetch of ready jobs went unanswered");
                        break;
                    }
                }
            }
            if got == asked {
                // It may hold more.
                self.waiting.mark(priority);
            }
        }
        Ok(out)
    }

    pub(crate) async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        while let Err(err) = self.connect().await {
            tracing::warn!(%err, queue = %self.queue, "cannot set up the job queue yet");
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
        let wake = Arc::new(tokio::sync::Notify::new());
        let client = self.runner.queue.jetstream().client();
        let subject = self.runner.queue.settings().subjects.job_wake(&self.queue);
        if let Ok(mut woken) = client.subscribe(subject).await {
            let wake = Arc::clone(&wake);
            let waiting = Arc::clone(&self.waiting);
            tokio::spawn(async move {
                while let Some(message) = woken.next().await {
                    let priority = std::str::from_utf8(&message.payload)
                        .ok()
                        .and_then(|p| p.parse().ok());
                    match priority {
                        Some(priority) => waiting.mark(priority),
                        None => waiting.mark_all(),
                    }
                    wake.notify_one();
                }
            });
        }
        if self.config.aging_ms > 0
            && let Some(stream) = self.stream.clone()
        {
            tokio::spawn(age(
                stream,
                self.consumers.clone(),
                self.runner.queue.clone(),
                self.queue.clone(),
                Duration::from_millis(self.config.aging_ms),
                shutdown.clone(),
            ));
        }
        let mut running = tokio::task::JoinSet::new();
        let batch = if self.config.rate_limit > 0 { 1 } else { BATCH };
        let mut looked_everywhere = tokio::time::Instant::now();
        loop {
            while running.try_join_next().is_some() {}
            let permits = tokio::select! {
                biased;
                () = shutdown.wait() => break,
                permits = self.permits(batch) => permits,
            };
            // A busy queue still looks at every priority now and then, for
            // the scheduled jobs and retries no one announces.
            if looked_everywhere.elapsed() >= IDLE_POLL {
                self.waiting.mark_all();
                looked_everywhere = tokio::time::Instant::now();
            }
            let messages = match self.fetch(permits.len(), &shutdown).await {
                Ok(messages) => messages,
                Err(err) => {
                    tracing::warn!(%err, queue = %self.queue, "cannot take ready jobs");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_secs(1)) => {}
                        () = shutdown.wait() => break,
                    }
                    continue;
                }
            };
            if shutdown.is_triggered() {
                hand_back(&messages).await;
                break;
            }
            if messages.is_empty() {
                drop(permits);
                tokio::select! {
                    () = wake.notified() => {}
                    // Scheduled jobs and retries arrive unannounced.
                    () = tokio::time::sleep(IDLE_POLL) => self.waiting.mark_all(),
                    () = shutdown.wait() => break,
                }
                continue;
            }
            for (message, permit) in messages.into_iter().zip(permits) {
                // A rate-limited job may wait for its turn past a shutdown.
                let stopped = shutdown.is_triggered()
                    || (self.config.rate_limit > 0 && !self.rate_token(&message, &shutdown).await);
                if stopped {
                    hand_back(std::slice::from_ref(&message)).await;
                    continue;
                }
                let runner = Arc::clone(&self.runner);
                let config = self.config.clone();
                // Boxed: the run's future is large, and spawning would copy
                // it whole.
                running.spawn(Box::pin(async move {
                    let _permit = permit;
                    if let Err(err) = runner.process(&message, &config).await {
                        tracing::warn!(%err, "a job's run is left to be retried");
                    }
                }));
            }
        }
        // Jobs already running finish (the caller bounds how long).
        while running.join_next().await.is_some() {}
    }

    /// At least one slot (queue and global), and up to `batch` if free.
    async fn permits(&self, batch: usize) -> Vec<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let queue = Arc::clone(&self.slots).acquire_owned().await;
        let global = Arc::clone(&self.runner.global).acquire_owned().await;
        let (Ok(queue), Ok(global)) = (queue, global) else {
            return Vec::new();
        };
        let mut permits = vec![(queue, global)];
        while permits.len() < batch {
            let (Ok(queue), Ok(global)) = (
                Arc::clone(&self.slots).try_acquire_owned(),
                Arc::clone(&self.runner.global).try_acquire_owned(),
            ) else {
                break;
            };
            permits.push((queue, global));
        }
        permits
    }

    /// Waits for the queue's rate limit to allow one more start, across
    /// every jobs process: a fixed window counted in the records bucket.
    async fn rate_token(&self, message: &jetstream::Message, shutdown: &Shutdown) -> bool {
        let period = self.config.rate_period_ms.max(1);
        loop {
            let Ok(records) = self.runner.queue.records().await else {
                return false;
            };
            let now_ms = now().timestamp_millis().max(0) as u64;
            let window = now_ms - now_ms % period;
            let wait = match records.rate_window(&self.queue).await {
                Ok((start, count, revision)) => {
                    let count = if start == window { count } else { 0 };
                    if count < u64::from(self.config.rate_limit) {
                        match records
                            .set_rate_window(&self.queue, window, count + 1, revision)
                            .await
                        {
                            Ok(true) => return true,
                            Ok(false) => continue,
                            Err(_) => Duration::from_millis(100),
                        }
                    } else {
                        Duration::from_millis(window + period - now_ms)
                    }
                }
                Err(_) => Duration::from_millis(100),
            };
            let _ = message.ack_with(AckKind::Progress).await;
            tokio::select! {
                () = tokio::time::sleep(wait.min(Duration::from_secs(5))) => {}
                () = shutdown.wait() => return false,
            }
        }
    }
}

/// Gives messages taken but not started back to the queue at once, for
/// another jobs process: left to their ack wait, they would start only
/// once it ran out.
async fn hand_back(messages: &[jetstream::Message]) {
    for message in messages {
        if let Err(err) = message.ack_with(AckKind::Nak(None)).await {
            tracing::debug!(%err, "cannot hand a job back; it returns after its ack wait");
        }
    }
}

/// Aging: a job that has waited `aging` at one priority moves up one. Its
/// message is copied to the next priority, then acked; a crash between the
/// two can leave both copies to run.
async fn age(
    stream: jetstream::stream::Stream,
    consumers: Vec<jetstream::consumer::Consumer<pull::Config>>,
    queue: Arc<JobQueue>,
    name: String,
    aging: Duration,
    shutdown: Shutdown,
) {
    let period = (aging / 2).max(Duration::from_millis(100));
    loop {
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = shutdown.wait() => return,
        }
        for (priority, consumer) in consumers.iter().enumerate().take(consumers.len() - 1) {
            if let Err(err) = promote(&stream, consumer, &queue, &name, priority as u8, aging).await
            {
                tracing::debug!(%err, "aging");
            }
        }
    }
}

async fn promote(
    stream: &jetstream::stream::Stream,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    queue: &JobQueue,
    name: &str,
    from: u8,
    aging: Duration,
) -> Result<(), JobsError> {
    let subjects = &queue.settings().subjects;
    loop {
        // Look before taking: a job taken and given back would count a
        // delivery, which is an attempt.
        let info = consumer.get_info().await.map_err(NatsError::from)?;
        if info.num_pending == 0 {
            return Ok(());
        }
        let next = stream
            .direct_get_next_for_subject(
                subjects.job_ready_priority(name, from),
                Some(info.delivered.stream_sequence + 1),
            )
            .await
            .map_err(NatsError::from)?;
        if since_unix_nanos(next.time.unix_timestamp_nanos()) < aging {
            // The oldest has not waited long enough, so none has.
            return Ok(());
        }
        let mut batch = consumer
            .fetch()
            .max_messages(1)
            .messages()
            .await
            .map_err(NatsError::from)?;
        let Some(Ok(message)) = batch.next().await else {
            return Ok(());
        };
        let id = message.subject.rsplit('.').next().unwrap_or_default();
        let ticket = serde_json::from_slice::<JobRecord>(&message.payload).map_or(0, |r| r.ticket);
        let mut publish = jetstream::message::PublishMessage::build()
            .payload(message.payload.clone())
            .message_id(format!("{id}.{ticket}.{}", from + 1));
        // The copy runs the job: it keeps the trace the original was in.
        for name in [trace_context::TRACEPARENT, trace_context::TRACESTATE] {
            if let Some(value) = message.headers.as_ref().and_then(|h| h.get(name)) {
                publish = publish.header(name, value.clone());
            }
        }
        queue
            .jetstream()
            .send_publish(subjects.job_ready(name, from + 1, id), publish)
            .await
            .map_err(NatsError::from)?
            .await
            .map_err(NatsError::from)?;
        message.ack().await.map_err(NatsError::from)?;
    }
}

fn since_unix_nanos(at: i128) -> Duration {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as i128;
    Duration::from_nanos((now - at).clamp(0, i128::from(u64::MAX)) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_doubles_up_to_its_cap_with_up_to_half_again_of_jitter() {
        let plain = Backoff::Exponential {
            delay_ms: 100,
            max_ms: 1000,
            jitter: false,
        };
        let waits: Vec<u128> = (1..=6)
            .map(|attempt| backoff_delay(plain, attempt).as_millis())
            .collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000]);
        let jittered = Backoff::Exponential {
            delay_ms: 100,
            max_ms: 1000,
            jitter: true,
        };
        for attempt in 1..=6 {
            let base = waits[attempt as usize - 1];
            let wait = backoff_delay(jittered, attempt).as_millis();
            assert!(
                (base..=base + base / 2).contains(&wait),
                "{attempt}: {wait}"
            );
        }
        assert_eq!(
            backoff_delay(Backoff::Fixed { delay_ms: 250 }, 9),
            Duration::from_millis(250)
        );
    }
}
