//! The contract between oxbase services and with outside subscribers in any
//! language: subject names, stream names, and the messages that travel on
//! them. Everything here is plain data so other languages can mirror it; the
//! JSON Schemas in `proto/schema/` are generated from these types.
//!
//! # Object events
//!
//! Every committed create, update and delete of a Parse object is published
//! once to JetStream on the subject
//!
//! ```text
//! <prefix>.events.<className>.<created|updated|deleted>
//! ```
//!
//! where the prefix defaults to `oxbase` ([`Subjects`]). The events are kept
//! in the stream `<PREFIX>_EVENTS`, `OXBASE_EVENTS` by default
//! ([`EventStreamSpec`]); subscribe with a consumer of your own on it.
//!
//! The message body is a CloudEvents 1.0 event in structured JSON mode
//! ([`Event`], `proto/schema/event.schema.json`):
//!
//! ```json
//! {
//!   "specversion": "1.0",
//!   "type": "oxbase.object.updated",
//!   "source": "oxbase://myAppId",
//!   "id": "0190a5a0-7c1e-7b3a-9d0e-5f2c8a1b4e6d",
//!   "time": "2024-05-01T12:30:00.123Z",
//!   "datacontenttype": "application/json",
//!   "subject": "GameScore/xWMyZ4YEGZ",
//!   "data": {
//!     "className": "GameScore",
//!     "object":   { "objectId": "xWMyZ4YEGZ", "score": 1338, "...": "..." },
//!     "original": { "objectId": "xWMyZ4YEGZ", "score": 1337, "...": "..." },
//!     "context": { "userId": "u1", "master": false, "requestId": "r1" }
//!   }
//! }
//! ```
//!
//! What a subscriber can rely on:
//!
//! - `id` is unique per event, and it is also the message's `Nats-Msg-Id`.
//!   A publish repeated after a crash keeps its id, so JetStream drops it
//!   within the duplicate window (2 minutes by default) and the stream holds
//!   each event once. A consumer can still be handed an event again when it
//!   does not ack in time: deduplicate by `id`.
//! - The events of one object are in the stream in the order their writes
//!   committed. Order by stream sequence, not by `id` or `time`.
//! - `type` is `oxbase.object.created`, `oxbase.object.updated` or
//!   `oxbase.object.deleted`, matching the subject's last token.
//! - `subject` is `<className>/<objectId>`.
//! - `time` is when the write happened: RFC 3339, UTC, milliseconds.
//! - `data.object` is the object after the write, in the Parse REST API's
//!   JSON form (dates as `{"__type":"Date","iso":...}`, pointers, ACL); for a
//!   delete it is the object as it was.
//! - `data.original` is the object before the write: present for updates and
//!   deletes, absent for creates.
//! - `data.context.master` is always present; `userId`, `installationId` and
//!   `requestId` are absent when the request had none.
//! - Members may be added later: ignore the ones you do not know.
//!
//! # Cloud functions and triggers
//!
//! A hook is served by a webhook or by a NATS handler in any language. The
//! registry ([`HookEntry`]) is the key-value bucket `<PREFIX>_HOOKS`; Parse's
//! `/hooks` routes edit it, and every process sees a change within a second.
//!
//! A NATS handler answers requests (core NATS request/reply; use a queue
//! group to run several copies) on
//!
//! ```text
//! <prefix>.functions.<functionName>            cloud functions
//! <prefix>.triggers.<triggerName>.<className>  every trigger ([`TriggerName`])
//! <prefix>.jobs.run.<queue>.<jobName>          jobs ([`jobs`])
//! ```
//!
//! The request body is the JSON Parse Server sends its webhooks
//! ([`FunctionRequest`], [`TriggerRequest`] for object, log-in and log-out
//! triggers, [`FindTriggerRequest`] for `beforeFind`/`afterFind`,
//! [`FileTriggerRequest`] for the file triggers on `_File`,
//! [`LiveQueryTriggerRequest`] for `beforeConnect` on `_Connect`,
//! `beforeSubscribe` and `afterEvent`; `proto/schema/`), with the
//! header `X-Parse-Request-Id`. The reply body is [`HookReply`]:
//! `{"success": ...}` or `{"error": "message"}` /
//! `{"error": {"code": 141, "message": "..."}}`. A reply that is not JSON,
//! is larger than the configured limit (1 MiB by default) or comes later
//! than the timeout (10 s by default) is a failure.
//!
//! Functions need no registration: a function with no registry entry is
//! requested on its subject, and no responder means "Invalid function".
//! Triggers must be registered (`nats: true`), so that classes without
//! hooks cost nothing.
//!
//! After-hooks come from the event stream, at least once, in order per
//! object, with the event id in `eventId` and in the `Idempotency-Key`
//! header; an error reply is retried with backoff, and after the last
//! attempt the delivery goes to the stream `<PREFIX>_TRIGGERS_DEAD` on
//! `<prefix>.dead.<className>.<triggerName>` with the headers
//! `Oxbase-Attempts` and `Oxbase-Last-Error`.

pub mod cron;
mod event;
pub mod hooks;
pub mod jobs;
pub mod push;
mod stream;
mod subjects;

pub use event::{
    DataContentType, Event, EventKind, Object, ObjectEvent, RequestContext, SpecVersion,
};
pub use hooks::{
    Caller, FileInfo, FileTriggerRequest, FindTriggerRequest, FunctionRequest, HookEntry,
    HookError, HookRateLimit, HookReply, LiveQueryTriggerRequest, RateLimitZone, RequestMethods,
    TriggerName, TriggerRequest,
};
pub use stream::{EventStreamSettings, EventStreamSpec, Storage, stream_name};
pub use subjects::{DEFAULT_PREFIX, InvalidPrefix, Subjects, WebhookTarget, valid_token};
