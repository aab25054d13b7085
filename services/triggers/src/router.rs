//! The router: events with an after-hook go to the deliveries stream, in
//! the events stream's order.
//!
//! JetStream hands a consumer's messages out in order, but not its
//! redeliveries: when a router dies holding events it had not acked,
//! whoever routes next can be handed newer events before those come back.
//! So the router routes strictly by stream sequence: it holds what arrives
//! ahead of a gap until the gap is filled (by a redelivery) or is shown to
//! hold nothing pending (already routed, or removed from the stream).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy, PriorityPolicy, pull};
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use futures_util::stream::ReadyChunks;
use oxbase_hooks::HookRegistry;
use oxbase_kit::{NatsError, Shutdown, trace_context};
use oxbase_proto::TriggerName;
use tokio::time::Instant;
use tracing::Span;

use crate::metrics::Metrics;
use crate::{Backoff, EventHead, Settings, TriggersError};

/// The router's durable consumer on the events stream.
pub const ROUTER_CONSUMER: &str = "oxbase-triggers-router";
/// The priority group the routers share; JetStream pins it to one client,
/// so one router works at a time and the others stand by.
const PIN_GROUP: &str = "router";
/// Most events routed in one round.
const BATCH: usize = 256;
/// Events handed to a router that neither acks them nor signals progress
/// within this long are handed out again.
const ACK_WAIT: Duration = Duration::from_secs(5);
/// How long the pin stays with a router that stopped pulling.
const PIN_TIMEOUT: Duration = Duration::from_secs(10);
/// While events wait behind a gap: how often the consumer's state is
/// checked, and how often the waiting events are kept from redelivery.
const GAP_CHECK: Duration = Duration::from_millis(250);
const KEEP_ALIVE: Duration = Duration::from_millis(1500);

/// What one round of routing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Events routed in order: `routed` had an after-hook, `skipped` had
    /// none; `waiting` arrived ahead of an event still missing.
    Batch {
        routed: usize,
        skipped: usize,
        waiting: usize,
    },
    /// Shutdown came first.
    Stopped,
}

/// The consumer being read, and the events read ahead of a gap.
struct Reading {
    consumer: jetstream::consumer::Consumer<pull::Config>,
    messages: ReadyChunks<pull::Stream>,
    /// The stream sequence of the next event to route.
    next: u64,
    ahead: BTreeMap<u64, jetstream::Message>,
    last_gap_check: Option<Instant>,
    last_keep_alive: Instant,
    /// Whether JetStream has handed this router anything, which it only
    /// does to the router it pinned.
    pinned: bool,
}

