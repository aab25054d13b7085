//! The dispatch: one reader of the event stream per process, matching each
//! event against the subscriptions the index offers, deciding Parse's
//! event kind per subscriber and queueing what each may see.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures_util::StreamExt;
use oxbase_hooks::HookCaller;
use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_objects::{Keys, ObjectLayer};
use oxbase_proto::{
    Caller, Event, EventKind, EventStreamSpec, LiveQueryTriggerRequest, Subjects, TriggerName,
};
use oxbase_store::matcher::{Matcher, acl_allows};
use oxbase_store::{FieldType, Object};
use serde_json::Value;

use crate::LiveQueryError;
use crate::config::LiveQueryConfig;
use crate::index::{QueryGroup, SubscriptionIndex};
use crate::member::{Member, MemberAccess};
use crate::protocol::{self, EventMessage, EventOp};

/// Fields sent whatever `keys` a subscription asked for (Parse's
/// `Client` keeps these).
const ALWAYS_SENT: &[&str] = &["className", "objectId", "updatedAt", "createdAt", "ACL"];

/// What every connection of a process shares.
pub struct Hub {
    pub(crate) objects: Arc<ObjectLayer>,
    pub(crate) keys: Keys,
    pub(crate) hooks: Option<HookCaller>,
    pub(crate) config: LiveQueryConfig,
    jetstream: jetstream::Context,
    stream: EventStreamSpec,
    subjects: Subjects,
    pub(crate) index: RwLock<SubscriptionIndex>,
    /// The stream position of the last event the index was consulted for.
    position: AtomicU64,
    /// Whether the reader is following the stream: until then no client is
    /// let in, as it could miss events.
    live: AtomicBool,
    /// Whether the reader has found its starting position.
    started: AtomicBool,
    pub(crate) clients: AtomicUsize,
    pub(crate) metrics: Metrics,
}

#[derive(Default)]
pub struct Metrics {
    pub events: AtomicU64,
    pub sent: AtomicU64,
    pub dropped_clients: AtomicU64,
}

/// One event as the dispatch reads it.
pub struct LiveEvent {
    pub seq: u64,
    pub kind: EventKind,
    pub class_name: String,
    /// With `className`, as Parse's LiveQuery sends objects.
    pub object: Object,
    pub original: Option<Object>,
}

impl LiveEvent {
    pub(crate) fn decode(seq: u64, payload: &[u8]) -> Option<Self> {
        let event: Event = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!(seq, error = %err, "skipping an event that does not decode");
                return None;
            }
        };
        let data = event.data;
        let with_class = |mut object: Object| {
            object.insert("className".into(), Value::from(data.class_name.clone()));
            object
        };
        Some(Self {
            seq,
            kind: event.kind,
            object: with_class(data.object),
            original: data.original.map(with_class),
            class_name: data.class_name,
        })
    }
}

/// What one subscriber is sent for one event, before the afterEvent hook
/// and the redaction.
struct Decision {
    op: EventOp,
    object: Object,
    original: Option<Object>,
}

impl Hub {
    pub(crate) fn new(
        config: &Config,
        objects: Arc<ObjectLayer>,
        client: async_nats::Client,
        hooks: Option<HookCaller>,
    ) -> Result<Self, LiveQueryError> {
        let subjects = Subjects::new(config.events.prefix.as_str())
            .map_err(|err| LiveQueryError::Prefix(err.to_string()))?;
        Ok(Self {
            objects,
            keys: Keys::from_config(config),
            hooks,
            config: config.section(),
            jetstream: jetstream::new(client),
            stream: EventStreamSpec::new(&subjects, &config.events.stream),
            subjects,
            index: RwLock::new(SubscriptionIndex::default()),
            position: AtomicU64::new(0),
            live: AtomicBool::new(false),
            started: AtomicBool::new(false),
            clients: AtomicUsize::new(0),
            metrics: Metrics::default(),
        })
    }

    pub fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    pub fn subscriptions(&self) -> usize {
        self.index
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .subscriptions()
    }

