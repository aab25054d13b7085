//! Deliverers: one worker per partition of the deliveries stream, each
//! delivering one after-hook at a time to its webhook or NATS handler.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, pull};
use async_nats::jetstream::{self, AckKind, kv};
use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_hooks::{CallLimits, HookRegistry};
use oxbase_kit::pull::Puller;
use oxbase_kit::{NatsError, Shutdown, trace_context};
use oxbase_proto::hooks::{ATTEMPTS, IDEMPOTENCY_KEY, LAST_ERROR, REQUEST_ID};
use oxbase_proto::{Caller, Event, HookEntry, HookReply, TriggerName, TriggerRequest};
use rand::Rng;
use serde_json::Value;
use tokio::sync::OnceCell;
use tracing::{Instrument, Span};

use crate::metrics::Metrics;
use crate::webhook::{WebhookClient, WebhookFailure};
use crate::{Backoff, Settings, TriggersError, header_text};

/// The durable consumer of one partition: `oxbase-triggers-<partition>`.
pub fn consumer_name(partition: u32) -> String {
    format!("oxbase-triggers-{partition}")
}

/// What became of one delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The handler accepted it after `attempts` tries.
    Delivered { attempts: u32 },
    /// Its hook was removed meanwhile: dropped.
    NoHook,
    /// Every attempt failed: moved to the dead letters.
    DeadLettered { attempts: u32, last_error: String },
    /// Not an object event: dropped.
    Malformed,
    /// Shutdown came while it waited to retry: handed back to JetStream.
    Interrupted,
    /// Shutdown came while waiting for a delivery.
    Stopped,
}

/// One attempt's result, short of a failure.
enum Attempt {
    Delivered,
    NoHook,
}

