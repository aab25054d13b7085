//! The indexes Parse Server creates (storage notes B6), under Parse's
//! names, so a database stays usable by both: the unique indexes of
//! `_User`, `_Role` and `_Idempotency`, `<field>_2dsphere` for Polygons,
//! `<field>_2d` for GeoPoints, `<field>_text` for `$text`, and the ones
//! declared through `/schemas`.

use std::time::Duration;

use mongodb::IndexModel;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{Collation, CollationStrength, IndexOptions};
use serde_json::Value;

use super::MongoStore;
use super::errors::{INDEX_CONFLICTS, INDEX_NOT_FOUND, has_code, schema_error};
use super::filter::top_key;
use super::schema::SCHEMA_COLLECTION;
use super::transform::AUTH_DATA_PREFIX;
use crate::error::{StoreError, StoreResult};
use crate::query::Filter;
use crate::schema::{ClassSchema, FieldType};

fn model(keys: Document, options: IndexOptions) -> IndexModel {
    IndexModel::builder().keys(keys).options(options).build()
}

fn named(name: &str) -> IndexOptions {
    IndexOptions::builder().name(name.to_owned()).build()
}

/// Parse's sparse index options (its `background` flag has no effect on
/// servers since 4.2).
fn sparse(name: &str, unique: bool) -> IndexOptions {
    let mut options = named(name);
    options.sparse = Some(true);
    if unique {
        options.unique = Some(true);
    }
    options
}

/// The collation of Parse's case-insensitive username and email lookups.
fn case_insensitive(name: &str) -> IndexOptions {
    let mut options = sparse(name, false);
    options.collation = Some(
        Collation::builder()
            .locale("en_US".to_owned())
            .strength(CollationStrength::Secondary)
            .build(),
    );
    options
}

/// The indexes `DatabaseController.performInitialization` creates for a
/// system class (PS7's set; PS9's optional token indexes are left to it).
pub(super) fn system_indexes(class_name: &str) -> Vec<IndexModel> {
    match class_name {
        "_User" => vec![
            model(doc! {"username": 1}, sparse("username_1", true)),
            model(doc! {"email": 1}, sparse("email_1", true)),
            model(
                doc! {"username": 1},
                case_insensitive("case_insensitive_username"),
            ),
            model(
                doc! {"email": 1},
                case_insensitive("case_insensitive_email"),
            ),
        ],
        "_Role" => vec![model(doc! {"name": 1}, sparse("name_1", true))],
        "_Idempotency" => {
            let mut ttl = sparse("ttl", false);
            ttl.expire_after = Some(Duration::ZERO);
            vec![
                model(doc! {"reqId": 1}, sparse("reqId_1", true)),
                model(doc! {"expire": 1}, ttl),
            ]
        }
        _ => Vec::new(),
    }
}

/// Parse's unique index on one provider's id (`ensureAuthDataUniqueness`).
pub(super) fn auth_data_index(provider: &str) -> StoreResult<IndexModel> {
    crate::sql::check_auth_provider(provider)?;
    let key = format!("{AUTH_DATA_PREFIX}{provider}");
    Ok(model(
        doc! {format!("{key}.id"): 1},
        sparse(&format!("{key}_id"), true),
    ))
}

/// The geo index a field of this type needs: Parse creates `2dsphere` for
/// Polygons when the field is added; `$nearSphere` on a GeoPoint needs a
/// `2d` index, which Parse creates on the first query that lacks it and we
/// create up front.
pub(super) fn geo_index(field: &str, field_type: &FieldType) -> Option<IndexModel> {
    let kind = match field_type {
        FieldType::GeoPoint => "2d",
        FieldType::Polygon => "2dsphere",
        _ => return None,
    };
    Some(model(doc! {field: kind}, named(&format!("{field}_{kind}"))))
}

/// An index declared through `/schemas`, with field names turned into
/// stored keys (`_p_<pointer>`, `_created_at`, ...).
pub(super) fn declared_index(
    class: &ClassSchema,
    name: &str,
    spec: &Value,
) -> StoreResult<IndexModel> {
    let bad = |why: &str| StoreError::InvalidSchema(format!("invalid index {name}: {why}"));
    let keys = spec
        .as_object()
        .filter(|keys| !keys.is_empty())
        .ok_or_else(|| bad("it must name at least one field"))?;
    let mut stored = Document::new();
    for (field, kind) in keys {
        let key = match field.strip_prefix("_p_") {
            Some(pointer) if class.field_type(pointer).is_some() => field.clone(),
            _ => top_key(class, field),
        };
        let kind = match kind {
            Value::Number(n) if n.as_i64() == Some(1) || n.as_i64() == Some(-1) => {
                Bson::Int32(n.as_i64().unwrap_or(1) as i32)
            }
            Value::String(s) if matches!(s.as_str(), "text" | "2d" | "2dsphere" | "hashed") => {
                Bson::String(s.clone())
            }
            _ => {
                return Err(bad(
                    "each key must be 1, -1, \"text\", \"2d\", \"2dsphere\" or \"hashed\"",
                ));
            }
        };
        stored.insert(key, kind);
    }
    Ok(model(stored, named(name)))
}

