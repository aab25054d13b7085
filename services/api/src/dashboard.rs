//! The routes Parse Dashboard needs beyond the object API: `/serverInfo`,
//! `/purge`, `/push_audiences` and `/scriptlog`.

use axum::http::Method;
use chrono::{DateTime, SecondsFormat, Utc};
use oxbase_kit::telemetry::{LogLine, recent_logs};
use oxbase_objects::{Auth, ParseError, ParseResult, code};
use serde_json::{Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

/// The Parse Server release whose REST API oxbase follows. Parse Dashboard
/// reads `parseServerVersion` to decide what it may ask for.
const PARSE_SERVER_VERSION: &str = "9.10.0";

/// The most `/scriptlog` answers at once.
const MAX_LOG_LINES: usize = 1000;

impl App {
    /// `GET /serverInfo`: what this server does, in Parse's `features` map,
    /// so the Dashboard shows only what works.
    pub(crate) fn server_info(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        if req.method != Method::GET {
            return Err(self.no_route(req));
        }
        let push = self.push.is_some();
        Ok(Reply::ok(json!({
            "features": {
                "globalConfig": {"create": true, "read": true, "update": true, "delete": true},
                "hooks": {"create": true, "read": true, "update": true, "delete": true},
                "cloudCode": {"jobs": self.jobs.is_some()},
                "logs": {"level": true, "size": true, "order": true, "until": true, "from": true},
                "push": {
                    "immediatePush": push,
                    "scheduledPush": push,
                    "storedPushData": push,
                    "pushAudiences": true,
                    // Per-locale alerts (`alert-fr`) are not sent yet.
                    "localization": false,
                },
                "schemas": {
                    "addField": true,
                    "removeField": true,
                    "addClass": true,
                    "removeClass": true,
                    "clearAllDataFromClass": true,
                    "exportClass": false,
                    "editClassLevelPermissions": true,
                    "editPointerPermissions": true,
                },
                "settings": {"securityCheck": false},
            },
            "parseServerVersion": PARSE_SERVER_VERSION,
            "oxbaseVersion": env!("CARGO_PKG_VERSION"),
        })))
    }

    /// `DELETE /purge/{class}`: deletes every object of the class and keeps
    /// its schema. Each object is deleted as a write of its own, so each
    /// leaves its delete event (marked as a purge, so no afterDelete runs,
    /// as in Parse Server); a class that does not exist answers `{}`.
    pub(crate) async fn purge(&self, auth: &Auth, class_name: &str) -> ParseResult<Reply> {
        auth.require_master()?;
        if auth.read_only {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                "read-only masterKey isn't allowed to purge a schema.",
            ));
        }
        self.objects.purge(auth, class_name).await?;
        Ok(Reply::ok(json!({})))
    }

    /// `/push_audiences`: Parse's `_Audience` class for the master key,
    /// with each audience's `query` (stored as a JSON string) answered as
    /// an object.
    pub(crate) async fn push_audiences(
        &self,
        auth: &Auth,
        req: &ParseRequest,
    ) -> ParseResult<Reply> {
        auth.require_master()?;
        let mut segments = vec!["classes".to_owned(), "_Audience".to_owned()];
        match (&req.method, req.segments.as_slice()) {
            (&Method::GET | &Method::POST, [_]) => {}
            (&Method::GET | &Method::PUT | &Method::DELETE, [_, id]) => segments.push(id.clone()),
            _ => return Err(self.no_route(req)),
        }
        let classes = ParseRequest {
            segments,
            ..req.clone()
        };
        let mut reply = Box::pin(self.dispatch(auth, &classes)).await?;
        if req.method == Method::GET {
            match reply.body.get_mut("results").and_then(Value::as_array_mut) {
                Some(results) => results.iter_mut().for_each(decode_audience_query),
                None => decode_audience_query(&mut reply.body),
            }
        }
        Ok(reply)
    }

    /// `GET /scriptlog`: this process's recent log lines, as Parse Server
    /// answers from its log files: `level=error` gives errors only, any
    /// other level everything from info up; `size` (or `n`) lines, 10 by
    /// default, newest first unless `order=asc`, between `from` and
    /// `until`.
    pub(crate) fn script_log(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        auth.require_master()?;
        if req.method != Method::GET || req.segments.len() != 1 {
            return Err(self.no_route(req));
        }
        let text = |key: &str| match req.params.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        let size = text("n")
            .or_else(|| text("size"))
            .and_then(|s| s.parse::<f64>().ok())
            .filter(|n| n.is_finite() && *n >= 1.0)
            .map_or(10, |n| (n as usize).min(MAX_LOG_LINES));
        let errors_only = text("level").is_some_and(|l| l == "error");
        let ascending = text("order").is_some_and(|o| o == "asc");
        let time = |key: &str| {
            text(key)
                .and_then(|s| DateTime::parse_from_rfc3339(&s).ok())
                .map(|t| t.timestamp_millis())
        };
        let now = Utc::now().timestamp_millis();
        let from = time("from").unwrap_or(now - 7 * 24 * 3600 * 1000);
        let until = time("until").unwrap_or(now);
        let mut lines: Vec<LogLine> = recent_logs()
            .snapshot()
            .into_iter()
            .filter(|line| (from..=until).contains(&line.timestamp_ms))
            .filter(|line| !errors_only || line.level == tracing::Level::ERROR)
            .collect();
        if !ascending {
            lines.reverse();
        }
        lines.truncate(size);
        let body = lines
            .into_iter()
            .map(|line| {
                let timestamp = DateTime::<Utc>::from_timestamp_millis(line.timestamp_ms)
                    .unwrap_or_default()
                    .to_rfc3339_opts(SecondsFormat::Millis, true);
                json!({
                    "level": line.level.as_str().to_ascii_lowercase(),
                    "message": line.message,
                    "timestamp": timestamp,
                })
            })
            .collect();
        Ok(Reply::ok(Value::Array(body)))
    }
}

/// An audience's `query` as the object its stored JSON string holds.
fn decode_audience_query(audience: &mut Value) {
    if let Some(query) = audience.get_mut("query")
        && let Some(parsed) = query
            .as_str()
            .and_then(|s| serde_json::from_str::<Value>(s).ok())
    {
        *query = parsed;
    }
}
