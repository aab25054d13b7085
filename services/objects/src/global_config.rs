//! `/config`: Parse Config parameters, stored as Parse Server stores them:
//! one `_GlobalConfig` object, `objectId` "1", with `params` (name to
//! Parse-encoded value) and `masterKeyOnly` (name to whether only the
//! master key may read it).

use std::collections::BTreeMap;

use chrono::{SecondsFormat, Utc};
use oxbase_store::query::js_truthy;
use oxbase_store::write::apply_update;
use oxbase_store::{
    Condition, FieldPath, FieldType, Filter, Object, Query, QueryValue, SchemaView, StoreError,
    UpdateOp, WriteBatch, WriteOp, WriteOutcome,
};
use serde_json::{Map, Value, json};

use crate::ObjectLayer;
use crate::auth::Auth;
use crate::error::{ParseError, ParseResult, code};
use crate::values::PROHIBITED_KEYS;

const CLASS: &str = "_GlobalConfig";
const OBJECT_ID: &str = "1";
const FIELDS: [&str; 2] = ["params", "masterKeyOnly"];

impl ObjectLayer {
    /// `GET /config`. Without the master key, parameters flagged
    /// master-key-only are left out (and their flags with them).
    pub async fn get_config(&self, auth: &Auth) -> ParseResult<Value> {
        let stored = match self.store().load_config().await {
            Some(stored) => stored?,
            None => {
                let view = self.schema_cache().for_class(CLASS, &[]).await?;
                self.stored_config(view).await?
            }
        };
        let Some(stored) = stored else {
            return Ok(json!({ "params": {} }));
        };
        let mut params = match stored.get("params") {
            Some(Value::Object(params)) => params.clone(),
            _ => Map::new(),
        };
        let mut master_key_only = match stored.get("masterKeyOnly") {
            Some(Value::Object(flags)) => Some(flags.clone()),
            _ => None,
        };
        if !auth.master
            && let Some(flags) = &mut master_key_only
        {
            let hidden: Vec<String> = params
                .keys()
                .filter(|key| flags.get(*key).is_some_and(js_truthy))
                .cloned()
                .collect();
            for key in hidden {
                params.remove(&key);
                flags.remove(&key);
            }
        }
        let mut body = Map::new();
        body.insert("params".into(), Value::Object(params));
        if let Some(flags) = master_key_only {
            body.insert("masterKeyOnly".into(), Value::Object(flags));
        }
        Ok(Value::Object(body))
    }

    /// The config object, if there is one.
    async fn stored_config(&self, view: SchemaView) -> ParseResult<Option<Object>> {
        if view.get(CLASS).is_none() {
            return Ok(None);
        }
        let query = Query::new(CLASS)
            .filter(Filter::field(
                "objectId",
                Condition::Eq(QueryValue::String(OBJECT_ID.into())),
            ))
            .limit(1);
        let store = self.store();
        let found = match store.find(&view, &query).await {
            Err(StoreError::StaleSchema) => {
                let view = self.schema_cache().reload().await?;
                store.find(&view, &query).await?
            }
            other => other?,
        };
        Ok(found.into_iter().next())
    }

    /// The schemas, with `_GlobalConfig` and its two Object fields made
    /// to exist.
    async fn config_schema(&self) -> ParseResult<SchemaView> {
        let cache = self.schema_cache();
        let view = cache.for_class(CLASS, &FIELDS).await?;
        let class = view.get(CLASS);
        let mut missing = BTreeMap::new();
        for field in FIELDS {
            match class.and_then(|c| c.field_type(field)) {
                Some(FieldType::Object) => {}
                Some(other) => {
                    return Err(StoreError::SchemaMismatch {
                        class_name: CLASS.into(),
                        field: field.into(),
                        expected: other.clone(),
                        actual: FieldType::Object,
                    }
                    .into());
                }
                None => {
                    missing.insert(field.to_owned(), FieldType::Object);
                }
            }
        }
        if missing.is_empty() {
            return Ok(view);
        }
        let schema = self.store().ensure_fields(CLASS, &missing).await?;
        cache.install(schema);
        Ok(cache.current())
    }

    /// Applies the changes to the config object, creating it when there
    /// is none. Two requests creating it at once both land: the loser of
    /// the insert updates instead.
    pub async fn update_config(&self, changes: Vec<(FieldPath, UpdateOp)>) -> ParseResult<()> {
        if let Some(done) = self.store().update_config(&changes).await {
            return Ok(done?);
        }
        let view = self.config_schema().await?;
        let mut exists = self.stored_config(view.clone()).await?.is_some();
        let mut last_error = None;
        for _ in 0..3 {
            let now = Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true);
            let op = if exists {
                WriteOp::Update {
                    class_name: CLASS.into(),
                    object_id: OBJECT_ID.into(),
                    updated_at: now,
                    changes: changes.clone(),
                    relations: Vec::new(),
                    precondition: Filter::All,
                }
            } else {
                let mut object = Object::new();
                object.insert("params".into(), json!({}));
                object.insert("masterKeyOnly".into(), json!({}));
                apply_update(&mut object, &changes)?;
                object.insert("objectId".into(), json!(OBJECT_ID));
                object.insert("createdAt".into(), json!(now));
                object.insert("updatedAt".into(), json!(now));
                WriteOp::Create {
                    class_name: CLASS.into(),
                    object,
                    relations: Vec::new(),
                }
            };
            match self.write_config(&view, op).await {
                Ok(_) => return Ok(()),
                Err(StoreError::Duplicate { .. }) if !exists => exists = true,
                Err(StoreError::NotFound) if exists => exists = false,
                Err(err) => return Err(err.into()),
            }
            last_error = Some(if exists {
                "insert raced"
            } else {
                "update raced"
            });
        }
        Err(ParseError::internal(format!(
            "cannot write _GlobalConfig: {}",
            last_error.unwrap_or_default()
        )))
    }

    async fn write_config(
        &self,
        view: &SchemaView,
        op: WriteOp,
    ) -> Result<WriteOutcome, StoreError> {
        let store = self.store();
        let results = match store.write(view, WriteBatch::one(op.clone())).await {
            Err(StoreError::StaleSchema) => {
                let view = self.schema_cache().reload().await?;
                store.write(&view, WriteBatch::one(op)).await?
            }
            other => other?,
        };
        results
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(StoreError::Backend("the store answered no result".into())))
    }
}

