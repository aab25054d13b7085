//! Applying write ops on the writer thread: the one place every create,
//! update and delete of the SQLite backend passes through.

use rusqlite::types::Value as SqlValue;
use rusqlite::{OptionalExtension, params_from_iter};
use serde_json::{Map, Value};

use super::compile::Compiler;
use super::engine::WriterState;
use super::layout::{ensure_join_table, ensure_table};
use super::{object_from_row, sql_err};
use crate::acl;
use crate::error::{StoreError, StoreResult};
use crate::query::{Filter, Object, canonical};
use crate::schema::{ClassSchema, SchemaView, join_class_name};
use crate::sql::quote_ident;
use crate::write::{RelationChange, WriteOp, WriteOutcome, apply_update};

/// Splits an object into its columns: the three default fields, the
/// permission arrays, and the JSON of everything else.
struct Columns {
    object_id: String,
    created_at: String,
    updated_at: String,
    rperm: SqlValue,
    wperm: SqlValue,
    data: String,
}

fn columns_of(object: &Object) -> StoreResult<Columns> {
    let text = |key: &str| -> StoreResult<String> {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::backend_message(format!("object without {key}")))
    };
    let (read, write) = acl::permissions(object.get("ACL"));
    let perm = |list: Option<Vec<String>>| match list {
        Some(list) => SqlValue::Text(Value::from(list).to_string()),
        None => SqlValue::Null,
    };
    // Stored canonically (keys sorted), so equality on whole nested
    // objects compares what they hold, not the order they were written in.
    let mut data = Map::new();
    for (key, value) in object {
        if !matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt") && !value.is_null() {
            data.insert(key.clone(), value.clone());
        }
    }
    let data = canonical(&Value::Object(data));
    Ok(Columns {
        object_id: text("objectId")?,
        created_at: text("createdAt")?,
        updated_at: text("updatedAt")?,
        rperm: perm(read),
        wperm: perm(write),
        data: data.to_string(),
    })
}

/// Loads the current row of an object matching `precondition`.
fn load_for_write(
    state: &WriterState,
    schemas: &SchemaView,
    class: &ClassSchema,
    object_id: &str,
    precondition: &Filter,
) -> StoreResult<Option<Object>> {
    let (condition, params) = Compiler::new(schemas).condition(
        class,
        "t0",
        precondition,
        vec![SqlValue::Text(object_id.to_owned())],
    )?;
    let sql = format!(
        "SELECT t0.objectId, t0.createdAt, t0.updatedAt, t0.data FROM {} AS t0 WHERE t0.objectId = ?1 AND {condition}",
        quote_ident(&class.class_name)
    );
    let (sql, params) = crate::sql::compact_params(&sql, '?', params);
    let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row(params_from_iter(params.iter()), object_from_row)
        .optional()
        .map_err(sql_err)
}

fn apply_relations(
    state: &WriterState,
    class_name: &str,
    owner_id: &str,
    relations: &[RelationChange],
) -> StoreResult<()> {
    for change in relations {
        ensure_join_table(&state.conn, class_name, &change.key)?;
        let table = quote_ident(&join_class_name(&change.key, class_name));
        let mut insert = state
            .conn
            .prepare_cached(&format!(
                "INSERT OR IGNORE INTO {table} (relatedId, owningId) VALUES (?1, ?2)"
            ))
            .map_err(sql_err)?;
        for related in &change.add {
            insert.execute([related, owner_id]).map_err(sql_err)?;
        }
        let mut delete = state
            .conn
            .prepare_cached(&format!(
                "DELETE FROM {table} WHERE relatedId = ?1 AND owningId = ?2"
            ))
            .map_err(sql_err)?;
        for related in &change.remove {
            delete.execute([related, owner_id]).map_err(sql_err)?;
        }
    }
    Ok(())
}

pub(super) fn apply_op(
    state: &mut WriterState,
    schemas: &SchemaView,
    op: &WriteOp,
) -> StoreResult<WriteOutcome> {
    match op {
        WriteOp::Create {
            class_name,
            object,
            relations,
        } => {
            ensure_table(state, class_name)?;
            let c = columns_of(object)?;
            let sql = format!(
                "INSERT INTO {} (objectId, createdAt, updatedAt, _rperm, _wperm, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                quote_ident(class_name)
            );
            let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
            stmt.execute(rusqlite::params![
                c.object_id,
                c.created_at,
                c.updated_at,
                c.rperm,
                c.wperm,
                c.data
            ])
            .map_err(sql_err)?;
            apply_relations(state, class_name, &c.object_id, relations)?;
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
            let class = schemas.get(class_name).ok_or(StoreError::NotFound)?;
            let before = load_for_write(state, schemas, class, object_id, precondition)?
                .ok_or(StoreError::NotFound)?;
            let mut after = before.clone();
            apply_update(&mut after, changes)?;
            after.insert("updatedAt".into(), Value::String(updated_at.clone()));
            let c = columns_of(&after)?;
            let sql = format!(
                "UPDATE {} SET updatedAt = ?1, _rperm = ?2, _wperm = ?3, data = ?4 WHERE objectId = ?5",
                quote_ident(class_name)
            );
            let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
            stmt.execute(rusqlite::params![
                c.updated_at,
                c.rperm,
                c.wperm,
                c.data,
                object_id
            ])
            .map_err(sql_err)?;
            apply_relations(state, class_name, object_id, relations)?;
            Ok(WriteOutcome::Updated { before, after })
        }
        WriteOp::Delete {
            class_name,
            object_id,
            precondition,
        } => {
            let class = schemas.get(class_name).ok_or(StoreError::NotFound)?;
            let before = load_for_write(state, schemas, class, object_id, precondition)?
                .ok_or(StoreError::NotFound)?;
            let sql = format!(
                "DELETE FROM {} WHERE objectId = ?1",
                quote_ident(class_name)
            );
            let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
            stmt.execute([object_id]).map_err(sql_err)?;
            Ok(WriteOutcome::Deleted(before))
        }
    }
}
