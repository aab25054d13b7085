//! Parse's `POST /push`: the push's `_PushStatus`, then the push handed to
//! the push service over NATS.

use axum::http::Method;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use oxbase_objects::{Auth, ParseError, ParseResult, code, query::FindOptions};
use oxbase_proto::push::{ApnsOptions, PushRequest};
use serde_json::{Map, Value, json};

use crate::App;
use crate::request::ParseRequest;
use crate::routes::Reply;

const STATUS: &str = "_PushStatus";

fn misconfigured(message: impl Into<String>) -> ParseError {
    ParseError::new(code::PUSH_MISCONFIGURED, message)
}

/// A time as Parse takes `push_time` and `expiration_time`: Unix seconds,
/// or an ISO 8601 date, in UTC when it names no zone.
fn instant(value: &Value, name: &str) -> ParseResult<DateTime<Utc>> {
    let parsed = match value {
        Value::Number(seconds) => seconds
            .as_f64()
            .and_then(|s| DateTime::from_timestamp_millis((s * 1000.0) as i64)),
        Value::String(text) => DateTime::parse_from_rfc3339(text)
            .map(|at| at.with_timezone(&Utc))
            .ok()
            .or_else(|| {
                NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f")
                    .ok()
                    .map(|at| at.and_utc())
            }),
        _ => None,
    };
    parsed.ok_or_else(|| misconfigured(format!("{name} is not a valid time: {value}")))
}

/// `push_type`, `priority` and `collapse_id`, from the push body or, as
/// Parse Server also reads them, from its `data`.
fn apns_options(body: &Map<String, Value>, data: &Map<String, Value>) -> ParseResult<ApnsOptions> {
    let field = |name: &str| body.get(name).or_else(|| data.get(name));
    let text = |name: &str| match field(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text.clone())),
        Some(_) => Err(misconfigured(format!("{name} must be a string."))),
    };
    let priority = match field("priority") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(priority @ (1 | 5 | 10)) => Some(priority as u8),
            _ => return Err(misconfigured("priority must be 10, 5 or 1.")),
        },
    };
    let collapse_id = text("collapse_id")?;
    if collapse_id.as_ref().is_some_and(|id| id.len() > 64) {
        return Err(misconfigured("collapse_id must be at most 64 bytes."));
    }
    Ok(ApnsOptions {
        push_type: text("push_type")?,
        priority,
        collapse_id,
    })
}

impl App {
    fn push_queue(&self) -> ParseResult<&oxbase_push::PushQueue> {
        self.push.as_ref().ok_or_else(|| {
            ParseError::new(
                code::COMMAND_UNAVAILABLE,
                "Push is off on this server (push.enabled = false, or no NATS).",
            )
        })
    }

