//! oxbase's Parse-compatible REST API: an axum service that speaks Parse
//! Server's protocol (the REST API and the JS SDK's tunnel) over the
//! object layer ([`ObjectLayer`]). This crate is HTTP only: routing,
//! request parsing and replies; Parse's rules live in `oxbase-objects`.

mod aggregate;
mod auth_data;
mod config;
mod cron;
mod dashboard;
mod files;
mod global_config;
mod hooks;
mod idempotency;
mod jobs;
mod keys;
mod mail;
mod pages;
mod push;
mod rate_limit;
mod request;
mod routes;
mod schema_routes;
mod server;
mod shared_bucket;
mod triggers;
mod users;

use std::net::SocketAddr;
use std::sync::Arc;

use oxbase_kit::{Config, MetricsSource, Readiness, Shutdown};
use oxbase_objects::{ObjectLayer, RelaySignals};
use tokio::net::TcpListener;

pub use crate::config::{
    FileStorageKind, FilesConfig, GridFsSettings, IdempotencyConfig, PagesConfig, RateLimitConfig,
    RateLimitRule, RateLimitStore, RateLimitZone, RequestMethods, S3Settings,
};
pub use crate::files::check_files;
pub use crate::hooks::Hooks;
pub use crate::jobs::Jobs;
pub use oxbase_objects::{KeyLevel, Keys};

/// The API's shared state.
pub struct App {
    objects: Arc<ObjectLayer>,
    keys: Keys,
    app_id: String,
    /// The mount path, without a trailing slash.
    mount: String,
    /// Path prefixes `/batch` items may use: the mount path, and the public
    /// URL's path when it differs.
    batch_prefixes: Vec<String>,
    files: files::Files,
    /// Cloud functions and triggers; `None` without NATS.
    hooks: Option<hooks::HookRunner>,
    /// Background jobs; `None` when off or without NATS.
    jobs: Option<jobs::Jobs>,
    push: Option<oxbase_push::PushQueue>,
    rate_limits: rate_limit::RateLimits,
    idempotency: idempotency::Idempotency,
    /// The account mails; `None` without `[email]`.
    mailer: Option<mail::Mailer>,
    pages: pages::Templates,
    /// Requests being served, at most `limits.max_concurrent_requests`.
    in_flight: Arc<tokio::sync::Semaphore>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Serve(std::io::Error),
}

impl App {
    /// The API over `objects`. `hooks`, when NATS is there: cloud
    /// functions and triggers. `nats` keeps what the API processes share:
    /// rate limit counts (`rate_limit.store = "nats"`) and request ids.
    pub fn new(
        config: &Config,
        objects: Arc<ObjectLayer>,
        hooks: Option<Hooks>,
        jobs: Option<Jobs>,
        push: Option<oxbase_push::PushQueue>,
        nats: Option<&async_nats::Client>,
    ) -> Arc<Self> {
        let mut batch_prefixes = vec![config.mount_path.clone()];
        if let Some(public) = &config.public_server_url
            && let Some(path) = url_path(public)
            && !batch_prefixes.contains(&path)
        {
            batch_prefixes.push(path);
        }
        let in_flight = Arc::new(tokio::sync::Semaphore::new(
            objects.limits().max_concurrent_requests,
        ));
        Arc::new(Self {
            in_flight,
            objects,
            keys: Keys::from_config(config),
            app_id: config.app_id.clone(),
            mount: config.mount_path.clone(),
            batch_prefixes,
            files: files::Files::from_config(config),
            hooks: hooks.map(|hooks| hooks::HookRunner::new(config, hooks)),
            jobs,
            push,
            rate_limits: rate_limit::RateLimits::from_config(config, nats),
            idempotency: idempotency::Idempotency::from_config(config, nats),
            pages: pages::Templates::load(&config.section()).unwrap_or_else(|err| {
                // The section's validation refuses this config at startup.
                tracing::error!(error = %err, "the app's pages are off");
                pages::Templates::default()
            }),
            mailer: mail::Mailer::from_config(config).unwrap_or_else(|err| {
                // `check_email` refuses this config at startup.
                tracing::error!(error = %err, "account mails are off");
                None
            }),
        })
    }

