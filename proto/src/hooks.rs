//! Cloud functions and triggers: the hook registry's entries, what a
//! handler receives, and what it answers.
//!
//! The bodies are Parse Server's webhook bodies, so one handler can serve
//! Parse Server's `/hooks` webhooks and oxbase's NATS subjects alike.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::event::Object;

/// The header that carries an after-hook delivery's event id, over HTTP and
/// over NATS. The same event may be delivered more than once (after a crash
/// or a timeout); handlers deduplicate by this id.
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
/// The header that carries Parse's `webhookKey` to webhooks.
pub const WEBHOOK_KEY: &str = "X-Parse-Webhook-Key";
/// The request id of the Parse request behind a hook call.
pub const REQUEST_ID: &str = "X-Parse-Request-Id";
/// On the webhook proxy's reply: why the webhook gave no usable answer
/// (connection refused, timeout, HTTP status, a body too large). The reply
/// then has no body.
pub const HOOK_FAILURE: &str = "Oxbase-Hook-Failure";
/// On a dead letter: the attempts made and the last one's error.
pub const ATTEMPTS: &str = "Oxbase-Attempts";
pub const LAST_ERROR: &str = "Oxbase-Last-Error";

/// The triggers Parse runs: around object writes (`beforeSave` ..
/// `afterDelete`), around queries (`beforeFind`, `afterFind`), around
/// log-ins and log-outs (on `_User` and `_Session`), before a password
/// reset mail (on `_User`), around files (on the class [`FILE_CLASS`]),
/// and around LiveQuery: `beforeConnect` (on the class [`CONNECT_CLASS`]),
/// `beforeSubscribe`, and `afterEvent` (Parse's `afterLiveQueryEvent`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriggerName {
    BeforeSave,
    AfterSave,
    BeforeDelete,
    AfterDelete,
    BeforeFind,
    AfterFind,
    BeforeLogin,
    AfterLogin,
    AfterLogout,
    BeforeSaveFile,
    AfterSaveFile,
    BeforeDeleteFile,
    AfterDeleteFile,
    BeforePasswordResetRequest,
    BeforeConnect,
    BeforeSubscribe,
    AfterEvent,
}

/// The class the file triggers are registered on. Parse names it `@File`,
/// which a key-value key cannot hold; `/hooks` accepts both spellings.
pub const FILE_CLASS: &str = "_File";

/// The class `beforeConnect` is registered on. Parse names it `@Connect`,
/// which a key-value key cannot hold; `/hooks` accepts both spellings.
pub const CONNECT_CLASS: &str = "_Connect";

impl TriggerName {
    pub const ALL: [TriggerName; 17] = [
        Self::BeforeSave,
        Self::AfterSave,
        Self::BeforeDelete,
        Self::AfterDelete,
        Self::BeforeFind,
        Self::AfterFind,
        Self::BeforeLogin,
        Self::AfterLogin,
        Self::AfterLogout,
        Self::BeforeSaveFile,
        Self::AfterSaveFile,
        Self::BeforeDeleteFile,
        Self::AfterDeleteFile,
        Self::BeforePasswordResetRequest,
        Self::BeforeConnect,
        Self::BeforeSubscribe,
        Self::AfterEvent,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeSave => "beforeSave",
            Self::AfterSave => "afterSave",
            Self::BeforeDelete => "beforeDelete",
            Self::AfterDelete => "afterDelete",
            Self::BeforeFind => "beforeFind",
            Self::AfterFind => "afterFind",
            Self::BeforeLogin => "beforeLogin",
            Self::AfterLogin => "afterLogin",
            Self::AfterLogout => "afterLogout",
            Self::BeforeSaveFile => "beforeSaveFile",
            Self::AfterSaveFile => "afterSaveFile",
            Self::BeforeDeleteFile => "beforeDeleteFile",
            Self::AfterDeleteFile => "afterDeleteFile",
            Self::BeforePasswordResetRequest => "beforePasswordResetRequest",
            Self::BeforeConnect => "beforeConnect",
            Self::BeforeSubscribe => "beforeSubscribe",
            Self::AfterEvent => "afterEvent",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
    }

