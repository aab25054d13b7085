//! The push service's reads and writes on Parse's object layer: the
//! installations a push reaches, paged in objectId order, their badges and
//! dead tokens, and the push's `_PushStatus`.

use std::collections::HashMap;

use oxbase_objects::{Auth, FindOptions, ObjectLayer, ParseError, code};
use oxbase_proto::push::PushDevice;
use serde_json::{Map, Value, json};

use oxbase_store::{Condition, Filter, QueryValue};

use crate::service::COUNTED;
use crate::{PushStore, PushStoreError};

const STATUS: &str = "_PushStatus";
const INSTALLATION: &str = "_Installation";

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

    async fn status(&self, id: &str) -> Result<Option<Map<String, Value>>, PushStoreError> {
        let options =
            FindOptions::for_get(&Map::new(), self.limits()).map_err(PushStoreError::new)?;
        match self.get(&Auth::master(), STATUS, id, &options).await {
            Ok(status) => Ok(Some(status)),
            Err(ParseError::Parse {
                code: code::OBJECT_NOT_FOUND,
                ..
            }) => Ok(None),
            Err(err) => Err(PushStoreError::new(err)),
        }
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

    async fn badges(&self, ids: &[String]) -> Result<HashMap<String, i64>, PushStoreError> {
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
                let badge = object.get("badge").and_then(Value::as_i64).unwrap_or(0);
                Some((id, badge))
            })
            .collect())
    }

    async fn record_batch(
        &self,
        id: &str,
        page: u64,
        mut changes: Map<String, Value>,
        badged: &[String],
    ) -> Result<Map<String, Value>, PushStoreError> {
        let master = Auth::master();
        let increment = params(json!({"badge": {"__op": "Increment", "amount": 1}}));
        let mut writes = Vec::with_capacity(badged.len() + 1);
        changes.insert(
            COUNTED.into(),
            json!({"__op": "AddUnique", "objects": [page]}),
        );
        let mut status = self
            .prepare_update(&master, STATUS, id, &changes)
            .await
            .map_err(PushStoreError::new)?;
        status.require(Filter::field(
            COUNTED,
            Condition::Nin(vec![QueryValue::Number(page.into())]),
        ));
        writes.push(status);
        for installation in badged {
            writes.push(
                self.prepare_update(&master, INSTALLATION, installation, &increment)
                    .await
                    .map_err(PushStoreError::new)?,
            );
        }
        for reply in self
            .commit(writes, true)
            .await
            .map_err(PushStoreError::new)?
        {
            reply.map_err(PushStoreError::new)?;
        }
        self.status(id)
            .await?
            .ok_or_else(|| PushStoreError::from(format!("_PushStatus {id} was deleted")))
    }

    async fn forget_tokens(&self, ids: &[String]) -> Result<(), PushStoreError> {
        let unset = params(json!({"deviceToken": {"__op": "Delete"}}));
        self.update_installations(ids, &unset)
            .await
            .map_err(PushStoreError::new)
    }
}
