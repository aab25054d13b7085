//! The one path every PostgreSQL write takes: inside a transaction, an
//! insert, or a locked read-modify-write, plus the relation join rows.

use deadpool_postgres::Transaction;
use serde_json::Value;

use super::compile::{Compiler, compact};
use super::layout::{USER_INTERNAL_COLUMNS, columns, join_table, quote_ident};
use super::values::{Param, Params, encode};
use super::{decode_row, pg_err, select_list};
use crate::acl;
use crate::error::{StoreError, StoreResult};
use crate::query::{Filter, Object};
use crate::schema::{ClassSchema, FieldType, SchemaView};
use crate::write::{RelationChange, WriteOp, WriteOutcome, apply_update};

/// The column type of a field of an object, or `None` for keys that are
/// not columns (relations, the virtual `password`).
fn column_of(schema: &ClassSchema, key: &str) -> Option<FieldType> {
    if schema.class_name == "_User" {
        if key == "password" {
            return None;
        }
        if let Some((_, t)) = USER_INTERNAL_COLUMNS.iter().find(|(n, _)| *n == key) {
            return Some(t.clone());
        }
    }
    schema
        .field_type(key)
        .filter(|t| super::layout::column_type(t).is_some())
        .cloned()
}

fn perms(object: &Object, params: &mut Params) -> (String, String) {
    let (read, write) = acl::permissions(object.get("ACL"));
    let mut bind = |list: Option<Vec<String>>| match list {
        Some(list) => params.bind(Param::TextArray(list), "text[]"),
        None => "NULL".into(),
    };
    (bind(read), bind(write))
}

async fn insert(tx: &Transaction<'_>, schema: &ClassSchema, object: &Object) -> StoreResult<()> {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend(format!("object without {key}")))
    };
    let mut params = Params::default();
    let mut names = vec![
        "\"objectId\"",
        "\"createdAt\"",
        "\"updatedAt\"",
        "\"_rperm\"",
        "\"_wperm\"",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect::<Vec<_>>();
    let id = params.text(text("objectId")?);
    let created = format!("{}::timestamptz", params.text(text("createdAt")?));
    let updated = format!("{}::timestamptz", params.text(text("updatedAt")?));
    let (rperm, wperm) = perms(object, &mut params);
    let mut values = vec![id, created, updated, rperm, wperm];
    for (key, value) in object {
        if matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt" | "ACL") || value.is_null()
        {
            continue;
        }
        let Some(field_type) = column_of(schema, key) else {
            if schema.field_type(key).is_some() {
                continue;
            }
            return Err(StoreError::Backend(format!(
                "{}.{key} is not in the schema",
                schema.class_name
            )));
        };
        names.push(quote_ident(key));
        values.push(encode(&mut params, key, &field_type, value)?);
    }
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(&schema.class_name),
        names.join(", "),
        values.join(", ")
    );
    let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
    tx.execute(&statement, &params.refs())
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// The current object, locked for the rest of the transaction, if it
/// exists and matches `precondition`.
async fn load_locked(
    tx: &Transaction<'_>,
    schemas: &SchemaView,
    schema: &ClassSchema,
    object_id: &str,
    precondition: &Filter,
) -> StoreResult<Option<Object>> {
    let mut params = Params::default();
    let id = params.text(object_id);
    let (condition, params) =
        Compiler::new(schemas).condition(schema, "t0", precondition, params)?;
    let sql = format!(
        "SELECT {} FROM {} AS t0 WHERE t0.\"objectId\" = {id} AND {condition} FOR UPDATE",
        select_list("t0", schema).join(", "),
        quote_ident(&schema.class_name)
    );
    let (sql, params) = compact(&sql, params);
    let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
    let row = tx
        .query_opt(&statement, &params.refs())
        .await
        .map_err(pg_err)?;
    row.map(|row| decode_row(&row, &columns(schema)))
        .transpose()
}

