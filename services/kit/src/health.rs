//! Liveness and readiness. `/health` answers while the process serves;
//! `/ready` only once every component registered here says it is ready.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

/// Readiness of the components of one process, by name.
#[derive(Clone, Debug, Default)]
pub struct Readiness {
    components: Arc<Mutex<BTreeMap<&'static str, bool>>>,
    /// What an operator should look at although the process serves (events
    /// moved aside, say), shown by `/ready` without failing it: one bad
    /// event must not take every API process out of the load balancer.
    warnings: Arc<Mutex<BTreeMap<&'static str, String>>>,
    /// Set once the process is stopping: `/ready` fails from then on,
    /// whatever its components say, so load balancers take it out while
    /// it still serves.
    draining: Arc<AtomicBool>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Declares a component, not ready yet.
    pub fn register(&self, component: &'static str) {
        self.set(component, false);
    }

    pub fn set(&self, component: &'static str, ready: bool) {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(component, ready);
    }

    /// Sets or clears `component`'s warning.
    pub fn warn(&self, component: &'static str, warning: Option<String>) {
        let mut warnings = self.warnings.lock().unwrap_or_else(|e| e.into_inner());
        match warning {
            Some(text) => warnings.insert(component, text),
            None => warnings.remove(component),
        };
    }

    fn warnings(&self) -> BTreeMap<&'static str, String> {
        self.warnings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Marks the process as stopping, for good.
    pub fn drain(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// Drains once `shutdown` fires.
    pub fn drain_on(&self, shutdown: &crate::Shutdown) {
        let readiness = self.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            shutdown.wait().await;
            readiness.drain();
        });
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn is_ready(&self) -> bool {
        !self.is_draining()
            && self
                .components
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .values()
                .all(|ready| *ready)
    }

    fn not_ready(&self) -> Vec<&'static str> {
        self.components
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, ready)| !**ready)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// `GET /health` and `GET /ready`.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(move || ready(readiness.clone())))
}

/// Parse Server's health body, so load balancers configured for it work.
pub async fn health() -> Response {
    axum::Json(json!({ "status": "ok" })).into_response()
}

async fn ready(readiness: Readiness) -> Response {
    let waiting = readiness.not_ready();
    let (status, mut body) = if readiness.is_draining() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "draining" }),
        )
    } else if waiting.is_empty() {
        (StatusCode::OK, json!({ "status": "ready" }))
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "status": "starting", "waitingFor": waiting }),
        )
    };
    let warnings = readiness.warnings();
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    (status, axum::Json(body)).into_response()
}

/// Prometheus text for counters: (name, help, value) each.
pub fn counters(counters: &[(&str, &str, &std::sync::atomic::AtomicU64)]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (name, help, value) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        let value = value.load(std::sync::atomic::Ordering::Relaxed);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let readiness = Readiness::new();
        assert!(readiness.is_ready());
        readiness.register("store");
        readiness.register("nats");
        assert_eq!(readiness.not_ready(), vec!["nats", "store"]);
        readiness.set("store", true);
        assert!(!readiness.is_ready());
        readiness.set("nats", true);
        assert!(readiness.is_ready());
    }

    #[tokio::test]
    async fn a_draining_process_is_not_ready_whatever_its_components_say() {
        let readiness = Readiness::new();
        readiness.register("store");
        readiness.set("store", true);
        readiness.drain();
        assert!(!readiness.is_ready());
        let response = ready(readiness.clone()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        let body = axum::body::to_bytes(response.into_body(), 1024)
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["status"], "draining");
    }
}
