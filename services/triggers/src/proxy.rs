//! The webhook proxy: the API asks over NATS (`<prefix>.webhooks.>`, the
//! subject naming the hook) and this answers with the reply of the webhook
//! the registry holds for that hook, so only the triggers service ever
//! calls out over HTTP, and only to registered URLs.

use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;
use oxbase_hooks::{HookRegistry, RegistryError};
use oxbase_kit::{Readiness, Shutdown, trace_context};
use oxbase_proto::WebhookTarget;
use oxbase_proto::hooks::{HOOK_FAILURE, REQUEST_ID};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::metrics::Metrics;
use crate::webhook::{WebhookClient, WebhookFailure};
use crate::{Backoff, Settings, header_text};

/// The queue group every triggers process joins, so each request is
/// answered once.
pub const QUEUE_GROUP: &str = "oxbase-triggers";
/// Webhook calls one process makes at once; further requests wait.
const MAX_IN_FLIGHT: usize = 512;

/// Why a request got no answer from a webhook. The text goes back to the
/// caller in `Oxbase-Hook-Failure`.
#[derive(Debug, thiserror::Error)]
enum ProxyFailure {
    #[error("no webhook registered for the subject {0:?}")]
    UnknownSubject(String),
    #[error("no webhook registered for {0}")]
    NotRegistered(WebhookTarget),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Webhook(#[from] WebhookFailure),
}

pub struct WebhookProxy {
    client: async_nats::Client,
    registry: Arc<HookRegistry>,
    webhooks: WebhookClient,
    settings: Arc<Settings>,
    metrics: Arc<Metrics>,
}

impl WebhookProxy {
    /// A proxy to the webhooks `registry` holds. Someone should keep it
    /// loaded ([`HookRegistry::run`]); until then each call reads the
    /// bucket.
    pub fn new(
        client: async_nats::Client,
        registry: Arc<HookRegistry>,
        webhooks: WebhookClient,
        settings: Arc<Settings>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            client,
            registry,
            webhooks,
            settings,
            metrics,
        }
    }

    /// Answers requests until `shutdown`, then lets the calls in flight
    /// finish (each is bounded by the timeout).
    pub async fn run(self, readiness: Readiness, shutdown: Shutdown) {
        readiness.register("webhooks");
        let this = Arc::new(self);
        let permits = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
        let mut calls = JoinSet::new();
        let mut backoff = Backoff::new();
        'subscribe: loop {
            let subject = this.settings.subjects.webhooks_wildcard();
            let subscribed = tokio::select! {
                s = this.client.queue_subscribe(subject, QUEUE_GROUP.into()) => s,
                () = shutdown.wait() => break,
            };
            let mut requests = match subscribed {
                Ok(requests) => requests,
                Err(err) => {
                    tracing::warn!(%err, "cannot subscribe to the webhook requests; retrying");
                    if backoff.wait(&shutdown).await {
                        continue;
                    }
                    break;
                }
            };
            readiness.set("webhooks", true);
            backoff.reset();
            loop {
                let request = tokio::select! {
                    request = requests.next() => request,
                    () = shutdown.wait() => {
                        let _ = requests.unsubscribe().await;
                        break 'subscribe;
                    }
                };
                let Some(request) = request else {
                    readiness.set("webhooks", false);
                    if backoff.wait(&shutdown).await {
                        continue 'subscribe;
                    }
                    break 'subscribe;
                };
                let permit = tokio::select! {
                    permit = Arc::clone(&permits).acquire_owned() => permit,
                    () = shutdown.wait() => break 'subscribe,
                };
                let Ok(permit) = permit else {
                    break 'subscribe;
                };
                let this = Arc::clone(&this);
                calls.spawn(async move {
                    this.answer(request).await;
                    drop(permit);
                });
                while calls.try_join_next().is_some() {}
            }
        }
        readiness.set("webhooks", false);
        let bound = this.settings.timeout + Duration::from_secs(1);
        let _ =
            tokio::time::timeout(bound, async { while calls.join_next().await.is_some() {} }).await;
    }

    async fn answer(&self, request: async_nats::Message) {
        let Some(reply) = request.reply.clone() else {
            return;
        };
        let request_id = request
            .headers
            .as_ref()
            .and_then(|h| h.get(REQUEST_ID))
            .map(|v| v.as_str().to_owned());
        Metrics::add(&self.metrics.proxied, 1);
        let span = trace_context::span(|| {
            let span = tracing::info_span!(
                "webhook.call",
                otel.kind = "server",
                messaging.destination.name = %request.subject,
            );
            trace_context::continue_from_headers(&span, request.headers.as_ref());
            span
        });
        let answer = self
            .call(&request.subject, request_id.as_deref(), request.payload)
            .instrument(span)
            .await;
        let published = match answer {
            Ok(body) => self.client.publish(reply, body).await,
            Err(failure) => {
                Metrics::add(&self.metrics.proxy_failures, 1);
                if !matches!(failure, ProxyFailure::Webhook(WebhookFailure::Status(_))) {
                    tracing::debug!(subject = %request.subject, %failure, "webhook call failed");
                }
                let mut headers = HeaderMap::new();
                headers.insert(HOOK_FAILURE, header_text(&failure.to_string()).as_str());
                self.client
                    .publish_with_headers(reply, headers, Bytes::new())
                    .await
            }
        };
        if let Err(err) = published {
            tracing::debug!(%err, "cannot send the webhook's answer");
        }
    }

    /// Posts `body` to the webhook registered for the hook `subject` names.
    async fn call(
        &self,
        subject: &str,
        request_id: Option<&str>,
        body: Bytes,
    ) -> Result<Bytes, ProxyFailure> {
        let target = self
            .settings
            .subjects
            .webhook_target(subject)
            .ok_or_else(|| ProxyFailure::UnknownSubject(subject.to_owned()))?;
        let url = self.webhook_url(&target).await?;
        let mut pass = Vec::new();
        if let Some(id) = request_id {
            pass.push((REQUEST_ID, id));
        }
        Ok(self.webhooks.post(&url, &pass, body).await?)
    }

    /// The URL registered for `target`: from the mirror, or from the bucket
    /// when the mirror has no webhook for it, since the caller may have
    /// seen a registration this process has not yet.
    async fn webhook_url(&self, target: &WebhookTarget) -> Result<String, ProxyFailure> {
        let mirrored = match target {
            WebhookTarget::Function(name) => self.registry.function(name),
            WebhookTarget::Trigger(trigger, class_name) => {
                self.registry.trigger(class_name, *trigger)
            }
        };
        let url = match mirrored.and_then(|entry| entry.url) {
            Some(url) => Some(url),
            None => self
                .registry
                .fetch(&target.registry_key())
                .await?
                .and_then(|entry| entry.url),
        };
        url.ok_or_else(|| ProxyFailure::NotRegistered(target.clone()))
    }
}
