//! Submitting, reading, cancelling and retrying jobs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use oxbase_kit::{NatsError, trace_context};
use oxbase_proto::jobs::{
    Backoff, DEFAULT_PRIORITY, JobRecord, JobSpec, JobState, PRIORITY_LEVELS, Submitted,
};

use crate::dispatch::consumer_name;
use crate::records::{Records, Versioned, Write, encode};
use crate::{JobsError, Settings};

/// A publish repeating a `Nats-Msg-Id` seen this recently is dropped, so a
/// job queued twice by a retried call is queued once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// A job due sooner than this is queued as ready rather than scheduled.
const SCHEDULE_THRESHOLD: Duration = Duration::from_millis(20);
/// How long a submission sends again a job whose store was not
/// acknowledged: past one acknowledgement's wait (5 s).
const RESEND_WITHIN: Duration = Duration::from_secs(12);
const MAX_KEY_LEN: usize = 256;
/// Jobs whose writes are in flight together in one submission.
const SUBMIT_WINDOW: usize = 256;
/// Windows in flight at once in one process: this keeps submissions to
/// about 1,000 of the NATS context's 5,000 unanswered publishes.
const SUBMIT_WINDOWS: usize = 4;
const MAX_ATTEMPTS: i64 = 1000;
const MAX_TIMEOUT_MS: i64 = 24 * 3600 * 1000;
const MAX_BACKOFF_MS: u64 = 24 * 3600 * 1000;

pub(crate) fn now() -> DateTime<Utc> {
    Utc::now()
}

pub(crate) fn timestamp(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

enum Prepared {
    New(JobRecord),
    Existing(Submitted),
}

/// The jobs stream and the records bucket, set up on first use.
pub(crate) struct Store {
    pub(crate) records: Records,
    pub(crate) stream: stream::Stream,
}

/// A job's queued message.
#[derive(Debug)]
pub(crate) struct Queued {
    pub(crate) record: JobRecord,
    pub(crate) sequence: u64,
    /// The ready priority it waits at; `None` while it is scheduled.
    pub(crate) priority: Option<u8>,
}

/// A job as it stands: its record where one was written, else as its
/// queued message describes it.
struct Current {
    record: JobRecord,
    /// The record's revision in the bucket; 0 when it has none.
    revision: u64,
    queued: Option<Queued>,
}

/// The client side of the jobs: what the API, the NATS responder and the
/// dispatchers use to put jobs in the queues and change their state.
pub struct JobQueue {
    settings: Arc<Settings>,
    jetstream: jetstream::Context,
    store: tokio::sync::OnceCell<Store>,
    /// Submission windows in flight at once.
    submitting: tokio::sync::Semaphore,
}

impl std::fmt::Debug for JobQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobQueue").finish_non_exhaustive()
    }
}