/// Why an attempt failed; its text is what the log, the dead letter's
/// `Oxbase-Last-Error` and [`Outcome::DeadLettered`] say.
#[derive(Debug, thiserror::Error)]
enum AttemptError {
    #[error("cannot read the hook registry: {0}")]
    Registry(#[source] NatsError),
    #[error(transparent)]
    Webhook(WebhookFailure),
    /// The error message the webhook answered.
    #[error("the webhook answered an error: {0}")]
    WebhookAnswered(String),
    #[error("the NATS handler failed: {0}")]
    Handler(#[source] oxbase_hooks::CallError),
    /// The error message the NATS handler answered.
    #[error("the handler answered an error: {0}")]
    HandlerAnswered(String),
}

/// Delivers after-hooks; shared by every partition's worker in a process.
pub struct Deliverer {
    jetstream: jetstream::Context,
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    webhooks: WebhookClient,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    registry_bucket: OnceCell<kv::Store>,
}

impl Deliverer {
    pub fn new(
        jetstream: jetstream::Context,
        client: async_nats::Client,
        registry: Arc<HookRegistry>,
        webhooks: WebhookClient,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            jetstream,
            client,
            registry,
            webhooks,
            settings,
            metrics,
            registry_bucket: OnceCell::new(),
        }
    }

    /// Delivers one message of the deliveries stream, retrying as
    /// configured, and acks it once it is delivered, dropped or
    /// dead-lettered.
    pub async fn deliver(&self, message: &jetstream::Message, shutdown: &Shutdown) -> Outcome {
        let Ok(event) = serde_json::from_slice::<Event>(&message.payload) else {
            tracing::warn!(subject = %message.subject, "dropping a delivery that is not an object event");
            let _ = message.ack_with(AckKind::Term).await;
            return Outcome::Malformed;
        };
        let span = delivery_span(message, &event);
        let outcome = self
            .deliver_event(message, event, shutdown)
            .instrument(span.clone())
            .await;
        match &outcome {
            Outcome::Delivered { attempts } | Outcome::DeadLettered { attempts, .. } => {
                span.record("oxbase.attempts", attempts);
            }
            _ => {}
        }
        if matches!(outcome, Outcome::DeadLettered { .. }) {
            span.record("otel.status_code", "ERROR");
        }
        outcome
    }

    async fn deliver_event(
        &self,
        message: &jetstream::Message,
        event: Event,
        shutdown: &Shutdown,
    ) -> Outcome {
        let trigger = TriggerName::after(event.kind);
        let class_name = event.data.class_name.clone();
        let event_id = event.id.clone();
        let request_id = event.data.context.request_id.clone();
        let body: Bytes = match serde_json::to_vec(&trigger_request(event, trigger)) {
            Ok(body) => body.into(),
            Err(_) => return Outcome::Malformed,
        };
        let call = Call {
            class_name: &class_name,
            trigger,
            event_id: &event_id,
            request_id: request_id.as_deref(),
            body,
        };
        let keep = self.progress_interval();
        let mut attempts = earlier_attempts(message, self.settings.max_attempts);
        let mut last_error = String::new();
        while attempts < self.settings.max_attempts {
            attempts += 1;
            match with_progress(message, keep, self.attempt(&call)).await {
                Ok(Attempt::Delivered) => {
                    ack(message).await;
                    Metrics::add(&self.metrics.delivered, 1);
                    return Outcome::Delivered { attempts };
                }
                Ok(Attempt::NoHook) => {
                    ack(message).await;
                    Metrics::add(&self.metrics.skipped, 1);
                    return Outcome::NoHook;
                }
                Err(error) => {
                    Metrics::add(&self.metrics.failed_attempts, 1);
                    tracing::info!(
                        event = %event_id, class = %class_name, %trigger, attempt = attempts, %error,
                        "after-hook delivery failed"
                    );
                    last_error = error.to_string();
                }
            }
            if attempts == self.settings.max_attempts {
                break;
            }
            let delay = retry_delay(&self.settings, attempts);
            let waited = tokio::select! {
                () = with_progress(message, keep, tokio::time::sleep(delay)) => true,
                () = shutdown.wait() => false,
            };
            if !waited {
                let _ = message.ack_with(AckKind::Nak(Some(delay))).await;
                return Outcome::Interrupted;
            }
        }
        self.dead_letter(message, &call, attempts, last_error, shutdown)
            .await
    }

    /// Sends the delivery to the dead letters, then acks it.
    async fn dead_letter(
        &self,
        message: &jetstream::Message,
        call: &Call<'_>,
        attempts: u32,
        last_error: String,
        shutdown: &Shutdown,
    ) -> Outcome {
        let sequence = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        let mut headers = HeaderMap::new();
        // Unique per delivery message, so a replayed event that fails again
        // is dead-lettered again, while a repeat of this very step is not.
        headers.insert(
            async_nats::header::NATS_MESSAGE_ID,
            format!("{}:dead:{sequence}", call.event_id).as_str(),
        );
        headers.insert(ATTEMPTS, attempts.to_string().as_str());
        headers.insert(LAST_ERROR, header_text(&last_error).as_str());
        trace_context::inject_current(&mut headers);
        let subject = self
            .settings
            .subjects
            .dead_letter(call.class_name, call.trigger);
        let mut backoff = Backoff::new();
        loop {
            let publish = async {
                self.jetstream
                    .publish_with_headers(subject.clone(), headers.clone(), message.payload.clone())
                    .await?
                    .await
                    .map(|_| ())
            };
            match with_progress(message, self.progress_interval(), publish).await {
                Ok(()) => break,
                Err(err) => {
                    tracing::warn!(%err, "cannot publish a dead letter; retrying");
                    let keep = self.progress_interval();
                    if !with_progress(message, keep, backoff.wait(shutdown)).await {
                        let _ = message.ack_with(AckKind::Nak(None)).await;
                        return Outcome::Interrupted;
                    }
                }
            }
        }
        ack(message).await;
        Metrics::add(&self.metrics.dead_letters, 1);
        tracing::warn!(
            event = %call.event_id, class = %call.class_name, trigger = %call.trigger, attempts,
            error = %last_error, "after-hook moved to the dead letters"
        );
        Outcome::DeadLettered {
            attempts,
            last_error,
        }
    }

    async fn attempt(&self, call: &Call<'_>) -> Result<Attempt, AttemptError> {
        let hook = match self.hook(call.class_name, call.trigger).await {
            Ok(Some(hook)) => hook,
            Ok(None) => return Ok(Attempt::NoHook),
            Err(err) => return Err(AttemptError::Registry(err)),
        };
        if let Some(url) = &hook.url {
            let mut headers = vec![(IDEMPOTENCY_KEY, call.event_id)];
            if let Some(id) = call.request_id {
                headers.push((REQUEST_ID, id));
            }
            let reply = self
                .webhooks
                .post(url, &headers, call.body.clone())
                .await
                .map_err(AttemptError::Webhook)?;
            match serde_json::from_slice::<HookReply>(&reply) {
                Ok(HookReply {
                    error: Some(error), ..
                }) => Err(AttemptError::WebhookAnswered(error.message())),
                _ => Ok(Attempt::Delivered),
            }
        } else if hook.nats {
            let mut headers = HeaderMap::new();
            headers.insert(IDEMPOTENCY_KEY, call.event_id);
            if let Some(id) = call.request_id {
                headers.insert(REQUEST_ID, id);
            }
            let subject = self
                .settings
                .subjects
                .trigger(call.trigger, call.class_name);
            let limits = CallLimits {
                timeout: self.settings.timeout,
                max_reply_bytes: self.settings.max_reply_bytes,
            };
            let reply =
                oxbase_hooks::call(&self.client, subject, headers, call.body.clone(), limits)
                    .await
                    .map_err(AttemptError::Handler)?;
            match reply.error {
                Some(error) => Err(AttemptError::HandlerAnswered(error.message())),
                None => Ok(Attempt::Delivered),
            }
        } else {
            Ok(Attempt::NoHook)
        }
    }

    /// The hook as it is now. The in-memory mirror answers for hooks it
    /// has; for one it lacks, the bucket itself does, since a mirror that
    /// lags behind a new registration must not drop its deliveries.
    async fn hook(
        &self,
        class_name: &str,
        trigger: TriggerName,
    ) -> Result<Option<HookEntry>, NatsError> {
        if let Some(hook) = self.registry.trigger(class_name, trigger) {
            return Ok(Some(hook));
        }
        let bucket = self
            .registry_bucket
            .get_or_try_init(|| async {
                let name = oxbase_hooks::bucket_name(&self.settings.subjects);
                self.jetstream.get_key_value(name).await
            })
            .await?;
        let key = HookEntry::trigger_key(class_name, trigger);
        let value = bucket.get(key).await?;
        Ok(value.and_then(|v| serde_json::from_slice(&v).ok()))
    }

    fn progress_interval(&self) -> Duration {
        self.settings.delivery_ack_wait() / 4
    }
}

/// The span of one delivery, every attempt included: a child of the
/// router's span, or (a dead letter replayed, say) of the write's.
fn delivery_span(message: &jetstream::Message, event: &Event) -> Span {
    trace_context::span(|| {
        let span = tracing::info_span!(
            "trigger.deliver",
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            oxbase.class = %event.data.class_name,
            oxbase.trigger = %TriggerName::after(event.kind),
            oxbase.attempts = tracing::field::Empty,
            messaging.message.id = %event.id,
        );
        if !trace_context::continue_from_headers(&span, message.headers.as_ref()) {
            trace_context::continue_from(&span, event.traceparent.as_deref(), None);
        }
        span
    })
}

/// Attempts made before this delivery of the message: each earlier
/// delivery (to a process that then died or stopped) made at least one.
/// One attempt is always left, so a redelivered message is tried at least
/// once more before it goes to the dead letters.
fn earlier_attempts(message: &jetstream::Message, max_attempts: u32) -> u32 {
    let delivered = message.info().map(|info| info.delivered).unwrap_or(1);
    u32::try_from(delivered.saturating_sub(1))
        .unwrap_or(0)
        .min(max_attempts.saturating_sub(1))
}

/// The wait before retry `attempt + 1`: doubling from `retry_initial` up
/// to `retry_max`, less a random part of up to half, so that deliveries
/// failing together do not retry together.
fn retry_delay(settings: &Settings, attempt: u32) -> Duration {
    let base = settings
        .retry_initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)))
        .min(settings.retry_max);
    let half = base.as_millis() as u64 / 2;
    let jitter = rand::rng().random_range(0..=half);
    base.saturating_sub(Duration::from_millis(jitter))
}

