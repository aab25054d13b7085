//! Moving dead letters back to the deliveries stream.

use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::{self, message::PublishMessage};
use futures_util::StreamExt;
use oxbase_kit::{Config, NatsError};
use oxbase_proto::valid_token;

use crate::streams::{self, is_not_found};
use crate::{EventHead, Settings, TriggersError, dead_letters_stream, deliveries_stream};

/// Moves the dead letters (all, or those of one class) back to the
/// deliveries stream, to be delivered again with a fresh set of attempts,
/// and returns how many it moved. Each is removed from the dead letters
/// only once the deliveries stream has it, so an interrupted replay loses
/// nothing (at worst, one is delivered twice). Dead letters that arrive
/// while it runs wait for the next replay.
pub async fn replay_dead_letters(
    config: &Config,
    client: async_nats::Client,
    class_name: Option<&str>,
) -> Result<usize, TriggersError> {
    let settings = Settings::from_config(config)?;
    let filter = match class_name {
        Some(class) if valid_token(class) => {
            format!("{}.dead.{class}.>", settings.subjects.prefix())
        }
        Some(class) => return Err(TriggersError::ClassName(class.into())),
        None => settings.subjects.dead_letters_wildcard(),
    };
    let jetstream = jetstream::new(client);
    let dead = match jetstream
        .get_stream(dead_letters_stream(&settings).name)
        .await
    {
        Ok(stream) => stream,
        Err(err) if is_not_found(&err) => return Ok(0),
        Err(err) => return Err(NatsError::from(err).into()),
    };
    streams::ensure(&jetstream, deliveries_stream(&settings)).await?;
    let last = dead
        .get_info()
        .await
        .map_err(NatsError::from)?
        .state
        .last_sequence;
    let consumer = dead
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(NatsError::from)?;
    if consumer.cached_info().num_pending == 0 {
        return Ok(0);
    }
    let mut letters = consumer.messages().await.map_err(NatsError::from)?;
    let mut moved = 0;
    loop {
        let letter = match tokio::time::timeout(Duration::from_secs(10), letters.next()).await {
            Ok(Some(letter)) => letter.map_err(NatsError::from)?,
            Ok(None) | Err(_) => break,
        };
        let (sequence, pending) = {
            let info = letter.info().map_err(NatsError::from)?;
            (info.stream_sequence, info.pending)
        };
        if sequence > last {
            break;
        }
        match EventHead::parse(&letter.payload) {
            Some(head) => {
                let subject = settings
                    .subjects
                    .delivery(head.partition(settings.partitions));
                // A fresh id: the event's own was seen, and dropping this
                // as a duplicate would lose it.
                let publish = PublishMessage::build()
                    .payload(letter.payload.clone())
                    .message_id(format!("{}:replay:{sequence}", head.id));
                jetstream
                    .send_publish(subject, publish)
                    .await
                    .map_err(NatsError::from)?
                    .await
                    .map_err(NatsError::from)?;
                dead.delete_message(sequence)
                    .await
                    .map_err(NatsError::from)?;
                moved += 1;
            }
            None => {
                tracing::warn!(
                    sequence,
                    "leaving a dead letter that is not an object event"
                );
            }
        }
        if pending == 0 {
            break;
        }
    }
    Ok(moved)
}
