//! The push service's reads and writes on Parse's object layer: the
//! installations a push reaches, paged in objectId order, their badges and
//! dead tokens, and the push's `_PushStatus`.

use std::collections::HashMap;

use oxbase_objects::ObjectLayer;
use oxbase_proto::push::PushDevice;
use serde_json::{Map, Value, json};

use crate::{PushStore, PushStoreError};

/// A Parse find's parameters, as an object.
fn params(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

#[async_trait::async_trait]
impl PushStore for ObjectLayer {
    async fn audience(
        &self,
        query: &Map<String, Value>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDevice>, PushStoreError> {
        let mut parts = vec![
            Value::Object(query.clone()),
            json!({"deviceToken": {"$exists": true}}),
        ];
        if let Some(after) = after {
            parts.push(json!({"objectId": {"$gt": after}}));
        }
        let found = self
            .find_installations(&params(json!({
                "where": {"$and": parts},
                "order": "objectId",
                "limit": limit,
                "keys": "deviceType,deviceToken,badge,appIdentifier",
            })))
            .await
            .map_err(PushStoreError::new)?;
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
    ) -> Result<Map<String, Value>, PushStoreError> {
        self.update_push_status(id, &changes)
            .await
            .map_err(PushStoreError::new)
    }

    async fn increment_badges(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, i64>, PushStoreError> {
        let increment = params(json!({"badge": {"__op": "Increment", "amount": 1}}));
        self.update_installations(ids, &increment)
            .await
            .map_err(PushStoreError::new)?;
        let found = self
            .find_installations(&params(json!({
                "where": {"objectId": {"$in": ids}},
                "limit": ids.len(),
                "keys": "badge",
            })))
            .await
            .map_err(PushStoreError::new)?;
        Ok(found
            .into_iter()
            .filter_map(|object| {
                let id = object.get("objectId")?.as_str()?.to_owned();
                Some((id, object.get("badge")?.as_i64()?))
            })
            .collect())
    }

    async fn forget_tokens(&self, ids: &[String]) -> Result<(), PushStoreError> {
        let unset = params(json!({"deviceToken": {"__op": "Delete"}}));
        self.update_installations(ids, &unset)
            .await
            .map_err(PushStoreError::new)
    }
}