    /// `POST /push` (master key): answers at once, with the push's
    /// `_PushStatus` in the `X-Parse-Push-Status-Id` header.
    pub(crate) async fn push_route(&self, auth: &Auth, req: &ParseRequest) -> ParseResult<Reply> {
        if req.method != Method::POST || req.segments.len() != 1 {
            return Err(self.no_route(req));
        }
        auth.require_master()?;
        auth.require_writable("send a push")?;
        let queue = self.push_queue()?;
        let body = &req.body;
        let query = match (body.get("channels"), body.get("where")) {
            (Some(_), Some(_)) => {
                return Err(misconfigured(
                    "Channels and query can not be set at the same time.",
                ));
            }
            (Some(Value::Array(channels)), None) if channels.iter().all(Value::is_string) => {
                let mut query = Map::new();
                query.insert("channels".into(), json!({ "$in": channels }));
                query
            }
            (Some(_), None) => {
                return Err(misconfigured("channels must be an array of strings."));
            }
            (None, Some(Value::Object(query))) => query.clone(),
            (None, Some(_)) => return Err(misconfigured("where must be an object.")),
            (None, None) => {
                return Err(misconfigured(
                    "Sending a push requires either \"channels\" or a \"where\" query.",
                ));
            }
        };
        // A query that cannot run is refused now, not in the push service.
        let mut params = Map::new();
        params.insert("where".into(), Value::Object(query.clone()));
        FindOptions::for_find(&params, self.objects.limits())?;
        let Some(Value::Object(data)) = body.get("data") else {
            return Err(misconfigured("data must be an object."));
        };
        match data.get("badge") {
            None | Some(Value::Number(_)) => {}
            Some(Value::String(badge)) if badge.eq_ignore_ascii_case("increment") => {}
            Some(_) => {
                return Err(misconfigured("badge must be a number or \"Increment\"."));
            }
        }
        let apns = apns_options(body, data)?;
        let now = Utc::now();
        let push_time = match body.get("push_time") {
            None | Some(Value::Null) => None,
            Some(value) => Some(instant(value, "push_time")?),
        };
        let expiration_time = match body.get("expiration_time") {
            None | Some(Value::Null) => None,
            Some(value) => Some(instant(value, "expiration_time")?),
        };
        let interval = match body.get("expiration_interval") {
            None | Some(Value::Null) => None,
            Some(value) => match value.as_f64() {
                Some(seconds) if seconds > 0.0 => Some(seconds),
                _ => {
                    return Err(misconfigured(
                        "expiration_interval must be a number greater than 0.",
                    ));
                }
            },
        };
        if expiration_time.is_some() && interval.is_some() {
            return Err(misconfigured(
                "expiration_time and expiration_interval cannot both be set.",
            ));
        }
        let sent_at = push_time.unwrap_or(now).max(now);
        let expires_at = expiration_time.map(|at| at.timestamp_millis()).or_else(|| {
            interval.map(|seconds| sent_at.timestamp_millis() + (seconds * 1000.0) as i64)
        });
        let later = push_time.filter(|at| *at > now + chrono::Duration::seconds(1));

        let mut status = Map::new();
        status.insert(
            "pushTime".into(),
            json!(sent_at.to_rfc3339_opts(SecondsFormat::Millis, true)),
        );
        status.insert(
            "query".into(),
            json!(Value::Object(query.clone()).to_string()),
        );
        status.insert(
            "payload".into(),
            json!(Value::Object(data.clone()).to_string()),
        );
        status.insert("source".into(), json!("rest"));
        if let Some(title) = data.get("title").and_then(Value::as_str) {
            status.insert("title".into(), json!(title));
        }
        if let Some(at) = expires_at {
            status.insert("expiry".into(), json!(at));
        }
        if let Some(seconds) = interval {
            status.insert("expiration_interval".into(), json!(seconds));
        }
        let state = if later.is_some() {
            "scheduled"
        } else {
            "pending"
        };
        status.insert("status".into(), json!(state));
        status.insert("numSent".into(), json!(0));
        status.insert("numFailed".into(), json!(0));
        status.insert("sentPerType".into(), json!({}));
        status.insert("failedPerType".into(), json!({}));
        status.insert("ACL".into(), json!({}));
        let write = self
            .objects
            .prepare_create(&Auth::master(), STATUS, &status)
            .await?;
        let status_id = write.object_id().unwrap_or_default().to_owned();
        self.objects.commit_one(write).await?;

        let request = PushRequest {
            status_id: status_id.clone(),
            query,
            data: data.clone(),
            expires_at,
            apns,
        };
        if let Err(err) = queue.submit(&request, later).await {
            let failed = json!({"status": "failed", "errorMessage": {"message": err.to_string()}});
            if let Value::Object(failed) = failed {
                let _ = self.objects.update_push_status(&status_id, &failed).await;
            }
            return Err(ParseError::internal(format!("push: {err}")));
        }
        if let Some(Value::String(audience)) = body.get("audience_id") {
            self.count_audience_use(audience).await;
        }
        let mut reply = Reply::ok(json!({"result": true}));
        reply.headers.push(("X-Parse-Push-Status-Id", status_id));
        Ok(reply)
    }

    /// A push sent to a saved audience (Parse Dashboard sends its
    /// `audience_id`) marks it used, as Parse Server does. The push is
    /// queued already, so a failure here is only logged.
    async fn count_audience_use(&self, audience_id: &str) {
        let change = json!({
            "lastUsed": {"__type": "Date", "iso": oxbase_objects::values::now()},
            "timesUsed": {"__op": "Increment", "amount": 1},
        });
        let Value::Object(change) = change else {
            return;
        };
        let master = Auth::master();
        let result = match self
            .objects
            .prepare_update(&master, "_Audience", audience_id, &change)
            .await
        {
            Ok(write) => self.objects.commit_one(write).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(%err, audience_id, "cannot mark a push audience used");
        }
    }
}
