//! The embedded SQLite backend. `layout` describes the tables, `engine` the
//! writer and reader threads, `compile` the SQL the query model becomes,
//! and `writes` the one path every write takes.

mod compile;
mod engine;
mod functions;
mod layout;
mod outbox;
mod writes;

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use rusqlite::{Row, params_from_iter};
use serde_json::Value;

use self::compile::Compiler;
use self::engine::{Engine, WriterState, in_savepoint};
use crate::Store;
use crate::error::{StoreError, StoreResult};
use crate::query::{Object, Query, project};
use crate::schema::{ClassSchema, FieldType, SchemaChange, SchemaView, merge_fields};
use crate::sql::quote_ident;
use crate::write::{WriteBatch, WriteOutcome};

/// Most on-demand expression indexes per class.
const MAX_AUTO_INDEXES: usize = 32;

/// The largest table a query may have indexed on demand. SQLite builds an
/// index on its one writer thread, holding every write meanwhile: this
/// many rows take tens of milliseconds (200,000 took 0.6 s here). Larger
/// tables are indexed only when declared (`indexes` in `/schemas`, with
/// the master key).
const AUTO_INDEX_MAX_ROWS: i64 = 20_000;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads (and connections).
    pub readers: usize,
    /// `PRAGMA synchronous`: `NORMAL` survives process crashes (a committed
    /// write is in the WAL before the call returns); `FULL` also survives
    /// power loss, at a cost per commit.
    pub synchronous: &'static str,
    /// Longest a read may run before SQLite interrupts it.
    pub query_timeout: Option<std::time::Duration>,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            synchronous: "NORMAL",
            query_timeout: None,
        }
    }
}

pub struct SqliteStore {
    engine: Engine,
    /// On-demand expression indexes that exist or are being created, as
    /// `class\0path`.
    indexes: Arc<Mutex<HashSet<String>>>,
    /// The outbox lease this process's relay last took (owner, length,
    /// and until when it is surely still its own): while more than half of
    /// it remains, a claim is a plain read on a reader thread instead of a
    /// job for the writer.
    lease: Mutex<Option<(String, std::time::Duration, std::time::Instant)>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts its threads.
    pub fn open(path: &Path, options: SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let writer = engine::connect(path, &options, true)?;
        layout::ensure_schema_table(&writer)?;
        outbox::ensure_tables(&writer)?;
        let indexes = layout::existing_auto_indexes(&writer)?;
        Ok(Self {
            engine: Engine::start(path, &options, writer)?,
            indexes: Arc::new(Mutex::new(indexes)),
            lease: Mutex::new(None),
        })
    }

    /// The SELECT a find runs (shared by `find` and `explain`), having
    /// queued the indexes it wants; `None` when the class does not exist.
    fn compile_find(
        &self,
        schemas: &SchemaView,
        query: &Query,
    ) -> StoreResult<Option<compile::Select>> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(None);
        };
        let mut select = Compiler::new(schemas).select(class, query)?;
        self.request_indexes(std::mem::take(&mut select.index_hints));
        Ok(Some(select))
    }

    /// Queues expression indexes for fields a query used, once each.
    fn request_indexes(&self, hints: Vec<(String, String)>) {
        let mut wanted = Vec::new();
        {
            let mut known = self.indexes.lock().unwrap_or_else(|e| e.into_inner());
            for (class, path) in hints {
                let key = format!("{class}\0{path}");
                if known.contains(&key) {
                    continue;
                }
                let prefix = format!("{class}\0");
                if known.iter().filter(|k| k.starts_with(&prefix)).count() >= MAX_AUTO_INDEXES {
                    continue;
                }
                known.insert(key);
                wanted.push((class, path));
            }
        }
        if wanted.is_empty() {
            return;
        }
        self.engine.write_detached(move |state: &mut WriterState| {
            for (class, path) in &wanted {
                if let Err(err) = auto_index(state, class, path) {
                    tracing::warn!(%class, %path, %err, "could not create index");
                }
            }
            Ok(())
        });
    }
}

/// Indexes `class` on `path` unless the table is too large to do it
/// without holding writes back noticeably.
fn auto_index(state: &WriterState, class: &str, path: &str) -> rusqlite::Result<()> {
    let table = quote_ident(class);
    let rows: i64 = state.conn.query_row(
        &format!("SELECT count(*) FROM (SELECT 1 FROM {table} LIMIT {AUTO_INDEX_MAX_ROWS} + 1)"),
        [],
        |row| row.get(0),
    )?;
    if rows > AUTO_INDEX_MAX_ROWS {
        tracing::warn!(
            %class,
            %path,
            "queries on this field would use an index, but {class} has over \
             {AUTO_INDEX_MAX_ROWS} rows and building one stalls every write: \
             declare it with the master key (PUT /schemas/{class}, `indexes`)"
        );
        return Ok(());
    }
    state.conn.execute_batch(&format!(
        "CREATE INDEX IF NOT EXISTS {} ON {table}(json_extract(data, '{path}'))",
        quote_ident(&format!("{class}:{path}")),
    ))
}

