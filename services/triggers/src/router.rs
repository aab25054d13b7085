//! The router: events with an after-hook go to the deliveries stream, in
//! the events stream's order.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PriorityPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use futures_util::stream::ReadyChunks;
use oxbase_hooks::HookRegistry;
use oxbase_kit::Shutdown;
use oxbase_proto::TriggerName;

use crate::metrics::Metrics;
use crate::{Backoff, EventHead, Settings, TriggersError};

/// The router's durable consumer on the events stream.
pub const ROUTER_CONSUMER: &str = "oxbase-triggers-router";
/// The priority group the routers share; JetStream pins it to one client.
const PIN_GROUP: &str = "router";
/// Most events routed in one round.
const BATCH: usize = 256;
/// Events handed to a router that neither acks them nor signals progress
/// within this long are handed out again.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long the pin stays with a router that stopped pulling. Longer than
/// [`ACK_WAIT`], so that by the time another router takes over, every event
/// the old one held is waiting for redelivery, and JetStream redelivers
/// before it delivers anything newer: the order per object holds across a
/// takeover.
const PIN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one round of routing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Events read: `routed` had an after-hook, `skipped` had none.
    Batch { routed: usize, skipped: usize },
    /// Shutdown came before any event.
    Stopped,
}

pub struct EventRouter {
    jetstream: jetstream::Context,
    registry: Arc<HookRegistry>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    messages: Option<ReadyChunks<pull::Stream>>,
}

impl EventRouter {
    pub fn new(
        jetstream: jetstream::Context,
        registry: Arc<HookRegistry>,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            jetstream,
            registry,
            settings,
            metrics,
            messages: None,
        }
    }

    /// Routes until `shutdown`, starting over after any error.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Backoff::new();
        loop {
            match self.process_one(&shutdown).await {
                Ok(Routed::Stopped) => return,
                Ok(Routed::Batch { .. }) => backoff.reset(),
                Err(err) => {
                    tracing::warn!(%err, "the event router stopped; starting over");
                    // Events this router was handed but never saw (on the
                    // wire, in the client's buffer) are only redelivered
                    // after their ack wait. Pulling again sooner would get
                    // newer events ahead of them.
                    let pause = tokio::select! {
                        () = tokio::time::sleep(ACK_WAIT + Duration::from_secs(1)) => true,
                        () = shutdown.wait() => false,
                    };
                    if !pause || !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Creates the router's consumer (if no router has yet) and starts
    /// pulling. Events published from then on are routed; the step opens
    /// it when this was not called.
    pub async fn connect(&mut self) -> Result<(), TriggersError> {
        if self.messages.is_none() {
            self.messages = Some(self.open().await?);
        }
        Ok(())
    }

    async fn open(&self) -> Result<ReadyChunks<pull::Stream>, TriggersError> {
        let nats = |e: &dyn std::fmt::Display| TriggersError::Nats(e.to_string());
        let stream = self
            .jetstream
            .get_stream(&self.settings.events.name)
            .await
            .map_err(|e| nats(&e))?;
        let consumer = stream
            .create_consumer(pull::Config {
                durable_name: Some(ROUTER_CONSUMER.into()),
                description: Some("oxbase triggers: events with after-hooks to deliveries".into()),
                // Events from before the first triggers process are not
                // after-hooks of anything anyone registered.
                deliver_policy: DeliverPolicy::New,
                ack_policy: AckPolicy::Explicit,
                ack_wait: ACK_WAIT,
                max_ack_pending: (BATCH * 4) as i64,
                priority_policy: PriorityPolicy::PinnedClient,
                priority_groups: vec![PIN_GROUP.into()],
                priority_timeout: PIN_TIMEOUT,
                num_replicas: self.settings.replicas,
                ..Default::default()
            })
            .await
            .map_err(|e| nats(&e))?;
        let messages = consumer
            .stream()
            .group(PIN_GROUP)
            .max_messages_per_batch(BATCH)
            .expires(Duration::from_secs(3))
            .heartbeat(Duration::from_secs(1))
            .messages()
            .await
            .map_err(|e| nats(&e))?;
        Ok(messages.ready_chunks(BATCH))
    }

    /// The step: routes the events that are ready (at least one, waiting
    /// for it), and acks them once the deliveries stream has them all.
    pub async fn process_one(&mut self, shutdown: &Shutdown) -> Result<Routed, TriggersError> {
        self.connect().await?;
        let messages = self.messages.as_mut().expect("connected above");
        let batch = tokio::select! {
            batch = messages.next() => batch,
            () = shutdown.wait() => return Ok(Routed::Stopped),
        };
        let Some(batch) = batch else {
            self.messages = None;
            return Err(TriggersError::Nats("the event consumer ended".into()));
        };
        let mut events = Vec::with_capacity(batch.len());
        let mut failure = None;
        for message in batch {
            match message {
                Ok(message) => events.push(message),
                Err(err) => {
                    failure = Some(err);
                    break;
                }
            }
        }
        let routed = self.route(&events, shutdown).await;
        if let Some(err) = failure {
            self.messages = None;
            return Err(TriggersError::Nats(err.to_string()));
        }
        routed
    }

    /// Publishes the events with hooks, retrying until the deliveries
    /// stream has every one, then acks them all.
    async fn route(
        &self,
        events: &[jetstream::Message],
        shutdown: &Shutdown,
    ) -> Result<Routed, TriggersError> {
        let mut routes = Vec::new();
        let mut skipped = 0;
        for event in events {
            let Some(head) = EventHead::parse(&event.payload) else {
                tracing::warn!(subject = %event.subject, "skipping a message that is not an object event");
                skipped += 1;
                continue;
            };
            let trigger = TriggerName::after(head.kind);
            if self
                .registry
                .trigger(&head.data.class_name, trigger)
                .is_some()
            {
                let subject = self
                    .settings
                    .subjects
                    .delivery(head.partition(self.settings.partitions));
                routes.push((subject, head.id, event));
            } else {
                skipped += 1;
            }
        }
        let mut backoff = Backoff::capped(Duration::from_secs(2));
        while let Err(err) = self.publish(&routes).await {
            tracing::warn!(%err, "cannot queue after-hook deliveries; retrying");
            for event in events {
                let _ = event.ack_with(AckKind::Progress).await;
            }
            if !backoff.wait(shutdown).await {
                // Not acked: redelivered to whichever router holds the pin.
                return Ok(Routed::Stopped);
            }
        }
        for event in events {
            if let Err(err) = event.ack().await {
                tracing::debug!(%err, "cannot ack an event");
            }
        }
        Metrics::add(&self.metrics.routed, routes.len() as u64);
        Ok(Routed::Batch {
            routed: routes.len(),
            skipped,
        })
    }

    /// Publishes in order with pipelined acks. A repeat of an event already
    /// there is dropped by its `Nats-Msg-Id`.
    async fn publish(
        &self,
        routes: &[(String, String, &jetstream::Message)],
    ) -> Result<(), TriggersError> {
        let nats = |e: &dyn std::fmt::Display| TriggersError::Nats(e.to_string());
        let mut acks = Vec::with_capacity(routes.len());
        for (subject, id, event) in routes {
            let publish = PublishMessage::build()
                .payload(event.payload.clone())
                .message_id(id);
            let ack = self
                .jetstream
                .send_publish(subject.clone(), publish)
                .await
                .map_err(|e| nats(&e))?;
            acks.push(ack);
        }
        for ack in acks {
            ack.await.map_err(|e| nats(&e))?;
        }
        Ok(())
    }
}