    /// The one class this trigger may be registered on, for the triggers
    /// that are not per class.
    pub fn only_class(self) -> Option<&'static str> {
        match self {
            Self::BeforeLogin | Self::AfterLogin | Self::BeforePasswordResetRequest => {
                Some("_User")
            }
            Self::AfterLogout => Some("_Session"),
            Self::BeforeSaveFile
            | Self::AfterSaveFile
            | Self::BeforeDeleteFile
            | Self::AfterDeleteFile => Some(FILE_CLASS),
            Self::BeforeConnect => Some(CONNECT_CLASS),
            _ => None,
        }
    }

    /// The after-hook an object event runs: afterSave for creates and
    /// updates, afterDelete for deletes.
    pub fn after(kind: crate::EventKind) -> Self {
        match kind {
            crate::EventKind::Deleted => Self::AfterDelete,
            _ => Self::AfterSave,
        }
    }
}

impl std::fmt::Display for TriggerName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry of the hook registry, in Parse's `/hooks` shape: a function
/// (`functionName`), a trigger (`className` and `triggerName`) or, as an
/// oxbase extension, a background job's handler (`jobName`), served
/// either by a webhook (`url`) or by a NATS handler (`nats: true`) on
/// [`Subjects::function`](crate::Subjects::function) or
/// [`Subjects::trigger`](crate::Subjects::trigger).
///
/// The registry is the JetStream key-value bucket `<PREFIX>_HOOKS`, keyed
/// `function.<functionName>`, `trigger.<className>.<triggerName>` and
/// `job.<jobName>`, with
/// this JSON as the value. A handler in any language may register itself by
/// putting its entry there; `/hooks` does the same with the master key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookEntry {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger_name: Option<TriggerName>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_name: Option<String>,
    /// The webhook's URL (http or https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// Served by a NATS handler rather than a webhook.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nats: bool,
    /// The handler's rate limit, as a Parse Cloud Code validator's
    /// `rateLimit`. oxbase counts it where Parse Server does, in the API
    /// before the request runs (and in the shared store when
    /// `rate_limit.store = "nats"`), on the hook's route: `/functions/<name>`
    /// for a function; for `beforeSave`, `beforeDelete` and `beforeFind`,
    /// the class's routes with `POST`/`PUT`, `DELETE` and `GET`; `/login`
    /// for `beforeLogin`; `/requestPasswordReset` for
    /// `beforePasswordResetRequest`; `/files` for the file triggers. Other
    /// triggers take none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<HookRateLimit>,
}

/// Parse's `rateLimit` options of a Cloud Code validator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HookRateLimit {
    /// The window, in milliseconds.
    pub request_time_window: u64,
    /// Requests allowed per window; the next ones are refused with 429
    /// `{"code": 100}`.
    pub request_count: u64,
    /// The refusal's message; Parse's "Too many requests." when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_response_message: Option<String>,
    /// The methods counted, instead of the hook's own (see
    /// [`HookEntry::rate_limit`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_methods: Option<RequestMethods>,
    /// Count master-key requests too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_master_key: bool,
    /// Count requests from 127.0.0.1 too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub include_internal_requests: bool,
    #[serde(default)]
    pub zone: RateLimitZone,
}

/// The methods a rate limit counts: a list (`["POST", "PUT"]`) or a regex
/// over the method (`"^(POST|PUT)$"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum RequestMethods {
    List(Vec<String>),
    Pattern(String),
}

/// Whose requests a rate limit counts together.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RateLimitZone {
    /// Everyone's.
    Global,
    /// The client address's.
    #[default]
    Ip,
    /// The signed-in user's; the address's without a session.
    User,
    /// The session token's; the address's without one.
    Session,
}

impl HookEntry {
    /// The registry key of a function.
    pub fn function_key(name: &str) -> String {
        format!("function.{name}")
    }

    /// The registry key of a job's handler.
    pub fn job_key(name: &str) -> String {
        format!("job.{name}")
    }

    /// The registry key of a trigger.
    pub fn trigger_key(class_name: &str, trigger: TriggerName) -> String {
        format!("trigger.{class_name}.{trigger}")
    }
}

/// What a cloud function's handler receives (`POST /functions/<name>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FunctionRequest {
    pub function_name: String,
    /// The request body: the function's parameters.
    pub params: Map<String, Value>,
    #[serde(flatten)]
    pub caller: Caller,
}

