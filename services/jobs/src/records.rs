//! Job records in the key-value bucket `<PREFIX>_JOBS`: `job.<id>` holds a
//! [`JobRecord`], `idem.<queue>.<key>` the id an idempotency key points at,
//! and `rate.<queue>` a rate-limited queue's current window.
//!
//! Every change is a compare-and-set on the key's revision, so two
//! processes never both move a job out of the same state.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    context::{PublishAckFuture, PublishErrorKind},
    kv,
};
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_kit::NatsError;
use oxbase_proto::jobs::{JobRecord, JobState};

use crate::JobsError;

/// A record and the revision it was read at.
#[derive(Debug, Clone)]
pub struct Versioned {
    pub record: JobRecord,
    pub revision: u64,
}

/// Why a compare-and-set did not apply.
#[derive(Debug)]
pub enum Write {
    Done(u64),
    /// The key changed since it was read (or, for a create, exists).
    Conflict,
}

#[derive(Clone)]
pub struct Records {
    jetstream: jetstream::Context,
    kv: kv::Store,
    prefix: String,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("prefix", &self.prefix)
            .finish()
    }
}

async fn settle(ack: PublishAckFuture) -> Result<Write, JobsError> {
    match ack.await {
        Ok(ack) => Ok(Write::Done(ack.sequence)),
        Err(err) if err.kind() == PublishErrorKind::WrongLastSequence => Ok(Write::Conflict),
        Err(err) => Err(NatsError::from(err).into()),
    }
}

pub(crate) fn encode(record: &JobRecord) -> Result<Bytes, JobsError> {
    serde_json::to_vec(record)
        .map(Bytes::from)
        .map_err(JobsError::Encode)
}

fn job_key(id: &str) -> String {
    format!("job.{id}")
}

