//! The push process: resolves requests into batches, and sends batches.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::PullConsumer;
use async_nats::jetstream::{self, consumer};
use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_kit::pull::Puller;
use oxbase_kit::{Config, MetricsSource, NatsError, Readiness, Service, ServiceError, Shutdown};
use oxbase_proto::push::{PushBatch, PushDevice, PushRequest};
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::apns::Notification;
use crate::fcm;
use crate::{Apns, Fcm, PushError, PushStore, Settings, ensure_stream};

/// Requests one process resolves at once.
const REQUESTS_IN_FLIGHT: usize = 2;
/// How long one pull stays open: the longest a stopping process waits for
/// it to end.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy)]
enum Work {
    Resolve,
    Send,
}

/// What became of one notification.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Delivery {
    Sent,
    /// The provider says the token is gone: it is removed.
    Dead,
    Failed(String),
}

/// What this process sent, for `/metrics`.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: AtomicU64,
    batches: AtomicU64,
    sent: AtomicU64,
    failed: AtomicU64,
    dead: AtomicU64,
}

impl Metrics {
    pub fn render(&self) -> String {
        oxbase_kit::health::counters(&[
            (
                "oxbase_push_requests_total",
                "Pushes resolved into batches.",
                &self.requests,
            ),
            ("oxbase_push_batches_total", "Batches sent.", &self.batches),
            (
                "oxbase_push_sent_total",
                "Notifications a provider accepted.",
                &self.sent,
            ),
            (
                "oxbase_push_failed_total",
                "Notifications not delivered.",
                &self.failed,
            ),
            (
                "oxbase_push_dead_tokens_total",
                "Tokens a provider said are gone, removed.",
                &self.dead,
            ),
        ])
    }
}

pub struct PushService {
    metrics: Arc<Metrics>,
    jetstream: jetstream::Context,
    settings: Arc<Settings>,
    store: Arc<dyn PushStore>,
    fcm: Option<Arc<Fcm>>,
    apns: Option<Arc<Apns>>,
    /// `concurrency` notifications in flight, across the batches.
    senders: Semaphore,
}

impl std::fmt::Debug for PushService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushService")
            .field("settings", &self.settings)
            .field("fcm", &self.fcm)
            .field("apns", &self.apns)
            .finish_non_exhaustive()
    }
}