impl MongoStore {
    /// Creates indexes Parse would have created, logging failures instead
    /// of failing: Parse carries on without them too (with duplicates in
    /// the data, a unique index cannot be built).
    pub(super) async fn create_auxiliary_indexes(
        &self,
        class_name: &str,
        indexes: Vec<IndexModel>,
    ) {
        let collection = self.primary_collection(class_name);
        for index in indexes {
            let name = index
                .options
                .as_ref()
                .and_then(|o| o.name.clone())
                .unwrap_or_default();
            match collection.create_index(index).await {
                Ok(_) => self.remember_index(class_name, &name),
                Err(err) => {
                    tracing::warn!(class = class_name, index = %name, %err, "could not create an index Parse expects")
                }
            }
        }
    }

    /// The indexes a new class needs: Parse's system ones, its declared
    /// ones and geo ones for its fields. A declared index Mongo refuses
    /// fails the call.
    pub(super) async fn create_class_indexes(&self, schema: &ClassSchema) -> StoreResult<()> {
        let mut auxiliary = system_indexes(&schema.class_name);
        auxiliary.extend(
            schema
                .fields
                .iter()
                .filter_map(|(name, spec)| geo_index(name, &spec.field_type)),
        );
        self.create_auxiliary_indexes(&schema.class_name, auxiliary)
            .await;
        for (name, spec) in &schema.indexes {
            self.create_declared_index(schema, name, spec).await?;
        }
        Ok(())
    }

    pub(super) async fn create_declared_index(
        &self,
        class: &ClassSchema,
        name: &str,
        spec: &Value,
    ) -> StoreResult<()> {
        // Every collection has it; Parse lists it among the indexes.
        if name == "_id_" {
            return Ok(());
        }
        let index = declared_index(class, name, spec)?;
        self.primary_collection(&class.class_name)
            .create_index(index)
            .await
            .map_err(schema_error)?;
        self.remember_index(&class.class_name, name);
        Ok(())
    }

    pub(super) async fn drop_declared_index(
        &self,
        class_name: &str,
        name: &str,
    ) -> StoreResult<()> {
        match self.primary_collection(class_name).drop_index(name).await {
            Ok(()) => {}
            Err(err) if has_code(&err, &[INDEX_NOT_FOUND, super::errors::NAMESPACE_NOT_FOUND]) => {}
            Err(err) => return Err(schema_error(err)),
        }
        self.forget_index(class_name, name);
        Ok(())
    }

    /// Parse Server 9's `ensureAuthDataUniqueness`: a unique sparse index
    /// `_auth_data_<provider>_id` on `_auth_data_<provider>.id`. One that
    /// exists already (under that name, or with other options) is kept.
    pub(super) async fn create_auth_data_index(&self, provider: &str) -> StoreResult<()> {
        let index = auth_data_index(provider)?;
        match self.primary_collection("_User").create_index(index).await {
            Ok(_) => Ok(()),
            Err(err) if has_code(&err, INDEX_CONFLICTS) => Ok(()),
            Err(err) if has_code(&err, super::errors::DUPLICATE_KEY) => {
                Err(StoreError::Duplicate {
                    field: Some(format!("{AUTH_DATA_PREFIX}{provider}")),
                })
            }
            Err(err) => Err(schema_error(err)),
        }
    }

    /// Makes sure each `$text` condition's field has a text index, as Parse
    /// does before a find: `<field>_text`, recorded in
    /// `_metadata.indexes`. Mongo allows one text index per collection; if
    /// another exists, `$text` searches that one's fields, as on Parse.
    pub(super) async fn ensure_text_indexes(&self, class: &ClassSchema, filter: &Filter) {
        for path in super::filter::text_fields(filter) {
            if path.is_nested() {
                continue;
            }
            let field = path.field.as_str();
            let key = top_key(class, field);
            let covered = class.indexes.values().any(|spec| {
                spec.as_object()
                    .is_some_and(|keys| keys.contains_key(field) || keys.contains_key(&key))
            });
            let name = format!("{field}_text");
            if covered || self.knows_index(&class.class_name, &name) {
                continue;
            }
            let index = model(doc! {key.clone(): "text"}, named(&name));
            match self
                .primary_collection(&class.class_name)
                .create_index(index)
                .await
            {
                Ok(_) => {
                    self.record_text_index(class, &name, &key).await;
                    self.remember_index(&class.class_name, &name);
                }
                Err(err) if has_code(&err, INDEX_CONFLICTS) => {
                    self.remember_index(&class.class_name, &name);
                }
                Err(err) => {
                    tracing::warn!(class = %class.class_name, %field, %err, "could not create a text index");
                }
            }
        }
    }