/// What an object trigger's handler receives, and the log-in and log-out
/// triggers'.
///
/// - `beforeSave`: `object` is the object as it would be saved (the stored
///   object with the request's changes applied, or the new object), and
///   `original` the stored object on an update.
/// - `beforeDelete`: `object` is the object about to be deleted.
/// - `afterSave`, `afterDelete`: `object` and `original` are those of the
///   object event, and `eventId` is its id (also sent as
///   [`IDEMPOTENCY_KEY`]).
///
/// - `beforeLogin` (class `_User`): `object` is the user whose password
///   was just checked, before a session exists; an error refuses the
///   log-in.
/// - `afterLogin`: `object` is the user, once the session exists; an error
///   fails the log-in's response (as in Parse Server).
/// - `afterLogout` (class `_Session`): `object` is the ended session.
/// - `beforePasswordResetRequest` (class `_User`): `object` is the user a
///   `/requestPasswordReset` names, before the reset mail is sent; an
///   error refuses the request and nothing is mailed.
///
/// `object` and `original` carry `className`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TriggerRequest {
    pub trigger_name: TriggerName,
    pub object: Object,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Object")]
    pub original: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub event_id: Option<String>,
    #[serde(flatten)]
    pub caller: Caller,
}

/// What a `beforeFind` or `afterFind` handler receives, for a query
/// (`GET /classes/<className>`) or a get (`GET /classes/<className>/<id>`,
/// `isGet`), and for a count (`count`).
///
/// `query` is Parse's query in the form `Parse.Query#toJSON()` gives:
/// `where` and, when set, `limit`, `skip`, `order`, `keys`, `include` and
/// `excludeKeys` (the last four comma-separated).
///
/// - `beforeFind`: a reply `{"success": {"query": {...}}}` replaces the
///   whole query (members left out take their defaults); any other success
///   runs the query as asked; an error refuses it.
/// - `afterFind`: `objects` are the results; a reply `{"success": [...]}`
///   replaces them; any other success keeps them; an error fails the find.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FindTriggerRequest {
    pub trigger_name: TriggerName,
    pub class_name: String,
    pub query: Map<String, Value>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub count: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub is_get: bool,
    /// The results, for `afterFind`; each carries `className`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<Vec<Object>>,
    #[serde(flatten)]
    pub caller: Caller,
}

/// What a file trigger's handler receives (class [`FILE_CLASS`]).
///
/// - `beforeSaveFile`: `file` has the name the client gave, its type, and
///   its bytes in `base64` when they are at most [`FILE_BYTES_SHOWN`]. A
///   reply `{"success": {"file": {"name", "base64", "contentType"}}}`
///   replaces what it gives of them; any other success stores the file as
///   sent; an error refuses it.
/// - `afterSaveFile`: `file` has the stored `name` and its `url`; an error
///   reaches the client, although the file is stored (as in Parse Server).
/// - `beforeDeleteFile` (whose error refuses the delete) and
///   `afterDeleteFile`: `file` has `name` and `url`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileTriggerRequest {
    pub trigger_name: TriggerName,
    pub file: FileInfo,
    /// The file's size in bytes, when saving.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
    #[serde(flatten)]
    pub caller: Caller,
}