/// One delivery's request, built once for every attempt.
struct Call<'a> {
    class_name: &'a str,
    trigger: TriggerName,
    event_id: &'a str,
    request_id: Option<&'a str>,
    body: Bytes,
}

/// What the handler receives: Parse's webhook body for the trigger.
fn trigger_request(event: Event, trigger: TriggerName) -> TriggerRequest {
    let data = event.data;
    let class_name = data.class_name;
    let with_class = |mut object: oxbase_proto::Object| {
        object.insert("className".into(), Value::String(class_name.clone()));
        object
    };
    let context = data.context;
    let user = context.user_id.map(|id| {
        [
            ("__type", "Pointer"),
            ("className", "_User"),
            ("objectId", id.as_str()),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), Value::from(value)))
        .collect()
    });
    TriggerRequest {
        trigger_name: trigger,
        object: with_class(data.object),
        original: data.original.map(with_class),
        event_id: Some(event.id),
        caller: Caller {
            master: context.master,
            user,
            installation_id: context.installation_id,
            request_id: context.request_id,
            context: context.cloud_context,
            ..Caller::default()
        },
    }
}

async fn ack(message: &jetstream::Message) {
    if let Err(err) = message.ack().await {
        tracing::debug!(%err, "cannot ack a delivery");
    }
}

/// Runs `work`, telling JetStream every `every` that the message is still
/// being worked on, so it is not handed to another process meanwhile.
async fn with_progress<F: Future>(
    message: &jetstream::Message,
    every: Duration,
    work: F,
) -> F::Output {
    tokio::pin!(work);
    let start = tokio::time::Instant::now() + every;
    let mut ticks = tokio::time::interval_at(start, every);
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = ticks.tick() => {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
    }
}

