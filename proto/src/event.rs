//! Object events: CloudEvents 1.0 in structured JSON mode.

use chrono::{DateTime, SubsecRound, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A Parse object in the REST API's JSON form, as a `GET` with the master key
/// returns it: `objectId`, `createdAt`, `updatedAt`, `ACL` and the fields.
pub type Object = Map<String, Value>;

/// What happened to an object. Serializes as the CloudEvents `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum EventKind {
    #[serde(rename = "oxbase.object.created")]
    Created,
    #[serde(rename = "oxbase.object.updated")]
    Updated,
    #[serde(rename = "oxbase.object.deleted")]
    Deleted,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [Self::Created, Self::Updated, Self::Deleted];

    /// The CloudEvents `type`: `oxbase.object.<created|updated|deleted>`.
    pub fn event_type(self) -> &'static str {
        match self {
            Self::Created => "oxbase.object.created",
            Self::Updated => "oxbase.object.updated",
            Self::Deleted => "oxbase.object.deleted",
        }
    }

    /// The last token of the event's subject: `created`, `updated` or `deleted`.
    pub fn subject_token(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Updated => "updated",
            Self::Deleted => "deleted",
        }
    }
}

/// The only CloudEvents version oxbase speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum SpecVersion {
    #[default]
    #[serde(rename = "1.0")]
    V1_0,
}

/// The media type of `data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum DataContentType {
    #[default]
    #[serde(rename = "application/json")]
    Json,
}

/// An object event: a CloudEvents 1.0 event in structured JSON mode, published
/// as the message body with `Nats-Msg-Id` set to `id`.
///
/// Consumers should ignore members they do not know: new ones may be added.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Event {
    #[serde(rename = "specversion")]
    pub spec_version: SpecVersion,
    #[serde(rename = "type")]
    pub kind: EventKind,
    /// The deployment that produced the event, `oxbase://<appId>`.
    pub source: String,
    /// Unique per event: a UUID v7, so ids sort by creation time (to the
    /// millisecond across processes, strictly within one). A redelivered or
    /// republished event keeps its id.
    pub id: String,
    /// When the write happened, RFC 3339 in UTC with milliseconds.
    #[serde(
        serialize_with = "rfc3339_millis::serialize",
        deserialize_with = "rfc3339_millis::deserialize"
    )]
    pub time: DateTime<Utc>,
    #[serde(rename = "datacontenttype")]
    pub data_content_type: DataContentType,
    /// `<className>/<objectId>`.
    pub subject: String,
    /// The W3C trace context of the write (the CloudEvents
    /// distributed-tracing extension): the span that made it, when the
    /// process that made it exports traces. Delivered messages also carry
    /// it as a `traceparent` header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub traceparent: Option<String>,
    pub data: ObjectEvent,
}

/// The `data` of an object event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectEvent {
    /// The Parse class, such as `GameScore` or `_User`.
    pub class_name: String,
    /// The object after the write; for a delete, the object as it was.
    pub object: Object,
    /// The object before the write: present for updates and deletes, absent
    /// for creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Object")]
    pub original: Option<Object>,
    pub context: RequestContext,
}

/// Who made the write. Members that do not apply are absent, never `null`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RequestContext {
    /// The `objectId` of the `_User` whose session made the write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub user_id: Option<String>,
    /// The `X-Parse-Installation-Id` of the request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub installation_id: Option<String>,
    /// Whether the write was made with the master key.
    pub master: bool,
    /// The `X-Parse-Request-Id` of the request, or the id oxbase gave it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub request_id: Option<String>,
    /// Present (and true) when the delete was part of purging the whole
    /// class (`DELETE /purge`), which runs no afterDelete trigger, as in
    /// Parse Server.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub purge: bool,
    /// Parse's cloud `context` of the write, as its beforeSave left it;
    /// absent when empty. The after-hooks receive it as `context`.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub cloud_context: serde_json::Map<String, serde_json::Value>,
}

impl Event {
    /// An event with a fresh id, happening now.
    pub fn new(source: impl Into<String>, kind: EventKind, data: ObjectEvent) -> Self {
        Self::with_id_and_time(
            source,
            kind,
            data,
            uuid::Uuid::now_v7().to_string(),
            Utc::now(),
        )
    }

