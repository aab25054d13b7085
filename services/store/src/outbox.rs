//! The transactional outbox. Every write that carries an [`EventContext`]
//! leaves its event in the outbox in the same transaction as the object,
//! so a committed write always has its event and an uncommitted one never
//! does. A relay claims pending events under a lease (one relay at a time
//! per database, so events leave in commit order), publishes them, and
//! marks them sent.

use std::time::Duration;

use crate::error::{StoreError, StoreResult};
use crate::query::Object;
use crate::write::WriteOutcome;

/// Who made a write, and where its event goes. A batch without one makes
/// no events.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EventContext {
    /// The CloudEvents `source` of the deployment.
    pub source: String,
    /// The NATS subject prefix.
    pub prefix: String,
    pub user_id: Option<String>,
    pub installation_id: Option<String>,
    pub master: bool,
    pub request_id: Option<String>,
    /// The write deletes an object while purging its class.
    pub purge: bool,
    /// Parse's cloud context of the write.
    pub cloud_context: serde_json::Map<String, serde_json::Value>,
}

/// An event waiting in the outbox, in commit order (`seq`).
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxEntry {
    pub seq: i64,
    pub event_id: String,
    pub subject: String,
    pub payload: String,
}

/// How long a relay's claim on the outbox lasts without renewal; another
/// process's relay takes over once it lapses.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// The event a committed op leaves behind.
pub(crate) struct OutboxRecord {
    pub event_id: String,
    pub subject: String,
    pub payload: String,
}

/// The event a committed op makes, with a fresh id and time. Internal
/// fields (`_hashed_password` and the like) stay out of events, as they
/// stay out of every response.
fn event(context: &EventContext, class_name: &str, outcome: &WriteOutcome) -> oxbase_proto::Event {
    use oxbase_proto::{Event, EventKind, ObjectEvent, RequestContext};
    let public = |object: &Object| -> Object {
        object
            .iter()
            .filter(|(key, _)| !key.starts_with('_'))
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect()
    };
    let (kind, object, original) = match outcome {
        WriteOutcome::Created(after) => (EventKind::Created, public(after), None),
        WriteOutcome::Updated { before, after } => {
            (EventKind::Updated, public(after), Some(public(before)))
        }
        WriteOutcome::Deleted(before) => (EventKind::Deleted, public(before), Some(public(before))),
    };
    let data = ObjectEvent {
        class_name: class_name.to_owned(),
        object,
        original,
        context: RequestContext {
            user_id: context.user_id.clone(),
            installation_id: context.installation_id.clone(),
            master: context.master,
            request_id: context.request_id.clone(),
            purge: context.purge,
            cloud_context: context.cloud_context.clone(),
        },
    };
    Event::new(context.source.as_str(), kind, data)
}

fn nats_subject(
    context: &EventContext,
    class_name: &str,
    kind: oxbase_proto::EventKind,
) -> StoreResult<String> {
    let subjects = oxbase_proto::Subjects::new(context.prefix.as_str())
        .map_err(|e| StoreError::backend_context("event subject prefix", e))?;
    Ok(subjects.event(class_name, kind))
}

/// The outbox record of a committed op, its payload the whole event.
pub(crate) fn record(
    context: &EventContext,
    class_name: &str,
    outcome: &WriteOutcome,
) -> StoreResult<OutboxRecord> {
    let event = event(context, class_name, outcome);
    Ok(OutboxRecord {
        subject: nats_subject(context, class_name, event.kind)?,
        payload: serde_json::to_string(&event).map_err(StoreError::backend)?,
        event_id: event.id,
    })
}

/// The envelope of a compact record: what [`expand_payload`] needs beside
/// the event id to rebuild the whole event around `data`.
type CompactEvent<'a> = (
    oxbase_proto::EventKind,
    &'a str,
    i64,
    &'a str,
    &'a serde_json::value::RawValue,
);

/// The outbox record of a committed op with a compact payload: `data` and
/// the few envelope members that vary, as a JSON array. Where one thread
/// commits every write (SQLite), the bytes it writes per event are what
/// events cost; [`expand_payload`] adds the rest when the event is claimed.
pub(crate) fn compact_record(
    context: &EventContext,
    class_name: &str,
    outcome: &WriteOutcome,
) -> StoreResult<OutboxRecord> {
    let event = event(context, class_name, outcome);
    let data = serde_json::value::to_raw_value(&event.data).map_err(StoreError::backend)?;
    let compact: CompactEvent = (
        event.kind,
        &event.source,
        event.time.timestamp_millis(),
        &event.subject,
        &data,
    );
    Ok(OutboxRecord {
        subject: nats_subject(context, class_name, event.kind)?,
        payload: serde_json::to_string(&compact).map_err(StoreError::backend)?,
        event_id: event.id,
    })
}

/// The whole event of a stored payload: a compact one (a JSON array) is
/// rebuilt around its `data`; a whole event is returned as it is.
pub(crate) fn expand_payload(event_id: &str, payload: String) -> StoreResult<String> {
    if !payload.starts_with('[') {
        return Ok(payload);
    }
    // Owned strings: a borrowed `&str` cannot hold an escaped one.
    let (kind, source, time, subject, data): (
        oxbase_proto::EventKind,
        String,
        i64,
        String,
        &serde_json::value::RawValue,
    ) = serde_json::from_str(&payload).map_err(StoreError::backend)?;
    let time = chrono::DateTime::from_timestamp_millis(time)
        .ok_or_else(|| StoreError::backend_message(format!("outbox event {event_id}: bad time")))?;
    oxbase_proto::Event::encode_with_raw_data(kind, &source, event_id, time, &subject, data)
        .map_err(StoreError::backend)
}
