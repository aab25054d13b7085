//! The triggers service.
//!
//! - **Webhook proxy** ([`WebhookProxy`]): answers the API's requests on
//!   `<prefix>.webhooks.>` by calling the webhook the hook registry holds
//!   for the hook the subject names, for functions and before-hooks
//!   registered with a URL. The API itself never calls out over HTTP, and
//!   a request cannot send the webhook key to a URL of its choosing.
//! - **Router** ([`EventRouter`]): one durable consumer on the events
//!   stream, pinned to one triggers process at a time (JetStream's
//!   pinned-client priority group; another process takes over when it
//!   dies). Each event whose class has an afterSave or afterDelete hook is
//!   copied, byte for byte, to the deliveries stream `<PREFIX>_TRIGGERS` on
//!   `<prefix>.deliveries.<partition>`, the partition being a hash of
//!   class and objectId, with the event id as `Nats-Msg-Id` so a re-route
//!   after a crash is dropped as a duplicate.
//! - **Deliverers** ([`DeliveryWorker`]): one durable consumer per
//!   partition with `max_ack_pending = 1`, which every process pulls from.
//!   One delivery per partition is in flight across the whole cluster, so
//!   the events of one object are delivered in order while the processes
//!   share the partitions. A failed delivery is retried in place with
//!   exponential backoff and jitter; after `max_attempts` it goes to the
//!   dead-letter stream `<PREFIX>_TRIGGERS_DEAD`, from which
//!   [`replay_dead_letters`] moves it back.
//!
//! Delivery is at least once: a handler can see an event again (a crash
//! after the call, an ack lost on the way), always with the same
//! `Idempotency-Key` (the event id).

mod delivery;
mod metrics;
mod proxy;
mod replay;
mod router;
mod streams;
mod webhook;

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use oxbase_hooks::{HookRegistry, TriggersConfig};
use oxbase_kit::{
    Config, MetricsSource, NatsError, Readiness, Secret, Service, ServiceError, Shutdown,
};
use oxbase_proto::{EventKind, EventStreamSpec, InvalidPrefix, Subjects};
use serde::Deserialize;
use tokio::task::JoinSet;

pub use delivery::{Deliverer, DeliveryWorker, Outcome, consumer_name};
pub use metrics::Metrics;
pub use proxy::{QUEUE_GROUP, WebhookProxy};
pub use replay::replay_dead_letters;
pub use router::{EventRouter, ROUTER_CONSUMER, Routed};
pub use streams::{dead_letters_stream, deliveries_stream};
pub use webhook::{WebhookClient, WebhookFailure};