    /// Files a subscription, and returns the stream position it starts
    /// after: later events reach it live; a resume replays those before.
    pub(crate) fn insert(
        &self,
        class_name: &str,
        key: String,
        filter: &oxbase_store::Filter,
        matcher: Matcher,
        member: Arc<Member>,
        first: Option<String>,
    ) -> (u64, Arc<QueryGroup>) {
        let mut index = self.index.write().unwrap_or_else(|e| e.into_inner());
        let group = index.insert(class_name, key, filter, matcher, member);
        // Queued under the lock, so no event of the new subscription can
        // overtake its `subscribed`.
        if let Some(text) = first {
            group
                .members
                .last()
                .expect("just inserted")
                .client
                .send(text);
        }
        (self.position.load(Ordering::Acquire), group)
    }

    pub(crate) fn remove(&self, class_name: &str, key: &str, member: &Arc<Member>) {
        self.index
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(class_name, key, member);
    }

    /// Follows the event stream until `shutdown`, reconnecting after
    /// failures; the position is kept, so no event is skipped.
    pub async fn run(self: Arc<Self>, readiness: Readiness, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(200);
        loop {
            match self.follow(&readiness, &shutdown).await {
                Ok(()) => return,
                Err(err) => {
                    self.live.store(false, Ordering::Release);
                    readiness.set("livequery", false);
                    tracing::warn!(error = %err, "LiveQuery lost the event stream; retrying");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    pub(crate) async fn event_stream(&self) -> Result<jetstream::stream::Stream, String> {
        self.jetstream
            .get_stream(&self.stream.name)
            .await
            .map_err(|e| e.to_string())
    }

    /// The subject of every event of one class.
    pub(crate) fn class_subject(&self, class_name: &str) -> String {
        self.subjects.class_events_wildcard(class_name)
    }

    async fn follow(&self, readiness: &Readiness, shutdown: &Shutdown) -> Result<(), String> {
        oxbase_objects::ensure_stream(&self.jetstream, &self.stream)
            .await
            .map_err(|e| e.to_string())?;
        let mut stream = self.event_stream().await?;
        let mut after = self.position.load(Ordering::Acquire);
        if !self.started.load(Ordering::Acquire) {
            // A new process starts at the end: its clients have not
            // subscribed to anything before now. Later, it goes on from
            // where it was.
            after = stream
                .info()
                .await
                .map_err(|e| e.to_string())?
                .state
                .last_sequence;
            self.position.store(after, Ordering::Release);
            self.started.store(true, Ordering::Release);
        }
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.subjects.events_wildcard(),
                deliver_policy: DeliverPolicy::ByStartSequence {
                    start_sequence: after + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut messages = consumer.messages().await.map_err(|e| e.to_string())?;
        self.live.store(true, Ordering::Release);
        readiness.set("livequery", true);
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = shutdown.wait() => return Ok(()),
            };
            let message = match message {
                Some(Ok(message)) => message,
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("the consumer ended".into()),
            };
            let seq = message.info().map_err(|e| e.to_string())?.stream_sequence;
            self.dispatch(seq, &message.payload).await;
        }
    }

    async fn dispatch(&self, seq: u64, payload: &[u8]) {
        self.metrics.events.fetch_add(1, Ordering::Relaxed);
        let Some(mut event) = LiveEvent::decode(seq, payload) else {
            self.position.store(seq, Ordering::Release);
            return;
        };
        self.show_relations(&mut event);
        let groups = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            self.position.store(seq, Ordering::Release);
            index.candidates(&event.class_name, &event.object, event.original.as_ref())
        };
        self.renew_access(&event).await;
        if !groups.is_empty() {
            self.objects
                .refresh_schemas(crate::connection::SCHEMA_MAX_AGE)
                .await;
        }
        for group in groups {
            self.dispatch_group(&event, &group, &group.members, false)
                .await;
        }
    }

    /// Events leave Relation fields out; Parse's REST find shows them,
    /// and conditions on them are answered by the store (see
    /// [`Matcher::lookups`]), so they are shown from the schema.
    pub(crate) fn show_relations(&self, event: &mut LiveEvent) {
        let schemas = self.objects.schemas();
        let Some(class) = schemas.get(&event.class_name) else {
            return;
        };
        for (field, spec) in &class.fields {
            let FieldType::Relation { target_class } = &spec.field_type else {
                continue;
            };
            let shown = serde_json::json!({"__type": "Relation", "className": target_class});
            for object in std::iter::once(&mut event.object).chain(event.original.as_mut()) {
                object.entry(field.clone()).or_insert_with(|| shown.clone());
            }
        }
    }

    /// Role changes, ended sessions and deleted users change what
    /// subscribers may read: their principals are looked up again before
    /// the next event is matched, as Parse Server clears its role cache.
    async fn renew_access(&self, event: &LiveEvent) {
        let deleted = event.kind == EventKind::Deleted;
        let field = |name: &str| event.object.get(name).and_then(Value::as_str);
        let concerns = |member: &Member| -> bool {
            let Some(user) = member.auth.user.as_ref() else {
                return false;
            };
            match event.class_name.as_str() {
                "_Role" => true,
                // Events carry no session tokens: every session of the
                // user whose session ended is looked up again, and those
                // still valid keep their access.
                "_Session" => {
                    deleted
                        && event
                            .object
                            .get("user")
                            .and_then(|u| u.get("objectId"))
                            .and_then(Value::as_str)
                            == Some(user.id.as_str())
                }
                "_User" => deleted && field("objectId") == Some(user.id.as_str()),
                _ => false,
            }
        };
        if !matches!(event.class_name.as_str(), "_Role" | "_Session" | "_User") {
            return;
        }
        let members: Vec<Arc<Member>> = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            index.members().filter(|m| concerns(m)).cloned().collect()
        };
        if members.is_empty() {
            return;
        }
        self.objects.forget_sessions();
        let mut renewed: std::collections::HashMap<String, Vec<String>> = Default::default();
        for member in members {
            let Some(user) = member.auth.user.as_ref() else {
                continue;
            };
            let token = &user.session_token;
            if !renewed.contains_key(token) {
                // A session that no longer resolves leaves only what the
                // public may read.
                let principals = match self.objects.session_user(token).await {
                    Ok(user) => oxbase_objects::Auth {
                        user: Some(user),
                        ..Default::default()
                    }
                    .principals(),
                    Err(_) => vec!["*".to_owned()],
                };
                renewed.insert(token.clone(), principals);
            }
            member.set_principals(renewed[token].clone());
        }
    }

    /// Sends `event` to each of `members` of `group` it concerns.
    /// `replaying` sends past the members' held queues.
    pub(crate) async fn dispatch_group(
        &self,
        event: &LiveEvent,
        group: &QueryGroup,
        members: &[Arc<Member>],
        replaying: bool,
    ) {
        let current = self
            .query_matches(&group.matcher, event, &event.object)
            .await;
        let original = match (&event.original, event.kind) {
            (Some(original), EventKind::Updated) => {
                self.query_matches(&group.matcher, event, original).await
            }
            _ => false,
        };
        if !current && !original {
            return;
        }
        let permissions = self.objects.class_permissions(&event.class_name);
        for member in members {
            if !replaying && event.seq <= member.after {
                continue;
            }
            if member.access().permissions != permissions {
                self.recheck(&event.class_name, member, permissions.clone())
                    .await;
            }
            if member.access().denied {
                continue;
            }
            if let Some(decision) = decide(event, member, original, current) {
                self.finish(event, member, decision, replaying).await;
            }
        }
    }

    /// The class's permissions changed since the subscription was checked:
    /// Parse Server applies the current ones to every event.
    async fn recheck(&self, class_name: &str, member: &Member, permissions: Value) {
        let watch = member.watch.clone().unwrap_or_default();
        let access = self
            .objects
            .live_access(&member.auth, class_name, &member.where_, &watch)
            .await;
        member.set_access(match access {
            Ok(access) => MemberAccess {
                permissions,
                protected: access.protected,
                denied: false,
            },
            Err(_) => MemberAccess {
                permissions,
                protected: Vec::new(),
                denied: true,
            },
        });
    }

    async fn query_matches(&self, matcher: &Matcher, event: &LiveEvent, object: &Object) -> bool {
        if !matcher.needs_lookups() {
            return matcher.matches(object, &[]);
        }
        let mut answers = Vec::new();
        for (class_name, filter) in matcher.lookups(&event.class_name, object) {
            match self.objects.any_match(&class_name, filter).await {
                Ok(found) => answers.push(found),
                Err(err) => {
                    tracing::warn!(error = %err, "a LiveQuery subquery failed; the event is not sent");
                    return false;
                }
            }
        }
        matcher.matches(object, &answers)
    }

    /// The afterEvent hook, the redaction and `keys`, then the message.
    async fn finish(
        &self,
        event: &LiveEvent,
        member: &Member,
        decision: Decision,
        replaying: bool,
    ) {
        let Decision {
            op,
            mut object,
            mut original,
        } = decision;
        if let Some(changed) = self
            .after_event(event, member, op, &object, &original)
            .await
        {
            match changed {
                AfterEvent::Drop => return,
                AfterEvent::Replace {
                    object: new_object,
                    original: new_original,
                } => {
                    if let Some(new_object) = new_object {
                        object = new_object;
                    }
                    if let Some(new_original) = new_original {
                        original = Some(new_original);
                    }
                }
            }
        }
        let render = |mut object: Object| {
            self.objects.live_redact(
                &member.auth,
                &event.class_name,
                &mut object,
                &member.access().protected,
            );
            object.insert("className".into(), Value::from(event.class_name.clone()));
            if let Some(keys) = &member.keys {
                object.retain(|name, _| {
                    ALWAYS_SENT.contains(&name.as_str()) || keys.iter().any(|k| k == name)
                });
            }
            Value::Object(object)
        };
        let text = EventMessage {
            op,
            client_id: &member.client.id,
            installation_id: member.client.installation_id.as_deref(),
            request_id: &member.request_id,
            event_id: event.seq,
            object: render(object),
            original: original.map(render),
        }
        .to_text();
        self.metrics.sent.fetch_add(1, Ordering::Relaxed);
        if replaying {
            member.client.send(text);
        } else {
            member.deliver(text);
        }
    }

    /// Runs the class's afterEvent hook for one subscriber, if it has one.
    /// Its error goes to the client, as Parse Server sends it.
    async fn after_event(
        &self,
        event: &LiveEvent,
        member: &Member,
        op: EventOp,
        object: &Object,
        original: &Option<Object>,
    ) -> Option<AfterEvent> {
        let hooks = self.hooks.as_ref()?;
        let entry = match hooks
            .trigger(&event.class_name, TriggerName::AfterEvent)
            .await
        {
            Ok(entry) => entry?,
            // Unknown hooks may redact: nothing goes out unchecked.
            Err(err) => {
                member.client.send(protocol::error(
                    oxbase_objects::code::SCRIPT_FAILED,
                    &err.to_string(),
                    false,
                    Some(&member.request_id),
                ));
                return Some(AfterEvent::Drop);
            }
        };
        let request = LiveQueryTriggerRequest {
            trigger_name: TriggerName::AfterEvent,
            class_name: event.class_name.clone(),
            event: op.as_str().into(),
            query: None,
            object: Some(object.clone()),
            original: original.clone(),
            clients: self.clients.load(Ordering::Relaxed) as u64,
            subscriptions: self.subscriptions() as u64,
            session_token: member.session_token.clone(),
            caller: Caller {
                master: member.auth.master,
                user: member.auth.user_id().map(user_pointer),
                installation_id: member.client.installation_id.clone(),
                ..Caller::default()
            },
        };
        let refused = |code: i64, message: String| {
            member.client.send(protocol::error(
                i32::try_from(code).unwrap_or(oxbase_objects::code::SCRIPT_FAILED),
                &message,
                false,
                Some(&member.request_id),
            ));
            Some(AfterEvent::Drop)
        };
        let reply = match hooks
            .call_trigger(
                &entry,
                &event.class_name,
                TriggerName::AfterEvent,
                &request,
                None,
            )
            .await
        {
            Ok(reply) => reply,
            Err(err) => {
                return refused(
                    oxbase_objects::code::SCRIPT_FAILED.into(),
                    format!("The afterEvent hook of {} failed: {err}", event.class_name),
                );
            }
        };
        if let Some(err) = &reply.error {
            return refused(
                err.code()
                    .unwrap_or(oxbase_objects::code::SCRIPT_FAILED.into()),
                err.message(),
            );
        }
        let success = reply.success.as_ref().and_then(Value::as_object)?;
        if success.get("sendEvent") == Some(&Value::Bool(false)) {
            return Some(AfterEvent::Drop);
        }
        let take = |key: &str| success.get(key).and_then(Value::as_object).cloned();
        Some(AfterEvent::Replace {
            object: take("object"),
            original: take("original"),
        })
    }
}

enum AfterEvent {
    Drop,
    Replace {
        object: Option<Object>,
        original: Option<Object>,
    },
}

pub(crate) fn user_pointer(id: &str) -> Object {
    let mut pointer = Object::new();
    pointer.insert("__type".into(), Value::from("Pointer"));
    pointer.insert("className".into(), Value::from("_User"));
    pointer.insert("objectId".into(), Value::from(id));
    pointer
}

/// Parse Server's rules for which event a subscriber gets: the query and
/// the ACL decide whether the object was and is in view. When only an ACL
/// change moved it, the state the subscriber may not read is not sent.
fn decide(
    event: &LiveEvent,
    member: &Member,
    original_q: bool,
    current_q: bool,
) -> Option<Decision> {
    let principals = member.principals();
    let readable = |object: &Object| member.auth.master || acl_allows(object, &principals, false);
    if event.kind == EventKind::Deleted {
        return (current_q && readable(&event.object)).then(|| Decision {
            op: EventOp::Delete,
            object: event.object.clone(),
            original: None,
        });
    }
    let before = event.original.as_ref();
    let was = original_q && before.is_some_and(readable);
    let is = current_q && readable(&event.object);
    let op = match (was, is) {
        (true, true) => EventOp::Update,
        (true, false) => EventOp::Leave,
        (false, true) if before.is_some() => EventOp::Enter,
        (false, true) => EventOp::Create,
        (false, false) => return None,
    };
    if matches!(op, EventOp::Update | EventOp::Create) && !watched_changed(member, event) {
        return None;
    }
    let (object, original) = match op {
        EventOp::Leave => {
            // Left because the query no longer matches: the new state is
            // readable. Left because the ACL shut the subscriber out: it
            // is sent the last state it could read.
            let now_readable = !current_q && readable(&event.object);
            let shown = if now_readable { &event.object } else { before? };
            (shown.clone(), before.cloned())
        }
        EventOp::Enter => {
            let was_readable = !original_q && before.is_some_and(readable);
            (
                event.object.clone(),
                before.filter(|_| was_readable).cloned(),
            )
        }
        _ => (event.object.clone(), before.cloned()),
    };
    Some(Decision {
        op,
        object,
        original,
    })
}

fn watched_changed(member: &Member, event: &LiveEvent) -> bool {
    let Some(watch) = &member.watch else {
        return true;
    };
    watch
        .iter()
        .any(|field| event.object.get(field) != event.original.as_ref().and_then(|o| o.get(field)))
}

#[cfg(test)]
mod tests {
    use serde_json::{Number, json};

