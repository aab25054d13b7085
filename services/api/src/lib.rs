//! oxbase's Parse-compatible REST API: an axum service that speaks Parse
//! Server's protocol (the REST API and the JS SDK's tunnel) over a
//! [`Store`].

mod access;
mod aggregate;
mod auth;
mod cron;
mod dashboard;
mod db;
mod error;
mod files;
mod global_config;
mod hooks;
mod installations;
mod jobs;
mod push;
mod query;
mod relay;
mod request;
mod routes;
mod schema_routes;
mod schemas;
mod server;
mod sessions;
mod users;
mod values;

use std::net::SocketAddr;
use std::sync::Arc;

use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_store::Store;
use tokio::net::TcpListener;

pub use crate::auth::{Auth, KeyLevel, Keys, SessionUser};
pub use crate::db::{Database, DatabaseSettings};
pub use crate::error::{ApiError, ApiResult, code};
pub use crate::hooks::Hooks;
pub use crate::jobs::Jobs;
pub use crate::relay::{OutboxRelay, RelayError, RelaySettings, RelaySignals, ensure_stream};

/// The API's shared state.
pub struct App {
    db: Database,
    keys: Keys,
    app_id: String,
    /// The mount path, without a trailing slash.
    mount: String,
    /// Path prefixes `/batch` items may use: the mount path, and the public
    /// URL's path when it differs.
    batch_prefixes: Vec<String>,
    sessions: sessions::SessionCache,
    session_length_secs: u64,
    revoke_session_on_password_reset: bool,
    files: files::Files,
    /// Cloud functions and triggers; `None` without NATS.
    hooks: Option<hooks::HookRunner>,
    /// Background jobs; `None` when off or without NATS.
    jobs: Option<jobs::Jobs>,
    push: Option<oxbase_push::PushQueue>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot open the store: {0}")]
    Store(#[from] oxbase_store::StoreError),
    #[error("cannot load schemas: {0}")]
    Schemas(ApiError),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl App {
    /// `relay`, when events are on: the API wakes it after each write and
    /// serves its backlog at `/metrics`. `hooks`, when NATS is there: cloud
    /// functions and triggers.
    pub async fn new(
        config: &Config,
        store: Arc<dyn Store>,
        relay: Option<Arc<RelaySignals>>,
        hooks: Option<Hooks>,
        jobs: Option<Jobs>,
        push: Option<oxbase_push::PushQueue>,
    ) -> Result<Arc<Self>, StartError> {
        let events = relay.as_ref().map(|_| crate::db::EventSettings {
            source: config
                .events
                .source
                .clone()
                .unwrap_or_else(|| oxbase_proto::Event::source_for_app(&config.app_id)),
            prefix: config.events.prefix.clone(),
        });
        let settings = DatabaseSettings {
            limits: config.limits.clone(),
            events,
            relay: relay.clone(),
            allow_client_class_creation: config.allow_client_class_creation,
            allow_custom_object_id: config.allow_custom_object_id,
            enforce_private_users: config.enforce_private_users,
        };
        let db = Database::open(store, settings)
            .await
            .map_err(StartError::Schemas)?;
        let mut batch_prefixes = vec![config.mount_path.clone()];
        if let Some(public) = &config.public_server_url
            && let Some(path) = url_path(public)
            && !batch_prefixes.contains(&path)
        {
            batch_prefixes.push(path);
        }
        Ok(Arc::new(Self {
            db,
            keys: Keys::from_config(config),
            app_id: config.app_id.clone(),
            mount: config.mount_path.clone(),
            batch_prefixes,
            sessions: sessions::SessionCache::default(),
            session_length_secs: config.session_length_secs,
            revoke_session_on_password_reset: config.revoke_session_on_password_reset,
            files: files::Files::from_config(config),
            hooks: hooks.map(|hooks| hooks::HookRunner::new(config, hooks)),
            jobs,
            push,
        }))
    }

    /// The axum router: the Parse API under the mount path, plus `/health`,
    /// `/ready` and `/metrics` (with `more_metrics` appended, for services
    /// sharing the process).
    pub fn router(
        self: &Arc<Self>,
        readiness: Readiness,
        more_metrics: Option<MetricsSource>,
    ) -> axum::Router {
        let relay = self.db.relay().cloned();
        oxbase_kit::health::router(readiness)
            .route(
                "/metrics",
                axum::routing::get(move || async move {
                    metrics(relay.as_deref(), more_metrics.as_deref())
                }),
            )
            .merge(server::router(self.clone()))
    }
}

/// Prometheus text from another service in the same process.
pub type MetricsSource = Arc<dyn Fn() -> String + Send + Sync>;

/// Prometheus text: the outbox backlog, when events are on.
fn metrics(
    relay: Option<&RelaySignals>,
    more: Option<&(dyn Fn() -> String + Send + Sync)>,
) -> String {
    let mut out = more.map(|more| more()).unwrap_or_default();
    if let Some(relay) = relay {
        let backlog = relay.backlog.load(std::sync::atomic::Ordering::Relaxed);
        out.push_str("# HELP oxbase_outbox_backlog Events written but not yet published.\n");
        out.push_str("# TYPE oxbase_outbox_backlog gauge\n");
        out.push_str(&format!("oxbase_outbox_backlog {backlog}\n"));
    }
    out
}

/// `/parse` of `https://example.com/parse/`.
fn url_path(url: &str) -> Option<String> {
    let after_scheme = url.split_once("://").map(|(_, rest)| rest)?;
    let path = after_scheme
        .find('/')
        .map(|i| &after_scheme[i..])
        .unwrap_or("");
    Some(path.trim_end_matches('/').to_owned())
}

/// Binds the configured address.
pub async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    let addr = format!("{}:{}", config.host, config.port);
    TcpListener::bind(&addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Serves the API on `listener` until `shutdown` fires, then lets in-flight
/// requests finish.
pub async fn serve(
    listener: TcpListener,
    app: Arc<App>,
    readiness: Readiness,
    shutdown: Shutdown,
    more_metrics: Option<MetricsSource>,
) -> Result<(), StartError> {
    readiness.register("api");
    let router = app.router(readiness.clone(), more_metrics);
    readiness.set("api", true);
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { shutdown.wait().await })
    .await
    .map_err(StartError::Serve)
}

#[cfg(test)]
mod tests {
    #[test]
    fn url_paths() {
        assert_eq!(
            super::url_path("https://x.com/parse/").as_deref(),
            Some("/parse")
        );
        assert_eq!(super::url_path("http://x.com").as_deref(), Some(""));
        assert_eq!(super::url_path("nonsense"), None);
    }
}