#[derive(Debug, thiserror::Error)]
pub enum TriggersError {
    #[error(transparent)]
    Prefix(#[from] InvalidPrefix),
    #[error("invalid class name {0:?}")]
    ClassName(String),
    #[error("NATS: {0}")]
    Nats(#[from] NatsError),
    #[error("the stream {name} cannot be used: {reason}")]
    StreamMismatch { name: String, reason: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(String),
}

/// The triggers service's settings, from `[events]` and `[triggers]`.
#[derive(Debug, Clone)]
pub struct Settings {
    pub subjects: Subjects,
    pub events: EventStreamSpec,
    pub webhook_key: Option<Secret>,
    /// One webhook call or NATS request.
    pub timeout: Duration,
    pub max_reply_bytes: usize,
    pub max_attempts: u32,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub partitions: u32,
    pub replicas: usize,
}

impl Settings {
    pub fn from_config(config: &Config) -> Result<Self, TriggersError> {
        let subjects = Subjects::new(config.events.prefix.as_str())?;
        let triggers = &config.section::<TriggersConfig>();
        Ok(Self {
            events: EventStreamSpec::new(&subjects, &config.events.stream),
            subjects,
            webhook_key: triggers.webhook_key.clone(),
            timeout: Duration::from_millis(triggers.timeout_ms.max(1)),
            max_reply_bytes: triggers.max_reply_bytes,
            max_attempts: triggers.max_attempts.max(1),
            retry_initial: Duration::from_millis(triggers.retry_initial_ms),
            retry_max: Duration::from_millis(triggers.retry_max_ms.max(triggers.retry_initial_ms)),
            partitions: triggers.partitions.max(1),
            replicas: triggers.replicas.max(1),
        })
    }

    /// How long a delivery may go without an ack or a progress signal
    /// before JetStream hands it to another process. A live process signals
    /// progress while it works, so this only bounds how long a dead
    /// process's delivery waits.
    pub fn delivery_ack_wait(&self) -> Duration {
        (self.timeout + Duration::from_secs(5)).max(Duration::from_secs(10))
    }
}

impl Default for Settings {
    fn default() -> Self {
        Self::from_config(&Config::default()).expect("the default prefix is valid")
    }
}

/// The partition of an object's deliveries: FNV-1a of
/// `<className>/<objectId>`, which stays the same across processes,
/// versions and platforms.
pub fn partition_of(class_name: &str, object_id: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let bytes = class_name.bytes().chain([b'/']).chain(object_id.bytes());
    for byte in bytes {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions.max(1))) as u32
}

/// The members of an event the router needs, read without the rest.
#[derive(Debug, Deserialize)]
pub(crate) struct EventHead {
    id: String,
    #[serde(rename = "type")]
    kind: EventKind,
    data: DataHead,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DataHead {
    class_name: String,
    object: ObjectHead,
    #[serde(default)]
    context: ContextHead,
}

#[derive(Debug, Default, Deserialize)]
struct ContextHead {
    #[serde(default)]
    purge: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ObjectHead {
    #[serde(default)]
    object_id: String,
}

impl EventHead {
    pub(crate) fn parse(bytes: &[u8]) -> Option<Self> {
        serde_json::from_slice(bytes).ok()
    }

    /// Whether the event's write runs after-hooks: a purge runs none, as
    /// in Parse Server.
    pub(crate) fn runs_triggers(&self) -> bool {
        !self.data.context.purge
    }

    pub(crate) fn partition(&self, partitions: u32) -> u32 {
        partition_of(
            &self.data.class_name,
            &self.data.object.object_id,
            partitions,
        )
    }
}

/// Text that can be a NATS header value: one line, at most 1,000 bytes.
pub(crate) fn header_text(text: &str) -> String {
    let mut out: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if out.len() > 1000 {
        let mut end = 1000;
        while !out.is_char_boundary(end) {
            end -= 1;
        }
        out.truncate(end);
    }
    out
}

/// Capped exponential backoff for reconnect and restart loops.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);

    pub(crate) fn new() -> Self {
        Self::capped(Duration::from_secs(5))
    }

    pub(crate) fn capped(max: Duration) -> Self {
        Self {
            next: Self::FIRST,
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Sleeps for the next delay; `false` when `shutdown` came first.
    pub(crate) async fn wait(&mut self, shutdown: &Shutdown) -> bool {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = shutdown.wait() => false,
        }
    }
}

/// One triggers process: the webhook proxy, the router and a deliverer per
/// partition.
pub struct TriggersService {
    settings: Arc<Settings>,
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    webhooks: WebhookClient,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for TriggersService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggersService").finish_non_exhaustive()
    }
}

impl TriggersService {
    /// `registry` must be kept in sync by its owner ([`HookRegistry::run`]);
    /// deliveries wait for its first load.
    pub fn new(
        config: &Config,
        client: async_nats::Client,
        registry: Arc<HookRegistry>,
    ) -> Result<Self, TriggersError> {
        let settings = Settings::from_config(config)?;
        let webhooks = WebhookClient::new(&settings)?;
        Ok(Self {
            settings: Arc::new(settings),
            client,
            registry,
            webhooks,
            metrics: Arc::default(),
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    /// Runs until `shutdown`, then finishes the calls in flight (each
    /// bounded by the timeout; a delivery waiting to retry is handed back
    /// to JetStream). Errors only on what retrying cannot fix, such as a
    /// stream of the same name set up differently.
    pub async fn run(self, readiness: Readiness, shutdown: Shutdown) -> Result<(), TriggersError> {
        readiness.register("triggers");
        let local = shutdown.child();
        let mut tasks = JoinSet::new();
        let proxy = WebhookProxy::new(
            self.client.clone(),
            Arc::clone(&self.registry),
            self.webhooks.clone(),
            Arc::clone(&self.settings),
            Arc::clone(&self.metrics),
        );
        tasks.spawn(proxy.run(readiness.clone(), local.clone()));
        let started = self.start_deliveries(&mut tasks, &local).await;
        match &started {
            Ok(true) => readiness.set("triggers", true),
            Ok(false) => {}
            Err(err) => {
                tracing::error!(%err, "the triggers service cannot start");
                local.trigger();
            }
        }
        while tasks.join_next().await.is_some() {}
        readiness.set("triggers", false);
        started.map(|_| ())
    }

    /// Waits for the hook registry, sets up the streams and spawns the
    /// router and the deliverers; `Ok(false)` when shut down first.
    async fn start_deliveries(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &Shutdown,
    ) -> Result<bool, TriggersError> {
        // Routing before the registry is loaded would take every event
        // for one without hooks.
        loop {
            tokio::select! {
                loaded = self.registry.wait_loaded(Duration::from_secs(1)) => if loaded { break },
                () = shutdown.wait() => return Ok(false),
            }
        }
        let jetstream = jetstream::new(self.client.clone());
        let mut router = EventRouter::new(
            jetstream.clone(),
            Arc::clone(&self.registry),
            Arc::clone(&self.settings),
            Arc::clone(&self.metrics),
        );
        let mut backoff = Backoff::new();
        // Ready only once the router's consumer exists: events written
        // after that are routed even if this process dies at once.
        let deliveries = loop {
            let ensured = async {
                streams::events_stream(&jetstream, &self.settings.events).await?;
                streams::ensure(&jetstream, dead_letters_stream(&self.settings)).await?;
                let deliveries =
                    streams::ensure(&jetstream, deliveries_stream(&self.settings)).await?;
                router.connect().await?;
                Ok::<_, TriggersError>(deliveries)
            };
            match ensured.await {
                Ok(stream) => break stream,
                Err(err @ TriggersError::StreamMismatch { .. }) => return Err(err),
                Err(err) => {
                    tracing::warn!(%err, "cannot set up the trigger streams; retrying");
                    if !backoff.wait(shutdown).await {
                        return Ok(false);
                    }
                }
            }
        };
        tasks.spawn(router.run(shutdown.clone()));
        let deliverer = Arc::new(Deliverer::new(
            jetstream,
            self.client.clone(),
            Arc::clone(&self.registry),
            self.webhooks.clone(),
            Arc::clone(&self.settings),
            Arc::clone(&self.metrics),
        ));
        for partition in delivery::partitions(&deliveries, self.settings.partitions).await {
            let worker = DeliveryWorker::new(Arc::clone(&deliverer), partition);
            tasks.spawn(worker.run(shutdown.clone()));
        }
        Ok(true)
    }
}

#[async_trait::async_trait]
impl Service for TriggersService {
    fn name(&self) -> &'static str {
        "triggers"
    }

    fn metrics(&self) -> MetricsSource {
        let metrics = TriggersService::metrics(self);
        Arc::new(move || metrics.render())
    }

    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError> {
        Ok(TriggersService::run(*self, readiness, shutdown).await?)
    }
}

/// Sets up the streams and the router's consumer, which a triggers process
/// otherwise does when it starts. The router's consumer starts with the
/// events published after it was created, so an API process calls this at
/// start: every event it writes afterwards has its after-hooks delivered,
/// even if no triggers process has run yet.
pub async fn prepare(config: &Config, client: async_nats::Client) -> Result<(), TriggersError> {
    let settings = Settings::from_config(config)?;
    let jetstream = jetstream::new(client);
    streams::events_stream(&jetstream, &settings.events).await?;
    streams::ensure(&jetstream, dead_letters_stream(&settings)).await?;
    streams::ensure(&jetstream, deliveries_stream(&settings)).await?;
    router::router_consumer(&jetstream, &settings).await?;
    Ok(())
}

/// Runs the triggers service until `shutdown`: see [`TriggersService`].
pub async fn run(
    config: &Config,
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    readiness: Readiness,
    shutdown: Shutdown,
) -> Result<(), TriggersError> {
    TriggersService::new(config, client, registry)?
        .run(readiness, shutdown)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_are_stable_and_spread() {
        // Fixed values: a change would reorder the deliveries waiting in a
        // running deployment.
        assert_eq!(partition_of("Item", "abc", 16), 5);
        assert_eq!(partition_of("GameScore", "xWMyZ4YEGZ", 16), 6);
        assert_eq!(partition_of("_User", "u1", 1024), 564);
        assert_eq!(partition_of("", "", 1), 0);
        let mut seen = [0u32; 16];
        for i in 0..1600 {
            seen[partition_of("Item", &format!("obj{i}"), 16) as usize] += 1;
        }
        assert!(seen.iter().all(|n| *n > 50), "{seen:?}");
    }

    #[test]
    fn deletes_of_a_purge_run_no_after_hooks() {
        let event = |context: &str| {
            format!(
                r#"{{"id": "e1", "type": "oxbase.object.deleted", "data": {{"className": "Item", "object": {{"objectId": "a"}}, "context": {context}}}}}"#
            )
        };
        let purged =
            EventHead::parse(event(r#"{"master": true, "purge": true}"#).as_bytes()).unwrap();
        assert!(!purged.runs_triggers());
        let deleted = EventHead::parse(event(r#"{"master": true}"#).as_bytes()).unwrap();
        assert!(deleted.runs_triggers());
    }

    #[test]
    fn header_text_is_one_bounded_line() {
        assert_eq!(header_text("a\r\nb"), "a  b");
        let long = "é".repeat(600);
        let cut = header_text(&long);
        assert!(cut.len() <= 1000 && cut.chars().all(|c| c == 'é'));
    }

    #[test]
    fn settings_follow_the_config() {
        let mut config = Config::default();
        config.events.prefix = "acme".into();
        config.update_section(|triggers: &mut TriggersConfig| {
            triggers.timeout_ms = 1000;
            triggers.retry_initial_ms = 50;
            triggers.retry_max_ms = 10;
        });
        let settings = Settings::from_config(&config).unwrap();
        assert_eq!(settings.events.name, "ACME_EVENTS");
        assert_eq!(settings.retry_max, Duration::from_millis(50));
        assert_eq!(settings.delivery_ack_wait(), Duration::from_secs(10));
        assert_eq!(deliveries_stream(&settings).name, "ACME_TRIGGERS");
        assert_eq!(dead_letters_stream(&settings).subjects, ["acme.dead.>"]);
    }
}