/// What a LiveQuery trigger's handler receives.
///
/// - `beforeConnect` (class [`CONNECT_CLASS`]), before a client's
///   `connect` is accepted: any success lets the client connect; an error
///   refuses it, and the client gets Parse's
///   `{"op": "error", "code": ..., "error": ..., "reconnect": false}`.
/// - `beforeSubscribe`, before a subscription to the class starts: a reply
///   `{"success": {"query": {"where": {...}, "keys": [...], "watch":
///   [...]}}}` replaces the subscription's query (a member left out means
///   none); any other success subscribes as asked; an error refuses the
///   subscription.
/// - `afterEvent` (Parse's `afterLiveQueryEvent`), once per subscriber
///   before an event is sent to it: a reply `{"success": {"sendEvent":
///   false}}` drops the event for that subscriber; `{"success": {"object":
///   {...}, "original": {...}}}` replaces what it gives of them; any other
///   success sends the event as it is; an error is sent to that client as
///   an `error` op instead of the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LiveQueryTriggerRequest {
    pub trigger_name: TriggerName,
    /// The class subscribed to; `_Connect` for `beforeConnect`.
    pub class_name: String,
    /// Parse's `event`: `connect` for `beforeConnect`, `subscribe` for
    /// `beforeSubscribe`, and for `afterEvent` the event's kind: `create`,
    /// `enter`, `update`, `leave` or `delete`.
    pub event: String,
    /// `beforeSubscribe`: the subscription's query as Parse's
    /// `Parse.Query#toJSON()` has it: `where`, and `keys` and `watch` when
    /// set (arrays of field names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Map<String, Value>")]
    pub query: Option<Map<String, Value>>,
    /// `afterEvent`: the object the event is about; it carries `className`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Object")]
    pub object: Option<Object>,
    /// `afterEvent`, for `update`, `enter` and `leave`: the object before the
    /// write, when the subscriber may read it; it carries `className`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Object")]
    pub original: Option<Object>,
    /// The connected clients of the serving process (Parse's `clients`).
    pub clients: u64,
    /// The subscriptions of the serving process (Parse's `subscriptions`).
    pub subscriptions: u64,
    /// The session token the connection or subscription uses (Parse's
    /// `sessionToken`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub session_token: Option<String>,
    /// `master` is Parse's `useMasterKey`: whether the client connected with
    /// the master key; `user` is the whole `_User` of the session token.
    #[serde(flatten)]
    pub caller: Caller,
}

/// The most bytes of a file that `beforeSaveFile` is shown, so that the
/// request stays well within NATS's default payload limit.
pub const FILE_BYTES_SHOWN: usize = 512 * 1024;

/// A file, as file triggers see it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FileInfo {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The bytes, standard base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
}

/// Who made the request behind a hook call. Members that do not apply are
/// absent.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Caller {
    /// Whether the request used the master key.
    pub master: bool,
    /// The signed-in user: the whole `_User` object for functions and
    /// before-hooks; for after-hooks, which run later from the event, a
    /// pointer (`{"__type":"Pointer","className":"_User","objectId":...}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Object")]
    pub user: Option<Object>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub installation_id: Option<String>,
    /// The request's HTTP headers, lower-case, without the master keys.
    /// Absent for after-hooks.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub headers: Map<String, Value>,
    /// The client's address. Absent for after-hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub ip: Option<String>,
    /// The request id (`X-Parse-Request-Id`, or the one oxbase gave it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub request_id: Option<String>,
    /// Parse's `context`: what the client sent as its cloud context (the JS
    /// SDK's `save(null, {context})`). An afterSave or afterDelete receives
    /// the context of its write, as the beforeSave left it.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub context: Map<String, Value>,
}

/// A handler's answer: `{"success": <result>}`, or `{"error": ...}` where
/// the error is a message or `{"code": <Parse error code>, "message": ...}`.
///
/// - A function's result becomes the client's `{"result": ...}`; an error
///   becomes code 141 (or the code given).
/// - A beforeSave may answer the object to save instead: its members,
///   except `objectId`, `createdAt`, `updatedAt` and `className`, replace
///   the request's (a member left out is not written). Any other success
///   saves the object as it was. An error rejects the write with code 142
///   (or the code given).
/// - A beforeDelete's error rejects the delete the same way.
/// - An after-hook's error counts as a failed delivery, which is retried.
/// - The other triggers' replies are described on [`TriggerRequest`],
///   [`FindTriggerRequest`], [`FileTriggerRequest`] and
///   [`LiveQueryTriggerRequest`].
/// - A beforeSave or beforeDelete may also answer `context`: the context
///   as it left it, which the write's afterSave or afterDelete then
///   receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HookReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HookError>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Map<String, Value>>,
}

/// A handler's error.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum HookError {
    Message(String),
    Coded {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<i64>,
        #[serde(default, alias = "error", skip_serializing_if = "Option::is_none")]
        message: Option<String>,
    },
    /// Any other JSON: its text is the message.
    Other(Value),
}

