//! Calls to registered hooks, for any process that runs them (the API,
//! the LiveQuery server): the registry lookup, and the choice between a
//! NATS handler and a webhook behind the triggers service's proxy.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use oxbase_proto::hooks::REQUEST_ID;
use oxbase_proto::{HookEntry, HookReply, Subjects, TriggerName};
use serde::Serialize;

use crate::{CallError, CallLimits, HookRegistry, call};

/// The hook registry has not loaded since the process started, so which
/// hooks exist is unknown.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("Cloud Code hooks are not loaded yet; try again shortly")]
pub struct HooksNotLoaded;

/// The longest a trigger lookup waits for the registry's first load.
const FIRST_LOAD_WAIT: Duration = Duration::from_secs(2);

/// Finds registered hooks and calls them over NATS: a NATS handler on its
/// own subject, or a webhook through the triggers service's proxy
/// (`<prefix>.webhooks.>`, which finds the URL in the registry itself), so
/// the calling process never calls out over HTTP.
#[derive(Debug, Clone)]
pub struct HookCaller {
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    subjects: Subjects,
    limits: CallLimits,
}

impl HookCaller {
    /// A caller over `registry`, which someone must keep loaded
    /// ([`HookRegistry::run`]).
    pub fn new(
        client: async_nats::Client,
        registry: Arc<HookRegistry>,
        subjects: Subjects,
        limits: CallLimits,
    ) -> Self {
        Self {
            client,
            registry,
            subjects,
            limits,
        }
    }

    pub fn registry(&self) -> &Arc<HookRegistry> {
        &self.registry
    }

    pub fn subjects(&self) -> &Subjects {
        &self.subjects
    }

    pub fn limits(&self) -> CallLimits {
        self.limits
    }

    /// The hook registered for `trigger` on `class_name`. Before the
    /// registry's first load, a lookup waits for it while NATS is connected
    /// (a matter of milliseconds then), at most the call timeout or 2 s.
    /// Still unloaded (NATS down since the process started), whether the
    /// class has hooks is unknown, so the answer is [`HooksNotLoaded`]:
    /// going ahead would skip a beforeSave that may validate or redact.
    pub async fn trigger(
        &self,
        class_name: &str,
        trigger: TriggerName,
    ) -> Result<Option<HookEntry>, HooksNotLoaded> {
        if !self.registry.is_loaded()
            && self.client.connection_state() == async_nats::connection::State::Connected
        {
            self.registry
                .wait_loaded(self.limits.timeout.min(FIRST_LOAD_WAIT))
                .await;
        }
        if !self.registry.is_loaded() {
            return Err(HooksNotLoaded);
        }
        Ok(self.registry.trigger(class_name, trigger))
    }

    /// Calls the trigger hook `entry`, registered for `trigger` on
    /// `class_name`, with `body` (the trigger's request) and the Parse
    /// request id, if any.
    pub async fn call_trigger(
        &self,
        entry: &HookEntry,
        class_name: &str,
        trigger: TriggerName,
        body: &impl Serialize,
        request_id: Option<&str>,
    ) -> Result<HookReply, CallError> {
        self.call(
            Some(entry),
            || self.subjects.trigger(trigger, class_name),
            || self.subjects.webhook_trigger(trigger, class_name),
            body,
            request_id,
        )
        .await
    }

    /// Calls the cloud function `name`: its webhook when `entry` (its
    /// registry entry) has one, else the NATS handler on its subject, which
    /// needs no registration.
    pub async fn call_function(
        &self,
        entry: Option<&HookEntry>,
        name: &str,
        body: &impl Serialize,
        request_id: Option<&str>,
    ) -> Result<HookReply, CallError> {
        self.call(
            entry,
            || self.subjects.function(name),
            || self.subjects.webhook_function(name),
            body,
            request_id,
        )
        .await
    }

    async fn call(
        &self,
        entry: Option<&HookEntry>,
        nats_subject: impl FnOnce() -> String,
        webhook_subject: impl FnOnce() -> String,
        body: &impl Serialize,
        request_id: Option<&str>,
    ) -> Result<HookReply, CallError> {
        let body = serde_json::to_vec(body).map_err(|e| CallError::Nats(e.to_string()))?;
        let mut headers = HeaderMap::new();
        if let Some(id) = request_id {
            headers.insert(REQUEST_ID, id);
        }
        let subject = if entry.is_some_and(|e| e.url.is_some()) {
            webhook_subject()
        } else {
            nats_subject()
        };
        call(&self.client, subject, headers, body.into(), self.limits).await
    }
}