async fn update_columns(
    tx: &Transaction<'_>,
    schema: &ClassSchema,
    before: &Object,
    after: &Object,
) -> StoreResult<()> {
    let mut params = Params::default();
    let mut sets = Vec::new();
    let updated = after
        .get("updatedAt")
        .and_then(Value::as_str)
        .unwrap_or_default();
    sets.push(format!(
        "\"updatedAt\" = {}::timestamptz",
        params.text(updated)
    ));
    let mut keys: Vec<&String> = after.keys().chain(before.keys()).collect();
    keys.sort();
    keys.dedup();
    for key in keys {
        if matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt")
            || before.get(key) == after.get(key)
        {
            continue;
        }
        if key == "ACL" {
            let (rperm, wperm) = perms(after, &mut params);
            sets.push(format!("\"_rperm\" = {rperm}"));
            sets.push(format!("\"_wperm\" = {wperm}"));
            continue;
        }
        let Some(field_type) = column_of(schema, key) else {
            continue;
        };
        let value = after.get(key).cloned().unwrap_or(Value::Null);
        let expr = encode(&mut params, key, &field_type, &value)?;
        sets.push(format!("{} = {expr}", quote_ident(key)));
    }
    let object_id = after
        .get("objectId")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let id = params.text(object_id);
    let sql = format!(
        "UPDATE {} SET {} WHERE \"objectId\" = {id}",
        quote_ident(&schema.class_name),
        sets.join(", ")
    );
    let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
    tx.execute(&statement, &params.refs())
        .await
        .map_err(pg_err)?;
    Ok(())
}

async fn apply_relations(
    tx: &Transaction<'_>,
    class_name: &str,
    owner_id: &str,
    relations: &[RelationChange],
) -> StoreResult<()> {
    for change in relations {
        let table = quote_ident(&join_table(class_name, &change.key));
        tx.batch_execute(&super::layout::join_table_ddl(class_name, &change.key))
            .await
            .map_err(pg_err)?;
        if !change.add.is_empty() {
            let sql = format!(
                "INSERT INTO {table} (\"relatedId\", \"owningId\") SELECT unnest($1::text[]), $2::text ON CONFLICT DO NOTHING"
            );
            tx.execute(&sql, &[&change.add, &owner_id])
                .await
                .map_err(pg_err)?;
        }
        if !change.remove.is_empty() {
            let sql = format!(
                "DELETE FROM {table} WHERE \"relatedId\" = ANY($1::text[]) AND \"owningId\" = $2::text"
            );
            tx.execute(&sql, &[&change.remove, &owner_id])
                .await
                .map_err(pg_err)?;
        }
    }
    Ok(())
}

pub(super) async fn apply_op(
    tx: &Transaction<'_>,
    schemas: &SchemaView,
    op: &WriteOp,
) -> StoreResult<WriteOutcome> {
    let schema = |class_name: &str| schemas.get(class_name).cloned();
    match op {
        WriteOp::Create {
            class_name,
            object,
            relations,
        } => {
            let schema =
                schema(class_name).ok_or_else(|| StoreError::ClassMissing(class_name.clone()))?;
            insert(tx, &schema, object).await?;
            let id = object
                .get("objectId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            apply_relations(tx, class_name, id, relations).await?;
            let mut stored = object.clone();
            stored.retain(|_, v| !v.is_null());
            Ok(WriteOutcome::Created(stored))
        }
        WriteOp::Update {
            class_name,
            object_id,
            updated_at,
            changes,
            relations,
            precondition,
        } => {
            let schema = schema(class_name).ok_or(StoreError::NotFound)?;
            let before = load_locked(tx, schemas, &schema, object_id, precondition)
                .await?
                .ok_or(StoreError::NotFound)?;
            let mut after = before.clone();
            apply_update(&mut after, changes)?;
            after.insert("updatedAt".into(), Value::String(updated_at.clone()));
            update_columns(tx, &schema, &before, &after).await?;
            apply_relations(tx, class_name, object_id, relations).await?;
            Ok(WriteOutcome::Updated { before, after })
        }
        WriteOp::Delete {
            class_name,
            object_id,
            precondition,
        } => {
            let schema = schema(class_name).ok_or(StoreError::NotFound)?;
            let before = load_locked(tx, schemas, &schema, object_id, precondition)
                .await?
                .ok_or(StoreError::NotFound)?;
            let sql = format!(
                "DELETE FROM {} WHERE \"objectId\" = $1::text",
                quote_ident(class_name)
            );
            let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
            tx.execute(&statement, &[&object_id])
                .await
                .map_err(pg_err)?;
            Ok(WriteOutcome::Deleted(before))
        }
    }
}