    /// The axum router: the Parse API under the mount path, plus `/health`,
    /// `/ready` and `/metrics` (with `more_metrics` appended, for services
    /// sharing the process).
    pub fn router(
        self: &Arc<Self>,
        readiness: Readiness,
        more_metrics: Option<MetricsSource>,
    ) -> axum::Router {
        let relay = self.objects.relay().cloned();
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

/// Whether the API's own settings need NATS: shared rate limit counts, or
/// idempotency.
pub fn needs_nats(config: &Config) -> bool {
    let rate_limit: RateLimitConfig = config.section();
    let shared_counts = rate_limit.store == RateLimitStore::Nats && !rate_limit.rules.is_empty();
    shared_counts || !config.section::<IdempotencyConfig>().paths.is_empty()
}

/// Checks `[email]` as far as the API needs it: a sender that parses,
/// and `public_server_url` for the links. The process refuses to start
/// otherwise, as Parse Server does without `publicServerURL`.
pub fn check_email(config: &Config) -> Result<(), String> {
    mail::Mailer::from_config(config).map(|_| ())
}

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
        let dead = relay
            .dead_letters
            .load(std::sync::atomic::Ordering::Relaxed);
        out.push_str(
            "# HELP oxbase_outbox_dead_letters Events the stream could not take, kept in _oxbase_outbox_dead.\n",
        );
        out.push_str("# TYPE oxbase_outbox_dead_letters gauge\n");
        out.push_str(&format!("oxbase_outbox_dead_letters {dead}\n"));
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
    let failed = |source| StartError::Bind {
        addr: addr.clone(),
        source,
    };
    let mut last = None;
    for resolved in tokio::net::lookup_host(&addr).await.map_err(failed)? {
        match listen(resolved) {
            Ok(listener) => return Ok(listener),
            Err(err) => last = Some(err),
        }
    }
    Err(failed(last.unwrap_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "the host resolves to no address",
        )
    })))
}

/// A listener with a deep accept queue: a burst of connections (clients
/// reconnecting to LiveQuery after a restart) would overflow the usual 128
/// and wait a second for each retried SYN.
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Serves the API on `listener` until `shutdown` fires, then drains it:
/// `/ready` fails at once, so load balancers take the process out, while
/// requests are still served for `drain_delay`, each answered with
/// `Connection: close` so that its client reconnects elsewhere. Then no
/// new connection is taken, the requests in flight finish and idle
/// connections close.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    readiness: Readiness,
    shutdown: Shutdown,
    drain_delay: std::time::Duration,
) -> Result<(), StartError> {
    readiness.register("api");
    readiness.set("api", true);
    readiness.drain_on(&shutdown);
    let stop = shutdown.delayed(drain_delay);
    let router = router.layer(axum::middleware::map_response(
        move |mut response: axum::response::Response| {
            let shutdown = shutdown.clone();
            async move {
                if shutdown.is_triggered() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
        },
    ));
    axum::serve(
        listener,
        router.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(async move { stop.wait().await })
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

    /// A stop announced by `shutdown`: `/ready` fails at once, requests are
    /// still served through the delay with `Connection: close`, a request
    /// in flight when it ends still finishes, and the server then stops,
    /// idle keep-alive connections included.
    #[tokio::test]
    async fn a_stopping_server_drains_before_it_stops() {
        use std::time::Duration;

        use axum::routing::get;
        use oxbase_kit::{Readiness, Shutdown};

        let delay = Duration::from_millis(600);
        let readiness = Readiness::new();
        let router = oxbase_kit::health::router(readiness.clone())
            .route("/quick", get(|| async { "quick" }))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(800)).await;
                    "slow"
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = Shutdown::new();
        let served = tokio::spawn(super::serve(
            listener,
            router,
            readiness,
            shutdown.clone(),
            delay,
        ));
        let client = reqwest::Client::new();
        let get = |path: &str| client.get(format!("{base}{path}")).send();
        let before = get("/quick").await.unwrap();
        assert!(before.headers().get("connection").is_none());
        assert_eq!(get("/ready").await.unwrap().status(), 200);

        shutdown.trigger();
        let ready = get("/ready").await.unwrap();
        assert_eq!(ready.status(), 503);
        let body: serde_json::Value = ready.json().await.unwrap();
        assert_eq!(body["status"], "draining");
        let during = get("/quick").await.unwrap();
        assert_eq!(during.status(), 200);
        assert_eq!(during.headers()["connection"], "close");
        let slow = tokio::spawn(get("/slow"));
        let stopped = tokio::time::timeout(Duration::from_secs(10), served)
            .await
            .expect("the server stops once its requests are done")
            .unwrap();
        assert!(stopped.is_ok());
        let slow = slow.await.unwrap().expect("the request in flight finishes");
        assert_eq!(slow.text().await.unwrap(), "slow");
        assert!(get("/quick").await.is_err(), "no new connection is taken");
    }
}
