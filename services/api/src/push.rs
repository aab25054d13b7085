//! Parse's `POST /push`: the push's `_PushStatus`, then the push handed to
//! the push service over NATS; and the push service's reads and writes of
//! installations and statuses ([`PushStore`]).

use std::collections::HashMap;
use std::sync::Arc;

use axum::http::Method;
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use oxbase_proto::push::{ApnsOptions, PushDevice, PushRequest};
use oxbase_push::PushStore;
use serde_json::{Map, Value, json};

use crate::App;
use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, code};
use crate::query::FindOptions;
use crate::request::ParseRequest;
use crate::routes::Reply;

const STATUS: &str = "_PushStatus";

fn misconfigured(message: impl Into<String>) -> ApiError {
    ApiError::new(code::PUSH_MISCONFIGURED, message)
}

/// A time as Parse takes `push_time` and `expiration_time`: Unix seconds,
/// or an ISO 8601 date, in UTC when it names no zone.
fn instant(value: &Value, name: &str) -> ApiResult<DateTime<Utc>> {
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
fn apns_options(body: &Map<String, Value>, data: &Map<String, Value>) -> ApiResult<ApnsOptions> {
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
    fn push_queue(&self) -> ApiResult<&oxbase_push::PushQueue> {
        self.push.as_ref().ok_or_else(|| {
            ApiError::new(
                code::COMMAND_UNAVAILABLE,
                "Push is off on this server (push.enabled = false, or no NATS).",
            )
        })
    }

    /// `POST /push` (master key): answers at once, with the push's
    /// `_PushStatus` in the `X-Parse-Push-Status-Id` header.
    pub(crate) async fn push_route(&self, auth: &Auth, req: &ParseRequest) -> ApiResult<Reply> {
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
        FindOptions::for_find(&params, self.db.limits())?;
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
            .db
            .prepare_create(&Auth::master(), STATUS, &status)
            .await?;
        let status_id = write.object_id().unwrap_or_default().to_owned();
        self.db.commit_one(write).await?;

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
                let _ = self.store_status(&status_id, failed).await;
            }
            return Err(ApiError::internal(format!("push: {err}")));
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
            "lastUsed": {"__type": "Date", "iso": crate::values::now()},
            "timesUsed": {"__op": "Increment", "amount": 1},
        });
        let Value::Object(change) = change else {
            return;
        };
        let master = Auth::master();
        let result = match self
            .db
            .prepare_update(&master, "_Audience", audience_id, &change)
            .await
        {
            Ok(write) => self.db.commit_one(write).await.map(|_| ()),
            Err(err) => Err(err),
        };
        if let Err(err) = result {
            tracing::warn!(%err, audience_id, "cannot mark a push audience used");
        }
    }

    /// The push service's view of this app's data.
    pub fn push_store(self: &Arc<Self>) -> Arc<dyn PushStore> {
        Arc::new(AppPushStore(Arc::clone(self)))
    }

    async fn store_status(
        &self,
        id: &str,
        changes: Map<String, Value>,
    ) -> ApiResult<Map<String, Value>> {
        let master = Auth::master();
        let write = self
            .db
            .prepare_update(&master, STATUS, id, &changes)
            .await?;
        self.db.commit_one(write).await?;
        let options = FindOptions::for_get(&Map::new(), self.db.limits())?;
        self.db.get(&master, STATUS, id, &options).await
    }

    /// Applies the same update to each installation in `ids`.
    /// The `_Installation` objects a Parse find with `params` returns, as
    /// the master key sees them.
    async fn find_installations(&self, params: Value) -> ApiResult<Vec<Map<String, Value>>> {
        let Value::Object(params) = params else {
            return Ok(Vec::new());
        };
        let options = FindOptions::for_find(&params, self.db.limits())?;
        let (found, _) = self
            .db
            .find(&Auth::master(), "_Installation", &options)
            .await?;
        Ok(found)
    }

    async fn update_installations(&self, ids: &[String], change: Value) -> ApiResult<()> {
        let Value::Object(change) = change else {
            return Ok(());
        };
        let mut writes = Vec::with_capacity(ids.len());
        for id in ids {
            writes.push(
                self.db
                    .prepare_update(&Auth::master(), "_Installation", id, &change)
                    .await?,
            );
        }
        for reply in self.db.commit(writes, false).await? {
            match reply {
                // Deleted meanwhile: nothing to update.
                Err(ApiError::Parse {
                    code: code::OBJECT_NOT_FOUND,
                    ..
                }) => {}
                other => {
                    other?;
                }
            }
        }
        Ok(())
    }
}

struct AppPushStore(Arc<App>);

fn text(err: ApiError) -> String {
    err.to_string()
}

#[async_trait::async_trait]
impl PushStore for AppPushStore {
    async fn audience(
        &self,
        query: &Map<String, Value>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDevice>, String> {
        let app = &self.0;
        let mut parts = vec![
            Value::Object(query.clone()),
            json!({"deviceToken": {"$exists": true}}),
        ];
        if let Some(after) = after {
            parts.push(json!({"objectId": {"$gt": after}}));
        }
        let found = app
            .find_installations(json!({
                "where": {"$and": parts},
                "order": "objectId",
                "limit": limit,
                "keys": "deviceType,deviceToken,badge,appIdentifier",
            }))
            .await
            .map_err(text)?;
        Ok(found
            .into_iter()
            .filter_map(|object| {
                let field = |key: &str| object.get(key).and_then(Value::as_str).map(str::to_owned);
                Some(PushDevice {
                    installation_id: field("objectId")?,
                    device_type: field("deviceType").unwrap_or_default(),
                    device_token: field("deviceToken")?,
                    badge: object.get("badge").and_then(Value::as_i64),
                    app_identifier: field("appIdentifier"),
                })
            })
            .collect())
    }

    async fn update_status(
        &self,
        id: &str,
        changes: Map<String, Value>,
    ) -> Result<Map<String, Value>, String> {
        self.0.store_status(id, changes).await.map_err(text)
    }

    async fn increment_badges(&self, ids: &[String]) -> Result<HashMap<String, i64>, String> {
        let app = &self.0;
        app.update_installations(ids, json!({"badge": {"__op": "Increment", "amount": 1}}))
            .await
            .map_err(text)?;
        let found = app
            .find_installations(json!({
                "where": {"objectId": {"$in": ids}},
                "limit": ids.len(),
                "keys": "badge",
            }))
            .await
            .map_err(text)?;
        Ok(found
            .into_iter()
            .filter_map(|object| {
                let id = object.get("objectId")?.as_str()?.to_owned();
                Some((id, object.get("badge")?.as_i64()?))
            })
            .collect())
    }

    async fn forget_tokens(&self, ids: &[String]) -> Result<(), String> {
        self.0
            .update_installations(ids, json!({"deviceToken": {"__op": "Delete"}}))
            .await
            .map_err(text)
    }
}
