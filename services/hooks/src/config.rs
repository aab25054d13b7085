//! `[triggers]`: cloud functions and triggers, read by the API (the
//! synchronous calls), the hook registry and the triggers service.

use std::time::Duration;

use oxbase_kit::{Secret, Section};
use serde::{Deserialize, Serialize};

use crate::CallLimits;

/// Cloud functions and triggers: the hook registry, synchronous calls, and
/// the triggers service's durable after-hook deliveries.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TriggersConfig {
    /// Cloud functions and hooks, which need NATS; off, `/functions` and
    /// `/hooks` answer that they are off and writes run no hooks.
    pub enabled: bool,
    /// Sent to webhooks as `X-Parse-Webhook-Key` (Parse's `webhookKey`), so
    /// they can tell oxbase's calls from anyone else's.
    pub webhook_key: Option<Secret>,
    /// How long a function, a beforeSave or beforeDelete hook, or one
    /// after-hook delivery may take before it counts as failed.
    pub timeout_ms: u64,
    /// Largest reply accepted from a webhook or a NATS handler.
    pub max_reply_bytes: usize,
    /// Attempts at one after-hook delivery before it goes to the dead
    /// letters.
    pub max_attempts: u32,
    /// The first retry's delay; each later one doubles, up to
    /// `retry_max_ms`, with random jitter of up to half the delay.
    pub retry_initial_ms: u64,
    pub retry_max_ms: u64,
    /// After-hook deliveries are spread over this many ordered partitions
    /// (by object): the most deliveries in flight at once across every
    /// triggers process. Changing it on a running deployment may reorder
    /// the events of an object that are waiting at that moment.
    pub partitions: u32,
    /// Servers holding a copy of the hook registry and the delivery
    /// streams: 1 on a single server, 3 in a cluster.
    pub replicas: usize,
}

impl Default for TriggersConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            webhook_key: None,
            timeout_ms: 10_000,
            max_reply_bytes: 1024 * 1024,
            max_attempts: 8,
            retry_initial_ms: 500,
            retry_max_ms: 30_000,
            partitions: 16,
            replicas: 1,
        }
    }
}

impl TriggersConfig {
    /// The limits on one synchronous call to a hook.
    pub fn call_limits(&self) -> CallLimits {
        CallLimits {
            timeout: Duration::from_millis(self.timeout_ms),
            max_reply_bytes: self.max_reply_bytes,
        }
    }
}

impl Section for TriggersConfig {
    const KEY: &'static str = "triggers";
    const ALIASES: &'static [(&'static str, &'static str)] =
        &[("PARSE_SERVER_WEBHOOK_KEY", "webhook_key")];

    fn validate(&self) -> Result<(), String> {
        if self.partitions == 0 || self.max_attempts == 0 || self.timeout_ms == 0 {
            return Err("partitions, max_attempts and timeout_ms must be at least 1".into());
        }
        Ok(())
    }
}
