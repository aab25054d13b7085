//! The outbox relay: publishes the events writes left in the outbox to
//! JetStream, and marks them sent only once the stream acknowledged them.
//! Every API process runs one; the store's lease lets one at a time work,
//! so events leave in commit order, and a dead process's lease lapses so
//! another relay takes over. Each event's id is its `Nats-Msg-Id`, so one
//! published twice (a relay dying between the ack and the mark) is dropped
//! by the stream's duplicate window.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, message::PublishMessage, stream};
use oxbase_kit::{Readiness, Shutdown, trace_context};
use oxbase_proto::{EventStreamSpec, Storage};
use oxbase_store::{OutboxEntry, Store, StoreError};
use tokio::sync::Notify;
use tracing::Span;

#[derive(Debug, Clone)]
pub struct RelaySettings {
    /// Events claimed and published per round.
    pub batch: usize,
    /// How long a claim on the outbox lasts without renewal.
    pub lease: Duration,
    /// How often an idle relay looks for events written by other
    /// processes (its own writes wake it at once).
    pub poll: Duration,
    /// How long sent events stay in the outbox before they are pruned.
    pub keep_sent: Duration,
    /// How long a relay woken by a write waits for more before it claims:
    /// under load this gathers many events into one round (one claim, one
    /// mark) at the price of a few milliseconds of latency.
    pub linger: Duration,
}