pub struct EventRouter {
    jetstream: jetstream::Context,
    registry: Arc<HookRegistry>,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
    reading: Option<Reading>,
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
            reading: None,
        }
    }

    /// Routes until `shutdown`, starting over after any error.
    pub async fn run(mut self, shutdown: Shutdown) {
        let mut backoff = Backoff::new();
        loop {
            match self.process_one(&shutdown).await {
                Ok(Routed::Stopped) => {
                    self.release().await;
                    return;
                }
                Ok(Routed::Batch { .. }) => backoff.reset(),
                Err(err) => {
                    tracing::warn!(%err, "the event router stopped; starting over");
                    if !backoff.wait(&shutdown).await {
                        return;
                    }
                }
            }
        }
    }

    /// Stops pulling and hands the work over at once: what was read ahead
    /// goes back for redelivery, and the pin is released, so a standby
    /// router need not wait out the pin timeout.
    async fn release(&mut self) {
        let Some(reading) = self.reading.take() else {
            return;
        };
        let Reading {
            consumer,
            messages,
            ahead,
            pinned,
            ..
        } = reading;
        drop(messages);
        for message in ahead.values() {
            let _ = message.ack_with(AckKind::Nak(None)).await;
        }
        if pinned {
            let stream = consumer.cached_info().stream_name.clone();
            let unpinned = async {
                self.jetstream
                    .get_stream(stream)
                    .await
                    .map_err(NatsError::from)?
                    .unpin_consumer(ROUTER_CONSUMER, PIN_GROUP)
                    .await
                    .map_err(NatsError::from)
            };
            if let Err(err) = unpinned.await {
                tracing::debug!(%err, "cannot release the router's pin");
            }
        }
    }

    /// Creates the router's consumer (if no router has yet) and starts
    /// pulling. Events published from then on are routed; the step
    /// connects when this was not called.
    pub async fn connect(&mut self) -> Result<(), TriggersError> {
        if self.reading.is_none() {
            self.reading = Some(self.open().await?);
        }
        Ok(())
    }

    async fn open(&self) -> Result<Reading, TriggersError> {
        let consumer = router_consumer(&self.jetstream, &self.settings).await?;
        let next = consumer.cached_info().ack_floor.stream_sequence + 1;
        let messages = consumer
            .stream()
            .group(PIN_GROUP)
            .max_messages_per_batch(BATCH)
            .expires(Duration::from_secs(3))
            .heartbeat(Duration::from_secs(1))
            .messages()
            .await
            .map_err(NatsError::from)?;
        Ok(Reading {
            consumer,
            messages: messages.ready_chunks(BATCH),
            next,
            ahead: BTreeMap::new(),
            last_gap_check: None,
            last_keep_alive: Instant::now(),
            pinned: false,
        })
    }

    /// The step: reads the events that are ready (waiting for at least
    /// one), and routes those that are next in the stream; the deliveries
    /// stream has every one before any is acked.
    pub async fn process_one(&mut self, shutdown: &Shutdown) -> Result<Routed, TriggersError> {
        self.connect().await?;
        let reading = self.reading.as_mut().expect("connected above");
        let waiting = !reading.ahead.is_empty();
        let chunk = tokio::select! {
            chunk = reading.messages.next() => Some(chunk),
            () = tokio::time::sleep(GAP_CHECK), if waiting => None,
            () = shutdown.wait() => return Ok(Routed::Stopped),
        };
        let mut failure = None;
        match chunk {
            Some(Some(chunk)) => {
                for message in chunk {
                    match message {
                        Ok(message) => reading.take(message).await,
                        Err(err) => {
                            failure = Some(NatsError::from(err));
                            break;
                        }
                    }
                }
            }
            Some(None) => failure = Some(NatsError::new("the event consumer ended")),
            None => {}
        }
        if reading.gap() {
            reading.check_gap().await?;
        }
        let ready = reading.in_order();
        if !reading.ahead.is_empty() && reading.last_keep_alive.elapsed() >= KEEP_ALIVE {
            reading.last_keep_alive = Instant::now();
            for message in reading.ahead.values() {
                let _ = message.ack_with(AckKind::Progress).await;
            }
        }
        let waiting = reading.ahead.len();
        let routed = self.route(&ready, shutdown).await;
        if let Some(failure) = failure {
            // What was read ahead comes back once its ack wait is over.
            self.reading = None;
            return Err(failure.into());
        }
        routed.map(|routed| match routed {
            Routed::Batch {
                routed, skipped, ..
            } => Routed::Batch {
                routed,
                skipped,
                waiting,
            },
            Routed::Stopped => Routed::Stopped,
        })
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
            if head.runs_triggers()
                && self
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
                // Not acked: redelivered to whichever router works next.
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
            waiting: 0,
        })
    }

    /// Publishes in order with pipelined acks. A repeat of an event already
    /// there is dropped by its `Nats-Msg-Id`.
    async fn publish(
        &self,
        routes: &[(String, String, &jetstream::Message)],
    ) -> Result<(), TriggersError> {
        let mut acks = Vec::with_capacity(routes.len());
        for (subject, id, event) in routes {
            let span = route_span(event, subject);
            let mut publish = PublishMessage::build()
                .payload(event.payload.clone())
                .message_id(id);
            for (name, value) in trace_context::headers_of(&span) {
                publish = publish.header(name, value);
            }
            let ack = self
                .jetstream
                .send_publish(subject.clone(), publish)
                .await
                .map_err(NatsError::from)?;
            acks.push((ack, span));
        }
        for (ack, _span) in acks {
            ack.await.map_err(NatsError::from)?;
        }
        Ok(())
    }
}

