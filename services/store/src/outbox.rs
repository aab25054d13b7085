//! The transactional outbox. Every write that carries an [`EventContext`]
//! leaves its event in the outbox in the same transaction as the object,
//! so a committed write always has its event and an uncommitted one never
//! does. A relay claims pending events under a lease (one relay at a time
//! per database, so events leave in commit order), publishes them, and
//! marks them sent.

use std::sync::Arc;
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
    /// The W3C `traceparent` of the span that made the write, for the
    /// event to carry through the outbox.
    pub traceparent: Option<String>,
    /// The deployment's rules for every event.
    pub policy: Arc<EventPolicy>,
}

/// The rules every event of a deployment follows.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPolicy {
    /// The largest event, in bytes, the stream takes. A write whose event
    /// would be larger fails ([`StoreError::EventTooLarge`]) rather than
    /// leave an event the relay can never publish.
    pub max_bytes: usize,
    /// Fields events leave out: `(class, field)`, with no class for a
    /// field of every class.
    redact: Vec<(Option<String>, String)>,
}

/// What a NATS message carries besides the event: its headers (the id and
/// the predecessor's id), with room to spare.
pub const NATS_HEADER_ROOM: usize = 1024;

impl EventPolicy {
    /// Session tokens are bearer credentials: no event carries them, so
    /// no stream, trigger delivery or dead letter holds one.
    const ALWAYS_REDACTED: (&'static str, &'static str) = ("_Session", "sessionToken");

    /// A policy for a stream whose messages may be `max_payload` bytes
    /// (NATS's `max_payload`), leaving out `redact`'s fields as well as
    /// session tokens. Each is `Class.field`, or `field` for every class.
    pub fn new(max_payload: usize, redact: &[String]) -> Self {
        let (class, field) = Self::ALWAYS_REDACTED;
        let mut fields = vec![(Some(class.to_owned()), field.to_owned())];
        fields.extend(redact.iter().map(|entry| match entry.split_once('.') {
            Some((class, field)) => (Some(class.to_owned()), field.to_owned()),
            None => (None, entry.clone()),
        }));
        Self {
            max_bytes: max_payload.saturating_sub(NATS_HEADER_ROOM),
            redact: fields,
        }
    }

    fn redacts(&self, class_name: &str, field: &str) -> bool {
        self.redact
            .iter()
            .any(|(class, f)| f == field && class.as_deref().is_none_or(|c| c == class_name))
    }

    fn check_size(&self, size: usize) -> StoreResult<()> {
        if size > self.max_bytes {
            return Err(StoreError::EventTooLarge {
                size,
                max: self.max_bytes,
            });
        }
        Ok(())
    }
}

impl Default for EventPolicy {
    /// NATS's default `max_payload` (1 MiB), and session tokens redacted.
    fn default() -> Self {
        Self::new(1024 * 1024, &[])
    }
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
/// stay out of every response, and so do the fields the policy redacts.
fn event(context: &EventContext, class_name: &str, outcome: &WriteOutcome) -> oxbase_proto::Event {
    use oxbase_proto::{Event, EventKind, ObjectEvent, RequestContext};
    let public = |object: &Object| -> Object {
        object
            .iter()
            .filter(|(key, _)| !key.starts_with('_') && !context.policy.redacts(class_name, key))
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
    let mut event = Event::new(context.source.as_str(), kind, data);
    event.traceparent = context.traceparent.clone();
    event
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
    let payload = serde_json::to_string(&event).map_err(StoreError::backend)?;
    context.policy.check_size(payload.len())?;
    Ok(OutboxRecord {
        subject: nats_subject(context, class_name, event.kind)?,
        payload,
        event_id: event.id,
    })
}

/// The envelope of a compact record: what [`expand_payload`] needs beside
/// the event id to rebuild the whole event around `data`. The
/// `traceparent` comes last and only when there is one, so records written
/// before it existed read the same.
#[derive(serde::Serialize, serde::Deserialize)]
struct CompactEvent<'a>(
    oxbase_proto::EventKind,
    // Owned strings: a borrowed `&str` cannot hold an escaped one.
    String,
    i64,
    String,
    #[serde(borrow)] &'a serde_json::value::RawValue,
    #[serde(default, skip_serializing_if = "Option::is_none")] Option<String>,
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
    // The envelope [`expand_payload`] adds is a few hundred bytes at most;
    // the header room covers it.
    context.policy.check_size(data.get().len())?;
    let compact = CompactEvent(
        event.kind,
        event.source,
        event.time.timestamp_millis(),
        event.subject,
        &data,
        event.traceparent,
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
    let CompactEvent(kind, source, time, subject, data, traceparent) =
        serde_json::from_str(&payload).map_err(StoreError::backend)?;
    let time = chrono::DateTime::from_timestamp_millis(time)
        .ok_or_else(|| StoreError::backend_message(format!("outbox event {event_id}: bad time")))?;
    oxbase_proto::Event::encode_with_raw_data(
        kind,
        &source,
        event_id,
        time,
        &subject,
        traceparent.as_deref(),
        data,
    )
    .map_err(StoreError::backend)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    fn created() -> WriteOutcome {
        let object = json!({"objectId": "o1", "n": 1});
        WriteOutcome::Created(object.as_object().cloned().unwrap())
    }

    fn expanded(traceparent: Option<&str>) -> Value {
        let context = EventContext {
            prefix: "ox".into(),
            traceparent: traceparent.map(str::to_owned),
            ..EventContext::default()
        };
        let record = compact_record(&context, "Item", &created()).unwrap();
        let whole = expand_payload(&record.event_id, record.payload).unwrap();
        serde_json::from_str(&whole).unwrap()
    }

    #[test]
    fn a_compact_record_keeps_the_trace_context() {
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        assert_eq!(expanded(Some(traceparent))["traceparent"], traceparent);
        let event = expanded(None);
        assert!(event.get("traceparent").is_none(), "{event}");
        assert_eq!(event["data"]["object"]["n"], 1);
    }

    #[test]
    fn compact_records_written_before_the_trace_context_still_expand() {
        let payload = r#"["oxbase.object.created","oxbase://a",0,"Item/o1",{"className":"Item"}]"#;
        let event: Value =
            serde_json::from_str(&expand_payload("e1", payload.into()).unwrap()).unwrap();
        assert_eq!(event["id"], "e1");
        assert_eq!(event["data"]["className"], "Item");
        assert!(event.get("traceparent").is_none());
    }
}
