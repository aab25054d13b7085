//! Submitting, reading, cancelling and retrying jobs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::PublishAckFuture, stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use oxbase_proto::jobs::{
    Backoff, DEFAULT_PRIORITY, JobRecord, JobSpec, JobState, PRIORITY_LEVELS, QueuedJob, Submitted,
};

use crate::records::{Records, Versioned, Write, nats, settle};
use crate::{JobsError, Settings};

/// A publish repeating a `Nats-Msg-Id` seen this recently is dropped, so a
/// job queued twice by a retried call is queued once.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);
/// A job due sooner than this is queued as ready rather than scheduled.
const SCHEDULE_THRESHOLD: Duration = Duration::from_millis(20);
const MAX_KEY_LEN: usize = 256;
/// Jobs whose writes are in flight together in one submission.
const SUBMIT_WINDOW: usize = 256;
/// Windows in flight at once in one process: with two writes per job this
/// keeps submissions to about 2,000 of the NATS context's 5,000 unanswered
/// publishes.
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

/// The client side of the jobs: what the API, the NATS responder and the
/// dispatchers use to put jobs in the queues and change their state.
pub struct JobQueue {
    settings: Arc<Settings>,
    jetstream: jetstream::Context,
    records: tokio::sync::OnceCell<Records>,
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
            records: tokio::sync::OnceCell::new(),
            submitting: tokio::sync::Semaphore::new(SUBMIT_WINDOWS),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub(crate) async fn records(&self) -> Result<&Records, JobsError> {
        self.records
            .get_or_try_init(|| async {
                ensure_stream(&self.jetstream, &self.settings).await?;
                Records::open(
                    self.jetstream.clone(),
                    self.settings.stream_name(),
                    self.settings.replicas,
                )
                .await
            })
            .await
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
            Err(err) => return specs.iter().map(|_| Err(err.clone())).collect(),
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

    async fn submit_window(
        &self,
        records: &Records,
        window: Vec<(String, JobSpec, Option<String>)>,
    ) -> Vec<Result<Submitted, JobsError>> {
        let mut out: Vec<Result<Submitted, JobsError>> = Vec::with_capacity(window.len());
        let mut fresh = Vec::new();
        for (queue, spec, status_id) in window {
            match self.prepare(records, &queue, spec, status_id).await {
                Ok(Prepared::Existing(found)) => out.push(Ok(found)),
                Ok(Prepared::New(record)) => {
                    // The message goes first and carries the record: if
                    // this process dies before the record is written, the
                    // dispatcher writes it from the message, so a queued
                    // job always has both.
                    let sent = self.enqueue(&record, true).await;
                    out.push(Ok(Submitted {
                        job: record.clone(),
                        duplicate: false,
                    }));
                    fresh.push((out.len() - 1, record, sent));
                }
                Err(err) => out.push(Err(err)),
            }
        }
        let mut writes = Vec::with_capacity(fresh.len());
        for (index, record, sent) in fresh {
            let queued = match sent {
                Ok(ack) => ack.await.map_err(nats),
                Err(err) => Err(err),
            };
            let write = match queued {
                Ok(_) => records.send_put(&record, 0, None).await,
                Err(err) => Err(err),
            };
            writes.push((index, record, write));
        }
        for (index, record, write) in writes {
            let written = match write {
                Ok(ack) => settle(ack).await,
                Err(err) => Err(err),
            };
            match written {
                Ok(Write::Done(_)) => {}
                // A dispatcher took the job first and wrote it.
                Ok(Write::Conflict) => {
                    if let Ok(Some(current)) = records.get(&record.id).await {
                        out[index] = Ok(Submitted {
                            job: current.record,
                            duplicate: false,
                        });
                    }
                }
                Err(err) => out[index] = Err(err),
            }
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
            Some(first) => match self.existing(records, &first).await? {
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
    async fn existing(&self, records: &Records, id: &str) -> Result<Option<Submitted>, JobsError> {
        for _ in 0..50 {
            if let Some(current) = records.get(id).await? {
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
    /// ready subject, or scheduled for its `run_at`.
    pub(crate) async fn enqueue(
        &self,
        record: &JobRecord,
        with_record: bool,
    ) -> Result<PublishAckFuture, JobsError> {
        let message = QueuedJob {
            id: record.id.clone(),
            ticket: record.ticket,
            job: with_record.then(|| Box::new(record.clone())),
        };
        let body =
            Bytes::from(serde_json::to_vec(&message).map_err(|e| JobsError::Nats(e.to_string()))?);
        let subjects = &self.settings.subjects;
        let ready = subjects.job_ready(&record.queue, record.priority);
        let due = DateTime::parse_from_rfc3339(&record.run_at)
            .map(|at| at.with_timezone(&Utc))
            .unwrap_or_else(|_| now());
        let publish = jetstream::message::PublishMessage::build().payload(body);
        let (subject, publish) = if due > now() + SCHEDULE_THRESHOLD {
            // JetStream's message schedule stores the message on `ready` at
            // its time; until then it waits on the job's own subject.
            let at = due.to_rfc3339_opts(SecondsFormat::Millis, true);
            (
                subjects.job_delayed(&record.id),
                publish
                    .header("Nats-Schedule", format!("@at {at}"))
                    .header("Nats-Schedule-Target", ready),
            )
        } else {
            (
                ready,
                publish.message_id(format!("{}.{}", record.id, record.ticket)),
            )
        };
        self.jetstream
            .send_publish(subject, publish)
            .await
            .map_err(nats)
    }

    /// The job `id`, if it is in `queue` (any queue when `None`).
    pub async fn get(&self, queue: Option<&str>, id: &str) -> Result<JobRecord, JobsError> {
        let records = self.records().await?;
        match records.get(id).await? {
            Some(found) if queue.is_none_or(|q| q == found.record.queue) => Ok(found.record),
            _ => Err(JobsError::NotFound),
        }
    }

    pub async fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobsError> {
        self.settings.queue(queue)?;
        self.records().await?.list(queue, state, limit).await
    }

    /// Cancels a job that is waiting or delayed.
    pub async fn cancel(&self, queue: &str, id: &str) -> Result<JobRecord, JobsError> {
        let records = self.records().await?;
        loop {
            let Versioned {
                mut record,
                revision,
            } = self.read_in(records, queue, id).await?;
            if !matches!(record.state, JobState::Waiting | JobState::Delayed) {
                return Err(JobsError::WrongState(format!(
                    "the job is {}; only a waiting or delayed job can be cancelled",
                    record.state.as_str()
                )));
            }
            let delayed = record.state == JobState::Delayed;
            record.state = JobState::Cancelled;
            record.finished_at = Some(timestamp(now()));
            if let Write::Done(_) = records
                .put(&record, revision, Some(self.settings.retention))
                .await?
            {
                if delayed {
                    // Its schedule would fire only to be dropped; removing
                    // it frees the space now.
                    self.drop_schedule(id).await;
                }
                return Ok(record);
            }
        }
    }

    async fn drop_schedule(&self, id: &str) {
        let subject = self.settings.subjects.job_delayed(id);
        if let Ok(stream) = self.jetstream.get_stream(self.settings.stream_name()).await
            && let Err(err) = stream.purge().filter(subject).await
        {
            tracing::debug!(%err, id, "cannot remove a cancelled job's schedule");
        }
    }

    /// Runs a dead job again, with a fresh set of attempts. A job already
    /// waiting or delayed is queued again, which is harmless (its older
    /// message is dropped) and recovers one whose message was lost.
    pub async fn retry(&self, queue: &str, id: &str) -> Result<JobRecord, JobsError> {
        let records = self.records().await?;
        loop {
            let Versioned {
                mut record,
                revision,
            } = self.read_in(records, queue, id).await?;
            match record.state {
                JobState::Dead => {
                    record.state = JobState::Waiting;
                    record.attempts = 0;
                    record.ticket += 1;
                    record.run_at = timestamp(now());
                    record.finished_at = None;
                    if let Write::Done(_) = records.put(&record, revision, None).await? {
                        self.enqueue(&record, false).await?.await.map_err(nats)?;
                        return Ok(record);
                    }
                }
                JobState::Waiting | JobState::Delayed => {
                    self.enqueue(&record, false).await?.await.map_err(nats)?;
                    return Ok(record);
                }
                state => {
                    return Err(JobsError::WrongState(format!(
                        "the job is {}; only a dead job can be retried",
                        state.as_str()
                    )));
                }
            }
        }
    }

    async fn read_in(
        &self,
        records: &Records,
        queue: &str,
        id: &str,
    ) -> Result<Versioned, JobsError> {
        self.settings.queue(queue)?;
        match records.get(id).await? {
            Some(found) if found.record.queue == queue => Ok(found),
            _ => Err(JobsError::NotFound),
        }
    }
}

/// The jobs stream: ready jobs on `<prefix>.jobs.ready.<queue>.<priority>`
/// (work-queue retention: a job's message leaves when it is done), and
/// scheduled ones on `<prefix>.jobs.delayed.<id>`.
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &Settings,
) -> Result<stream::Stream, JobsError> {
    let name = settings.stream_name();
    if let Ok(stream) = jetstream.get_stream(&name).await {
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
        ..Default::default()
    };
    match jetstream.create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(err) => jetstream.get_stream(&name).await.map_err(|_| nats(err)),
    }
}
