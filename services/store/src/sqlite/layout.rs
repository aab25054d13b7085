//! The SQLite layout: the `_SCHEMA` table, class tables, join tables and
//! indexes.
//!
//! - `_SCHEMA(className, schema, isParseClass)` holds each class's schema
//!   as JSON, in the shape Parse's `/schemas` shows.
//! - Each class is a table named after it: `objectId` (primary key),
//!   `createdAt`, `updatedAt`, `_rperm`/`_wperm` (JSON arrays from the ACL,
//!   NULL for public) and `data`, the rest of the object as JSON.
//! - A relation `key` of class `C` is the table `_Join:key:C(relatedId,
//!   owningId)`, as in Parse Server's PostgreSQL layout.
//! - Index names: `C:<json path>` for indexes created on demand for queried
//!   fields, `C#<name>` for indexes declared through `/schemas`, and
//!   `C_unique_<field>` for the unique fields of Parse's own classes.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension};
use serde_json::Value;

use super::compile::{COLUMNS, json_path};
use super::engine::WriterState;
use crate::error::{StoreError, StoreResult};
use crate::query::FieldPath;
use crate::schema::{ClassSchema, FieldType, join_class_name, unique_fields};
use crate::sql::quote_ident;

pub(super) fn ensure_schema_table(conn: &Connection) -> StoreResult<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS \"_SCHEMA\" (
            className TEXT PRIMARY KEY NOT NULL,
            schema TEXT NOT NULL,
            isParseClass INTEGER NOT NULL DEFAULT 1
        );",
    )
    .map_err(StoreError::backend)
}

pub(super) fn load_schema(conn: &Connection, class_name: &str) -> StoreResult<Option<ClassSchema>> {
    let raw: Option<String> = conn
        .query_row(
            "SELECT schema FROM \"_SCHEMA\" WHERE className = ?1",
            [class_name],
            |row| row.get(0),
        )
        .optional()
        .map_err(StoreError::backend)?;
    raw.map(|raw| serde_json::from_str(&raw).map_err(StoreError::backend))
        .transpose()
}

pub(super) fn load_all(conn: &Connection) -> StoreResult<Vec<ClassSchema>> {
    let mut stmt = conn
        .prepare_cached("SELECT schema FROM \"_SCHEMA\"")
        .map_err(StoreError::backend)?;
    let rows = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(StoreError::backend)?;
    let mut out = Vec::new();
    for raw in rows {
        let raw = raw.map_err(StoreError::backend)?;
        out.push(serde_json::from_str(&raw).map_err(StoreError::backend)?);
    }
    Ok(out)
}

pub(super) fn save_schema(conn: &Connection, schema: &ClassSchema) -> StoreResult<()> {
    let raw = serde_json::to_string(schema).map_err(StoreError::backend)?;
    conn.execute(
        "INSERT INTO \"_SCHEMA\" (className, schema) VALUES (?1, ?2)
         ON CONFLICT(className) DO UPDATE SET schema = excluded.schema",
        rusqlite::params![schema.class_name, raw],
    )
    .map_err(StoreError::backend)?;
    Ok(())
}

/// The class table, if it does not exist yet (a schema row can come from
/// another process).
pub(super) fn ensure_table(state: &mut WriterState, class_name: &str) -> StoreResult<()> {
    if state.tables.contains(class_name) {
        return Ok(());
    }
    let table = quote_ident(class_name);
    state
        .conn
        .execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {table} (
                objectId TEXT PRIMARY KEY NOT NULL,
                createdAt TEXT NOT NULL,
                updatedAt TEXT NOT NULL,
                _rperm TEXT,
                _wperm TEXT,
                data TEXT NOT NULL
            );
            CREATE INDEX IF NOT EXISTS {} ON {table}(createdAt);
            CREATE INDEX IF NOT EXISTS {} ON {table}(updatedAt);",
            quote_ident(&format!("{class_name}__createdAt")),
            quote_ident(&format!("{class_name}__updatedAt")),
        ))
        .map_err(StoreError::backend)?;
    for field in unique_fields(class_name) {
        state
            .conn
            .execute_batch(&format!(
                "CREATE UNIQUE INDEX IF NOT EXISTS {} ON {table}(json_extract(data, '$.{field}'))",
                quote_ident(&format!("{class_name}_unique_{field}")),
            ))
            .map_err(StoreError::backend)?;
    }
    state.tables.insert(class_name.to_owned());
    Ok(())
}