impl PushService {
    /// Reads the providers' keys; nothing else happens until
    /// [`run`](Self::run).
    pub fn new(
        config: &Config,
        client: async_nats::Client,
        store: Arc<dyn PushStore>,
    ) -> Result<Self, PushError> {
        let push = config.section::<crate::PushConfig>();
        let fcm = Fcm::from_config(&push.fcm)?.map(Arc::new);
        let apns = Apns::from_config(&push.apns)?.map(Arc::new);
        let settings = Settings::from_config(config)?;
        Ok(Self {
            metrics: Arc::default(),
            senders: Semaphore::new(settings.concurrency),
            jetstream: jetstream::new(client),
            settings,
            store,
            fcm,
            apns,
        })
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub async fn run(self, readiness: Readiness, shutdown: Shutdown) -> Result<(), PushError> {
        readiness.register("push");
        let mut backoff = Duration::from_millis(100);
        // A cluster that is starting, or has a node restarting, may not
        // answer for a moment: tried again rather than given up.
        let (requests, batches) = loop {
            match self.consumers().await {
                Ok(consumers) => break consumers,
                Err(err) => tracing::warn!(%err, "cannot open the push stream yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        // Only what is worked on is pulled: a message waiting in this
        // process would be redelivered elsewhere once its ack wait ran out.
        let requests = Puller::new(requests, PULL_EXPIRES);
        let batches = Puller::new(batches, PULL_EXPIRES);
        readiness.set("push", true);
        tracing::info!("sending pushes");
        let batches_in_flight = self.settings.batches_in_flight;
        let this = Arc::new(self);
        tokio::join!(
            this.drain(requests, Work::Resolve, REQUESTS_IN_FLIGHT, &shutdown),
            this.drain(batches, Work::Send, batches_in_flight, &shutdown),
        );
        Ok(())
    }

    /// The stream's consumers of requests and of batches, created if
    /// missing.
    async fn consumers(&self) -> Result<(PullConsumer, PullConsumer), PushError> {
        let stream = ensure_stream(&self.jetstream, &self.settings).await?;
        let consumer = |name: &str, subject: String| consumer::pull::Config {
            durable_name: Some(name.into()),
            filter_subject: subject,
            ack_wait: self.settings.ack_wait,
            ..Default::default()
        };
        let requests = stream
            .get_or_create_consumer(
                "requests",
                consumer("requests", self.settings.subjects.push_requests()),
            )
            .await
            .map_err(NatsError::from)?;
        let batches = stream
            .get_or_create_consumer(
                "batches",
                consumer("batches", self.settings.subjects.push_batches()),
            )
            .await
            .map_err(NatsError::from)?;
        Ok((requests, batches))
    }

    /// Works on up to `limit` messages at once, each in its own task. Once
    /// `shutdown` fires it takes no more (what arrives then goes back at
    /// once, for another process), and waits for those it holds: a batch
    /// cut off mid-send would be sent again by another process.
    async fn drain(
        self: &Arc<Self>,
        mut messages: Puller,
        work: Work,
        limit: usize,
        shutdown: &Shutdown,
    ) {
        let slots = Arc::new(Semaphore::new(limit));
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            let slot = tokio::select! {
                biased;
                () = shutdown.wait() => break,
                slot = Arc::clone(&slots).acquire_owned() => slot,
            };
            let Ok(slot) = slot else { break };
            // A new pull asks for as many as there are free slots.
            let Some(message) = messages.next(1 + slots.available_permits(), shutdown).await else {
                break;
            };
            let this = Arc::clone(self);
            tasks.spawn(async move {
                this.handle(&message, work).await;
                drop(slot);
            });
            // Finished tasks are let go as the loop turns.
            while tasks.try_join_next().is_some() {}
        }
        messages.hand_back().await;
        while tasks.join_next().await.is_some() {}
    }

    /// Does `work` with a message's body and acknowledges it, or leaves it
    /// to be delivered again when the work fails for now. While it runs,
    /// the message is kept: a process that dies lets it go within the ack
    /// wait.
    async fn handle(&self, message: &jetstream::Message, work: Work) {
        let body = &message.payload;
        let done = async move {
            match work {
                Work::Resolve => self.resolve(body).await,
                Work::Send => self.send(body).await,
            }
        };
        tokio::pin!(done);
        let mut keepalive = tokio::time::interval(self.settings.ack_wait / 3);
        keepalive.tick().await;
        let done = loop {
            tokio::select! {
                done = &mut done => break done,
                _ = keepalive.tick() => {
                    if let Err(err) = message.ack_with(jetstream::AckKind::Progress).await {
                        tracing::debug!(%err, "cannot keep a push message");
                    }
                }
            }
        };
        match done {
            Ok(()) => {
                if let Err(err) = message.ack().await {
                    tracing::warn!(%err, "cannot acknowledge a push message");
                }
            }
            Err(err) => {
                tracing::warn!(%err, subject = %message.subject, "push message left for later");
                let _ = message
                    .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(1))))
                    .await;
            }
        }
    }

    /// Pages through a request's audience, one batch per page.
    async fn resolve(&self, body: &[u8]) -> Result<(), PushError> {
        let Ok(request) = serde_json::from_slice::<PushRequest>(body) else {
            tracing::warn!("dropping an unreadable push request");
            return Ok(());
        };
        let id = &request.status_id;
        let Some(status) = self.store.status(id).await? else {
            tracing::warn!(status = %id, "dropping a push whose _PushStatus was deleted");
            return Ok(());
        };
        if status.contains_key("count") {
            // Taken again after its batches were all published (its
            // process died, or lost its acknowledgement).
            return self.finish_if_done(id, &status).await;
        }
        self.update_status(id, one("status", json!("running")))
            .await?;
        let mut after: Option<String> = None;
        let mut page = 0;
        let mut total = 0;
        loop {
            let devices = self
                .store
                .audience(&request.query, after.as_deref(), self.settings.batch_size)
                .await?;
            let Some(last) = devices.last() else { break };
            after = Some(last.installation_id.clone());
            total += devices.len();
            let full = devices.len() == self.settings.batch_size;
            let batch = PushBatch {
                status_id: id.clone(),
                page,
                data: request.data.clone(),
                expires_at: request.expires_at,
                apns: request.apns.clone(),
                devices,
            };
            let publish = jetstream::message::PublishMessage::build()
                .payload(Bytes::from(serde_json::to_vec(&batch).map_err(
                    |source| PushError::Encode {
                        what: "a push batch",
                        source,
                    },
                )?))
                .message_id(format!("{id}.{page}"));
            self.jetstream
                .send_publish(self.settings.subjects.push_batches(), publish)
                .await
                .map_err(NatsError::from)?
                .await
                .map_err(NatsError::from)?;
            page += 1;
            if !full {
                break;
            }
        }
        let status = self.update_status(id, one("count", json!(total))).await?;
        self.metrics.requests.fetch_add(1, Ordering::Relaxed);
        self.finish_if_done(id, &status).await
    }