pub(super) fn sql_err(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::OperationInterrupted =>
        {
            StoreError::QueryTimeout
        }
        rusqlite::Error::UserFunctionError(inner) => StoreError::InvalidQuery(inner.to_string()),
        rusqlite::Error::SqliteFailure(e, message)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            // "UNIQUE constraint failed: index 'C_unique_field'" names the field.
            let field = message.as_deref().and_then(|m| {
                let (_, rest) = m.split_once("_unique_")?;
                Some(crate::sql::unique_index_field(rest.trim_end_matches('\'')))
            });
            StoreError::Duplicate { field }
        }
        other => StoreError::backend(other),
    }
}

pub(super) fn object_from_row(row: &Row<'_>) -> rusqlite::Result<Object> {
    let data: String = row.get(3)?;
    let mut object: Object = serde_json::from_str(&data).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    object.insert("objectId".into(), Value::String(row.get(0)?));
    object.insert("createdAt".into(), Value::String(row.get(1)?));
    object.insert("updatedAt".into(), Value::String(row.get(2)?));
    Ok(object)
}

#[async_trait]
impl Store for SqliteStore {
    async fn load_schemas(&self) -> StoreResult<Vec<ClassSchema>> {
        self.engine.read(layout::load_all).await
    }

    async fn ensure_fields(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<ClassSchema> {
        let class_name = class_name.to_owned();
        let fields = fields.clone();
        self.engine
            .write(move |state| {
                let current = layout::load_schema(&state.conn, &class_name)?;
                let (schema, changed) = merge_fields(&class_name, current, &fields)?;
                if changed {
                    layout::save_schema(&state.conn, &schema)?;
                    layout::ensure_storage(state, &schema)?;
                }
                Ok(schema)
            })
            .await
    }

    async fn create_class(&self, schema: &ClassSchema) -> StoreResult<ClassSchema> {
        let schema = schema.clone();
        self.engine
            .write(move |state| {
                if layout::load_schema(&state.conn, &schema.class_name)?.is_some() {
                    return Err(StoreError::ClassExists(schema.class_name.clone()));
                }
                layout::save_schema(&state.conn, &schema)?;
                layout::ensure_storage(state, &schema)?;
                Ok(schema)
            })
            .await
    }

    async fn update_class(
        &self,
        class_name: &str,
        change: &SchemaChange,
    ) -> StoreResult<ClassSchema> {
        let class_name = class_name.to_owned();
        let change = change.clone();
        self.engine
            .write(move |state| {
                let current = layout::load_schema(&state.conn, &class_name)?
                    .ok_or_else(|| StoreError::ClassMissing(class_name.clone()))?;
                let next = change.apply(&current)?;
                for field in &change.delete_fields {
                    layout::drop_field(&state.conn, &current, field)?;
                }
                for name in &change.delete_indexes {
                    layout::drop_declared_index(&state.conn, &class_name, name)?;
                }
                layout::save_schema(&state.conn, &next)?;
                layout::ensure_storage(state, &next)?;
                Ok(next)
            })
            .await
    }

    async fn delete_class(&self, class_name: &str) -> StoreResult<()> {
        let class_name = class_name.to_owned();
        self.engine
            .write(move |state| {
                let schema = layout::load_schema(&state.conn, &class_name)?
                    .ok_or_else(|| StoreError::ClassMissing(class_name.clone()))?;
                layout::ensure_table(state, &class_name)?;
                layout::drop_class(state, &schema)
            })
            .await
    }

    async fn find(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Vec<Object>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let Some(select) = self.compile_find(schemas, query)? else {
            return Ok(Vec::new());
        };
        let keys = query.keys.clone();
        let (sql, params, with_score) = (select.sql, select.params, select.with_score);
        self.engine
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
                let mut rows = stmt
                    .query(params_from_iter(params.iter()))
                    .map_err(sql_err)?;
                let mut out = Vec::new();
                while let Some(row) = rows.next().map_err(sql_err)? {
                    let mut object = object_from_row(row).map_err(sql_err)?;
                    if with_score {
                        let score: f64 = row.get(4).map_err(sql_err)?;
                        object.insert("score".into(), Value::from(score));
                    }
                    if let Some(keys) = &keys {
                        project(&mut object, keys);
                    }
                    out.push(object);
                }
                Ok(out)
            })
            .await
    }

    async fn explain(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Value> {
        let Some(select) = self.compile_find(schemas, query)? else {
            return Ok(Value::Array(Vec::new()));
        };
        let sql = format!("EXPLAIN QUERY PLAN {}", select.sql);
        let params = select.params;
        self.engine
            .read(move |conn| {
                let mut stmt = conn.prepare(&sql).map_err(sql_err)?;
                let rows = stmt
                    .query_map(params_from_iter(params.iter()), |row| {
                        Ok(serde_json::json!({
                            "id": row.get::<_, i64>("id")?,
                            "parent": row.get::<_, i64>("parent")?,
                            "detail": row.get::<_, String>("detail")?,
                        }))
                    })
                    .map_err(sql_err)?;
                rows.collect::<rusqlite::Result<Vec<_>>>()
                    .map(Value::Array)
                    .map_err(sql_err)
            })
            .await
    }

    async fn count(&self, schemas: &SchemaView, query: &Query) -> StoreResult<u64> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(0);
        };
        let select = Compiler::new(schemas).count(class, &query.filter)?;
        self.request_indexes(select.index_hints);
        let (sql, params) = (select.sql, select.params);
        self.engine
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&sql).map_err(sql_err)?;
                let n: i64 = stmt
                    .query_row(params_from_iter(params.iter()), |row| row.get(0))
                    .map_err(sql_err)?;
                Ok(n.max(0) as u64)
            })
            .await
    }

    async fn write(
        &self,
        schemas: &SchemaView,
        batch: WriteBatch,
    ) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
        let schemas = schemas.clone();
        self.engine
            .write(move |state| {
                // An op and its event commit together, or neither does.
                let apply = |state: &mut WriterState, op: &crate::WriteOp| {
                    let outcome = writes::apply_op(state, &schemas, op)?;
                    if let Some(context) = &batch.events {
                        outbox::insert(state, context, op.class_name(), &outcome)?;
                    }
                    Ok(outcome)
                };
                if batch.atomic {
                    let mut out = Vec::with_capacity(batch.ops.len());
                    for op in &batch.ops {
                        // The first failure fails the task, which rolls back
                        // every op before it.
                        out.push(Ok(apply(state, op)?));
                    }
                    Ok(out)
                } else {
                    Ok(batch
                        .ops
                        .iter()
                        .map(|op| in_savepoint(state, |state| apply(state, op)))
                        .collect())
                }
            })
            .await
    }

    async fn outbox_claim(
        &self,
        relay: &str,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Option<Vec<crate::outbox::OutboxEntry>>> {
        let started = std::time::Instant::now();
        let fresh = self
            .lease
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|(owner, length, until)| {
                owner == relay && *length == lease && *until > started + lease / 2
            });
        if fresh {
            return self
                .engine
                .read(move |conn| outbox::pending(conn, limit))
                .await
                .map(Some);
        }
        let owner = relay.to_owned();
        let until =
            outbox::now_ms().saturating_add(i64::try_from(lease.as_millis()).unwrap_or(i64::MAX));
        let claimed = self
            .engine
            .write(move |state| {
                if !outbox::take_lease(state, &owner, until)? {
                    return Ok(None);
                }
                outbox::pending(&state.conn, limit).map(Some)
            })
            .await?;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = claimed
            .is_some()
            .then(|| (relay.to_owned(), lease, started + lease));
        Ok(claimed)
    }

    async fn outbox_release(&self, relay: &str) -> StoreResult<()> {
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let owner = relay.to_owned();
        self.engine
            .write(move |state| outbox::release_lease(state, &owner))
            .await
    }

    async fn outbox_sent(&self, seqs: &[i64]) -> StoreResult<()> {
        let seqs = seqs.to_vec();
        self.engine
            .write(move |state| outbox::mark_sent(state, &seqs))
            .await
    }

    async fn outbox_prune(&self, older_than: std::time::Duration) -> StoreResult<u64> {
        self.engine
            .write(move |state| outbox::prune(state, older_than))
            .await
    }

    async fn outbox_backlog(&self) -> StoreResult<u64> {
        self.engine.read(outbox::backlog).await
    }

    async fn outbox_dead_letter(&self, seq: i64, reason: &str) -> StoreResult<()> {
        let reason = reason.to_owned();
        self.engine
            .write(move |state| outbox::dead_letter(state, seq, &reason))
            .await
    }

    async fn outbox_dead_letters(&self) -> StoreResult<u64> {
        self.engine.read(outbox::dead_letters).await
    }

    async fn ensure_auth_data_uniqueness(&self, provider: &str) -> StoreResult<()> {
        let name = crate::sql::auth_data_index(provider)?;
        // Partial, as Parse's PostgreSQL index: users without the id are
        // not indexed.
        let sql = format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON \"_User\"(json_extract(data, '$.authData.{provider}.id')) \
             WHERE json_extract(data, '$.authData.{provider}.id') IS NOT NULL",
            quote_ident(&name)
        );
        self.engine
            .write(move |state| state.conn.execute_batch(&sql).map_err(sql_err))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.engine
            .read(|conn| {
                conn.query_row("SELECT 1", [], |_| Ok(()))
                    .map_err(StoreError::backend)
            })
            .await
    }
}