pub(super) fn ensure_join_table(conn: &Connection, class_name: &str, key: &str) -> StoreResult<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
            relatedId TEXT NOT NULL,
            owningId TEXT NOT NULL,
            PRIMARY KEY (relatedId, owningId)
        )",
        quote_ident(&join_class_name(key, class_name))
    ))
    .map_err(StoreError::backend)
}

/// Everything a class's schema implies: its table, join tables for its
/// relations, and its declared indexes.
pub(super) fn ensure_storage(state: &mut WriterState, schema: &ClassSchema) -> StoreResult<()> {
    ensure_table(state, &schema.class_name)?;
    for (name, spec) in &schema.fields {
        if matches!(spec.field_type, FieldType::Relation { .. }) {
            ensure_join_table(&state.conn, &schema.class_name, name)?;
        }
    }
    for (name, spec) in &schema.indexes {
        create_declared_index(&state.conn, &schema.class_name, name, spec)?;
    }
    Ok(())
}

fn create_declared_index(
    conn: &Connection,
    class_name: &str,
    name: &str,
    spec: &Value,
) -> StoreResult<()> {
    let Some(keys) = spec.as_object() else {
        return Ok(());
    };
    let mut columns = Vec::new();
    for (field, direction) in keys {
        let order = if direction.as_i64() == Some(-1) {
            "DESC"
        } else {
            "ASC"
        };
        let column = if COLUMNS.contains(&field.as_str()) {
            field.clone()
        } else {
            format!(
                "json_extract(data, '{}')",
                json_path(&FieldPath::new(field.clone()))?
            )
        };
        columns.push(format!("{column} {order}"));
    }
    conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {}({})",
        quote_ident(&format!("{class_name}#{name}")),
        quote_ident(class_name),
        columns.join(", ")
    ))
    .map_err(StoreError::backend)
}

pub(super) fn drop_declared_index(
    conn: &Connection,
    class_name: &str,
    name: &str,
) -> StoreResult<()> {
    conn.execute_batch(&format!(
        "DROP INDEX IF EXISTS {}",
        quote_ident(&format!("{class_name}#{name}"))
    ))
    .map_err(StoreError::backend)
}

/// Removes a field's values from every object (or its join table).
pub(super) fn drop_field(conn: &Connection, schema: &ClassSchema, field: &str) -> StoreResult<()> {
    match schema.field_type(field) {
        Some(FieldType::Relation { .. }) => conn
            .execute_batch(&format!(
                "DROP TABLE IF EXISTS {}",
                quote_ident(&join_class_name(field, &schema.class_name))
            ))
            .map_err(StoreError::backend),
        _ => {
            let path = json_path(&FieldPath::new(field))?;
            conn.execute(
                &format!(
                    "UPDATE {} SET data = json_remove(data, ?1) WHERE json_type(data, ?1) IS NOT NULL",
                    quote_ident(&schema.class_name)
                ),
                [path],
            )
            .map(|_| ())
            .map_err(StoreError::backend)
        }
    }
}

/// Drops an empty class: its table, join tables and schema row.
pub(super) fn drop_class(state: &mut WriterState, schema: &ClassSchema) -> StoreResult<()> {
    let table = quote_ident(&schema.class_name);
    let count: i64 = state
        .conn
        .query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |row| {
            row.get(0)
        })
        .optional()
        .map_err(StoreError::backend)?
        .unwrap_or(0);
    if count > 0 {
        return Err(StoreError::ClassNotEmpty(schema.class_name.clone()));
    }
    for (name, spec) in &schema.fields {
        if matches!(spec.field_type, FieldType::Relation { .. }) {
            drop_field(&state.conn, schema, name)?;
        }
    }
    state
        .conn
        .execute_batch(&format!("DROP TABLE IF EXISTS {table}"))
        .map_err(StoreError::backend)?;
    state
        .conn
        .execute(
            "DELETE FROM \"_SCHEMA\" WHERE className = ?1",
            [&schema.class_name],
        )
        .map_err(StoreError::backend)?;
    state.tables.remove(&schema.class_name);
    Ok(())
}

/// The on-demand indexes that exist, as `class\0path`.
pub(super) fn existing_auto_indexes(conn: &Connection) -> StoreResult<HashSet<String>> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index'")
        .map_err(StoreError::backend)?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(StoreError::backend)?;
    let mut out = HashSet::new();
    for name in names {
        let name = name.map_err(StoreError::backend)?;
        if let Some((class, path)) = name.split_once(':')
            && path.starts_with('$')
        {
            out.insert(format!("{class}\0{path}"));
        }
    }
    Ok(out)
}
