//! `[livequery]`: Parse's LiveQuery server, on the API's port or alone.

use oxbase_kit::Section;
use serde::{Deserialize, Serialize};

/// Parse's `liveQuery` and `liveQueryServerOptions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LiveQueryConfig {
    /// Serve LiveQuery WebSockets on the API's port, at the mount path, and
    /// run `oxbase livequery`. Needs NATS and events.
    pub enabled: bool,
    /// The classes clients may subscribe to (Parse's
    /// `liveQuery.classNames`); empty allows every class.
    pub class_names: Vec<String>,
    /// Connections one process holds at most; later ones are refused.
    pub max_connections: usize,
    /// Subscriptions one connection holds at most.
    pub max_subscriptions: usize,
    /// Messages queued for one client before it counts as too slow and is
    /// disconnected (it may reconnect and resume from its last event).
    pub send_queue: usize,
    /// Largest message a client may send.
    pub max_message_bytes: usize,
    /// A client that leaves a ping unanswered this long is dropped
    /// (Parse's `websocketTimeout`).
    pub ping_interval_ms: u64,
    /// Most events read back for one resuming subscription.
    pub max_replay: u64,
}

impl Default for LiveQueryConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            class_names: Vec::new(),
            max_connections: 100_000,
            max_subscriptions: 1_000,
            send_queue: 1_024,
            max_message_bytes: 64 * 1024,
            ping_interval_ms: 10_000,
            max_replay: 100_000,
        }
    }
}

impl Section for LiveQueryConfig {
    const KEY: &'static str = "livequery";

    fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0
            || self.max_subscriptions == 0
            || self.send_queue == 0
            || self.ping_interval_ms == 0
        {
            return Err(
                "max_connections, max_subscriptions, send_queue and ping_interval_ms must be at least 1"
                    .into(),
            );
        }
        if self.max_message_bytes < 1024 {
            return Err("max_message_bytes must be at least 1024".into());
        }
        Ok(())
    }
}
