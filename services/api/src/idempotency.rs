//! Parse Server's `idempotencyOptions`: a write retried with the same
//! `X-Parse-Request-Id` runs once. Request ids are kept in the
//! `<PREFIX>_IDEMPOTENCY` bucket, so the rule holds across API processes.

use std::time::Duration;

use async_nats::jetstream::kv;
use axum::http::Method;
use oxbase_kit::Config;
use oxbase_objects::{ParseError, ParseResult, code};
use regex::Regex;

use crate::App;
use crate::config::IdempotencyConfig;
use crate::request::ParseRequest;
use crate::shared_bucket::{SharedBucket, digest_key};

/// How long recording a request id may take before the request is refused.
const TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) struct Idempotency {
    paths: Vec<Regex>,
    /// `None` without NATS: then every request the paths cover is refused.
    ids: Option<SharedBucket>,
}

/// Parse's paths: regexes matched from the start of the path.
pub(crate) fn compile_paths(paths: &[String]) -> Result<Vec<Regex>, String> {
    paths
        .iter()
        .map(|path| {
            let anchored = if path.starts_with('^') {
                path.clone()
            } else {
                format!("^{path}")
            };
            Regex::new(&anchored).map_err(|err| format!("paths {path:?}: {err}"))
        })
        .collect()
}

impl Idempotency {
    pub(crate) fn from_config(config: &Config, nats: Option<&async_nats::Client>) -> Self {
        let section: IdempotencyConfig = config.section();
        let paths = compile_paths(&section.paths).unwrap_or_else(|err| {
            tracing::error!(%err, "idempotency is off: a path is not a regex");
            Vec::new()
        });
        let subjects = oxbase_proto::Subjects::new(config.events.prefix.as_str()).ok();
        let ids = match (nats, subjects) {
            (Some(client), Some(subjects)) if !paths.is_empty() => Some(SharedBucket::new(
                client,
                &subjects,
                "IDEMPOTENCY",
                "oxbase request ids seen (X-Parse-Request-Id)",
                Duration::from_secs(section.ttl_secs),
                TIMEOUT,
            )),
            _ => {
                if !paths.is_empty() {
                    tracing::error!(
                        "idempotency needs NATS: requests it covers are refused until it is configured"
                    );
                }
                None
            }
        };
        Self { paths, ids }
    }
}

/// The routes Parse deduplicates: creates and updates of objects, users
/// and installations, cloud functions and jobs.
fn guarded_route(method: &Method, segments: &[String]) -> bool {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    matches!(
        (method, s.as_slice()),
        (&Method::POST, ["classes", _])
            | (&Method::PUT, ["classes", _, _])
            | (&Method::POST, ["functions" | "jobs", _])
            | (&Method::POST, ["installations" | "users"])
            | (&Method::PUT, ["installations" | "users", _])
    )
}

impl App {
    /// Records the request's id before it runs, as Parse does: a request
    /// that repeats an id seen within the TTL is refused with 159, even if
    /// the first one failed. `path` is the path below the mount path, as
    /// sent. Batch items are not covered: Parse's carry no headers.
    pub(crate) async fn ensure_idempotent(
        &self,
        req: &ParseRequest,
        path: &str,
    ) -> ParseResult<()> {
        let guard = &self.idempotency;
        if guard.paths.is_empty() {
            return Ok(());
        }
        let Some(id) = req
            .credentials
            .request_id
            .as_deref()
            .filter(|id| !id.is_empty())
        else {
            return Ok(());
        };
        let relative = path.strip_prefix('/').unwrap_or(path);
        if !guarded_route(&req.method, &req.segments)
            || !guard.paths.iter().any(|p| p.is_match(relative))
        {
            return Ok(());
        }
        // Without the store, a write could run twice; refuse it and let
        // the client retry with the same id (the SDKs do, on a 500).
        let unavailable = |err: &dyn std::fmt::Display| {
            tracing::warn!(%err, "cannot record X-Parse-Request-Id: refusing the request");
            ParseError::new(
                code::INTERNAL_SERVER_ERROR,
                "Cannot check X-Parse-Request-Id for a duplicate right now; retry the request.",
            )
        };
        let ids = match &guard.ids {
            Some(ids) => ids.get().await.map_err(|err| unavailable(&err))?,
            None => return Err(unavailable(&"NATS is not configured")),
        };
        let seen = format!("{} {path}", req.method);
        match ids.create(digest_key(id), seen.into()).await {
            Ok(_) => Ok(()),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Err(ParseError::new(
                code::DUPLICATE_REQUEST,
                "Duplicate request",
            )),
            Err(err) => Err(unavailable(&err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_routes_are_guarded() {
        let segments = |path: &str| -> Vec<String> { path.split('/').map(String::from).collect() };
        assert!(guarded_route(&Method::POST, &segments("classes/A")));
        assert!(guarded_route(&Method::PUT, &segments("classes/A/id")));
        assert!(guarded_route(&Method::POST, &segments("functions/f")));
        assert!(guarded_route(&Method::POST, &segments("jobs/j")));
        assert!(guarded_route(&Method::POST, &segments("users")));
        assert!(guarded_route(&Method::PUT, &segments("installations/i")));
        assert!(!guarded_route(&Method::DELETE, &segments("classes/A/id")));
        assert!(!guarded_route(&Method::GET, &segments("classes/A")));
        assert!(!guarded_route(&Method::POST, &segments("roles")));
        assert!(!guarded_route(&Method::POST, &segments("batch")));
    }

    #[test]
    fn paths_match_from_the_start() {
        let paths = compile_paths(&["classes/.*".into(), "^functions/a$".into()]).unwrap();
        let any = |path: &str| paths.iter().any(|p| p.is_match(path));
        assert!(any("classes/GameScore"));
        assert!(!any("x/classes/GameScore"));
        assert!(any("functions/a"));
        assert!(!any("functions/ab"));
        assert!(compile_paths(&["(".into()]).is_err());
    }
}