    /// Sends a batch and counts it on the push's `_PushStatus`, once: a
    /// batch delivered again after it was counted is only acknowledged.
    async fn send(&self, body: &[u8]) -> Result<(), PushError> {
        let Ok(batch) = serde_json::from_slice::<PushBatch>(body) else {
            tracing::warn!("dropping an unreadable push batch");
            return Ok(());
        };
        let Some(status) = self.store.status(&batch.status_id).await? else {
            tracing::warn!(status = %batch.status_id, "dropping a batch whose _PushStatus was deleted");
            return Ok(());
        };
        if counted(&status, batch.page) {
            return self.finish_if_done(&batch.status_id, &status).await;
        }
        let expired = batch
            .expires_at
            .is_some_and(|at| at < chrono::Utc::now().timestamp_millis());
        let increment = batch
            .data
            .get("badge")
            .and_then(Value::as_str)
            .is_some_and(|badge| badge.eq_ignore_ascii_case("increment"));
        // Each device is sent the badge it will have once the batch is
        // recorded; a batch sent again before that sends the same ones.
        let badges: HashMap<String, i64> = if increment && !expired {
            let ids: Vec<String> = batch
                .devices
                .iter()
                .map(|device| device.installation_id.clone())
                .collect();
            let mut badges = self.store.badges(&ids).await?;
            badges.values_mut().for_each(|badge| *badge += 1);
            badges
        } else {
            HashMap::new()
        };
        let messages = Messages {
            android: fcm::Message::new(android_message(&batch, None)),
            apple: Notification::new(&batch),
        };
        let deliveries = self.deliver_all(&batch, &badges, &messages, expired).await;

        let mut sent: BTreeMap<&str, i64> = BTreeMap::new();
        let mut failed: BTreeMap<&str, i64> = BTreeMap::new();
        let mut dead = Vec::new();
        for (device, delivery) in &deliveries {
            let kind = device.device_type.as_str();
            match delivery {
                Delivery::Sent => *sent.entry(kind).or_default() += 1,
                Delivery::Dead => {
                    *failed.entry(kind).or_default() += 1;
                    dead.push(device.installation_id.clone());
                }
                Delivery::Failed(error) => {
                    tracing::debug!(%error, installation = %device.installation_id, "push not delivered");
                    *failed.entry(kind).or_default() += 1;
                }
            }
        }
        if !dead.is_empty() {
            self.store.forget_tokens(&dead).await?;
        }
        let mut changes = Map::new();
        let increment = |amount: i64| json!({"__op": "Increment", "amount": amount});
        changes.insert("numSent".into(), increment(sent.values().sum()));
        changes.insert("numFailed".into(), increment(failed.values().sum()));
        for (kind, amount) in &sent {
            changes.insert(format!("sentPerType.{kind}"), increment(*amount));
        }
        for (kind, amount) in &failed {
            changes.insert(format!("failedPerType.{kind}"), increment(*amount));
        }
        let badged: Vec<String> = badges.into_keys().collect();
        let status = self
            .store
            .record_batch(&batch.status_id, batch.page, changes, &badged)
            .await?;
        let metrics = &self.metrics;
        metrics.batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .sent
            .fetch_add(sent.values().sum::<i64>() as u64, Ordering::Relaxed);
        metrics
            .failed
            .fetch_add(failed.values().sum::<i64>() as u64, Ordering::Relaxed);
        metrics.dead.fetch_add(dead.len() as u64, Ordering::Relaxed);
        self.finish_if_done(&batch.status_id, &status).await
    }