/// The span of one event's routing to its deliveries partition, up to the
/// stream's ack: a child of the relay's publish. Its context goes on with
/// the delivery message.
fn route_span(event: &jetstream::Message, delivery: &str) -> Span {
    trace_context::span(|| {
        let span = tracing::info_span!(
            "trigger.route",
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.source.name = %event.subject,
            messaging.destination.name = %delivery,
        );
        trace_context::continue_from_headers(&span, event.headers.as_ref());
        span
    })
}

impl Reading {
    /// Keeps an event for routing in order; one already routed (handed out
    /// again after its ack was lost) is only acked.
    async fn take(&mut self, message: jetstream::Message) {
        let Ok(sequence) = message.info().map(|i| i.stream_sequence) else {
            return;
        };
        self.pinned = true;
        if sequence < self.next {
            let _ = message.ack().await;
        } else {
            self.ahead.insert(sequence, message);
        }
    }

    /// Whether the first event held is not the next one.
    fn gap(&self) -> bool {
        self.ahead
            .first_key_value()
            .is_some_and(|(sequence, _)| *sequence != self.next)
    }

    /// Asks the consumer what the gap holds. Everything up to its ack floor
    /// is routed. If nothing is pending but what this router holds, the
    /// rest of the gap was routed (acked out of order) or removed from the
    /// stream; otherwise an event in it is out with a router that died (or
    /// still on its way here) and will be handed out again.
    async fn check_gap(&mut self) -> Result<(), TriggersError> {
        if self
            .last_gap_check
            .is_some_and(|at| at.elapsed() < GAP_CHECK)
        {
            return Ok(());
        }
        self.last_gap_check = Some(Instant::now());
        let info = self.consumer.get_info().await.map_err(NatsError::from)?;
        self.next = self.next.max(info.ack_floor.stream_sequence + 1);
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() >= self.next {
                break;
            }
            let _ = entry.remove().ack().await;
        }
        if self.gap() && info.num_ack_pending <= self.ahead.len() {
            self.next = *self.ahead.keys().next().expect("a gap has a first event");
        }
        Ok(())
    }

    /// Takes the events that follow on from what was routed, without gaps.
    fn in_order(&mut self) -> Vec<jetstream::Message> {
        let mut ready = Vec::new();
        while let Some(entry) = self.ahead.first_entry() {
            if *entry.key() != self.next {
                break;
            }
            self.next += 1;
            ready.push(entry.remove());
        }
        if !ready.is_empty() {
            // A new gap may be checked at once.
            self.last_gap_check = None;
        }
        ready
    }
}

/// Creates the router's consumer on the events stream, or brings it to
/// this version's settings.
pub(crate) async fn router_consumer(
    jetstream: &jetstream::Context,
    settings: &Settings,
) -> Result<jetstream::consumer::Consumer<pull::Config>, TriggersError> {
    let stream = jetstream
        .get_stream(&settings.events.name)
        .await
        .map_err(NatsError::from)?;
    stream
        .create_consumer(pull::Config {
            durable_name: Some(ROUTER_CONSUMER.into()),
            description: Some("oxbase triggers: events with after-hooks to deliveries".into()),
            // Events from before the consumer existed were written when no
            // after-hook was meant to run for them.
            deliver_policy: DeliverPolicy::New,
            ack_policy: AckPolicy::Explicit,
            ack_wait: ACK_WAIT,
            max_ack_pending: (BATCH * 4) as i64,
            priority_policy: PriorityPolicy::PinnedClient,
            priority_groups: vec![PIN_GROUP.into()],
            priority_timeout: PIN_TIMEOUT,
            num_replicas: settings.replicas,
            ..Default::default()
        })
        .await
        .map_err(|err| NatsError::from(err).into())
}
