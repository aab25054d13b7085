//! Parse's LiveQuery protocol: the messages a client sends, checked as
//! Parse Server's request schema checks them, and the ones it is sent.

use serde_json::{Map, Number, Value, json};

/// Parse's LiveQuery error codes (its `Client.pushError` calls).
pub mod code {
    /// The message does not fit the protocol.
    pub const BAD_MESSAGE: i32 = 1;
    /// `subscribe`, `update` or `unsubscribe` before `connect`, or an
    /// unknown subscription.
    pub const NOT_CONNECTED: i32 = 2;
    /// Parse's internal error: the server cannot take the client now; the
    /// SDK tries again.
    pub const UNAVAILABLE: i32 = 1;
    /// The keys of `connect` are not the app's.
    pub const BAD_KEYS: i32 = 4;
    /// oxbase: a resume from an event the stream no longer keeps (Parse's
    /// `CACHE_MISS`).
    pub const RESUME_GAP: i32 = 120;
}

/// A subscription's id, as the client numbered it. Parse's schema takes
/// any JSON number, and the replies echo it as sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    pub fn new(number: &Number) -> Self {
        Self(number.to_string())
    }

    /// The id as a JSON number, as it was sent.
    pub fn as_json(&self) -> Value {
        self.0
            .parse::<Number>()
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// What `connect` carries.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Connect {
    pub application_id: String,
    pub master_key: Option<String>,
    pub javascript_key: Option<String>,
    pub client_key: Option<String>,
    pub rest_api_key: Option<String>,
    pub windows_key: Option<String>,
    pub session_token: Option<String>,
    pub installation_id: Option<String>,
}

/// The query of `subscribe` or `update`.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveQuery {
    pub class_name: String,
    pub where_: Map<String, Value>,
    /// Only these fields (with `objectId`, `createdAt`, `updatedAt`,
    /// `ACL` and `className`) are sent.
    pub keys: Option<Vec<String>>,
    /// Updates and creates are sent only when one of these changed.
    pub watch: Option<Vec<String>>,
}

