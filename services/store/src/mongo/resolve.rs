//! What MongoDB cannot do in one query, done first, as Parse Server does:
//! `$inQuery`, `$notInQuery`, `$select` and `$dontSelect` run their
//! subquery and become `$in`/`$nin` lists (`RestQuery.transformInQuery`),
//! and `$relatedTo` and conditions on Relation fields read the
//! `_Join:<key>:<Class>` collections and become objectId lists
//! (`DatabaseController.reduceRelationKeys` and `reduceInRelation`).

use std::collections::HashSet;

use futures_util::TryStreamExt;
use futures_util::future::BoxFuture;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::FindOptions;
use serde_json::Value;

use super::MongoStore;
use super::errors::query_error;
use super::filter::{NearOrder, filter_document, projection};
use super::transform::object_from_document;
use crate::error::StoreResult;
use crate::query::{Condition, FieldPath, Filter, QueryValue, SubQuery};
use crate::schema::{ClassSchema, FieldType, SchemaView, join_class_name};

/// A REST value as a query operand, for `$select`: dates, pointers and
/// files compare in their stored forms, anything else as JSON.
pub(super) fn query_value(value: &Value) -> Option<QueryValue> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => QueryValue::Bool(*b),
        Value::Number(n) => QueryValue::Number(n.clone()),
        Value::String(s) => QueryValue::String(s.clone()),
        Value::Object(map) => {
            let text = |key: &str| map.get(key).and_then(Value::as_str).map(str::to_owned);
            match map.get("__type").and_then(Value::as_str) {
                Some("Date") => QueryValue::Date(text("iso")?),
                Some("Pointer") => QueryValue::Pointer {
                    class_name: text("className")?,
                    object_id: text("objectId")?,
                },
                Some("File") => QueryValue::File(text("name")?),
                _ => QueryValue::Json(value.clone()),
            }
        }
        Value::Array(_) => QueryValue::Json(value.clone()),
    })
}

/// The values at `path` in an object, arrays flattened (Parse flattens
/// `$in` lists).
fn values_at<'a>(object: &'a serde_json::Map<String, Value>, path: &FieldPath) -> Vec<&'a Value> {
    let mut value = object.get(&path.field);
    for segment in &path.nested {
        value = value.and_then(|v| v.get(segment));
    }
    match value {
        Some(Value::Array(items)) => items.iter().collect(),
        Some(other) => vec![other],
        None => Vec::new(),
    }
}

fn pointers(class_name: &str, ids: Vec<String>) -> Vec<QueryValue> {
    ids.into_iter()
        .map(|object_id| QueryValue::Pointer {
            class_name: class_name.to_owned(),
            object_id,
        })
        .collect()
}

fn object_ids(ids: Vec<String>) -> Vec<QueryValue> {
    ids.into_iter().map(QueryValue::String).collect()
}

/// A stored `_id`, `relatedId` or `owningId` as the objectId Parse reads.
fn id_string(value: &Bson) -> Option<String> {
    match value {
        Bson::String(s) => Some(s.clone()),
        Bson::ObjectId(id) => Some(id.to_hex()),
        Bson::Int32(i) => Some(i.to_string()),
        Bson::Int64(i) => Some(i.to_string()),
        _ => None,
    }
}

