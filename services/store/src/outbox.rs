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

/// The outbox record of a committed op. Internal fields (`_hashed_password`
/// and the like) stay out of events, as they stay out of every response.
pub(crate) fn record(
    context: &EventContext,
    class_name: &str,
    outcome: &WriteOutcome,
) -> StoreResult<OutboxRecord> {
    use oxbase_proto::{Event, EventKind, ObjectEvent, RequestContext, Subjects};
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
    let subjects = Subjects::new(context.prefix.as_str())
        .map_err(|e| StoreError::Backend(format!("event subject prefix: {e}")))?;
    let event = Event::new(
        context.source.as_str(),
        kind,
        ObjectEvent {
            class_name: class_name.to_owned(),
            object,
            original,
            context: RequestContext {
                user_id: context.user_id.clone(),
                installation_id: context.installation_id.clone(),
                master: context.master,
                request_id: context.request_id.clone(),
            },
        },
    );
    Ok(OutboxRecord {
        subject: subjects.event(class_name, kind),
        payload: serde_json::to_string(&event).map_err(StoreError::backend)?,
        event_id: event.id,
    })
}