impl LiveQuery {
    /// The query as `Parse.Query#toJSON()` has it, for beforeSubscribe.
    pub fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("className".into(), Value::from(self.class_name.clone()));
        out.insert("where".into(), Value::Object(self.where_.clone()));
        if let Some(keys) = &self.keys {
            out.insert("keys".into(), json!(keys));
        }
        if let Some(watch) = &self.watch {
            out.insert("watch".into(), json!(watch));
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Subscribe {
    pub request_id: RequestId,
    pub query: LiveQuery,
    pub session_token: Option<String>,
    /// oxbase's extension: the `eventId` of the last event the client
    /// received, so it is sent every matching event since, then the live
    /// ones, with none missed and none twice.
    pub last_event_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Connect(Connect),
    Subscribe(Subscribe),
    /// Replaces a subscription's query (Parse's `update`).
    Update(Subscribe),
    Unsubscribe(RequestId),
}

/// Why a client's message was refused: Parse's code 1 with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadMessage(pub String);

fn bad(message: impl Into<String>) -> BadMessage {
    BadMessage(message.into())
}

/// Reads one text frame.
pub fn parse_client_message(text: &str) -> Result<ClientMessage, BadMessage> {
    let value: Value =
        serde_json::from_str(text).map_err(|err| bad(format!("Invalid JSON: {err}")))?;
    let Value::Object(mut message) = value else {
        return Err(bad("Invalid type: expected object"));
    };
    let op = match message.get("op") {
        Some(Value::String(op)) => op.clone(),
        Some(_) => return Err(bad("Invalid type for op: expected string")),
        None => return Err(bad("Missing required property: op")),
    };
    match op.as_str() {
        "connect" => connect(&mut message).map(ClientMessage::Connect),
        "subscribe" => subscribe(&mut message).map(ClientMessage::Subscribe),
        "update" => subscribe(&mut message).map(ClientMessage::Update),
        "unsubscribe" => {
            only(&message, &["op", "requestId"])?;
            request_id(&message).map(ClientMessage::Unsubscribe)
        }
        other => Err(bad(format!("No enum match for: \"{other}\""))),
    }
}

/// Parse's schemas allow no other properties.
fn only(message: &Map<String, Value>, allowed: &[&str]) -> Result<(), BadMessage> {
    match message.keys().find(|key| !allowed.contains(&key.as_str())) {
        Some(key) => Err(bad(format!("Unknown property (not in schema): {key}"))),
        None => Ok(()),
    }
}

fn optional_string(message: &Map<String, Value>, key: &str) -> Result<Option<String>, BadMessage> {
    match message.get(key) {
        None => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(bad(format!("Invalid type for {key}: expected string"))),
    }
}

fn connect(message: &mut Map<String, Value>) -> Result<Connect, BadMessage> {
    only(
        message,
        &[
            "op",
            "applicationId",
            "javascriptKey",
            "masterKey",
            "clientKey",
            "windowsKey",
            "restAPIKey",
            "sessionToken",
            "installationId",
        ],
    )?;
    Ok(Connect {
        application_id: optional_string(message, "applicationId")?
            .ok_or_else(|| bad("Missing required property: applicationId"))?,
        master_key: optional_string(message, "masterKey")?,
        javascript_key: optional_string(message, "javascriptKey")?,
        client_key: optional_string(message, "clientKey")?,
        rest_api_key: optional_string(message, "restAPIKey")?,
        windows_key: optional_string(message, "windowsKey")?,
        session_token: optional_string(message, "sessionToken")?,
        installation_id: optional_string(message, "installationId")?,
    })
}

fn request_id(message: &Map<String, Value>) -> Result<RequestId, BadMessage> {
    match message.get("requestId") {
        Some(Value::Number(number)) => Ok(RequestId::new(number)),
        Some(_) => Err(bad("Invalid type for requestId: expected number")),
        None => Err(bad("Missing required property: requestId")),
    }
}

fn subscribe(message: &mut Map<String, Value>) -> Result<Subscribe, BadMessage> {
    only(
        message,
        &["op", "requestId", "query", "sessionToken", "lastEventId"],
    )?;
    let request_id = request_id(message)?;
    let query = match message.remove("query") {
        Some(Value::Object(query)) => live_query(query)?,
        Some(_) => return Err(bad("Invalid type for query: expected object")),
        None => return Err(bad("Missing required property: query")),
    };
    let last_event_id = match optional_string(message, "lastEventId")? {
        Some(id) => Some(
            id.parse::<u64>()
                .map_err(|_| bad("Invalid lastEventId: expected an eventId"))?,
        ),
        None => None,
    };
    Ok(Subscribe {
        request_id,
        query,
        session_token: optional_string(message, "sessionToken")?,
        last_event_id,
    })
}

fn live_query(mut query: Map<String, Value>) -> Result<LiveQuery, BadMessage> {
    // Parse 9 dropped `fields` for `keys`; its schema refuses it.
    only(&query, &["className", "where", "keys", "watch"])?;
    let class_name = match query.remove("className") {
        Some(Value::String(name)) => name,
        Some(_) => return Err(bad("Invalid type for className: expected string")),
        None => return Err(bad("Missing required property: className")),
    };
    let where_ = match query.remove("where") {
        Some(Value::Object(where_)) => where_,
        Some(_) => return Err(bad("Invalid type for where: expected object")),
        None => return Err(bad("Missing required property: where")),
    };
    Ok(LiveQuery {
        class_name,
        where_,
        keys: field_list(query.get("keys"), "keys")?,
        watch: field_list(query.get("watch"), "watch")?,
    })
}

/// A non-empty list of distinct strings.
fn field_list(value: Option<&Value>, name: &str) -> Result<Option<Vec<String>>, BadMessage> {
    let Some(value) = value else {
        return Ok(None);
    };
    let Some(items) = value.as_array() else {
        return Err(bad(format!("Invalid type for {name}: expected array")));
    };
    if items.is_empty() {
        return Err(bad(format!("Array is too short for {name}: minimum 1")));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Some(text) = item.as_str() else {
            return Err(bad(format!("Invalid type in {name}: expected string")));
        };
        if out.iter().any(|seen| seen == text) {
            return Err(bad(format!("Array items are not unique in {name}")));
        }
        out.push(text.to_owned());
    }
    Ok(Some(out))
}

/// The kinds of event a subscription is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventOp {
    Create,
    Enter,
    Update,
    Leave,
    Delete,
}

impl EventOp {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOp::Create => "create",
            EventOp::Enter => "enter",
            EventOp::Update => "update",
            EventOp::Leave => "leave",
            EventOp::Delete => "delete",
        }
    }
}

/// The replies that echo the client: `connected`, `subscribed`,
/// `unsubscribed`.
pub fn reply(
    op: &str,
    client_id: &str,
    installation_id: Option<&str>,
    request_id: Option<&RequestId>,
) -> String {
    let mut out = Map::new();
    out.insert("op".into(), Value::from(op));
    out.insert("clientId".into(), Value::from(client_id));
    if let Some(installation_id) = installation_id {
        out.insert("installationId".into(), Value::from(installation_id));
    }
    if let Some(request_id) = request_id {
        out.insert("requestId".into(), request_id.as_json());
    }
    Value::Object(out).to_string()
}