impl Default for RelaySettings {
    fn default() -> Self {
        Self {
            batch: 256,
            lease: oxbase_store::outbox::DEFAULT_LEASE,
            poll: Duration::from_millis(20),
            keep_sent: Duration::from_secs(3600),
            linger: Duration::from_millis(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    #[error("outbox: {0}")]
    Store(#[from] StoreError),
    #[error("cannot publish to JetStream: {0}")]
    Publish(String),
    #[error("the events stream {name} is configured differently and cannot be updated: {reason}")]
    StreamMismatch { name: String, reason: String },
    #[error("cannot set up the events stream {name}: {reason}")]
    Stream { name: String, reason: String },
}

/// The wake-up and the gauges the API shares with its relay.
#[derive(Debug, Default)]
pub struct RelaySignals {
    pub wake: Notify,
    pub backlog: AtomicU64,
    /// Events moved aside because the stream could never take them.
    pub dead_letters: AtomicU64,
}

pub struct OutboxRelay {
    store: Arc<dyn Store>,
    jetstream: jetstream::Context,
    stream: EventStreamSpec,
    settings: RelaySettings,
    /// This relay's name in the lease: unique per process.
    id: String,
    signals: Arc<RelaySignals>,
    /// The id of the event the stream is known to hold last, so each
    /// publish can require its predecessor to be there
    /// (`Nats-Expected-Last-Msg-Id`); `None` until read from the stream.
    last_event: Option<String>,
}

enum Round {
    /// A full batch went out; there may be more.
    More,
    /// Nothing (more) to send, or another relay holds the lease.
    Idle,
}

impl OutboxRelay {
    pub fn new(
        store: Arc<dyn Store>,
        jetstream: jetstream::Context,
        stream: EventStreamSpec,
        settings: RelaySettings,
        signals: Arc<RelaySignals>,
    ) -> Self {
        let id = format!(
            "{}-{}-{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "oxbase".into()),
            std::process::id(),
            rand::random::<u32>()
        );
        Self {
            store,
            jetstream,
            stream,
            settings,
            id,
            signals,
            last_event: None,
        }
    }

    /// Runs until shutdown, then hands over (see [`hand_over`]). Failures
    /// (NATS down, the database briefly unreachable) are retried with
    /// backoff; events wait in the outbox. `readiness` says "nats" once the
    /// stream is set up and publishing works.
    ///
    /// [`hand_over`]: Self::hand_over
    pub async fn run(mut self, readiness: Readiness, shutdown: Shutdown) {
        readiness.register("nats");
        let mut stream_ready = false;
        let mut backoff = self.settings.poll;
        let mut last_gauge = Instant::now() - Duration::from_secs(60);
        let mut last_prune = Instant::now();
        loop {
            if !stream_ready {
                match ensure_stream(&self.jetstream, &self.stream).await {
                    Ok(()) => stream_ready = true,
                    Err(err @ RelayError::StreamMismatch { .. }) => {
                        tracing::error!(%err, "events stay in the outbox until the stream is fixed");
                    }
                    Err(err) => tracing::warn!(%err, "events stream not ready"),
                }
            }
            let round = if stream_ready {
                self.round().await
            } else {
                Ok(Round::Idle)
            };
            let pause = match round {
                Ok(Round::More) => Duration::ZERO,
                Ok(Round::Idle) => {
                    backoff = self.settings.poll;
                    self.settings.poll
                }
                Err(err) => {
                    tracing::warn!(%err, "outbox relay round failed; retrying");
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                    backoff
                }
            };
            readiness.set("nats", stream_ready && self.jetstream_connected());
            if last_gauge.elapsed() >= Duration::from_secs(1) {
                last_gauge = Instant::now();
                self.read_gauges(&readiness).await;
            }
            if last_prune.elapsed() >= Duration::from_secs(60) {
                last_prune = Instant::now();
                if let Err(err) = self.store.outbox_prune(self.settings.keep_sent).await {
                    tracing::warn!(%err, "cannot prune the outbox");
                }
            }
            if shutdown.is_triggered() {
                break;
            }
            if pause.is_zero() {
                continue;
            }
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = self.signals.wake.notified() => {
                    tokio::time::sleep(self.settings.linger).await;
                }
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if stream_ready {
            self.hand_over().await;
        }
    }

    /// What a stopping relay does last: publishes what is pending, for up
    /// to half a lease, then gives up its lease so that another process's
    /// relay claims at once rather than once the lease runs out. The
    /// process stops writing before this, so what is pending then is all
    /// there is.
    async fn hand_over(&mut self) {
        let deadline = Instant::now() + self.settings.lease / 2;
        while Instant::now() < deadline {
            match self.round().await {
                Ok(Round::More) => {}
                Ok(Round::Idle) => break,
                Err(err) => {
                    tracing::warn!(%err, "events left in the outbox for another relay");
                    break;
                }
            }
        }
        if let Err(err) = self.store.outbox_release(&self.id).await {
            tracing::warn!(%err, "cannot release the outbox lease; it lapses instead");
        }
    }

    async fn read_gauges(&self, readiness: &Readiness) {
        if let Ok(n) = self.store.outbox_backlog().await {
            self.signals.backlog.store(n, Ordering::Relaxed);
        }
        if let Ok(n) = self.store.outbox_dead_letters().await {
            self.signals.dead_letters.store(n, Ordering::Relaxed);
            readiness.warn(
                "outbox",
                (n > 0).then(|| {
                    format!(
                        "{n} events could not be published and were moved to _oxbase_outbox_dead"
                    )
                }),
            );
        }
    }

    /// The id of the stream's last event, if it has one.
    async fn stream_last_event(&self) -> Result<Option<String>, RelayError> {
        let failed = |err: &dyn std::fmt::Display| RelayError::Publish(err.to_string());
        let mut stream = self
            .jetstream
            .get_stream(&self.stream.name)
            .await
            .map_err(|e| failed(&e))?;
        let last = stream
            .info()
            .await
            .map_err(|e| failed(&e))?
            .state
            .last_sequence;
        if last == 0 {
            return Ok(None);
        }
        // Without it (deleted by the stream's limits, say), publishing
        // goes on with no expectation rather than stalling.
        let Ok(message) = stream.get_raw_message(last).await else {
            return Ok(None);
        };
        Ok(message
            .headers
            .get(async_nats::header::NATS_MESSAGE_ID)
            .map(|id| id.as_str().to_owned()))
    }

    fn jetstream_connected(&self) -> bool {
        self.jetstream.client().connection_state() == async_nats::connection::State::Connected
    }

    /// Claims a batch, publishes it in order with pipelined acks, and marks
    /// what the stream acknowledged.
    ///
    /// Pipelining alone could reorder events when a stream leader dies
    /// mid-batch: the old leader loses some publishes while the new one
    /// stores the ones after them, and the lost ones, sent again, land
    /// last. So each publish names its predecessor as the stream's
    /// expected last message: one whose predecessor is missing is refused,
    /// and the next round sends again from the first event not
    /// acknowledged. A repeat of an event the stream has is answered as a
    /// duplicate before that check, so a round may start again anywhere.
    async fn round(&mut self) -> Result<Round, RelayError> {
        let Some(entries) = self
            .store
            .outbox_claim(&self.id, self.settings.lease, self.settings.batch)
            .await?
        else {
            return Ok(Round::Idle);
        };
        if entries.is_empty() {
            return Ok(Round::Idle);
        }
        if self.last_event.is_none() {
            self.last_event = self.stream_last_event().await?;
        }
        let mut acks = Vec::with_capacity(entries.len());
        let mut previous = self.last_event.clone();
        // An event the stream can never take (its limit was lowered after
        // the write, or the write came before limits were checked): moved
        // aside once those before it are in, so it holds nothing back.
        let mut unpublishable = None;
        for entry in &entries {
            let span = publish_span(entry);
            let mut publish = PublishMessage::build()
                .payload(entry.payload.clone().into())
                .message_id(entry.event_id.as_str());
            if let Some(previous) = previous.replace(entry.event_id.clone()) {
                publish = publish.expected_last_message_id(previous);
            }
            for (name, value) in trace_context::headers_of(&span) {
                publish = publish.header(name, value);
            }
            match self
                .jetstream
                .send_publish(entry.subject.clone(), publish)
                .await
            {
                Ok(ack) => acks.push((ack, span)),
                Err(err) if err.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    unpublishable = Some((entry, err.to_string()));
                    break;
                }
                Err(err) => {
                    tracing::debug!(%err, "publish refused");
                    break;
                }
            }
        }
        let mut sent = Vec::with_capacity(acks.len());
        let mut failure = None;
        for (entry, (ack, span)) in entries.iter().zip(acks) {
            match ack.await {
                Ok(_) => {
                    sent.push(entry.seq);
                    self.last_event = Some(entry.event_id.clone());
                }
                Err(err) => {
                    span.record("otel.status_code", "ERROR");
                    // The stream's last event is not the one this relay
                    // knew (another relay published, or a repeat came after
                    // the duplicate window): read it again next round.
                    if err.kind() == PublishErrorKind::WrongLastMessageId {
                        self.last_event = None;
                    }
                    failure = Some(err.to_string());
                    break;
                }
            }
        }
        if !sent.is_empty() {
            self.store.outbox_sent(&sent).await?;
        }
        if let Some((entry, reason)) = unpublishable
            && failure.is_none()
        {
            tracing::error!(
                event_id = %entry.event_id,
                subject = %entry.subject,
                bytes = entry.payload.len(),
                %reason,
                "event moved to _oxbase_outbox_dead: the stream cannot take it"
            );
            self.store.outbox_dead_letter(entry.seq, &reason).await?;
            self.signals.dead_letters.fetch_add(1, Ordering::Relaxed);
            return Ok(Round::More);
        }
        if let Some(reason) =
            failure.or_else(|| (sent.len() < entries.len()).then(|| "publish refused".to_owned()))
        {
            return Err(RelayError::Publish(reason));
        }
        Ok(if entries.len() == self.settings.batch {
            Round::More
        } else {
            Round::Idle
        })
    }
}

/// The span of one event's publish, up to its ack: a child of the write
/// that left the event, when that write was traced. Its context goes with
/// the message as a `traceparent` header.
fn publish_span(entry: &OutboxEntry) -> Span {
    trace_context::span(|| {
        let span = tracing::info_span!(
            "outbox.publish",
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            messaging.system = "nats",
            messaging.destination.name = %entry.subject,
            messaging.message.id = %entry.event_id,
        );
        trace_context::continue_from(&span, event_traceparent(&entry.payload).as_deref(), None);
        span
    })
}

/// The `traceparent` extension of an event's JSON.
fn event_traceparent(payload: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Extension {
        traceparent: Option<String>,
    }
    serde_json::from_str::<Extension>(payload).ok()?.traceparent
}

/// Creates the events stream, or brings an existing one to the settings.
/// A stream that cannot be changed that way (another storage type, other
/// subjects that clash) is a clear error rather than a silent mismatch.
pub async fn ensure_stream(
    jetstream: &jetstream::Context,
    settings: &EventStreamSpec,
) -> Result<(), RelayError> {
    let wanted = stream::Config {
        name: settings.name.clone(),
        subjects: settings.subjects.clone(),
        storage: match settings.storage {
            Storage::File => stream::StorageType::File,
            Storage::Memory => stream::StorageType::Memory,
        },
        num_replicas: settings.replicas,
        max_age: settings.max_age,
        max_bytes: settings.max_bytes,
        max_messages: settings.max_msgs,
        duplicate_window: settings.duplicate_window,
        ..Default::default()
    };
    let setup_error = |reason: String| RelayError::Stream {
        name: settings.name.clone(),
        reason,
    };
    match jetstream.get_stream(&settings.name).await {
        Ok(mut existing) => {
            let current = existing
                .info()
                .await
                .map_err(|e| setup_error(e.to_string()))?
                .config
                .clone();
            if current.storage != wanted.storage {
                return Err(RelayError::StreamMismatch {
                    name: settings.name.clone(),
                    reason: format!(
                        "it uses {:?} storage; oxbase needs file storage",
                        current.storage
                    ),
                });
            }
            let same = current.subjects == wanted.subjects
                && current.num_replicas == wanted.num_replicas
                && current.max_age == wanted.max_age
                && current.max_bytes == wanted.max_bytes
                && current.max_messages == wanted.max_messages
                && current.duplicate_window == wanted.duplicate_window;
            if !same {
                let update = stream::Config {
                    subjects: wanted.subjects,
                    num_replicas: wanted.num_replicas,
                    max_age: wanted.max_age,
                    max_bytes: wanted.max_bytes,
                    max_messages: wanted.max_messages,
                    duplicate_window: wanted.duplicate_window,
                    ..current
                };
                jetstream
                    .update_stream(&update)
                    .await
                    .map_err(|e| RelayError::StreamMismatch {
                        name: settings.name.clone(),
                        reason: e.to_string(),
                    })?;
            }
            Ok(())
        }
        Err(err) if is_not_found(&err) => jetstream
            .create_stream(wanted)
            .await
            .map(|_| ())
            .map_err(|e| setup_error(e.to_string())),
        Err(err) => Err(setup_error(err.to_string())),
    }
}

fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}