    use super::*;
    use crate::member::ClientHandle;
    use crate::protocol::RequestId;

    fn member(user: Option<&str>, watch: Option<&[&str]>) -> Member {
        let (outbox, _) = tokio::sync::mpsc::channel(1);
        let auth = oxbase_objects::Auth {
            user: user.map(|id| {
                Arc::new(oxbase_objects::SessionUser {
                    id: id.into(),
                    session_token: "r:t".into(),
                    anonymous: false,
                    roles: Vec::new(),
                })
            }),
            ..Default::default()
        };
        Member {
            client: Arc::new(ClientHandle::new("c".into(), None, outbox)),
            request_id: RequestId::new(&Number::from(1)),
            principals: std::sync::RwLock::new(auth.principals()),
            auth,
            session_token: None,
            where_: serde_json::Map::new(),
            access: std::sync::RwLock::new(MemberAccess {
                permissions: Value::Null,
                protected: Vec::new(),
                denied: false,
            }),
            keys: None,
            watch: watch.map(|w| w.iter().map(|f| (*f).to_owned()).collect()),
            after: 0,
            held: std::sync::Mutex::new(None),
        }
    }

    fn object(value: Value) -> Object {
        value.as_object().cloned().unwrap()
    }

    fn event(kind: EventKind, object_: Value, original: Option<Value>) -> LiveEvent {
        LiveEvent {
            seq: 1,
            kind,
            class_name: "Game".into(),
            object: object(object_),
            original: original.map(object),
        }
    }

