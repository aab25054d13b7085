//! The one path every PostgreSQL write takes. Most writes are one
//! statement: an insert; a delete returning the row it removed; an update
//! whose new values are SQL expressions, returning the row before and
//! after. Updates SQL cannot express (AddUnique, Remove, dotted paths) are
//! a locked read-modify-write, and relation changes add join rows; those
//! need a transaction around them.

use deadpool_postgres::GenericClient;
use serde_json::Value;

use super::compile::{Compiler, compact};
use super::layout::{USER_INTERNAL_COLUMNS, columns};
use super::values::{Param, Params, encode};
use super::{decode_row, decode_row_at, pg_err, select_list};
use crate::acl;
use crate::error::{StoreError, StoreResult};
use crate::outbox::{EventContext, OutboxRecord, record};
use crate::query::FieldPath;
use crate::query::{Filter, Object};
use crate::schema::{ClassSchema, FieldType, SchemaView, join_class_name};
use crate::sql::quote_ident;
use crate::write::{RelationChange, UpdateOp, WriteOp, WriteOutcome, apply_update};

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

/// Inserts `object`, and its event when there is one in the same
/// statement, so a create with events still needs no transaction.
async fn insert(
    tx: &impl GenericClient,
    schema: &ClassSchema,
    object: &Object,
    event: Option<&OutboxRecord>,
) -> StoreResult<()> {
    let text = |key: &str| {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::backend_message(format!("object without {key}")))
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
            return Err(StoreError::backend_message(format!(
                "{}.{key} is not in the schema",
                schema.class_name
            )));
        };
        names.push(quote_ident(key));
        values.push(encode(&mut params, key, &field_type, value)?);
    }
    let mut sql = format!(
        "INSERT INTO {} ({}) VALUES ({})",
        quote_ident(&schema.class_name),
        names.join(", "),
        values.join(", ")
    );
    if let Some(event) = event {
        let id = params.text(event.event_id.as_str());
        let subject = params.text(event.subject.as_str());
        let payload = params.text(event.payload.as_str());
        sql = format!(
            "WITH created AS ({sql} RETURNING 1) \
             INSERT INTO \"_oxbase_outbox\" (event_id, subject, payload) \
             SELECT {id}, {subject}, {payload} FROM created"
        );
    }
    let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
    tx.execute(&statement, &params.refs())
        .await
        .map_err(pg_err)?;
    Ok(())
}