    /// An event with a given id and time, for replaying a stored event and for
    /// tests. `time` is cut to milliseconds, the precision it has on the wire.
    pub fn with_id_and_time(
        source: impl Into<String>,
        kind: EventKind,
        data: ObjectEvent,
        id: impl Into<String>,
        time: DateTime<Utc>,
    ) -> Self {
        let object_id = data
            .object
            .get("objectId")
            .and_then(Value::as_str)
            .unwrap_or_default();
        Self {
            spec_version: SpecVersion::V1_0,
            kind,
            source: source.into(),
            id: id.into(),
            time: time.trunc_subsecs(3),
            data_content_type: DataContentType::Json,
            subject: format!("{}/{object_id}", data.class_name),
            traceparent: None,
            data,
        }
    }

    /// The JSON of an event whose `data` is already encoded, byte for byte
    /// what serializing the whole [`Event`] gives. An outbox can then store
    /// `data` alone and add the envelope when it publishes.
    pub fn encode_with_raw_data(
        kind: EventKind,
        source: &str,
        id: &str,
        time: DateTime<Utc>,
        subject: &str,
        traceparent: Option<&str>,
        data: &serde_json::value::RawValue,
    ) -> serde_json::Result<String> {
        #[derive(Serialize)]
        struct Raw<'a> {
            specversion: SpecVersion,
            #[serde(rename = "type")]
            kind: EventKind,
            source: &'a str,
            id: &'a str,
            #[serde(serialize_with = "rfc3339_millis::serialize")]
            time: DateTime<Utc>,
            datacontenttype: DataContentType,
            subject: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            traceparent: Option<&'a str>,
            data: &'a serde_json::value::RawValue,
        }
        serde_json::to_string(&Raw {
            specversion: SpecVersion::V1_0,
            kind,
            source,
            id,
            time: time.trunc_subsecs(3),
            datacontenttype: DataContentType::Json,
            subject,
            traceparent,
            data,
        })
    }

    /// The `source` of a deployment: `oxbase://<appId>`, with anything but
    /// URI-unreserved characters in the app id percent-encoded.
    pub fn source_for_app(app_id: &str) -> String {
        let mut source = String::from("oxbase://");
        for byte in app_id.bytes() {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                source.push(char::from(byte));
            } else {
                source.push_str(&format!("%{byte:02X}"));
            }
        }
        source
    }
}

