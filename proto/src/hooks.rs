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
/// On a message to the webhook proxy (`<prefix>.webhooks.>`): the URL to
/// call.
pub const WEBHOOK_URL: &str = "Oxbase-Webhook-Url";
/// On the webhook proxy's reply: why the webhook gave no usable answer
/// (connection refused, timeout, HTTP status, a body too large). The reply
/// then has no body.
pub const HOOK_FAILURE: &str = "Oxbase-Hook-Failure";
/// On a dead letter: the attempts made and the last one's error.
pub const ATTEMPTS: &str = "Oxbase-Attempts";
pub const LAST_ERROR: &str = "Oxbase-Last-Error";

/// The four triggers Parse runs around object writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum TriggerName {
    BeforeSave,
    AfterSave,
    BeforeDelete,
    AfterDelete,
}

impl TriggerName {
    pub const ALL: [TriggerName; 4] = [
        Self::BeforeSave,
        Self::AfterSave,
        Self::BeforeDelete,
        Self::AfterDelete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::BeforeSave => "beforeSave",
            Self::AfterSave => "afterSave",
            Self::BeforeDelete => "beforeDelete",
            Self::AfterDelete => "afterDelete",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == name)
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

/// What a trigger's handler receives.
///
/// - `beforeSave`: `object` is the object as it would be saved (the stored
///   object with the request's changes applied, or the new object), and
///   `original` the stored object on an update.
/// - `beforeDelete`: `object` is the object about to be deleted.
/// - `afterSave`, `afterDelete`: `object` and `original` are those of the
///   object event, and `eventId` is its id (also sent as
///   [`IDEMPOTENCY_KEY`]).
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct HookReply {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub success: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<HookError>,
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
        assert_eq!(TriggerName::parse("beforeFind"), None);
        assert_eq!(
            HookEntry::trigger_key("Game", TriggerName::BeforeSave),
            "trigger.Game.beforeSave"
        );
    }
}