/// One event for one subscription, with oxbase's `eventId` (its position
/// in the event stream) for resuming.
pub struct EventMessage<'a> {
    pub op: EventOp,
    pub client_id: &'a str,
    pub installation_id: Option<&'a str>,
    pub request_id: &'a RequestId,
    pub event_id: u64,
    pub object: Value,
    pub original: Option<Value>,
}

impl EventMessage<'_> {
    pub fn to_text(self) -> String {
        let mut out = Map::new();
        out.insert("op".into(), Value::from(self.op.as_str()));
        out.insert("clientId".into(), Value::from(self.client_id));
        if let Some(installation_id) = self.installation_id {
            out.insert("installationId".into(), Value::from(installation_id));
        }
        out.insert("requestId".into(), self.request_id.as_json());
        out.insert("eventId".into(), Value::from(self.event_id.to_string()));
        out.insert("object".into(), self.object);
        if let Some(original) = self.original {
            out.insert("original".into(), original);
        }
        Value::Object(out).to_string()
    }
}

/// Parse's `error` message. `reconnect` tells the SDK whether to try
/// again.
pub fn error(code: i32, message: &str, reconnect: bool, request_id: Option<&RequestId>) -> String {
    json!({
        "op": "error",
        "error": message,
        "code": code,
        "reconnect": reconnect,
        "requestId": request_id.map_or(Value::Null, RequestId::as_json),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: Value) -> Result<ClientMessage, BadMessage> {
        parse_client_message(&value.to_string())
    }

    #[test]
    fn connect_needs_the_app_id_and_known_keys_only() {
        let ok = parse(json!({"op": "connect", "applicationId": "app", "sessionToken": "r:1"}));
        assert_eq!(
            ok,
            Ok(ClientMessage::Connect(Connect {
                application_id: "app".into(),
                session_token: Some("r:1".into()),
                ..Connect::default()
            }))
        );
        assert!(parse(json!({"op": "connect"})).is_err());
        assert!(parse(json!({"op": "connect", "applicationId": 1})).is_err());
        assert!(parse(json!({"op": "connect", "applicationId": "a", "x": 1})).is_err());
    }

    #[test]
    fn subscribe_is_checked_as_parse_checks_it() {
        let ok = parse(json!({
            "op": "subscribe", "requestId": 1,
            "query": {"className": "Game", "where": {"a": 1}, "keys": ["a"], "watch": ["b"]},
            "sessionToken": "r:1", "lastEventId": "42"
        }))
        .unwrap();
        let ClientMessage::Subscribe(sub) = ok else {
            panic!("not a subscribe: {ok:?}")
        };
        assert_eq!(sub.request_id.as_json(), json!(1));
        assert_eq!(sub.query.class_name, "Game");
        assert_eq!(sub.query.keys.as_deref(), Some(&["a".to_owned()][..]));
        assert_eq!(sub.query.watch.as_deref(), Some(&["b".to_owned()][..]));
        assert_eq!(sub.last_event_id, Some(42));
        assert_eq!(sub.query.to_json()["where"], json!({"a": 1}));

        let refused = [
            json!({"op": "subscribe", "query": {"className": "A", "where": {}}}),
            json!({"op": "subscribe", "requestId": "1", "query": {"className": "A", "where": {}}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"where": {}}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A"}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": []}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}, "fields": ["a"]}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}, "keys": []}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}, "keys": ["a", "a"]}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}, "watch": [1]}}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}}, "lastEventId": "x"}),
            json!({"op": "subscribe", "requestId": 1, "query": {"className": "A", "where": {}}, "other": 1}),
        ];
        for message in refused {
            assert!(parse(message.clone()).is_err(), "accepted {message}");
        }
    }

    #[test]
    fn other_messages() {
        assert_eq!(
            parse(json!({"op": "unsubscribe", "requestId": 2.5})),
            Ok(ClientMessage::Unsubscribe(RequestId::new(
                &Number::from_f64(2.5).unwrap()
            )))
        );
        assert!(matches!(
            parse(
                json!({"op": "update", "requestId": 1, "query": {"className": "A", "where": {}}})
            ),
            Ok(ClientMessage::Update(_))
        ));
        assert!(parse(json!({"op": "dance"})).is_err());
        assert!(parse(json!({"requestId": 1})).is_err());
        assert!(parse_client_message("not json").is_err());
        assert!(parse_client_message("[1]").is_err());
    }

    #[test]
    fn replies_echo_the_request_id() {
        let id = RequestId::new(&Number::from(7));
        let text = reply("subscribed", "c1", None, Some(&id));
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"op": "subscribed", "clientId": "c1", "requestId": 7})
        );
        let text = error(code::BAD_KEYS, "Key in request is not valid", true, None);
        assert_eq!(
            serde_json::from_str::<Value>(&text).unwrap(),
            json!({"op": "error", "error": "Key in request is not valid", "code": 4, "reconnect": true, "requestId": null})
        );
    }
}