impl JobQueue {
    /// Does no I/O: the stream and the bucket are set up on first use, so
    /// a process starts while NATS is down.
    pub fn new(jetstream: jetstream::Context, settings: Arc<Settings>) -> Arc<Self> {
        Arc::new(Self {
            settings,
            jetstream,
            store: tokio::sync::OnceCell::new(),
            submitting: tokio::sync::Semaphore::new(SUBMIT_WINDOWS),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub(crate) async fn store(&self) -> Result<&Store, NatsError> {
        self.store
            .get_or_try_init(|| async {
                let stream = ensure_stream(&self.jetstream, &self.settings).await?;
                let records = Records::open(
                    self.jetstream.clone(),
                    self.settings.stream_name(),
                    self.settings.replicas,
                    self.settings.retention,
                )
                .await?;
                Ok(Store { records, stream })
            })
            .await
    }

    pub(crate) async fn records(&self) -> Result<&Records, NatsError> {
        Ok(&self.store().await?.records)
    }

    /// Checks a submission and makes the job's first record.
    fn new_record(&self, queue: &str, spec: JobSpec) -> Result<JobRecord, JobsError> {
        let config = self.settings.queue(queue)?;
        let invalid = |text: &str| Err(JobsError::Invalid(text.to_owned()));
        if !oxbase_proto::valid_token(&spec.name) {
            return invalid("a job name is 1 to 128 ASCII letters, digits, '_' or '-'");
        }
        let priority = match spec.priority {
            None => DEFAULT_PRIORITY,
            Some(p) if (0..i64::from(PRIORITY_LEVELS)).contains(&p) => p as u8,
            Some(_) => {
                return invalid("priority must be an integer from 0 (lowest) to 9 (highest)");
            }
        };
        let created = now();
        let run_at = match (spec.run_at.as_deref(), spec.delay_ms) {
            (Some(_), Some(_)) => return invalid("give runAt or delayMs, not both"),
            (Some(text), None) => match DateTime::parse_from_rfc3339(text) {
                Ok(at) => at.with_timezone(&Utc).max(created),
                Err(_) => {
                    return invalid("runAt must be an RFC 3339 time, such as 2030-01-01T00:00:00Z");
                }
            },
            (None, Some(ms)) if ms < 0 => return invalid("delayMs must not be negative"),
            (None, Some(ms)) => {
                created + chrono::Duration::milliseconds(ms.min(MAX_TIMEOUT_MS * 366))
            }
            (None, None) => created,
        };
        let max_attempts = match spec.max_attempts {
            None => config.max_attempts,
            Some(n) if (1..=MAX_ATTEMPTS).contains(&n) => n as u32,
            Some(_) => return invalid("maxAttempts must be from 1 to 1000"),
        };
        let timeout_ms = match spec.timeout_ms {
            None => config.timeout_ms,
            Some(ms) if (1..=MAX_TIMEOUT_MS).contains(&ms) => ms as u64,
            Some(_) => return invalid("timeoutMs must be from 1 to 86400000 (a day)"),
        };
        let backoff = spec.backoff.unwrap_or(Backoff::Exponential {
            delay_ms: config.backoff_ms,
            max_ms: config.backoff_max_ms,
            jitter: true,
        });
        match backoff {
            Backoff::Fixed { delay_ms } if delay_ms > MAX_BACKOFF_MS => {
                return invalid("a backoff's delayMs is at most a day");
            }
            Backoff::Exponential {
                delay_ms, max_ms, ..
            } if max_ms > MAX_BACKOFF_MS || delay_ms > max_ms => {
                return invalid("an exponential backoff needs delayMs <= maxMs <= a day");
            }
            _ => {}
        }
        if let Some(key) = &spec.idempotency_key
            && (key.is_empty() || key.len() > MAX_KEY_LEN)
        {
            return invalid("an idempotencyKey is 1 to 256 characters");
        }
        let size = serde_json::to_vec(&spec.payload).map_or(0, |b| b.len());
        if size > self.settings.max_payload_bytes {
            return Err(JobsError::TooLarge {
                size,
                limit: self.settings.max_payload_bytes,
            });
        }
        let delayed = run_at > created + SCHEDULE_THRESHOLD;
        Ok(JobRecord {
            id: uuid::Uuid::now_v7().simple().to_string(),
            queue: queue.to_owned(),
            name: spec.name,
            payload: spec.payload,
            priority,
            state: if delayed {
                JobState::Delayed
            } else {
                JobState::Waiting
            },
            attempts: 0,
            max_attempts,
            backoff,
            timeout_ms,
            idempotency_key: spec.idempotency_key,
            created_at: timestamp(created),
            run_at: timestamp(run_at),
            started_at: None,
            finished_at: None,
            progress: None,
            message: None,
            result: None,
            errors: Vec::new(),
            job_status_id: None,
            ticket: 1,
        })
    }

    /// Checks a job as [`submit`](Self::submit) would, without queueing it.
    pub fn check(&self, queue: &str, spec: JobSpec) -> Result<(), JobsError> {
        self.new_record(queue, spec).map(drop)
    }

    /// Queues one job on `queue` (the spec's own `queue` when given must
    /// agree). `job_status_id` links a Parse `_JobStatus` object.
    pub async fn submit(
        &self,
        queue: &str,
        spec: JobSpec,
        job_status_id: Option<String>,
    ) -> Result<Submitted, JobsError> {
        self.submit_many(vec![(queue.to_owned(), spec, job_status_id)])
            .await
            .pop()
            .unwrap_or(Err(JobsError::Invalid("nothing to submit".into())))
    }

    /// Queues several jobs, a window at a time with the window's writes in
    /// flight together; each succeeds or fails on its own.
    pub async fn submit_many(
        &self,
        specs: Vec<(String, JobSpec, Option<String>)>,
    ) -> Vec<Result<Submitted, JobsError>> {
        let records = match self.records().await {
            Ok(records) => records,
            Err(err) => {
                return specs
                    .iter()
                    .map(|_| Err(JobsError::Nats(err.clone())))
                    .collect();
            }
        };
        let mut out = Vec::with_capacity(specs.len());
        let mut specs = specs.into_iter();
        loop {
            let window: Vec<_> = specs.by_ref().take(SUBMIT_WINDOW).collect();
            if window.is_empty() {
                return out;
            }
            // Unanswered publishes hold slots of the NATS context, which
            // every writer of this process shares: bound them, or enough
            // concurrent submissions starve each other and the dispatchers.
            let _slot = self.submitting.acquire().await;
            out.extend(self.submit_window(records, window).await);
        }
    }

    /// Publishes the window's jobs with their acks awaited together. The
    /// message is the job: nothing else is written until it runs.
    async fn submit_window(
        &self,
        records: &Records,
        window: Vec<(String, JobSpec, Option<String>)>,
    ) -> Vec<Result<Submitted, JobsError>> {
        let mut out: Vec<Result<Submitted, JobsError>> = Vec::with_capacity(window.len());
        let mut sent = Vec::new();
        // Idempotency keys are claimed together: each is a round trip.
        let prepared = futures_util::future::join_all(window.into_iter().map(
            |(queue, spec, status_id)| async move {
                self.prepare(records, &queue, spec, status_id).await
            },
        ))
        .await;
        for prepared in prepared {
            match prepared {
                Ok(Prepared::Existing(found)) => out.push(Ok(found)),
                Ok(Prepared::New(record)) => {
                    sent.push((out.len(), self.send(&record).await));
                    out.push(Ok(Submitted {
                        job: record,
                        duplicate: false,
                    }));
                }
                Err(err) => out.push(Err(err)),
            }
        }
        for (index, ack) in sent {
            let stored = match &out[index] {
                Ok(submitted) => self.stored(&submitted.job, ack).await,
                Err(_) => continue,
            };
            if let Err(err) = stored {
                out[index] = Err(err);
            }
        }
        let mut ready: Vec<(&str, u8)> = out
            .iter()
            .filter_map(|done| match done {
                Ok(Submitted {
                    job,
                    duplicate: false,
                }) if job.state == JobState::Waiting => Some((job.queue.as_str(), job.priority)),
                _ => None,
            })
            .collect();
        ready.sort_unstable();
        ready.dedup();
        for (queue, priority) in ready {
            self.wake(queue, priority).await;
        }
        out
    }

    /// A checked job with its idempotency key claimed, or the job the key
    /// already points at.
    async fn prepare(
        &self,
        records: &Records,
        queue: &str,
        spec: JobSpec,
        status_id: Option<String>,
    ) -> Result<Prepared, JobsError> {
        if let Some(named) = &spec.queue
            && named != queue
        {
            return Err(JobsError::Invalid(format!(
                "the job names queue {named:?} but is submitted to {queue:?}"
            )));
        }
        let mut record = self.new_record(queue, spec)?;
        record.job_status_id = status_id;
        let Some(key) = &record.idempotency_key else {
            return Ok(Prepared::New(record));
        };
        let window = self.settings.idempotency_window;
        match records.claim_key(queue, key, &record.id, window).await? {
            None => Ok(Prepared::New(record)),
            Some(first) => match self.existing(queue, &first).await? {
                Some(found) => Ok(Prepared::Existing(found)),
                // The first submission claimed the key and died before
                // queuing its job: this one queues it.
                None => {
                    record.id = first;
                    Ok(Prepared::New(record))
                }
            },
        }
    }

    /// The job an idempotency key already points at, or `None` when it
    /// does not appear within a second (its submission died).
    async fn existing(&self, queue: &str, id: &str) -> Result<Option<Submitted>, JobsError> {
        for _ in 0..50 {
            if let Some(current) = self.current(queue, id).await? {
                return Ok(Some(Submitted {
                    job: current.record,
                    duplicate: true,
                }));
            }
            // The first submission may be between its claim and its write.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(None)
    }

    /// Publishes the message that runs `record` under its ticket: on its
    /// ready subject, or scheduled for its `run_at`. The message is the
    /// record itself.
    async fn send(&self, record: &JobRecord) -> Result<PublishAckFuture, JobsError> {
        let body = encode(record)?;
        let subjects = &self.settings.subjects;
        let ready = subjects.job_ready(&record.queue, record.priority, &record.id);
        let mut publish = jetstream::message::PublishMessage::build().payload(body);
        // The run continues the trace of whatever queued it.
        for (name, value) in trace_context::current_headers() {
            publish = publish.header(name, value);
        }
        let (subject, publish) = if record.state == JobState::Delayed {
            // JetStream's message schedule stores the message on `ready` at
            // its time; until then it waits on the job's own subject.
            let at = DateTime::parse_from_rfc3339(&record.run_at)
                .map(|at| at.with_timezone(&Utc))
                .unwrap_or_else(|_| now())
                .max(now() + SCHEDULE_THRESHOLD);
            (
                subjects.job_delayed(&record.queue, &record.id),
                publish
                    .header(
                        "Nats-Schedule",
                        format!("@at {}", at.to_rfc3339_opts(SecondsFormat::Millis, true)),
                    )
                    .header("Nats-Schedule-Target", ready),
            )
        } else {
            // A repeat is dropped: of a job queued again (a retry, a
            // repair), of one under a key a dead submission may have queued
            // already, or of one sent again because its store was not
            // acknowledged (see `stored`).
            (
                ready,
                publish.message_id(format!("{}.{}", record.id, record.ticket)),
            )
        };
        let ack = self
            .jetstream
            .send_publish(subject, publish)
            .await
            .map_err(NatsError::from)?;
        Ok(ack)
    }

    /// Waits for the stream to store `record`, sent as `ack`. While a NATS
    /// node restarts, the stream may not answer for a moment (its new
    /// leader is being elected), or an acknowledgement may be lost with
    /// the node: the job is sent again, for a few seconds. Sending again
    /// cannot queue it twice: a ready job's message id drops a repeat, and
    /// a delayed job is sent again only when nothing stored it.
    async fn stored(
        &self,
        record: &JobRecord,
        ack: Result<PublishAckFuture, JobsError>,
    ) -> Result<(), JobsError> {
        let deadline = tokio::time::Instant::now() + RESEND_WITHIN;
        let mut pause = Duration::from_millis(50);
        let mut ack = ack;
        loop {
            let failed = match ack?.await {
                Ok(_) => return Ok(()),
                Err(err) => err,
            };
            let again = match failed.kind() {
                PublishErrorKind::StreamNotFound => true,
                PublishErrorKind::TimedOut => record.state != JobState::Delayed,
                _ => false,
            };
            if !again || tokio::time::Instant::now() + pause > deadline {
                return Err(NatsError::from(failed).into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
            ack = self.send(record).await;
        }
    }

    /// Queues `record` (a retry, or a job run again) and waits until it is
    /// stored.
    pub(crate) async fn queue_job(&self, record: &JobRecord) -> Result<(), JobsError> {
        self.send(record).await?.await.map_err(NatsError::from)?;
        if record.state == JobState::Waiting {
            self.wake(&record.queue, record.priority).await;
        }
        Ok(())
    }

    /// Tells idle dispatchers of `queue` that `priority` has work. Best
    /// effort: they look every so often anyway.
    async fn wake(&self, queue: &str, priority: u8) {
        let subject = self.settings.subjects.job_wake(queue);
        let body = Bytes::from(priority.to_string());
        if let Err(err) = self.jetstream.client().publish(subject, body).await {
            tracing::debug!(%err, "cannot wake the dispatchers");
        }
    }

    /// The job `id` of `queue`.
    pub async fn get(&self, queue: &str, id: &str) -> Result<JobRecord, JobsError> {
        self.settings.queue(queue)?;
        match self.current(queue, id).await? {
            Some(current) => Ok(current.record),
            None => Err(JobsError::NotFound),
        }
    }

    /// The job as it stands. A queued job has a record only once it has
    /// failed an attempt, so its message speaks for it; a message handed
    /// to a dispatcher and not yet acknowledged is a running job.
    async fn current(&self, queue: &str, id: &str) -> Result<Option<Current>, JobsError> {
        if !oxbase_proto::valid_token(id) {
            return Ok(None);
        }
        let store = self.store().await?;
        let mut last = None;
        // Twice: a job can finish between reading its record and looking
        // for its message.
        for _ in 0..2 {
            let kept = store.records.get(id).await?;
            if let Some(kept) = &kept {
                if kept.record.queue != queue {
                    return Ok(None);
                }
                if kept.record.state.is_final() || kept.record.state == JobState::Active {
                    return Ok(Some(Current {
                        record: kept.record.clone(),
                        revision: kept.revision,
                        queued: None,
                    }));
                }
            }
            let revision = kept.as_ref().map_or(0, |k| k.revision);
            match self.locate(store, queue, id).await? {
                Some(queued)
                    if kept
                        .as_ref()
                        .is_none_or(|k| queued.record.ticket >= k.record.ticket) =>
                {
                    let mut record = queued.record.clone();
                    record.state = match queued.priority {
                        None => JobState::Delayed,
                        Some(p) if self.handed_out(store, queue, p, queued.sequence).await? => {
                            record.attempts += 1;
                            JobState::Active
                        }
                        Some(_) => JobState::Waiting,
                    };
                    return Ok(Some(Current {
                        record,
                        revision,
                        queued: Some(queued),
                    }));
                }
                _ => {
                    last = kept.map(|Versioned { record, revision }| Current {
                        record,
                        revision,
                        queued: None,
                    });
                }
            }
        }
        Ok(last)
    }

    /// The job's current message: scheduled, or ready at some priority
    /// (the highest, should aging have copied it a moment ago).
    async fn locate(
        &self,
        store: &Store,
        queue: &str,
        id: &str,
    ) -> Result<Option<Queued>, JobsError> {
        let subjects = &self.settings.subjects;
        let lookups = (0..PRIORITY_LEVELS)
            .rev()
            .map(|p| (Some(p), subjects.job_ready(queue, p, id)))
            .chain([(None, subjects.job_delayed(queue, id))])
            .map(|(priority, subject)| async move {
                match store.stream.direct_get_last_for_subject(subject).await {
                    Ok(message) => Ok(serde_json::from_slice::<JobRecord>(&message.payload)
                        .ok()
                        .map(|record| Queued {
                            record,
                            sequence: message.sequence,
                            priority,
                        })),
                    Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => Ok(None),
                    Err(err) => Err(JobsError::from(NatsError::from(err))),
                }
            });
        let found = futures_util::future::try_join_all(lookups).await?;
        Ok(found
            .into_iter()
            .flatten()
            .max_by_key(|q| (q.record.ticket, q.priority.is_some())))
    }

    /// Whether the ready message at `sequence` has been handed to a
    /// dispatcher: a consumer hands out its messages in stream order.
    async fn handed_out(
        &self,
        store: &Store,
        queue: &str,
        priority: u8,
        sequence: u64,
    ) -> Result<bool, JobsError> {
        match store
            .stream
            .consumer_info(consumer_name(queue, priority))
            .await
        {
            Ok(info) => Ok(info.delivered.stream_sequence >= sequence),
            Err(err) if err.kind() == jetstream::context::ConsumerInfoErrorKind::NotFound => {
                Ok(false)
            }
            Err(err) => Err(NatsError::from(err).into()),
        }
    }

    /// Up to `limit` jobs of `queue` (in `state`, when given): the queued
    /// ones in queue order, then the finished ones, most recent first.
    pub async fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobsError> {
        self.settings.queue(queue)?;
        let store = self.store().await?;
        let mut found = Vec::new();
        if state.is_none_or(|s| !s.is_final()) {
            found = self.list_queued(store, queue, state, limit).await?;
        }
        if found.len() < limit && state.is_none_or(|s| s.is_final() || s == JobState::Active) {
            let kept = store.records.list(queue, state, limit).await?;
            // A running job that reported progress is in both: the record
            // says more.
            for record in kept {
                if record.state.is_final() {
                    found.push(record);
                } else if record.state == JobState::Active {
                    match found.iter_mut().find(|r| r.id == record.id) {
                        Some(listed) => *listed = record,
                        None => found.push(record),
                    }
                }
            }
            found.truncate(limit);
        }
        Ok(found)
    }

    /// Reads the queue's messages in stream order, one direct get at a
    /// time (a work-queue stream allows no other consumer on them), until
    /// `limit` match.
    async fn list_queued(
        &self,
        store: &Store,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobsError> {
        let subjects = &self.settings.subjects;
        let mut filters = Vec::new();
        if state != Some(JobState::Delayed) {
            filters.push((true, format!("{}.jobs.ready.{queue}.>", subjects.prefix())));
        }
        if state.is_none_or(|s| s == JobState::Delayed) {
            filters.push((false, subjects.job_delayed_queue(queue)));
        }
        // Where each priority's consumer has got to.
        let mut handed = [0u64; PRIORITY_LEVELS as usize];
        for (p, reached) in handed.iter_mut().enumerate() {
            if let Ok(info) = store
                .stream
                .consumer_info(consumer_name(queue, p as u8))
                .await
            {
                *reached = info.delivered.stream_sequence;
            }
        }
        let mut found: Vec<JobRecord> = Vec::new();
        for (ready, filter) in filters {
            let mut from = 1;
            while found.len() < limit {
                let message = match store
                    .stream
                    .direct_get_next_for_subject(filter.clone(), Some(from))
                    .await
                {
                    Ok(message) => message,
                    Err(err) if err.kind() == stream::DirectGetErrorKind::NotFound => break,
                    Err(err) => return Err(NatsError::from(err).into()),
                };
                from = message.sequence + 1;
                let Ok(mut record) = serde_json::from_slice::<JobRecord>(&message.payload) else {
                    continue;
                };
                let priority = ready
                    .then(|| {
                        message
                            .subject
                            .split('.')
                            .rev()
                            .nth(1)?
                            .parse::<usize>()
                            .ok()
                    })
                    .flatten();
                record.state = match priority {
                    None => JobState::Delayed,
                    Some(p) if handed.get(p).is_some_and(|&h| h >= message.sequence) => {
                        record.attempts += 1;
                        JobState::Active
                    }
                    Some(_) => JobState::Waiting,
                };
                if state.is_none_or(|s| s == record.state) {
                    // An older message of a job queued again is not listed.
                    found.retain(|r| r.id != record.id || r.ticket > record.ticket);
                    if !found.iter().any(|r| r.id == record.id) {
                        found.push(record);
                    }
                }
            }
        }
        Ok(found)
    }

    /// Cancels a job that is waiting or delayed: its message is taken out
    /// of the stream, which is only a cancel if no dispatcher had it yet.
    pub async fn cancel(&self, queue: &str, id: &str) -> Result<JobRecord, JobsError> {
        self.settings.queue(queue)?;
        let store = self.store().await?;
        for _ in 0..50 {
            let Some(Current {
                mut record,
                revision,
                queued,
            }) = self.current(queue, id).await?
            else {
                return Err(JobsError::NotFound);
            };
            if !matches!(record.state, JobState::Waiting | JobState::Delayed) {
                return Err(JobsError::WrongState(format!(
                    "the job is {}; only a waiting or delayed job can be cancelled",
                    record.state.as_str()
                )));
            }
            let Some(queued) = queued else {
                // A retry whose message is on its way.
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            };
            if !matches!(store.stream.delete_message(queued.sequence).await, Ok(true)) {
                // It moved meanwhile (its schedule fired, or it ran).
                continue;
            }
            if let Some(priority) = queued.priority
                && self
                    .handed_out(store, queue, priority, queued.sequence)
                    .await?
            {
                return Err(JobsError::WrongState(
                    "the job started as it was being cancelled".into(),
                ));
            }
            record.state = JobState::Cancelled;
            record.finished_at = Some(timestamp(now()));
            if let Write::Conflict = store.records.put(&record, revision).await? {
                store.records.overwrite(&record).await?;
            }
            return Ok(record);
        }
        Err(JobsError::WrongState(
            "the job keeps changing; try again".into(),
        ))
    }

    /// Runs a dead job again, with a fresh set of attempts.
    pub async fn retry(&self, queue: &str, id: &str) -> Result<JobRecord, JobsError> {
        self.settings.queue(queue)?;
        let records = self.records().await?;
        loop {
            let Some(Current {
                mut record,
                revision,
                ..
            }) = self.current(queue, id).await?
            else {
                return Err(JobsError::NotFound);
            };
            if record.state != JobState::Dead {
                return Err(JobsError::WrongState(format!(
                    "the job is {}; only a dead job can be retried",
                    record.state.as_str()
                )));
            }
            record.state = JobState::Waiting;
            record.attempts = 0;
            record.ticket += 1;
            record.run_at = timestamp(now());
            record.finished_at = None;
            if let Write::Done(_) = records.put(&record, revision).await? {
                self.queue_job(&record).await?;
                return Ok(record);
            }
        }
    }
}

/// The jobs stream: ready jobs on `<prefix>.jobs.ready.<queue>.<priority>`
/// (work-queue retention: a job's message leaves when it is done), and
/// scheduled ones on `<prefix>.jobs.delayed.<id>`.
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &Settings,
) -> Result<stream::Stream, NatsError> {
    let name = settings.stream_name();
    if let Ok(mut stream) = jetstream.get_stream(&name).await {
        let config = stream.info().await?.config.clone();
        if !config.allow_direct {
            let config = stream::Config {
                allow_direct: true,
                ..config
            };
            jetstream.update_stream(&config).await?;
        }
        return Ok(stream);
    }
    let config = stream::Config {
        name: name.clone(),
        description: Some("oxbase background jobs: ready and scheduled".into()),
        subjects: settings.subjects.jobs_stream_subjects(),
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        allow_message_schedules: true,
        // Looking a job up by id reads its message directly.
        allow_direct: true,
        ..Default::default()
    };
    match jetstream.create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(err) => jetstream.get_stream(&name).await.map_err(|_| err.into()),
    }
}