/// The current object, locked for the rest of the transaction, if it
/// exists and matches `precondition`.
async fn load_locked(
    tx: &impl GenericClient,
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
    tx: &impl GenericClient,
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
    tx: &impl GenericClient,
    class_name: &str,
    owner_id: &str,
    relations: &[RelationChange],
) -> StoreResult<()> {
    for change in relations {
        let table = quote_ident(&join_class_name(&change.key, class_name));
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

/// The SET clause of an update, when SQL can compute every new value from
/// the row itself; `None` when the update needs the row read first.
fn update_expressions(
    schema: &ClassSchema,
    changes: &[(FieldPath, UpdateOp)],
    updated_at: &str,
    params: &mut Params,
) -> StoreResult<Option<Vec<String>>> {
    let mut sets = vec![format!(
        "\"updatedAt\" = {}::timestamptz",
        params.text(updated_at)
    )];
    for (path, op) in changes {
        if path.is_nested() {
            return Ok(None);
        }
        let field = path.field.as_str();
        if field == "ACL" {
            let acl = match op {
                UpdateOp::Set(acl) => acl.clone(),
                UpdateOp::Delete => Value::Null,
                _ => return Ok(None),
            };
            let mut object = Object::new();
            if !acl.is_null() {
                object.insert("ACL".into(), acl);
            }
            let (rperm, wperm) = perms(&object, params);
            sets.push(format!("\"_rperm\" = {rperm}"));
            sets.push(format!("\"_wperm\" = {wperm}"));
            continue;
        }
        let Some(field_type) = column_of(schema, field) else {
            if schema.field_type(field).is_some() {
                continue; // Not a column: the virtual password, a relation.
            }
            return Ok(None);
        };
        let column = quote_ident(field);
        let expr = match (op, &field_type) {
            (UpdateOp::Set(value), _) => encode(params, field, &field_type, value)?,
            (UpdateOp::Delete, _) => "NULL".into(),
            (UpdateOp::Increment(n), FieldType::Number) => match n.as_f64() {
                Some(n) => format!("COALESCE(t1.{column}, 0) + {}", params.float(n)),
                None => return Ok(None),
            },
            (UpdateOp::Add(items), FieldType::Array) => format!(
                "COALESCE(t1.{column}, '[]'::jsonb) || {}",
                params.json(Value::Array(items.clone()))
            ),
            _ => return Ok(None),
        };
        sets.push(format!("{column} = {expr}"));
    }
    Ok(Some(sets))
}

/// Whether `op` is one statement, so it needs no transaction of its own.
pub(super) fn is_single_statement(schemas: &SchemaView, op: &WriteOp) -> bool {
    match op {
        WriteOp::Create { relations, .. } => relations.is_empty(),
        WriteOp::Delete { .. } => true,
        WriteOp::Update {
            class_name,
            changes,
            relations,
            updated_at,
            ..
        } => {
            relations.is_empty()
                && schemas.get(class_name).is_some_and(|schema| {
                    matches!(
                        update_expressions(schema, changes, updated_at, &mut Params::default()),
                        Ok(Some(_))
                    )
                })
        }
    }
}

/// An update in one statement: the locked row before, the row after.
async fn update_in_place(
    tx: &impl GenericClient,
    schemas: &SchemaView,
    schema: &ClassSchema,
    object_id: &str,
    precondition: &Filter,
    sets: Vec<String>,
    mut params: Params,
) -> StoreResult<Option<(Object, Object)>> {
    let id = params.text(object_id);
    let (condition, params) =
        Compiler::new(schemas).condition(schema, "t0", precondition, params)?;
    let aliased = |alias: &str, prefix: &str| -> String {
        select_list(alias, schema)
            .into_iter()
            .enumerate()
            .map(|(i, expr)| format!("{expr} AS {prefix}{i}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let table = quote_ident(&schema.class_name);
    let sql = format!(
        "WITH before AS (SELECT {} FROM {table} AS t0 WHERE t0.\"objectId\" = {id} AND {condition} FOR UPDATE), \
         after AS (UPDATE {table} AS t1 SET {} FROM before WHERE t1.\"objectId\" = {id} RETURNING {}) \
         SELECT * FROM before, after",
        aliased("t0", "b"),
        sets.join(", "),
        aliased("t1", "a"),
    );
    let (sql, params) = compact(&sql, params);
    let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
    let Some(row) = tx
        .query_opt(&statement, &params.refs())
        .await
        .map_err(pg_err)?
    else {
        return Ok(None);
    };
    let columns = columns(schema);
    let width = 5 + columns.len();
    Ok(Some((
        decode_row_at(&row, 0, &columns)?,
        decode_row_at(&row, width, &columns)?,
    )))
}

/// Applies one op and, when `events` is given, writes its event in the
/// same transaction (for a create, in the same statement).
pub(super) async fn apply_op(
    tx: &impl GenericClient,
    schemas: &SchemaView,
    op: &WriteOp,
    events: Option<&EventContext>,
) -> StoreResult<WriteOutcome> {
    let outcome = apply(tx, schemas, op, events).await?;
    if let Some(context) = events
        && !matches!(op, WriteOp::Create { .. })
    {
        super::outbox::insert(tx, context, op.class_name(), &outcome).await?;
    }
    Ok(outcome)
}

async fn apply(
    tx: &impl GenericClient,
    schemas: &SchemaView,
    op: &WriteOp,
    events: Option<&EventContext>,
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
            let mut stored = object.clone();
            stored.retain(|_, v| !v.is_null());
            let outcome = WriteOutcome::Created(stored);
            let event = events
                .map(|context| record(context, class_name, &outcome))
                .transpose()?;
            insert(tx, &schema, object, event.as_ref()).await?;
            let id = object
                .get("objectId")
                .and_then(Value::as_str)
                .unwrap_or_default();
            apply_relations(tx, class_name, id, relations).await?;
            Ok(outcome)
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
            let mut params = Params::default();
            if let Some(sets) = update_expressions(&schema, changes, updated_at, &mut params)? {
                let (before, after) =
                    update_in_place(tx, schemas, &schema, object_id, precondition, sets, params)
                        .await?
                        .ok_or(StoreError::NotFound)?;
                apply_relations(tx, class_name, object_id, relations).await?;
                return Ok(WriteOutcome::Updated { before, after });
            }
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
            let mut params = Params::default();
            let id = params.text(object_id.clone());
            let (condition, params) =
                Compiler::new(schemas).condition(&schema, "t0", precondition, params)?;
            let sql = format!(
                "DELETE FROM {} AS t0 WHERE t0.\"objectId\" = {id} AND {condition} RETURNING {}",
                quote_ident(class_name),
                select_list("t0", &schema).join(", ")
            );
            let (sql, params) = compact(&sql, params);
            let statement = tx.prepare_cached(&sql).await.map_err(pg_err)?;
            let row = tx
                .query_opt(&statement, &params.refs())
                .await
                .map_err(pg_err)?
                .ok_or(StoreError::NotFound)?;
            Ok(WriteOutcome::Deleted(decode_row(&row, &columns(&schema))?))
        }
    }
}