/// The partitions to work: `0..partitions`, and any left over from a
/// larger `partitions` setting, so that what waits there is still
/// delivered.
pub(crate) async fn partitions(
    deliveries: &jetstream::stream::Stream,
    partitions: u32,
) -> Vec<u32> {
    let mut out: Vec<u32> = (0..partitions).collect();
    let mut names = deliveries.consumer_names();
    while let Some(Ok(name)) = names.next().await {
        if let Some(p) = name
            .strip_prefix("oxbase-triggers-")
            .and_then(|p| p.parse::<u32>().ok())
            && p >= partitions
        {
            out.push(p);
        }
    }
    out
}

/// How long one pull for a partition's next delivery stays open: the
/// longest a stopping worker waits for it to end.
const PULL_EXPIRES: Duration = Duration::from_secs(1);

/// Delivers one partition, one message at a time.
pub struct DeliveryWorker {
    deliverer: Arc<Deliverer>,
    partition: u32,
    messages: Option<Puller>,
}

impl DeliveryWorker {
    pub fn new(deliverer: Arc<Deliverer>, partition: u32) -> Self {
        Self {
            deliverer,
            partition,
            messages: None,
        }
    }

    /// Works until `shutdown`, starting over after any error.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Backoff::new();
        loop {
            match self.process_one(&shutdown).await {
                Ok(Outcome::Stopped | Outcome::Interrupted) => return,
                Ok(_) => backoff.reset(),
                Err(err) => {
                    tracing::warn!(%err, partition = self.partition, "a deliverer stopped; starting over");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    async fn open(&self) -> Result<Puller, TriggersError> {
        let settings = &self.deliverer.settings;
        let stream = self
            .deliverer
            .jetstream
            .get_stream(crate::deliveries_stream(settings).name)
            .await
            .map_err(NatsError::from)?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(consumer_name(self.partition)),
                description: Some("oxbase triggers: one partition's after-hooks, in order".into()),
                filter_subject: settings.subjects.delivery(self.partition),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.delivery_ack_wait(),
                // One delivery of this partition in flight across every
                // process: the order per object.
                max_ack_pending: 1,
                num_replicas: settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(NatsError::from)?;
        // One message per pull, so the processes take turns, and none is
        // held by a process that stops.
        Ok(Puller::new(consumer, PULL_EXPIRES))
    }

    /// The step: waits for this partition's next delivery and delivers it.
    /// Once `shutdown` fires it takes none: a delivery that arrives then
    /// goes back to JetStream at once, for another process.
    pub async fn process_one(&mut self, shutdown: &Shutdown) -> Result<Outcome, TriggersError> {
        if self.messages.is_none() {
            self.messages = Some(self.open().await?);
        }
        let messages = self.messages.as_mut().expect("opened above");
        match messages.next(1, shutdown).await {
            Some(message) => Ok(self.deliverer.deliver(&message, shutdown).await),
            None => Ok(Outcome::Stopped),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oxbase_proto::{EventKind, ObjectEvent, RequestContext};
    use serde_json::json;

    #[test]
    fn retries_back_off_exponentially_with_jitter_up_to_the_cap() {
        let settings = Settings {
            retry_initial: Duration::from_millis(100),
            retry_max: Duration::from_millis(1000),
            ..Settings::default()
        };
        for _ in 0..50 {
            let delays: Vec<u128> = (1..=6)
                .map(|attempt| retry_delay(&settings, attempt).as_millis())
                .collect();
            let bases = [100, 200, 400, 800, 1000, 1000];
            for (delay, base) in delays.iter().zip(bases) {
                assert!(*delay <= base && *delay >= base / 2, "{delays:?}");
            }
        }
        assert!(retry_delay(&settings, 40).as_millis() <= 1000);
    }

    #[test]
    fn the_request_is_parse_s_webhook_body_with_the_event_id() {
        let object = json!({"objectId": "o1", "n": 2})
            .as_object()
            .cloned()
            .unwrap();
        let original = json!({"objectId": "o1", "n": 1})
            .as_object()
            .cloned()
            .unwrap();
        let event = Event::new(
            "oxbase://app",
            EventKind::Updated,
            ObjectEvent {
                class_name: "Item".into(),
                object,
                original: Some(original),
                context: RequestContext {
                    user_id: Some("u1".into()),
                    installation_id: None,
                    master: false,
                    request_id: Some("r1".into()),
                    ..RequestContext::default()
                },
            },
        );
        let id = event.id.clone();
        let body = serde_json::to_value(trigger_request(event, TriggerName::AfterSave)).unwrap();
        assert_eq!(
            body,
            json!({
                "triggerName": "afterSave",
                "object": {"objectId": "o1", "n": 2, "className": "Item"},
                "original": {"objectId": "o1", "n": 1, "className": "Item"},
                "eventId": id,
                "master": false,
                "user": {"__type": "Pointer", "className": "_User", "objectId": "u1"},
                "requestId": "r1"
            })
        );
    }
}
