//! Cloud functions and the synchronous triggers (beforeSave,
//! beforeDelete), called over NATS: a NATS handler directly, a webhook
//! through the triggers service's proxy.

use std::sync::Arc;
use std::time::Duration;

use oxbase_hooks::{CallLimits, HookRegistry};
use oxbase_kit::Config;
use oxbase_proto::Subjects;

/// What the API needs to call hooks.
#[derive(Debug, Clone)]
pub struct Hooks {
    pub client: async_nats::Client,
    pub registry: Arc<HookRegistry>,
}

pub(crate) struct HookRunner {
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    subjects: Subjects,
    limits: CallLimits,
}

impl HookRunner {
    pub(crate) fn new(config: &Config, hooks: Hooks) -> Self {
        Self {
            client: hooks.client,
            registry: hooks.registry,
            subjects: Subjects::new(config.events.prefix.as_str()).unwrap_or_default(),
            limits: CallLimits {
                timeout: Duration::from_millis(config.triggers.timeout_ms),
                max_reply_bytes: config.triggers.max_reply_bytes,
            },
        }
    }
}
