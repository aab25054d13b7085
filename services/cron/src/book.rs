//! The schedules, in the key-value bucket `<PREFIX>_CRON_SCHEDULES` (one
//! key per schedule, `s.<name>`), and their runs, in the stream
//! `<PREFIX>_CRON_RUNS`.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_jobs::JobQueue;
use oxbase_kit::NatsError;
use oxbase_proto::cron::{CronRun, CronSchedule};
use tokio::sync::OnceCell;

use crate::timing::Timing;
use crate::{CronError, Settings, now_ms};

/// Longest schedule name.
const MAX_NAME: usize = 64;

/// The buckets and the stream, opened (and created when missing) once.
#[derive(Debug)]
pub(crate) struct Storage {
    pub schedules: kv::Store,
    pub slots: kv::Store,
    pub runs: stream::Stream,
}

pub struct ScheduleBook {
    jetstream: jetstream::Context,
    settings: Arc<Settings>,
    jobs: Arc<JobQueue>,
    storage: OnceCell<Storage>,
}

impl std::fmt::Debug for ScheduleBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScheduleBook").finish_non_exhaustive()
    }
}

pub(crate) fn schedule_key(name: &str) -> String {
    format!("s.{name}")
}

impl ScheduleBook {
    /// Does no I/O: the buckets are opened on first use, so a process
    /// starts while NATS is down.
    pub fn new(
        jetstream: jetstream::Context,
        settings: Arc<Settings>,
        jobs: Arc<JobQueue>,
    ) -> Arc<Self> {
        Arc::new(Self {
            jetstream,
            settings,
            jobs,
            storage: OnceCell::new(),
        })
    }

    pub fn settings(&self) -> &Arc<Settings> {
        &self.settings
    }

    pub(crate) fn jobs(&self) -> &Arc<JobQueue> {
        &self.jobs
    }

    pub(crate) fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    pub(crate) async fn storage(&self) -> Result<&Storage, CronError> {
        self.storage
            .get_or_try_init(|| async {
                let settings = &self.settings;
                let schedules = open_bucket(
                    &self.jetstream,
                    kv::Config {
                        bucket: settings.schedules_bucket(),
                        description: "oxbase schedules".into(),
                        history: 1,
                        storage: stream::StorageType::File,
                        num_replicas: settings.replicas,
                        ..Default::default()
                    },
                )
                .await?;
                let slots = open_bucket(
                    &self.jetstream,
                    kv::Config {
                        bucket: settings.slots_bucket(),
                        description: "oxbase schedule ticks, claimed".into(),
                        history: 1,
                        max_age: settings.slot_ttl,
                        storage: stream::StorageType::File,
                        num_replicas: settings.replicas,
                        ..Default::default()
                    },
                )
                .await?;
                let config = stream::Config {
                    name: settings.runs_stream(),
                    description: Some("oxbase schedule runs".into()),
                    subjects: vec![settings.subjects.cron_runs_wildcard()],
                    max_messages_per_subject: settings.history,
                    // Covers a takeover repeating a run's record.
                    duplicate_window: Duration::from_secs(600),
                    storage: stream::StorageType::File,
                    num_replicas: settings.replicas,
                    allow_direct: true,
                    ..Default::default()
                };
                let runs = match self.jetstream.get_or_create_stream(config.clone()).await {
                    Ok(stream) => stream,
                    Err(err) => return Err(NatsError::from(err).into()),
                };
                if runs.cached_info().config.max_messages_per_subject != settings.history
                    && let Err(err) = self.jetstream.update_stream(&config).await
                {
                    tracing::warn!(%err, "cannot apply cron.history to the runs stream");
                }
                Ok(Storage {
                    schedules,
                    slots,
                    runs,
                })
            })
            .await
    }

    /// Checks a schedule from a client and returns its timing. Names
    /// starting with `_` are the server's own (Parse's schedules).
    pub fn check(&self, schedule: &CronSchedule) -> Result<Timing, CronError> {
        let name = &schedule.name;
        if !oxbase_proto::valid_token(name) || name.len() > MAX_NAME || name.starts_with('_') {
            return Err(CronError::Invalid(format!(
                "a schedule name is 1 to {MAX_NAME} ASCII letters, digits, '_' or '-', not starting with '_'"
            )));
        }
        self.check_job(schedule)
    }

