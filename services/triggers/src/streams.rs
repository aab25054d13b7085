//! The streams the triggers service reads and writes.

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use oxbase_kit::NatsError;
use oxbase_proto::{EventStreamSpec, stream_name};

use crate::{Settings, TriggersError};

/// A publish repeating a `Nats-Msg-Id` seen this recently is dropped: a
/// router that crashed between publishing and acking its batch re-routes it
/// without doubling the deliveries.
const DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// `<PREFIX>_TRIGGERS`: after-hooks waiting for delivery, on
/// `<prefix>.deliveries.<partition>`. Work-queue retention: a delivery
/// leaves the stream when it is acked.
pub fn deliveries_stream(settings: &Settings) -> stream::Config {
    stream::Config {
        name: stream_name(&settings.subjects, "TRIGGERS"),
        description: Some("oxbase after-hook deliveries, one subject per partition".into()),
        subjects: vec![settings.subjects.deliveries_wildcard()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// `<PREFIX>_TRIGGERS_DEAD`: deliveries that failed every attempt, on
/// `<prefix>.dead.<className>.<triggerName>`, kept until replayed or
/// removed.
pub fn dead_letters_stream(settings: &Settings) -> stream::Config {
    stream::Config {
        name: stream_name(&settings.subjects, "TRIGGERS_DEAD"),
        description: Some("oxbase after-hook deliveries that failed every attempt".into()),
        subjects: vec![settings.subjects.dead_letters_wildcard()],
        retention: stream::RetentionPolicy::Limits,
        storage: stream::StorageType::File,
        num_replicas: settings.replicas,
        duplicate_window: DUPLICATE_WINDOW,
        ..Default::default()
    }
}

/// Creates the stream, or brings an existing one's subjects, replicas and
/// duplicate window to `wanted`. A stream that differs in what cannot be
/// changed (retention, storage) is an error to fix by hand.
pub async fn ensure(
    jetstream: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, TriggersError> {
    match jetstream.get_stream(&wanted.name).await {
        Ok(mut existing) => {
            let current = existing
                .info()
                .await
                .map_err(NatsError::from)?
                .config
                .clone();
            if current.retention != wanted.retention || current.storage != wanted.storage {
                return Err(TriggersError::StreamMismatch {
                    name: wanted.name,
                    reason: format!(
                        "it has {:?} retention on {:?} storage; oxbase needs {:?} on {:?}",
                        current.retention, current.storage, wanted.retention, wanted.storage
                    ),
                });
            }
            if current.subjects == wanted.subjects
                && current.num_replicas == wanted.num_replicas
                && current.duplicate_window == wanted.duplicate_window
            {
                return Ok(existing);
            }
            let update = stream::Config {
                subjects: wanted.subjects,
                num_replicas: wanted.num_replicas,
                duplicate_window: wanted.duplicate_window,
                ..current
            };
            jetstream
                .update_stream(&update)
                .await
                .map_err(|e| TriggersError::StreamMismatch {
                    name: update.name.clone(),
                    reason: e.to_string(),
                })?;
            Ok(jetstream
                .get_stream(&update.name)
                .await
                .map_err(NatsError::from)?)
        }
        Err(err) if is_not_found(&err) => create(jetstream, wanted).await,
        Err(err) => Err(NatsError::from(err).into()),
    }
}

pub(crate) fn is_not_found(err: &jetstream::context::GetStreamError) -> bool {
    matches!(
        err.kind(),
        jetstream::context::GetStreamErrorKind::JetStream(inner)
            if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND
    )
}

async fn create(
    jetstream: &jetstream::Context,
    wanted: stream::Config,
) -> Result<stream::Stream, TriggersError> {
    match jetstream.create_stream(wanted.clone()).await {
        Ok(stream) => Ok(stream),
        // Another process created it meanwhile.
        Err(_) => Ok(jetstream
            .get_stream(&wanted.name)
            .await
            .map_err(NatsError::from)?),
    }
}

/// The events stream, created with the API's settings when no API has
/// created it yet; an existing one is the API's to configure.
pub async fn events_stream(
    jetstream: &jetstream::Context,
    spec: &EventStreamSpec,
) -> Result<stream::Stream, TriggersError> {
    match jetstream.get_stream(&spec.name).await {
        Ok(stream) => return Ok(stream),
        Err(err) if !is_not_found(&err) => return Err(NatsError::from(err).into()),
        Err(_) => {}
    }
    create(
        jetstream,
        stream::Config {
            name: spec.name.clone(),
            subjects: spec.subjects.clone(),
            storage: match spec.storage {
                oxbase_proto::Storage::File => stream::StorageType::File,
                oxbase_proto::Storage::Memory => stream::StorageType::Memory,
            },
            num_replicas: spec.replicas,
            max_age: spec.max_age,
            max_bytes: spec.max_bytes,
            max_messages: spec.max_msgs,
            duplicate_window: spec.duplicate_window,
            ..Default::default()
        },
    )
    .await
}