    async fn record_text_index(&self, class: &ClassSchema, name: &str, key: &str) {
        let mut set = doc! {format!("_metadata.indexes.{name}"): {key: "text"}};
        if class.indexes.is_empty() {
            // Parse's index list always starts with the `_id_` index.
            set.insert("_metadata.indexes._id_", doc! {"_id": 1});
        }
        let result = self
            .primary_collection(SCHEMA_COLLECTION)
            .update_one(doc! {"_id": class.class_name.clone()}, doc! {"$set": set})
            .await;
        if let Err(err) = result {
            tracing::warn!(class = %class.class_name, %err, "could not record a text index in _SCHEMA");
        }
    }

    /// Creates the `2d` index a `$nearSphere` on `key` needs (Parse's
    /// `<field>_2d`).
    pub(super) async fn create_near_index(&self, class_name: &str, key: &str) -> StoreResult<()> {
        let index = model(doc! {key: "2d"}, named(&format!("{key}_2d")));
        match self
            .primary_collection(class_name)
            .create_index(index)
            .await
        {
            Ok(_) => Ok(()),
            Err(err) if has_code(&err, INDEX_CONFLICTS) => Ok(()),
            Err(err) => Err(schema_error(err)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn described(index: &IndexModel) -> (Document, String, Option<bool>, Option<bool>) {
        let options = index.options.clone().unwrap_or_default();
        (
            index.keys.clone(),
            options.name.unwrap_or_default(),
            options.unique,
            options.sparse,
        )
    }

    #[test]
    fn system_classes_get_parse_indexes() {
        let user: Vec<_> = system_indexes("_User").iter().map(described).collect();
        assert_eq!(
            user,
            vec![
                (
                    doc! {"username": 1},
                    "username_1".into(),
                    Some(true),
                    Some(true)
                ),
                (doc! {"email": 1}, "email_1".into(), Some(true), Some(true)),
                (
                    doc! {"username": 1},
                    "case_insensitive_username".into(),
                    None,
                    Some(true)
                ),
                (
                    doc! {"email": 1},
                    "case_insensitive_email".into(),
                    None,
                    Some(true)
                ),
            ]
        );
        let collation = system_indexes("_User")[2]
            .options
            .clone()
            .unwrap()
            .collation
            .unwrap();
        assert_eq!(collation.locale, "en_US");
        assert!(matches!(
            collation.strength,
            Some(CollationStrength::Secondary)
        ));
        let role: Vec<_> = system_indexes("_Role").iter().map(described).collect();
        assert_eq!(
            role,
            vec![(doc! {"name": 1}, "name_1".into(), Some(true), Some(true))]
        );
        let idempotency = system_indexes("_Idempotency");
        assert_eq!(described(&idempotency[0]).1, "reqId_1");
        let ttl = idempotency[1].options.clone().unwrap();
        assert_eq!(
            (ttl.name.as_deref(), ttl.expire_after),
            (Some("ttl"), Some(Duration::ZERO))
        );
        assert!(system_indexes("Post").is_empty());
    }

    #[test]
    fn auth_data_ids_get_parse_unique_index() {
        let index = auth_data_index("acme").unwrap();
        assert_eq!(
            described(&index),
            (
                doc! {"_auth_data_acme.id": 1},
                "_auth_data_acme_id".into(),
                Some(true),
                Some(true)
            )
        );
        assert!(auth_data_index("a.b").is_err());
    }

    #[test]
    fn geo_and_declared_indexes() {
        let geo = geo_index("area", &FieldType::Polygon).unwrap();
        assert_eq!(described(&geo).0, doc! {"area": "2dsphere"});
        assert_eq!(described(&geo).1, "area_2dsphere");
        assert_eq!(
            described(&geo_index("loc", &FieldType::GeoPoint).unwrap()).1,
            "loc_2d"
        );
        assert!(geo_index("n", &FieldType::Number).is_none());

        let mut class = ClassSchema::new("Post");
        class.fields.insert(
            "author".into(),
            FieldType::Pointer {
                target_class: "_User".into(),
            }
            .into(),
        );
        let index = declared_index(
            &class,
            "by_author",
            &json!({"author": 1, "createdAt": -1, "body": "text"}),
        )
        .unwrap();
        assert_eq!(
            described(&index).0,
            doc! {"_p_author": 1, "_created_at": -1, "body": "text"}
        );
        assert_eq!(described(&index).1, "by_author");
        let index = declared_index(&class, "raw", &json!({"_p_author": 1})).unwrap();
        assert_eq!(described(&index).0, doc! {"_p_author": 1});
        assert!(declared_index(&class, "bad", &json!({"a": 2})).is_err());
        assert!(declared_index(&class, "bad", &json!({})).is_err());
        assert!(declared_index(&class, "bad", &json!({"a": {"$where": 1}})).is_err());
    }
}