    fn op(
        event: &LiveEvent,
        member: &Member,
        was: bool,
        is: bool,
    ) -> Option<(EventOp, Value, Option<Value>)> {
        decide(event, member, was, is).map(|d| {
            (
                d.op,
                d.object["v"].clone(),
                d.original.map(|o| o["v"].clone()),
            )
        })
    }

    #[test]
    fn the_query_decides_the_kind() {
        let anyone = member(None, None);
        let created = event(EventKind::Created, json!({"v": 1}), None);
        assert_eq!(
            op(&created, &anyone, false, true),
            Some((EventOp::Create, json!(1), None))
        );
        assert_eq!(op(&created, &anyone, false, false), None);
        let updated = event(EventKind::Updated, json!({"v": 2}), Some(json!({"v": 1})));
        assert_eq!(
            op(&updated, &anyone, true, true).map(|o| o.0),
            Some(EventOp::Update)
        );
        assert_eq!(
            op(&updated, &anyone, false, true),
            Some((EventOp::Enter, json!(2), Some(json!(1))))
        );
        assert_eq!(
            op(&updated, &anyone, true, false),
            Some((EventOp::Leave, json!(2), Some(json!(1))))
        );
        let deleted = event(EventKind::Deleted, json!({"v": 1}), Some(json!({"v": 1})));
        assert_eq!(
            op(&deleted, &anyone, false, true),
            Some((EventOp::Delete, json!(1), None))
        );
        assert_eq!(op(&deleted, &anyone, false, false), None);
    }