mod rfc3339_millis {
    use chrono::{DateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(time: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&time.to_rfc3339_opts(SecondsFormat::Millis, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|time| time.with_timezone(&Utc))
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn object(value: Value) -> Object {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    fn update() -> ObjectEvent {
        ObjectEvent {
            class_name: "GameScore".into(),
            object: object(json!({
                "objectId": "xWMyZ4YEGZ",
                "score": 1338,
                "createdAt": "2024-05-01T12:00:00.000Z",
                "updatedAt": "2024-05-01T12:30:00.000Z",
            })),
            original: Some(object(json!({
                "objectId": "xWMyZ4YEGZ",
                "score": 1337,
                "createdAt": "2024-05-01T12:00:00.000Z",
                "updatedAt": "2024-05-01T12:00:00.000Z",
            }))),
            context: RequestContext {
                user_id: Some("u1".into()),
                installation_id: None,
                master: false,
                request_id: Some("req-1".into()),
                ..RequestContext::default()
            },
        }
    }

    #[test]
    fn an_event_with_raw_data_encodes_as_the_whole_event() {
        let mut event = Event::new("oxbase://app", EventKind::Updated, update());
        for traceparent in [
            None,
            Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"),
        ] {
            event.traceparent = traceparent.map(str::to_owned);
            let data = serde_json::value::to_raw_value(&event.data).unwrap();
            let raw = Event::encode_with_raw_data(
                event.kind,
                &event.source,
                &event.id,
                event.time,
                &event.subject,
                traceparent,
                &data,
            )
            .unwrap();
            assert_eq!(raw, serde_json::to_string(&event).unwrap());
        }
    }

    #[test]
    fn the_trace_context_is_the_cloud_events_tracing_extension() {
        let mut event = Event::new("oxbase://app", EventKind::Created, update());
        assert!(
            serde_json::to_value(&event)
                .unwrap()
                .get("traceparent")
                .is_none()
        );
        let traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        event.traceparent = Some(traceparent.into());
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["traceparent"], traceparent);
        assert_eq!(serde_json::from_value::<Event>(json).unwrap(), event);
    }

    #[test]
    fn an_update_serializes_to_a_structured_cloud_event() {
        let time = DateTime::parse_from_rfc3339("2024-05-01T12:30:00.123456Z")
            .unwrap()
            .with_timezone(&Utc);
        let event = Event::with_id_and_time(
            "oxbase://myApp",
            EventKind::Updated,
            update(),
            "0190a5a0-0000-7000-8000-000000000001",
            time,
        );
        assert_eq!(
            serde_json::to_value(&event).unwrap(),
            json!({
                "specversion": "1.0",
                "type": "oxbase.object.updated",
                "source": "oxbase://myApp",
                "id": "0190a5a0-0000-7000-8000-000000000001",
                "time": "2024-05-01T12:30:00.123Z",
                "datacontenttype": "application/json",
                "subject": "GameScore/xWMyZ4YEGZ",
                "data": {
                    "className": "GameScore",
                    "object": {
                        "objectId": "xWMyZ4YEGZ",
                        "score": 1338,
                        "createdAt": "2024-05-01T12:00:00.000Z",
                        "updatedAt": "2024-05-01T12:30:00.000Z",
                    },
                    "original": {
                        "objectId": "xWMyZ4YEGZ",
                        "score": 1337,
                        "createdAt": "2024-05-01T12:00:00.000Z",
                        "updatedAt": "2024-05-01T12:00:00.000Z",
                    },
                    "context": {"userId": "u1", "master": false, "requestId": "req-1"},
                },
            })
        );
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }

    #[test]
    fn a_create_has_no_original() {
        let data = ObjectEvent {
            original: None,
            context: RequestContext {
                master: true,
                ..RequestContext::default()
            },
            ..update()
        };
        let event = Event::new("oxbase://myApp", EventKind::Created, data);
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(json["type"], "oxbase.object.created");
        assert!(json["data"].get("original").is_none(), "{json}");
        assert_eq!(json["data"]["context"], json!({"master": true}));
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
    }

    #[test]
    fn new_events_get_distinct_time_ordered_ids_and_the_current_time() {
        let before = Utc::now().trunc_subsecs(3);
        let events: Vec<Event> = (0..100)
            .map(|_| Event::new("oxbase://a", EventKind::Deleted, update()))
            .collect();
        let after = Utc::now();
        for pair in events.windows(2) {
            assert!(pair[0].id < pair[1].id, "{} !< {}", pair[0].id, pair[1].id);
        }
        for event in &events {
            assert!(uuid::Uuid::parse_str(&event.id).unwrap().get_version_num() == 7);
            assert!(before <= event.time && event.time <= after);
            assert_eq!(event.subject, "GameScore/xWMyZ4YEGZ");
        }
    }

    #[test]
    fn time_is_written_in_utc_with_milliseconds() {
        let data = update();
        let time = DateTime::parse_from_rfc3339("2024-05-01T14:30:00+02:00").unwrap();
        let event = Event::with_id_and_time("s", EventKind::Updated, data, "i", time.into());
        assert_eq!(
            serde_json::to_value(&event).unwrap()["time"],
            "2024-05-01T12:30:00.000Z"
        );
    }

    #[test]
    fn other_spec_versions_are_rejected() {
        let mut json = serde_json::to_value(Event::new("s", EventKind::Created, update())).unwrap();
        json["specversion"] = "0.3".into();
        assert!(serde_json::from_value::<Event>(json).is_err());
    }

    #[test]
    fn kinds_name_their_type_and_subject_token() {
        for kind in EventKind::ALL {
            assert_eq!(serde_json::to_value(kind).unwrap(), kind.event_type());
            assert_eq!(
                kind.event_type(),
                format!("oxbase.object.{}", kind.subject_token())
            );
        }
        assert_eq!(EventKind::Deleted.subject_token(), "deleted");
    }

    #[test]
    fn source_names_the_app_as_a_uri() {
        assert_eq!(Event::source_for_app("myApp-1"), "oxbase://myApp-1");
        assert_eq!(Event::source_for_app("my app/1"), "oxbase://my%20app%2F1");
    }
}
