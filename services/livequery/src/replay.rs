//! Resuming a subscription from its last `eventId`: the events since are
//! read back from the stream and sent before the live ones that arrived
//! meanwhile, which the member holds until then.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use futures_util::StreamExt;

use crate::hub::{Hub, LiveEvent};
use crate::index::QueryGroup;
use crate::member::Member;
use crate::protocol::{self, code};

/// How long the stream may stay silent before the replay counts as done
/// (every event up to `until` is in the stream already).
const QUIET: Duration = Duration::from_secs(5);

/// Sends `member` the events after `since` up to `until` (the position it
/// was filed at), then releases the live ones it held.
pub async fn replay(
    hub: Arc<Hub>,
    class_name: String,
    group: Arc<QueryGroup>,
    member: Arc<Member>,
    since: u64,
    until: u64,
) {
    if since < until
        && let Err(message) = read_back(&hub, &class_name, &group, &member, since, until).await
    {
        member.client.send(protocol::error(
            code::RESUME_GAP,
            &message,
            false,
            Some(&member.request_id),
        ));
    }
    member.release();
}

async fn read_back(
    hub: &Hub,
    class_name: &str,
    group: &QueryGroup,
    member: &Arc<Member>,
    since: u64,
    until: u64,
) -> Result<(), String> {
    let mut stream = hub.event_stream().await?;
    let first = stream
        .info()
        .await
        .map_err(|e| e.to_string())?
        .state
        .first_sequence;
    if first > since + 1 {
        return Err(format!(
            "Cannot resume after event {since}: the event stream keeps events from {first} on"
        ));
    }
    if until - since > hub.config.max_replay {
        return Err(format!(
            "Cannot resume after event {since}: {} events have passed, more than livequery.max_replay",
            until - since
        ));
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: hub.class_subject(class_name),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: since + 1,
            },
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    // Nothing of the class since: done at once, not after a quiet wait.
    if consumer.cached_info().num_pending == 0 {
        return Ok(());
    }
    let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
    let members = [Arc::clone(member)];
    loop {
        let message = match tokio::time::timeout(QUIET, messages.next()).await {
            Ok(Some(Ok(message))) => message,
            Ok(Some(Err(err))) => return Err(format!("Cannot resume after event {since}: {err}")),
            Ok(None) | Err(_) => return Ok(()),
        };
        let info = message.info().map_err(|e| e.to_string())?;
        let (seq, pending) = (info.stream_sequence, info.pending);
        if seq > until {
            return Ok(());
        }
        if let Some(mut event) = LiveEvent::decode(seq, &message.payload) {
            hub.show_relations(&mut event);
            hub.dispatch_group(&event, group, &members, true).await;
        }
        if seq == until || pending == 0 {
            return Ok(());
        }
    }
}