    #[test]
    fn acls_hide_objects_and_the_states_a_subscriber_could_not_read() {
        let private = json!({"u1": {"read": true}});
        let a = member(Some("u1"), None);
        let b = member(Some("u2"), None);
        let created = event(EventKind::Created, json!({"v": 1, "ACL": private}), None);
        assert!(op(&created, &a, false, true).is_some());
        assert_eq!(op(&created, &b, false, true), None);
        // Access taken away: `leave`, showing the last readable state.
        let revoked = event(
            EventKind::Updated,
            json!({"v": 2, "ACL": private}),
            Some(json!({"v": 1})),
        );
        assert_eq!(
            op(&revoked, &b, true, true),
            Some((EventOp::Leave, json!(1), Some(json!(1))))
        );
        // Access granted: `enter`, without the state it could not read.
        let granted = event(
            EventKind::Updated,
            json!({"v": 2}),
            Some(json!({"v": 1, "ACL": private})),
        );
        assert_eq!(
            op(&granted, &b, true, true),
            Some((EventOp::Enter, json!(2), None))
        );
        let deleted = event(EventKind::Deleted, json!({"v": 1, "ACL": private}), None);
        assert_eq!(op(&deleted, &b, false, true), None);
        assert!(op(&deleted, &a, false, true).is_some());
    }

    #[test]
    fn watch_sends_only_changes_of_its_fields() {
        let watching = member(None, Some(&["score"]));
        let other_field = event(
            EventKind::Updated,
            json!({"v": 2, "score": 1}),
            Some(json!({"v": 1, "score": 1})),
        );
        assert_eq!(op(&other_field, &watching, true, true), None);
        let scored = event(
            EventKind::Updated,
            json!({"v": 2, "score": 2}),
            Some(json!({"v": 1, "score": 1})),
        );
        assert!(op(&scored, &watching, true, true).is_some());
        // Leaving is sent whatever changed.
        assert!(op(&other_field, &watching, true, false).is_some());
    }
}