    pub(crate) fn check_job(&self, schedule: &CronSchedule) -> Result<Timing, CronError> {
        let timing = Timing::parse(&schedule.cron, &schedule.time_zone)?;
        let job = &schedule.job;
        if job.run_at.is_some() || job.delay_ms.is_some() || job.idempotency_key.is_some() {
            return Err(CronError::Invalid(
                "a schedule's job takes no runAt, delayMs or idempotencyKey: each tick sets them"
                    .into(),
            ));
        }
        self.jobs
            .check(queue_of(schedule), job.clone())
            .map_err(|err| CronError::Invalid(err.to_string()))?;
        Ok(timing)
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<CronSchedule>, CronError> {
        let storage = self.storage().await?;
        let mut found = Vec::new();
        let bucket = &storage.schedules;
        // The bucket handle's own status is from when it was opened.
        let mut stream = self
            .jetstream
            .get_stream(format!("KV_{}", bucket.name))
            .await
            .map_err(NatsError::from)?;
        if stream.info().await.map_err(NatsError::from)?.state.messages == 0 {
            return Ok(found);
        }
        let mut watch = bucket
            .watch_with_history(">")
            .await
            .map_err(NatsError::from)?;
        while let Ok(Some(entry)) = tokio::time::timeout(Duration::from_secs(5), watch.next()).await
        {
            let entry = entry.map_err(NatsError::from)?;
            if entry.operation == kv::Operation::Put
                && let Ok(schedule) = serde_json::from_slice::<CronSchedule>(&entry.value)
            {
                found.push(schedule);
            }
            if entry.delta == 0 {
                break;
            }
        }
        found.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(found)
    }

    pub async fn get(&self, name: &str) -> Result<CronSchedule, CronError> {
        Ok(self.entry(name).await?.0)
    }

    async fn entry(&self, name: &str) -> Result<(CronSchedule, u64), CronError> {
        if !oxbase_proto::valid_token(name) {
            return Err(CronError::NotFound);
        }
        let storage = self.storage().await?;
        match storage
            .schedules
            .entry(schedule_key(name))
            .await
            .map_err(NatsError::from)?
        {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let schedule = serde_json::from_slice(&entry.value).map_err(|source| {
                    CronError::Unreadable {
                        what: format!("schedule {name}"),
                        source,
                    }
                })?;
                Ok((schedule, entry.revision))
            }
            _ => Err(CronError::NotFound),
        }
    }

