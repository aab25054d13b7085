//! Parse's LiveQuery: clients subscribe to queries over a WebSocket and
//! are sent each change to a matching object they may read. Every process
//! reads the event stream itself, so N processes serve N times the
//! connections, and a client that reconnects can resume from the last
//! event it saw (`lastEventId`, an oxbase extension).
//!
//! Served on the API's port at the mount path (`oxbase api`, `all`,
//! `dev`), or alone (`oxbase livequery`).

mod config;
mod connection;
mod hub;
mod index;
mod member;
pub mod protocol;
mod replay;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, FromRequestParts, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use oxbase_hooks::HookCaller;
use oxbase_kit::{Config, MetricsSource, Readiness, Service, ServiceError, Shutdown};
use oxbase_objects::ObjectLayer;

pub use crate::config::LiveQueryConfig;
use crate::hub::Hub;

#[derive(Debug, thiserror::Error)]
pub enum LiveQueryError {
    #[error("invalid events prefix: {0}")]
    Prefix(String),
}

/// A process's LiveQuery server: the WebSocket endpoint and the reader of
/// the event stream that feeds it.
#[derive(Clone)]
pub struct LiveQuery {
    hub: Arc<Hub>,
}

impl std::fmt::Debug for LiveQuery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveQuery").finish_non_exhaustive()
    }
}

impl LiveQuery {
    pub fn new(
        config: &Config,
        objects: Arc<ObjectLayer>,
        client: async_nats::Client,
        hooks: Option<HookCaller>,
    ) -> Result<Self, LiveQueryError> {
        Ok(Self {
            hub: Arc::new(Hub::new(config, objects, client, hooks)?),
        })
    }

    /// Sends WebSocket upgrades at `mount_path` to LiveQuery, as Parse
    /// Server does on its own port; everything else goes to `router`.
    pub fn wrap(&self, router: axum::Router, mount_path: &str) -> axum::Router {
        let hub = Arc::clone(&self.hub);
        let mount_path = mount_path.trim_end_matches('/').to_owned();
        router.layer(axum::middleware::from_fn(
            move |request: Request, next: Next| {
                let hub = Arc::clone(&hub);
                let at_mount = {
                    let path = request.uri().path().trim_end_matches('/');
                    path == mount_path
                };
                async move {
                    if at_mount && is_upgrade(&request) {
                        upgrade(hub, request).await
                    } else {
                        next.run(request).await
                    }
                }
            },
        ))
    }

    /// The router of `oxbase livequery`: WebSocket upgrades on any path,
    /// as Parse's LiveQuery server takes them.
    pub fn router(&self) -> axum::Router {
        let hub = Arc::clone(&self.hub);
        axum::Router::new().fallback(move |request: Request| upgrade(Arc::clone(&hub), request))
    }

    /// The reader of the event stream, to run beside the endpoint. `/ready`
    /// waits for it to follow the stream from now on.
    pub fn service(&self, readiness: &Readiness) -> Box<dyn Service> {
        readiness.register("livequery");
        Box::new(LiveQueryService {
            hub: Arc::clone(&self.hub),
        })
    }
}

fn is_upgrade(request: &Request) -> bool {
    request
        .headers()
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn upgrade(hub: Arc<Hub>, request: Request) -> Response {
    let ip = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |info| info.0.ip());
    let (mut parts, _) = request.into_parts();
    let upgrade = match WebSocketUpgrade::from_request_parts(&mut parts, &()).await {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let max = hub.config.max_message_bytes;
    // tungstenite reserves 128 KiB per buffer by default; LiveQuery holds
    // many idle connections with small messages, so small buffers keep
    // memory per connection low. Each message is flushed as it is sent.
    upgrade
        .read_buffer_size(4 * 1024)
        .write_buffer_size(0)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::serve(hub, socket, ip))
}

struct LiveQueryService {
    hub: Arc<Hub>,
}

#[async_trait::async_trait]
impl Service for LiveQueryService {
    fn name(&self) -> &'static str {
        "livequery"
    }

    fn metrics(&self) -> MetricsSource {
        let hub = Arc::clone(&self.hub);
        Arc::new(move || {
            let m = &hub.metrics;
            format!(
                "# TYPE oxbase_livequery_clients gauge\noxbase_livequery_clients {}\n\
                 # TYPE oxbase_livequery_subscriptions gauge\noxbase_livequery_subscriptions {}\n\
                 # TYPE oxbase_livequery_events_total counter\noxbase_livequery_events_total {}\n\
                 # TYPE oxbase_livequery_messages_total counter\noxbase_livequery_messages_total {}\n\
                 # TYPE oxbase_livequery_dropped_clients_total counter\noxbase_livequery_dropped_clients_total {}\n",
                hub.clients.load(Ordering::Relaxed),
                hub.subscriptions(),
                m.events.load(Ordering::Relaxed),
                m.sent.load(Ordering::Relaxed),
                m.dropped_clients.load(Ordering::Relaxed),
            )
        })
    }

    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError> {
        readiness.register("livequery");
        Arc::clone(&self.hub).run(readiness, shutdown).await;
        Ok(())
    }
}