impl MongoStore {
    /// `filter` with every subquery and relation condition replaced by the
    /// objectIds or values it stands for.
    pub(super) fn resolve<'a>(
        &'a self,
        schemas: &'a SchemaView,
        class: &'a ClassSchema,
        filter: &'a Filter,
    ) -> BoxFuture<'a, StoreResult<Filter>> {
        Box::pin(async move {
            Ok(match filter {
                Filter::And(parts) => Filter::And(self.resolve_all(schemas, class, parts).await?),
                Filter::Or(parts) => Filter::Or(self.resolve_all(schemas, class, parts).await?),
                Filter::Nor(parts) => Filter::Nor(self.resolve_all(schemas, class, parts).await?),
                Filter::RelatedTo {
                    owner_class,
                    owner_id,
                    key,
                } => self.related_to(schemas, owner_class, owner_id, key).await?,
                Filter::Field(path, condition) => {
                    self.resolve_field(schemas, class, path, condition).await?
                }
                other => other.clone(),
            })
        })
    }

    async fn resolve_all(
        &self,
        schemas: &SchemaView,
        class: &ClassSchema,
        parts: &[Filter],
    ) -> StoreResult<Vec<Filter>> {
        let mut out = Vec::with_capacity(parts.len());
        for part in parts {
            out.push(self.resolve(schemas, class, part).await?);
        }
        Ok(out)
    }

    async fn resolve_field(
        &self,
        schemas: &SchemaView,
        class: &ClassSchema,
        path: &FieldPath,
        condition: &Condition,
    ) -> StoreResult<Filter> {
        let field = |condition| Filter::Field(path.clone(), condition);
        if !path.is_nested()
            && matches!(
                class.field_type(&path.field),
                Some(FieldType::Relation { .. })
            )
        {
            return self.relation_condition(class, &path.field, condition).await;
        }
        Ok(match condition {
            Condition::InQuery(sub) | Condition::NotInQuery(sub) => {
                let negated = matches!(condition, Condition::NotInQuery(_));
                match self.subquery_ids(schemas, sub).await? {
                    None if negated => Filter::All,
                    None => Filter::Nothing,
                    Some(ids) if negated => field(Condition::Nin(pointers(&sub.class_name, ids))),
                    Some(ids) => field(Condition::In(pointers(&sub.class_name, ids))),
                }
            }
            Condition::Select { query, key } | Condition::DontSelect { query, key } => {
                let negated = matches!(condition, Condition::DontSelect { .. });
                match self.subquery_values(schemas, query, key).await? {
                    None if negated => Filter::All,
                    None => Filter::Nothing,
                    Some(values) if negated => field(Condition::Nin(values)),
                    Some(values) => field(Condition::In(values)),
                }
            }
            other => field(other.clone()),
        })
    }

    /// The documents a subquery matches, with only `keys` read; `None`
    /// when its class does not exist.
    async fn subquery_documents(
        &self,
        schemas: &SchemaView,
        sub: &SubQuery,
        keys: Option<&[String]>,
    ) -> StoreResult<Option<(std::sync::Arc<ClassSchema>, Vec<Document>)>> {
        let Some(class) = schemas.get(&sub.class_name).cloned() else {
            return Ok(None);
        };
        let filter = self.resolve(schemas, &class, &sub.filter).await?;
        self.ensure_text_indexes(&class, &filter).await;
        let filter = filter_document(&class, &filter, NearOrder::None)?;
        let mut options = FindOptions::default();
        options.max_time = self.query_timeout;
        options.projection = match keys {
            None => Some(doc! {"_id": 1}),
            Some(keys) => projection(&class, Some(keys), false),
        };
        let documents = self
            .collection(&class.class_name)
            .find(filter)
            .with_options(options)
            .await
            .map_err(query_error)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(query_error)?;
        Ok(Some((class, documents)))
    }

    async fn subquery_ids(
        &self,
        schemas: &SchemaView,
        sub: &SubQuery,
    ) -> StoreResult<Option<Vec<String>>> {
        let Some((_, documents)) = self.subquery_documents(schemas, sub, None).await? else {
            return Ok(None);
        };
        Ok(Some(
            documents
                .iter()
                .filter_map(|doc| doc.get("_id").and_then(id_string))
                .collect(),
        ))
    }

    async fn subquery_values(
        &self,
        schemas: &SchemaView,
        sub: &SubQuery,
        key: &FieldPath,
    ) -> StoreResult<Option<Vec<QueryValue>>> {
        let keys = [key.field.clone()];
        let Some((class, documents)) = self.subquery_documents(schemas, sub, Some(&keys)).await?
        else {
            return Ok(None);
        };
        let mut seen = HashSet::new();
        let mut values = Vec::new();
        for doc in &documents {
            let object = object_from_document(&class, doc);
            for value in values_at(&object, key) {
                if let Some(value) = query_value(value)
                    && seen.insert(format!("{value:?}"))
                {
                    values.push(value);
                }
            }
        }
        Ok(Some(values))
    }

    async fn related_to(
        &self,
        schemas: &SchemaView,
        owner_class: &str,
        owner_id: &str,
        key: &str,
    ) -> StoreResult<Filter> {
        let is_relation = schemas
            .get(owner_class)
            .and_then(|class| class.field_type(key))
            .is_some_and(|t| matches!(t, FieldType::Relation { .. }));
        if !is_relation {
            return Ok(Filter::Nothing);
        }
        let ids = self
            .join_ids(
                &join_class_name(key, owner_class),
                doc! {"owningId": {"$eq": owner_id}},
                "relatedId",
            )
            .await?;
        Ok(Filter::field("objectId", Condition::In(object_ids(ids))))
    }

    /// A condition on a Relation field: the objects whose relation holds
    /// (or, negated, does not hold) the given pointers.
    async fn relation_condition(
        &self,
        class: &ClassSchema,
        field: &str,
        condition: &Condition,
    ) -> StoreResult<Filter> {
        let related = |values: &[QueryValue]| -> Vec<Bson> {
            values
                .iter()
                .filter_map(|v| match v {
                    QueryValue::Pointer { object_id, .. } => Some(Bson::String(object_id.clone())),
                    _ => None,
                })
                .collect()
        };
        let (join_filter, negated) = match condition {
            Condition::Eq(v) => (related(std::slice::from_ref(v)), false),
            Condition::In(values) => (related(values), false),
            Condition::Ne(v) => (related(std::slice::from_ref(v)), true),
            Condition::Nin(values) => (related(values), true),
            Condition::Exists(exists) => {
                let owners = self
                    .join_ids(
                        &join_class_name(field, &class.class_name),
                        doc! {},
                        "owningId",
                    )
                    .await?;
                let condition = if *exists {
                    Condition::In(object_ids(owners))
                } else {
                    Condition::Nin(object_ids(owners))
                };
                return Ok(Filter::field("objectId", condition));
            }
            _ => return Ok(Filter::Nothing),
        };
        let owners = if join_filter.is_empty() {
            Vec::new()
        } else {
            self.join_ids(
                &join_class_name(field, &class.class_name),
                doc! {"relatedId": {"$in": join_filter}},
                "owningId",
            )
            .await?
        };
        let condition = if negated {
            Condition::Nin(object_ids(owners))
        } else {
            Condition::In(object_ids(owners))
        };
        Ok(Filter::field("objectId", condition))
    }

    /// The distinct values of `column` in a join collection's matching rows.
    async fn join_ids(
        &self,
        collection: &str,
        filter: Document,
        column: &str,
    ) -> StoreResult<Vec<String>> {
        let mut options = FindOptions::default();
        options.max_time = self.query_timeout;
        options.projection = Some(doc! {column: 1, "_id": 0});
        let rows = self
            .collection(collection)
            .find(filter)
            .with_options(options)
            .await
            .map_err(query_error)?
            .try_collect::<Vec<Document>>()
            .await
            .map_err(query_error)?;
        let mut seen = HashSet::new();
        Ok(rows
            .iter()
            .filter_map(|row| row.get(column).and_then(id_string))
            .filter(|id| seen.insert(id.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selected_values_compare_in_stored_forms() {
        assert_eq!(
            query_value(&json!("Paris")),
            Some(QueryValue::String("Paris".into()))
        );
        assert_eq!(query_value(&Value::Null), None);
        assert_eq!(
            query_value(&json!({"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"})),
            Some(QueryValue::Date("2024-01-01T00:00:00.000Z".into()))
        );
        assert_eq!(
            query_value(&json!({"__type": "Pointer", "className": "A", "objectId": "b"})),
            Some(QueryValue::Pointer {
                class_name: "A".into(),
                object_id: "b".into()
            })
        );
        assert_eq!(
            query_value(&json!({"__type": "File", "name": "f.png", "url": "u"})),
            Some(QueryValue::File("f.png".into()))
        );
        assert_eq!(
            query_value(&json!({"k": 1})),
            Some(QueryValue::Json(json!({"k": 1})))
        );
        let object = json!({"a": {"b": [1, 2]}, "c": 3})
            .as_object()
            .unwrap()
            .clone();
        assert_eq!(
            values_at(&object, &FieldPath::parse("a.b")),
            vec![&json!(1), &json!(2)]
        );
        assert_eq!(values_at(&object, &FieldPath::parse("c")), vec![&json!(3)]);
        assert!(values_at(&object, &FieldPath::parse("a.x")).is_empty());
        assert_eq!(join_class_name("users", "_Role"), "_Join:users:_Role");
        assert_eq!(id_string(&Bson::Int32(1)), Some("1".into()));
    }
}