impl HookError {
    /// The code the handler chose, if it chose one.
    pub fn code(&self) -> Option<i64> {
        match self {
            Self::Coded { code, .. } => *code,
            _ => None,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::Message(message) => message.clone(),
            Self::Coded {
                message: Some(message),
                ..
            } => message.clone(),
            Self::Coded { message: None, .. } => "the hook failed".into(),
            Self::Other(value) => value.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_parse_in_every_shape_parse_webhooks_use() {
        let ok: HookReply = serde_json::from_str(r#"{"success": {"a": 1}}"#).unwrap();
        assert_eq!(ok.success, Some(serde_json::json!({"a": 1})));
        assert!(ok.error.is_none());
        let plain: HookReply = serde_json::from_str(r#"{"error": "nope"}"#).unwrap();
        let plain = plain.error.unwrap();
        assert_eq!((plain.code(), plain.message().as_str()), (None, "nope"));
        let coded: HookReply =
            serde_json::from_str(r#"{"error": {"code": 137, "message": "taken"}}"#).unwrap();
        let coded = coded.error.unwrap();
        assert_eq!(
            (coded.code(), coded.message().as_str()),
            (Some(137), "taken")
        );
        let other: HookReply = serde_json::from_str(r#"{"error": [1]}"#).unwrap();
        assert_eq!(other.error.unwrap().message(), "[1]");
    }

    #[test]
    fn requests_flatten_the_caller_as_parse_webhooks_do() {
        let request = FunctionRequest {
            function_name: "hello".into(),
            params: Map::new(),
            caller: Caller {
                master: true,
                installation_id: Some("i1".into()),
                ..Caller::default()
            },
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            serde_json::json!({
                "functionName": "hello",
                "params": {},
                "master": true,
                "installationId": "i1"
            })
        );
    }

    #[test]
    fn trigger_names_round_trip() {
        for trigger in TriggerName::ALL {
            assert_eq!(TriggerName::parse(trigger.as_str()), Some(trigger));
        }
        assert_eq!(TriggerName::parse("beforeFnd"), None);
        assert_eq!(
            HookEntry::trigger_key("Game", TriggerName::BeforeSave),
            "trigger.Game.beforeSave"
        );
    }

    #[test]
    fn live_query_triggers_have_parse_names_and_connect_is_one_class() {
        let names = [
            TriggerName::BeforeConnect,
            TriggerName::BeforeSubscribe,
            TriggerName::AfterEvent,
        ]
        .map(TriggerName::as_str);
        assert_eq!(names, ["beforeConnect", "beforeSubscribe", "afterEvent"]);
        assert_eq!(TriggerName::BeforeConnect.only_class(), Some(CONNECT_CLASS));
        assert_eq!(TriggerName::BeforeSubscribe.only_class(), None);
        assert_eq!(TriggerName::AfterEvent.only_class(), None);
        assert_eq!(
            HookEntry::trigger_key(CONNECT_CLASS, TriggerName::BeforeConnect),
            "trigger._Connect.beforeConnect"
        );
    }

    #[test]
    fn live_query_requests_round_trip_in_parse_names() {
        let object = serde_json::json!({"objectId": "g1", "className": "Game", "score": 1});
        let request = LiveQueryTriggerRequest {
            trigger_name: TriggerName::AfterEvent,
            class_name: "Game".into(),
            event: "update".into(),
            query: None,
            object: object.as_object().cloned(),
            original: object.as_object().cloned(),
            clients: 2,
            subscriptions: 3,
            session_token: Some("r:t".into()),
            caller: Caller {
                installation_id: Some("i1".into()),
                ..Caller::default()
            },
        };
        let json = serde_json::to_value(&request).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "triggerName": "afterEvent",
                "className": "Game",
                "event": "update",
                "object": object,
                "original": object,
                "clients": 2,
                "subscriptions": 3,
                "sessionToken": "r:t",
                "master": false,
                "installationId": "i1"
            })
        );
        assert_eq!(
            serde_json::from_value::<LiveQueryTriggerRequest>(json).unwrap(),
            request
        );

        let subscribe: LiveQueryTriggerRequest = serde_json::from_value(serde_json::json!({
            "triggerName": "beforeSubscribe",
            "className": "Game",
            "event": "subscribe",
            "query": {"where": {"score": {"$gt": 1}}, "keys": ["score"]},
            "clients": 1,
            "subscriptions": 0,
            "master": true
        }))
        .unwrap();
        assert_eq!(subscribe.trigger_name, TriggerName::BeforeSubscribe);
        assert_eq!(
            subscribe.query.unwrap()["keys"],
            serde_json::json!(["score"])
        );
        assert!(subscribe.object.is_none() && subscribe.session_token.is_none());
        assert!(subscribe.caller.master);
    }
}
