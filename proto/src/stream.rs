//! The JetStream streams oxbase services expect, as plain data: each service
//! maps a spec onto its NATS client's stream config, creates or updates the
//! stream at start, and fails to start on a difference it cannot update.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::subjects::Subjects;

/// Where JetStream keeps a stream's messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Storage {
    File,
    Memory,
}

/// The tunable limits of the event stream, for the services' config file
/// (`[events]` or wherever a service embeds it). Zero and `-1` mean
/// "no limit" exactly as they do in JetStream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventStreamSettings {
    /// Servers holding a copy of each event: 1 on a single server, 3 in a
    /// cluster so that losing one server loses nothing.
    pub replicas: usize,
    /// Events older than this are removed; 0 keeps them until another limit
    /// applies.
    pub max_age_secs: u64,
    /// Once the stream holds this many bytes, the oldest events are removed;
    /// -1 for no cap.
    pub max_bytes: i64,
    /// Once the stream holds this many events, the oldest are removed; -1
    /// for no cap.
    pub max_msgs: i64,
    /// A publish repeating the `Nats-Msg-Id` of one accepted this long ago or
    /// less is dropped. It must outlast the time an outbox relay can take to
    /// retry a publish whose ack it never saw, including a lease takeover by
    /// another process.
    pub duplicate_window_secs: u64,
}

impl Default for EventStreamSettings {
    fn default() -> Self {
        Self {
            replicas: 1,
            max_age_secs: 7 * 24 * 3600,
            // JetStream reserves a stream's byte cap against the server's
            // storage when the stream is created, so a fixed default cap
            // would fail to start on a small disk. Age bounds the stream.
            max_bytes: -1,
            max_msgs: -1,
            duplicate_window_secs: 120,
        }
    }
}

/// The stream every object event lands in.
///
/// Retention is JetStream's default, `limits`, with `discard: old`: several
/// independent consumers (triggers, outside subscribers) read the same
/// events, so an event leaves the stream only through the limits here,
/// never by being consumed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventStreamSpec {
    /// `<PREFIX>_EVENTS`: see [`stream_name`].
    pub name: String,
    pub subjects: Vec<String>,
    pub storage: Storage,
    pub replicas: usize,
    /// [`Duration::ZERO`] for no limit.
    pub max_age: Duration,
    /// -1 for no limit.
    pub max_bytes: i64,
    /// -1 for no limit.
    pub max_msgs: i64,
    pub duplicate_window: Duration,
}

impl EventStreamSpec {
    pub fn new(subjects: &Subjects, settings: &EventStreamSettings) -> Self {
        Self {
            name: stream_name(subjects, "EVENTS"),
            subjects: vec![subjects.events_wildcard()],
            storage: Storage::File,
            replicas: settings.replicas,
            max_age: Duration::from_secs(settings.max_age_secs),
            max_bytes: settings.max_bytes,
            max_msgs: settings.max_msgs,
            duplicate_window: Duration::from_secs(settings.duplicate_window_secs),
        }
    }
}

/// A stream's name: the prefix in upper case with each `.` turned into `_`
/// (stream names cannot hold dots), then `_` and the stream's role, so
/// prefix `oxbase` names `OXBASE_EVENTS` and `acme.prod` names
/// `ACME_PROD_EVENTS`. Prefixes that differ only in case or in `.` against
/// `_` share stream names, so deployments sharing one NATS account must not
/// use such pairs.
pub fn stream_name(subjects: &Subjects, role: &str) -> String {
    format!(
        "{}_{role}",
        subjects.prefix().to_ascii_uppercase().replace('.', "_")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_spec_is_a_week_of_events_on_file_with_one_replica() {
        let spec = EventStreamSpec::new(&Subjects::default(), &EventStreamSettings::default());
        assert_eq!(
            spec,
            EventStreamSpec {
                name: "OXBASE_EVENTS".into(),
                subjects: vec!["oxbase.events.>".into()],
                storage: Storage::File,
                replicas: 1,
                max_age: Duration::from_secs(7 * 24 * 3600),
                max_bytes: -1,
                max_msgs: -1,
                duplicate_window: Duration::from_secs(120),
            }
        );
    }

    #[test]
    fn spec_follows_prefix_and_settings() {
        let subjects = Subjects::new("acme.prod-eu").unwrap();
        let settings = EventStreamSettings {
            replicas: 3,
            max_age_secs: 0,
            max_bytes: 10 << 30,
            max_msgs: 1_000_000,
            duplicate_window_secs: 300,
        };
        let spec = EventStreamSpec::new(&subjects, &settings);
        assert_eq!(spec.name, "ACME_PROD-EU_EVENTS");
        assert_eq!(spec.subjects, ["acme.prod-eu.events.>"]);
        assert_eq!(spec.storage, Storage::File);
        assert_eq!(spec.replicas, 3);
        assert_eq!(spec.max_age, Duration::ZERO);
        assert_eq!(spec.max_bytes, 10 << 30);
        assert_eq!(spec.max_msgs, 1_000_000);
        assert_eq!(spec.duplicate_window, Duration::from_secs(300));
    }

    #[test]
    fn settings_deserialize_with_defaults_for_what_is_left_out() {
        let settings: EventStreamSettings =
            serde_json::from_str(r#"{"replicas": 3, "duplicate_window_secs": 600}"#).unwrap();
        assert_eq!(
            settings,
            EventStreamSettings {
                replicas: 3,
                duplicate_window_secs: 600,
                ..EventStreamSettings::default()
            }
        );
        let empty: EventStreamSettings = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, EventStreamSettings::default());
    }

    #[test]
    fn settings_reject_unknown_keys() {
        let err = serde_json::from_str::<EventStreamSettings>(r#"{"replica": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `replica`"), "{err}");
    }
}