    /// Adds a schedule; a name in use is refused.
    pub async fn create(&self, mut schedule: CronSchedule) -> Result<CronSchedule, CronError> {
        self.check(&schedule)?;
        schedule.since = Some(now_ms());
        let storage = self.storage().await?;
        match storage
            .schedules
            .create(schedule_key(&schedule.name), encode(&schedule)?)
            .await
        {
            Ok(_) => Ok(schedule),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(CronError::Duplicate(schedule.name))
            }
            Err(err) => Err(NatsError::from(err).into()),
        }
    }

    /// Replaces a schedule. A change of timing or a re-enable starts it
    /// afresh: ticks before the change never fire.
    pub async fn replace(&self, mut schedule: CronSchedule) -> Result<CronSchedule, CronError> {
        self.check(&schedule)?;
        let (current, revision) = self.entry(&schedule.name).await?;
        schedule.since = since_after(Some(&current), &schedule);
        let storage = self.storage().await?;
        storage
            .schedules
            .update(schedule_key(&schedule.name), encode(&schedule)?, revision)
            .await
            .map_err(|err| match err.kind() {
                kv::UpdateErrorKind::WrongLastRevision => CronError::Invalid(format!(
                    "schedule {} changed meanwhile; read it again",
                    schedule.name
                )),
                _ => NatsError::from(err).into(),
            })?;
        Ok(schedule)
    }

    /// Writes a schedule whatever is there: for the config file's, and for
    /// Parse's, which carry their own `since` (`startAfter`).
    pub(crate) async fn put(&self, mut schedule: CronSchedule) -> Result<(), CronError> {
        let storage = self.storage().await?;
        let current = match self.entry(&schedule.name).await {
            Ok((current, _)) => Some(current),
            Err(CronError::NotFound) => None,
            Err(err) => return Err(err),
        };
        if schedule.since.is_none() {
            schedule.since = since_after(current.as_ref(), &schedule);
        }
        if current.as_ref() == Some(&schedule) {
            return Ok(());
        }
        storage
            .schedules
            .put(schedule_key(&schedule.name), encode(&schedule)?)
            .await
            .map_err(NatsError::from)?;
        Ok(())
    }

    pub async fn delete(&self, name: &str) -> Result<(), CronError> {
        let (_, revision) = self.entry(name).await?;
        let storage = self.storage().await?;
        storage
            .schedules
            .delete_expect_revision(schedule_key(name), Some(revision))
            .await
            .map_err(|err| NatsError::from(err).into())
    }

    /// The last `limit` runs of a schedule, latest tick first.
    pub async fn runs(&self, name: &str, limit: usize) -> Result<Vec<CronRun>, CronError> {
        if !oxbase_proto::valid_token(name) {
            return Err(CronError::NotFound);
        }
        let storage = self.storage().await?;
        let subject = self.settings.subjects.cron_runs(name);
        let mut runs = std::collections::VecDeque::with_capacity(limit.min(1024));
        let held = storage
            .runs
            .info_with_subjects(subject.clone())
            .await
            .map_err(NatsError::from)?
            .next()
            .await
            .transpose()
            .map_err(NatsError::from)?
            .map_or(0, |(_, count)| count);
        if held == 0 || limit == 0 {
            return Ok(Vec::new());
        }
        let consumer = storage
            .runs
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: subject,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(NatsError::from)?;
        let mut messages = consumer.messages().await.map_err(NatsError::from)?;
        while let Ok(Some(message)) =
            tokio::time::timeout(Duration::from_secs(5), messages.next()).await
        {
            let message = message.map_err(NatsError::from)?;
            if let Ok(run) = serde_json::from_slice::<CronRun>(&message.payload) {
                if runs.len() == limit {
                    runs.pop_front();
                }
                runs.push_back(run);
            }
            if message.info().map_or(true, |info| info.pending == 0) {
                break;
            }
        }
        let mut runs: Vec<CronRun> = runs.into();
        // Settled order is not tick order when a tick was taken over.
        runs.sort_by(|a, b| b.scheduled_at.cmp(&a.scheduled_at));
        Ok(runs)
    }
}

/// The queue a schedule submits to.
pub(crate) fn queue_of(schedule: &CronSchedule) -> &str {
    schedule.job.queue.as_deref().unwrap_or("default")
}

/// The `since` of `new` replacing `old`: a change of timing or a
/// re-enable starts the schedule afresh.
fn since_after(old: Option<&CronSchedule>, new: &CronSchedule) -> Option<i64> {
    match old {
        Some(old)
            if old.cron == new.cron
                && old.time_zone == new.time_zone
                && (old.enabled || !new.enabled) =>
        {
            old.since
        }
        _ => Some(now_ms()),
    }
}

fn encode(schedule: &CronSchedule) -> Result<Bytes, CronError> {
    serde_json::to_vec(schedule)
        .map(Bytes::from)
        .map_err(|e| CronError::Invalid(e.to_string()))
}

async fn open_bucket(
    jetstream: &jetstream::Context,
    config: kv::Config,
) -> Result<kv::Store, CronError> {
    match jetstream.get_key_value(&config.bucket).await {
        Ok(store) => Ok(store),
        Err(_) => match jetstream.create_key_value(config.clone()).await {
            Ok(store) => Ok(store),
            // Another process created it meanwhile.
            Err(_) => Ok(jetstream
                .get_key_value(&config.bucket)
                .await
                .map_err(NatsError::from)?),
        },
    }
}