    /// Sends each device of `batch` its notification, `concurrency` at
    /// once; what became of each.
    async fn deliver_all<'a>(
        &self,
        batch: &'a PushBatch,
        badges: &HashMap<String, i64>,
        messages: &Messages,
        expired: bool,
    ) -> Vec<(&'a PushDevice, Delivery)> {
        // Made before they are polled: a closure making them inside the
        // stream would keep the task from being spawned (its future would
        // not be `Send` for every lifetime).
        let deliveries: Vec<_> = batch
            .devices
            .iter()
            .map(|device| {
                let badge = badges.get(&device.installation_id).copied();
                async move {
                    let delivery = if expired {
                        Delivery::Failed("the push expired before it was sent".into())
                    } else {
                        self.deliver(batch, messages, device, badge).await
                    };
                    (device, delivery)
                }
            })
            .collect();
        futures_util::stream::iter(deliveries)
            .buffer_unordered(self.settings.concurrency)
            .collect()
            .await
    }

    async fn deliver(
        &self,
        batch: &PushBatch,
        messages: &Messages,
        device: &PushDevice,
        badge: Option<i64>,
    ) -> Delivery {
        let Ok(_sending) = self.senders.acquire().await else {
            return Delivery::Failed("the push service is stopping".into());
        };
        match device.device_type.as_str() {
            "android" => match &self.fcm {
                Some(fcm) => match badge {
                    Some(badge) => {
                        let message = fcm::Message::new(android_message(batch, Some(badge)));
                        fcm.send(&device.device_token, &message).await
                    }
                    None => fcm.send(&device.device_token, &messages.android).await,
                },
                None => Delivery::Failed("FCM is not configured ([push.fcm])".into()),
            },
            "ios" | "osx" | "tvos" | "watchos" => match &self.apns {
                Some(apns) => apns.send(device, &messages.apple, badge).await,
                None => Delivery::Failed("APNs is not configured ([push.apns])".into()),
            },
            other => Delivery::Failed(format!("no push provider for deviceType {other:?}")),
        }
    }

    async fn update_status(
        &self,
        id: &str,
        changes: Map<String, Value>,
    ) -> Result<Map<String, Value>, PushError> {
        Ok(self.store.update_status(id, changes).await?)
    }

    /// Marks the push succeeded once every device it counted was tried.
    async fn finish_if_done(&self, id: &str, status: &Map<String, Value>) -> Result<(), PushError> {
        let number = |key: &str| status.get(key).and_then(Value::as_i64);
        let Some(count) = number("count") else {
            return Ok(());
        };
        let tried = number("numSent").unwrap_or(0) + number("numFailed").unwrap_or(0);
        if tried >= count && status.get("status").and_then(Value::as_str) != Some("succeeded") {
            // Every batch is counted: from now on `succeeded` tells a batch
            // delivered again that it was, and the list can go.
            let mut changes = one("status", json!("succeeded"));
            changes.insert(COUNTED.into(), json!({"__op": "Delete"}));
            self.update_status(id, changes).await?;
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Service for PushService {
    fn name(&self) -> &'static str {
        "push"
    }

    fn metrics(&self) -> MetricsSource {
        let metrics = PushService::metrics(self);
        Arc::new(move || metrics.render())
    }

    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError> {
        Ok(PushService::run(*self, readiness, shutdown).await?)
    }
}

/// The `_PushStatus` field listing the pages whose batch is counted, while
/// the push runs. A batch is counted in the same write as its page is
/// added, so one delivered again finds its page there and is not counted
/// twice.
pub(crate) const COUNTED: &str = "countedBatches";

/// Whether the batch of `page` is counted in `status`.
fn counted(status: &Map<String, Value>, page: u64) -> bool {
    status.get("status").and_then(Value::as_str) == Some("succeeded")
        || status
            .get(COUNTED)
            .and_then(Value::as_array)
            .is_some_and(|pages| pages.iter().any(|p| p.as_u64() == Some(page)))
}

/// A status update of one member.
fn one(key: &str, value: Value) -> Map<String, Value> {
    Map::from_iter([(key.to_owned(), value)])
}

/// A batch's message for each provider, made once.
struct Messages {
    android: fcm::Message,
    apple: Notification,
}

/// The FCM message of a batch, as the Parse Android SDK reads it: the push
/// data as a JSON string under `data`, with `push_id` and `time`.
fn android_message(batch: &PushBatch, badge: Option<i64>) -> Map<String, Value> {
    let mut data = batch.data.clone();
    if let Some(badge) = badge {
        data.insert("badge".into(), json!(badge));
    }
    let mut android = json!({"priority": "high"});
    if let Some(at) = batch.expires_at {
        let left = (at - chrono::Utc::now().timestamp_millis()).max(0) / 1000;
        android["ttl"] = json!(format!("{left}s"));
    }
    let mut message = Map::new();
    message.insert(
        "data".into(),
        json!({
            "data": Value::Object(data).to_string(),
            "push_id": batch.status_id,
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        }),
    );
    message.insert("android".into(), android);
    message
}