impl Records {
    /// Opens the bucket, creating it when missing. Records expire
    /// `retention` after their last write: a record is only ever written
    /// for a job that has finished, failed or reported progress, and a
    /// job's queued message carries its record whole, so one that expires
    /// early is rebuilt from the message.
    pub async fn open(
        jetstream: jetstream::Context,
        bucket: String,
        replicas: usize,
        retention: Duration,
    ) -> Result<Self, NatsError> {
        let config = jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some("oxbase background jobs".into()),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: retention,
            duplicate_window: retention.min(Duration::from_secs(120)),
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            // Idempotency keys carry their own window as a TTL. A bucket
            // limit (the retention) removes records without markers: a
            // marker per expired job would double its writes.
            allow_message_ttl: true,
            ..Default::default()
        };
        match jetstream.get_stream(&config.name).await {
            Ok(mut stream) => {
                let current = stream.info().await?.config.clone();
                if current.max_age != config.max_age
                    || current.subject_delete_marker_ttl.is_some()
                    || !current.allow_message_ttl
                {
                    let updated = jetstream::stream::Config {
                        max_age: config.max_age,
                        subject_delete_marker_ttl: None,
                        allow_message_ttl: true,
                        duplicate_window: config.duplicate_window,
                        ..current
                    };
                    if let Err(err) = jetstream.update_stream(&updated).await {
                        tracing::warn!(%err, "cannot apply jobs.retention_secs to the job records");
                    }
                }
            }
            Err(_) => {
                if let Err(err) = jetstream.create_stream(&config).await {
                    // Another process created it meanwhile, or NATS is
                    // down: the open below says which.
                    tracing::debug!(%err, "creating the job records bucket");
                }
            }
        }
        let kv = jetstream.get_key_value(&bucket).await?;
        Ok(Self {
            prefix: format!("$KV.{bucket}."),
            jetstream,
            kv,
        })
    }

    pub async fn get(&self, id: &str) -> Result<Option<Versioned>, JobsError> {
        if !oxbase_proto::valid_token(id) {
            return Ok(None);
        }
        let Some(entry) = self.kv.entry(job_key(id)).await.map_err(NatsError::from)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let record =
            serde_json::from_slice(&entry.value).map_err(|source| JobsError::Unreadable {
                id: id.to_owned(),
                source,
            })?;
        Ok(Some(Versioned {
            record,
            revision: entry.revision,
        }))
    }

    /// Writes `record` if its key is still at `revision` (0: absent).
    pub async fn put(&self, record: &JobRecord, revision: u64) -> Result<Write, JobsError> {
        let publish = jetstream::message::PublishMessage::build()
            .payload(encode(record)?)
            .expected_last_subject_sequence(revision);
        let sent = self
            .jetstream
            .send_publish(self.subject(&record.id), publish)
            .await
            .map_err(NatsError::from)?;
        settle(sent).await
    }

    /// Writes `record` whatever the key holds: for the outcome of a run,
    /// which nothing else writes while it runs.
    pub async fn overwrite(&self, record: &JobRecord) -> Result<(), JobsError> {
        self.jetstream
            .publish(self.subject(&record.id), encode(record)?)
            .await
            .map_err(NatsError::from)?
            .await
            .map_err(NatsError::from)?;
        Ok(())
    }

    fn subject(&self, id: &str) -> String {
        format!("{}{}", self.prefix, job_key(id))
    }

    /// Points the idempotency key at `id` for `window`, unless it already
    /// points somewhere: then the id it points at.
    pub async fn claim_key(
        &self,
        queue: &str,
        key: &str,
        id: &str,
        window: Duration,
    ) -> Result<Option<String>, JobsError> {
        let name = format!(
            "idem.{queue}.{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
        );
        loop {
            match self
                .kv
                .create_with_ttl(&name, Bytes::from(id.to_owned()), window)
                .await
            {
                Ok(_) => return Ok(None),
                Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                    match self.kv.get(&name).await.map_err(NatsError::from)? {
                        Some(existing) => {
                            return Ok(Some(String::from_utf8_lossy(&existing).into_owned()));
                        }
                        // Expired between the two calls: claim it again.
                        None => continue,
                    }
                }
                Err(err) => return Err(NatsError::from(err).into()),
            }
        }
    }

    /// The rate window of a queue: (window start in ms, starts counted),
    /// and its revision.
    pub async fn rate_window(&self, queue: &str) -> Result<(u64, u64, u64), JobsError> {
        match self
            .kv
            .entry(format!("rate.{queue}"))
            .await
            .map_err(NatsError::from)?
        {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let text = String::from_utf8_lossy(&entry.value);
                let (start, count) = text.split_once(' ').unwrap_or(("0", "0"));
                Ok((
                    start.parse().unwrap_or(0),
                    count.parse().unwrap_or(0),
                    entry.revision,
                ))
            }
            Some(entry) => Ok((0, 0, entry.revision)),
            None => Ok((0, 0, 0)),
        }
    }

    /// Sets a queue's rate window if it is still at `revision`.
    pub async fn set_rate_window(
        &self,
        queue: &str,
        start: u64,
        count: u64,
        revision: u64,
    ) -> Result<bool, JobsError> {
        match self
            .kv
            .update(
                format!("rate.{queue}"),
                Bytes::from(format!("{start} {count}")),
                revision,
            )
            .await
        {
            Ok(_) => Ok(true),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(false),
            Err(err) => Err(NatsError::from(err).into()),
        }
    }

    /// Up to `limit` jobs of `queue` (in `state`, when given), most
    /// recently changed first. It reads every record, so it is for
    /// operators, not for hot paths.
    pub async fn list(
        &self,
        queue: &str,
        state: Option<JobState>,
        limit: usize,
    ) -> Result<Vec<JobRecord>, JobsError> {
        let mut watch = self
            .kv
            .watch_with_history("job.>")
            .await
            .map_err(NatsError::from)?;
        let mut found = std::collections::VecDeque::with_capacity(limit.min(1024));
        let mut stream = self
            .jetstream
            .get_stream(format!("KV_{}", self.kv.name))
            .await
            .map_err(NatsError::from)?;
        if stream.info().await.map_err(NatsError::from)?.state.messages == 0 {
            return Ok(Vec::new());
        }
        // No record matching says nothing at all: give up on the first one
        // sooner than on a later one.
        let mut wait = Duration::from_secs(1);
        loop {
            let next = tokio::time::timeout(wait, watch.next()).await;
            wait = Duration::from_secs(5);
            let Ok(Some(entry)) = next else { break };
            let entry = entry.map_err(NatsError::from)?;
            if entry.operation == kv::Operation::Put
                && let Ok(record) = serde_json::from_slice::<JobRecord>(&entry.value)
                && record.queue == queue
                && state.is_none_or(|s| s == record.state)
            {
                if found.len() == limit {
                    found.pop_front();
                }
                found.push_back(record);
            }
            if entry.delta == 0 {
                break;
            }
        }
        Ok(found.into_iter().rev().collect())
    }
}