/// The changes a `PUT /config` body asks for, as Parse Server makes them:
/// each parameter is set (or deleted with `{"__op": "Delete"}`) and its
/// master-key-only flag set with it, `false` unless the body says `true`.
pub fn config_changes(body: &Map<String, Value>) -> ParseResult<Vec<(FieldPath, UpdateOp)>> {
    let object = |field: &str| match body.get(field) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => Ok(map.clone()),
        Some(_) => Err(ParseError::json(format!("{field} must be an object"))),
    };
    let params = object("params")?;
    let flags = object("masterKeyOnly")?;
    let mut changes = Vec::with_capacity(params.len() * 2);
    for (key, value) in &params {
        if key.is_empty() || key.contains('.') || key.starts_with('$') {
            return Err(ParseError::new(
                code::INVALID_KEY_NAME,
                format!("Invalid key name: {key}"),
            ));
        }
        let op = match value.get("__op") {
            Some(Value::String(op)) if op == "Delete" => UpdateOp::Delete,
            Some(op) => {
                let op = op.as_str().map_or_else(|| op.to_string(), str::to_owned);
                return Err(ParseError::new(
                    code::COMMAND_UNAVAILABLE,
                    format!("The {op} operator is not supported in config parameters."),
                ));
            }
            None => {
                check_prohibited(value)?;
                UpdateOp::Set(value.clone())
            }
        };
        let flag = match flags.get(key) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(flag)) => *flag,
            Some(_) => {
                return Err(ParseError::json(format!(
                    "masterKeyOnly.{key} must be a boolean"
                )));
            }
        };
        changes.push((nested("params", key), op));
        changes.push((
            nested("masterKeyOnly", key),
            UpdateOp::Set(Value::Bool(flag)),
        ));
    }
    Ok(changes)
}

fn nested(field: &str, key: &str) -> FieldPath {
    FieldPath {
        field: field.to_owned(),
        nested: vec![key.to_owned()],
    }
}

fn check_prohibited(value: &Value) -> ParseResult<()> {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                if PROHIBITED_KEYS.contains(&key.as_str()) {
                    return Err(ParseError::new(
                        code::INVALID_KEY_NAME,
                        format!("Prohibited keyword in request data: {{\"key\":\"{key}\"}}."),
                    ));
                }
                check_prohibited(value)?;
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check_prohibited),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code_of(result: ParseResult<Vec<(FieldPath, UpdateOp)>>) -> i32 {
        match result {
            Err(ParseError::Parse { code, .. }) => code,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn changes_set_each_parameter_and_its_flag() {
        let body = json!({
            "params": {"a": 1, "gone": {"__op": "Delete"}, "d": {"__type": "Date", "iso": "2020-01-01T00:00:00.000Z"}},
            "masterKeyOnly": {"a": true, "unrelated": true}
        });
        let changes = config_changes(body.as_object().unwrap()).unwrap();
        assert_eq!(changes.len(), 6);
        assert!(changes.contains(&(nested("params", "a"), UpdateOp::Set(json!(1)))));
        assert!(changes.contains(&(nested("masterKeyOnly", "a"), UpdateOp::Set(json!(true)))));
        assert!(changes.contains(&(nested("params", "gone"), UpdateOp::Delete)));
        assert!(changes.contains(&(nested("masterKeyOnly", "gone"), UpdateOp::Set(json!(false)))));
        assert!(!changes.iter().any(|(path, _)| path.nested == ["unrelated"]));
        assert!(config_changes(&Map::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_bodies_are_refused() {
        let code = |body: Value| code_of(config_changes(body.as_object().unwrap()));
        assert_eq!(code(json!({"params": "x"})), 107);
        assert_eq!(code(json!({"params": [1]})), 107);
        assert_eq!(code(json!({"params": {}, "masterKeyOnly": 3})), 107);
        assert_eq!(
            code(json!({"params": {"a": 1}, "masterKeyOnly": {"a": "yes"}})),
            107
        );
        assert_eq!(code(json!({"params": {"a.b": 1}})), 105);
        assert_eq!(code(json!({"params": {"": 1}})), 105);
        assert_eq!(code(json!({"params": {"$a": 1}})), 105);
        assert_eq!(code(json!({"params": {"a": {"constructor": 1}}})), 105);
        assert_eq!(
            code(json!({"params": {"a": {"__op": "Increment", "amount": 1}}})),
            108
        );
    }

    #[test]
    fn flags_are_truthy_as_in_javascript() {
        for yes in [json!(true), json!(1), json!("x"), json!({}), json!([])] {
            assert!(js_truthy(&yes), "{yes}");
        }
        for no in [json!(false), json!(0), json!(""), json!(null), json!(0.0)] {
            assert!(!js_truthy(&no), "{no}");
        }
    }
}
