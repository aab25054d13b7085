//! oxbase's push service: Parse's `POST /push`, fanned out over JetStream.
//!
//! - [`PushQueue`] is where the API hands a push over.
//! - [`PushService`] takes pushes from the stream, pages through their
//!   audience into batches, sends the batches through the providers, and
//!   keeps the push's `_PushStatus` (through [`PushStore`]).
//!
//! The contract is in [`oxbase_proto::push`].

mod apns;
mod config;
mod fcm;
mod installations;
mod service;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use oxbase_kit::{Config, NatsError, PortError};
use oxbase_proto::Subjects;
use oxbase_proto::push::{PushDevice, PushRequest};
use serde_json::{Map, Value};

pub use apns::Apns;
pub use config::{ApnsConfig, FcmConfig, PushConfig};
pub use fcm::Fcm;
pub use service::{Metrics, PushService};

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0}")]
    Config(String),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    /// The app's data, through [`PushStore`].
    #[error(transparent)]
    Store(#[from] PushStoreError),
    #[error("cannot encode {what}: {source}")]
    Encode {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
}

/// Attempts at a notification a provider answers 429 or 5xx, or cannot
/// be reached for.
pub(crate) const ATTEMPTS: u32 = 4;

/// The wait between those attempts: 200 ms, doubling.
pub(crate) struct Backoff(Duration);

impl Default for Backoff {
    fn default() -> Self {
        Self(Duration::from_millis(200))
    }
}

impl Backoff {
    pub(crate) async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 *= 2;
    }
}

/// Why a [`PushStore`] could not read or write: the store's error, made
/// with `.map_err(PushStoreError::new)`. The push message that needed it
/// is tried again later.
pub type PushStoreError = PortError;

/// What the push service reads and writes in the app's data; the object
/// layer implements it (`installations.rs`).
#[async_trait::async_trait]
pub trait PushStore: Send + Sync {
    /// Up to `limit` installations matching `query` that have a device
    /// token, after objectId `after`, in objectId order.
    async fn audience(
        &self,
        query: &Map<String, Value>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDevice>, PushStoreError>;
    /// The `_PushStatus`; `None` once it was deleted.
    async fn status(&self, id: &str) -> Result<Option<Map<String, Value>>, PushStoreError>;
    /// Applies a Parse update body to the `_PushStatus`; the object after.
    async fn update_status(
        &self,
        id: &str,
        changes: Map<String, Value>,
    ) -> Result<Map<String, Value>, PushStoreError>;
    /// The badge of each of these installations that still exists, 0 when
    /// it has none.
    async fn badges(&self, ids: &[String]) -> Result<HashMap<String, i64>, PushStoreError>;
    /// Applies `changes` to the `_PushStatus`, adds `page` to its
    /// `countedBatches` and raises the badge of the installations `badged`
    /// by one, all or nothing, and only while `page` is not counted yet
    /// (two processes holding one batch cannot both count it); the status
    /// after.
    async fn record_batch(
        &self,
        id: &str,
        page: u64,
        changes: Map<String, Value>,
        badged: &[String],
    ) -> Result<Map<String, Value>, PushStoreError>;
    /// Removes the token of installations their provider says is dead.
    async fn forget_tokens(&self, ids: &[String]) -> Result<(), PushStoreError>;
}

/// The push settings every part shares.
#[derive(Debug, Clone)]
pub struct Settings {
    pub subjects: Subjects,
    pub batch_size: usize,
    pub concurrency: usize,
    pub batches_in_flight: usize,
    pub ack_wait: Duration,
    pub replicas: usize,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Arc<Self>, PushError> {
        let push = &config.section::<PushConfig>();
        Ok(Arc::new(Self {
            subjects: Subjects::new(config.events.prefix.as_str())
                .map_err(|e| PushError::Config(e.to_string()))?,
            batch_size: push.batch_size.max(1),
            concurrency: push.concurrency.max(1),
            batches_in_flight: push.batches_in_flight.max(1),
            ack_wait: Duration::from_millis(push.ack_wait_ms.max(300)),
            replicas: push.replicas,
        }))
    }

    /// `<PREFIX>_PUSH`.
    pub fn stream_name(&self) -> String {
        oxbase_proto::stream_name(&self.subjects, "PUSH")
    }

    fn scheduled(&self, status_id: &str) -> String {
        format!("{}.push.scheduled.{status_id}", self.subjects.prefix())
    }
}

/// Where the API hands pushes over.
#[derive(Debug, Clone)]
pub struct PushQueue {
    jetstream: jetstream::Context,
    settings: Arc<Settings>,
    /// Set once the stream is known to exist: a push need not ask again.
    stream_ready: Arc<tokio::sync::OnceCell<()>>,
}

/// How long a repeated publish of one request or batch is dropped.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(600);

impl PushQueue {
    pub fn new(jetstream: jetstream::Context, settings: Arc<Settings>) -> Self {
        Self {
            jetstream,
            settings,
            stream_ready: Arc::default(),
        }
    }

    /// Queues `request`, to be resolved now or at `at`.
    pub async fn submit(
        &self,
        request: &PushRequest,
        at: Option<DateTime<Utc>>,
    ) -> Result<(), PushError> {
        self.stream_ready
            .get_or_try_init(|| async {
                ensure_stream(&self.jetstream, &self.settings)
                    .await
                    .map(drop)
            })
            .await?;
        let body = serde_json::to_vec(request).map_err(|source| PushError::Encode {
            what: "a push request",
            source,
        })?;
        let requests = self.settings.subjects.push_requests();
        let publish = jetstream::message::PublishMessage::build()
            .payload(Bytes::from(body))
            .message_id(&request.status_id);
        let (subject, publish) = match at {
            // JetStream's message schedule stores it on the requests
            // subject at its time.
            Some(at) => (
                self.settings.scheduled(&request.status_id),
                publish
                    .header(
                        "Nats-Schedule",
                        format!("@at {}", at.to_rfc3339_opts(SecondsFormat::Millis, true)),
                    )
                    .header("Nats-Schedule-Target", requests),
            ),
            None => (requests, publish),
        };
        self.jetstream
            .send_publish(subject, publish)
            .await
            .map_err(NatsError::from)?
            .await
            .map_err(NatsError::from)?;
        Ok(())
    }
}

/// The push stream: requests, their batches, and scheduled requests
/// (work-queue retention: each leaves once handled).
pub(crate) async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &Settings,
) -> Result<stream::Stream, PushError> {
    let name = settings.stream_name();
    if let Ok(stream) = jetstream.get_stream(&name).await {
        return Ok(stream);
    }
    let prefix = settings.subjects.prefix();
    let config = stream::Config {
        name: name.clone(),
        description: Some("oxbase push: requests and their batches".into()),
        subjects: vec![
            settings.subjects.push_requests(),
            settings.subjects.push_batches(),
            format!("{prefix}.push.scheduled.*"),
        ],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        allow_message_schedules: true,
        ..Default::default()
    };
    match jetstream.create_stream(config).await {
        Ok(stream) => Ok(stream),
        Err(err) => jetstream
            .get_stream(&name)
            .await
            .map_err(|_| NatsError::from(err).into()),
    }
}
