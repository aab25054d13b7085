//! The embedded SQLite backend.
//!
//! Layout: `_SCHEMA(className, schema)` holds each class's schema as JSON.
//! Each class is a table named after it with `objectId` (primary key),
//! `createdAt`, `updatedAt`, `_rperm`/`_wperm` (JSON arrays derived from
//! the ACL, NULL for public) and `data`, the rest of the object as JSON.
//! Fields that queries filter or sort on get expression indexes on demand.
//!
//! Concurrency: one writer thread owns the only writing connection and
//! commits whatever writes are queued together in one transaction (group
//! commit), each in its own savepoint so one failing write does not undo
//! the others. Reads run on a small pool of reader threads, each with its
//! own connection; WAL mode lets them read while the writer writes.

mod compile;
mod functions;

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use crossbeam_channel::{Receiver, Sender};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Row, params_from_iter};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use self::compile::{Compiler, quote_ident};
use crate::Store;
use crate::acl;
use crate::error::{StoreError, StoreResult};
use crate::query::{Filter, Object, Query, project};
use crate::schema::{ClassSchema, FieldType, SchemaView, merge_fields};
use crate::write::{WriteBatch, WriteOp, WriteOutcome, apply_update};

/// Most writes committed in one transaction.
const MAX_GROUP: usize = 512;
/// Most on-demand expression indexes per class.
const MAX_AUTO_INDEXES: usize = 32;

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Reader threads (and connections).
    pub readers: usize,
    /// `PRAGMA synchronous`: `NORMAL` survives process crashes (a committed
    /// write is in the WAL before the call returns); `FULL` also survives
    /// power loss, at a cost per commit.
    pub synchronous: &'static str,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            readers: 4,
            synchronous: "NORMAL",
        }
    }
}

type ReadTask = Box<dyn FnOnce(&Connection) + Send>;

/// A unit of work for the writer thread: `run` inside the group's
/// transaction, then `finish` once the transaction's fate is known.
trait WriteTask: Send {
    /// Runs the work; `false` means it failed and its changes must be
    /// rolled back.
    fn run(&mut self, conn: &mut WriterState) -> bool;
    fn finish(self: Box<Self>, commit: StoreResult<()>);
}

struct Task<T, F> {
    work: Option<F>,
    result: Option<StoreResult<T>>,
    reply: oneshot::Sender<StoreResult<T>>,
}

impl<T, F> WriteTask for Task<T, F>
where
    T: Send,
    F: FnOnce(&mut WriterState) -> StoreResult<T> + Send,
{
    fn run(&mut self, state: &mut WriterState) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(state)))
            .unwrap_or_else(|_| Err(StoreError::Backend("write task panicked".into())));
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: StoreResult<()>) {
        let result = match commit {
            Ok(()) => self
                .result
                .unwrap_or_else(|| Err(StoreError::Backend("write task did not run".into()))),
            Err(err) => Err(err),
        };
        let _ = self.reply.send(result);
    }
}

/// What the writer thread owns.
struct WriterState {
    conn: Connection,
    /// Class tables known to exist.
    tables: HashSet<String>,
}

pub struct SqliteStore {
    readers: Sender<ReadTask>,
    writer: Sender<Box<dyn WriteTask>>,
    /// Expression indexes that exist or are being created, as
    /// `class\0path`.
    indexes: Arc<Mutex<HashSet<String>>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and starts its threads.
    pub fn open(path: &Path, options: SqliteOptions) -> StoreResult<Self> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir).map_err(StoreError::backend)?;
        }
        let writer_conn = connect(path, &options, true)?;
        writer_conn
            .execute_batch(
                "CREATE TABLE IF NOT EXISTS \"_SCHEMA\" (
                    className TEXT PRIMARY KEY NOT NULL,
                    schema TEXT NOT NULL,
                    isParseClass INTEGER NOT NULL DEFAULT 1
                );",
            )
            .map_err(StoreError::backend)?;
        let indexes = existing_indexes(&writer_conn)?;

        let (write_tx, write_rx) = crossbeam_channel::unbounded::<Box<dyn WriteTask>>();
        let mut state = WriterState {
            conn: writer_conn,
            tables: HashSet::new(),
        };
        std::thread::Builder::new()
            .name("oxbase-sqlite-writer".into())
            .spawn(move || writer_loop(&mut state, write_rx))
            .map_err(StoreError::backend)?;

        let (read_tx, read_rx) = crossbeam_channel::unbounded::<ReadTask>();
        for i in 0..options.readers.max(1) {
            let conn = connect(path, &options, false)?;
            let rx = read_rx.clone();
            std::thread::Builder::new()
                .name(format!("oxbase-sqlite-reader-{i}"))
                .spawn(move || reader_loop(conn, rx))
                .map_err(StoreError::backend)?;
        }
        Ok(Self {
            readers: read_tx,
            writer: write_tx,
            indexes: Arc::new(Mutex::new(indexes)),
        })
    }

    async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task: ReadTask = Box::new(move |conn| {
            let result = std::panic::catch_unwind(AssertUnwindSafe(|| work(conn)))
                .unwrap_or_else(|_| Err(StoreError::Backend("read task panicked".into())));
            let _ = tx.send(result);
        });
        self.readers
            .send(task)
            .map_err(|_| StoreError::Backend("sqlite readers stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("sqlite reader dropped a request".into()))?
    }

    async fn write_task<T, F>(&self, work: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut WriterState) -> StoreResult<T> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        let task = Task {
            work: Some(work),
            result: None,
            reply: tx,
        };
        self.writer
            .send(Box::new(task))
            .map_err(|_| StoreError::Backend("sqlite writer stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Backend("sqlite writer dropped a request".into()))?
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
        let (tx, _rx) = oneshot::channel();
        let task = Task {
            work: Some(move |state: &mut WriterState| {
                for (class, path) in &wanted {
                    let sql = format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {}(json_extract(data, '{path}'))",
                        quote_ident(&format!("{class}:{path}")),
                        quote_ident(class)
                    );
                    if let Err(err) = state.conn.execute_batch(&sql) {
                        tracing::warn!(%class, %path, %err, "could not create index");
                    }
                }
                Ok(())
            }),
            result: None,
            reply: tx,
        };
        let _ = self.writer.send(Box::new(task));
    }
}

fn connect(path: &Path, options: &SqliteOptions, writer: bool) -> StoreResult<Connection> {
    let flags = if writer {
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
    } | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(StoreError::backend)?;
    conn.execute_batch(&format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {};
         PRAGMA busy_timeout = 10000;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -32000;",
        options.synchronous
    ))
    .map_err(StoreError::backend)?;
    conn.set_prepared_statement_cache_capacity(256);
    functions::register(&conn).map_err(StoreError::backend)?;
    Ok(conn)
}

fn existing_indexes(conn: &Connection) -> StoreResult<HashSet<String>> {
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index'")
        .map_err(StoreError::backend)?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(StoreError::backend)?;
    let mut out = HashSet::new();
    for name in names {
        let name = name.map_err(StoreError::backend)?;
        if let Some((class, path)) = name.split_once(':') {
            out.insert(format!("{class}\0{path}"));
        }
    }
    Ok(out)
}

fn reader_loop(conn: Connection, rx: Receiver<ReadTask>) {
    while let Ok(task) = rx.recv() {
        task(&conn);
    }
}

fn writer_loop(state: &mut WriterState, rx: Receiver<Box<dyn WriteTask>>) {
    while let Ok(first) = rx.recv() {
        let mut tasks = vec![first];
        while tasks.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(task) => tasks.push(task),
                Err(_) => break,
            }
        }
        if let Err(err) = state.conn.execute_batch("BEGIN IMMEDIATE") {
            let err = StoreError::backend(err);
            for task in tasks {
                task.finish(Err(err.clone()));
            }
            continue;
        }
        for task in tasks.iter_mut() {
            let _ = state.conn.execute_batch("SAVEPOINT task");
            let ok = task.run(state);
            if !ok {
                let _ = state.conn.execute_batch("ROLLBACK TO task");
                // A table created by the rolled-back work is gone again.
                state.tables.clear();
            }
            let _ = state.conn.execute_batch("RELEASE task");
        }
        let commit = state
            .conn
            .execute_batch("COMMIT")
            .map_err(StoreError::backend);
        if commit.is_err() {
            let _ = state.conn.execute_batch("ROLLBACK");
            state.tables.clear();
        }
        for task in tasks {
            task.finish(commit.clone());
        }
    }
}

fn sql_err(err: rusqlite::Error) -> StoreError {
    match err {
        rusqlite::Error::UserFunctionError(inner) => StoreError::InvalidQuery(inner.to_string()),
        rusqlite::Error::SqliteFailure(e, _)
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            StoreError::Duplicate
        }
        other => StoreError::backend(other),
    }
}

/// Splits an object into its columns: the three default fields, the
/// permission arrays, and the JSON of everything else.
fn columns_of(
    object: &Object,
) -> StoreResult<(String, String, String, SqlValue, SqlValue, String)> {
    let text = |key: &str| -> StoreResult<String> {
        object
            .get(key)
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| StoreError::Backend(format!("object without {key}")))
    };
    let (read, write) = acl::permissions(object.get("ACL"));
    let perm = |list: Option<Vec<String>>| match list {
        Some(list) => SqlValue::Text(Value::from(list).to_string()),
        None => SqlValue::Null,
    };
    let mut data = Map::new();
    for (key, value) in object {
        if !matches!(key.as_str(), "objectId" | "createdAt" | "updatedAt") && !value.is_null() {
            data.insert(key.clone(), value.clone());
        }
    }
    Ok((
        text("objectId")?,
        text("createdAt")?,
        text("updatedAt")?,
        perm(read),
        perm(write),
        Value::Object(data).to_string(),
    ))
}

fn object_from_row(row: &Row<'_>) -> rusqlite::Result<Object> {
    let data: String = row.get(3)?;
    let mut object: Object = serde_json::from_str(&data).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(3, rusqlite::types::Type::Text, Box::new(e))
    })?;
    object.insert("objectId".into(), Value::String(row.get(0)?));
    object.insert("createdAt".into(), Value::String(row.get(1)?));
    object.insert("updatedAt".into(), Value::String(row.get(2)?));
    Ok(object)
}

fn create_table(state: &mut WriterState, class_name: &str) -> StoreResult<()> {
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
    state.tables.insert(class_name.to_owned());
    Ok(())
}

fn load_schema(conn: &Connection, class_name: &str) -> StoreResult<Option<ClassSchema>> {
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
    let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
    stmt.query_row(params_from_iter(params.iter()), object_from_row)
        .optional()
        .map_err(sql_err)
}

fn apply_op(
    state: &mut WriterState,
    schemas: &SchemaView,
    op: &WriteOp,
) -> StoreResult<WriteOutcome> {
    match op {
        WriteOp::Create { class_name, object } => {
            create_table(state, class_name)?;
            let (id, created, updated, rperm, wperm, data) = columns_of(object)?;
            let sql = format!(
                "INSERT INTO {} (objectId, createdAt, updatedAt, _rperm, _wperm, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                quote_ident(class_name)
            );
            let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
            stmt.execute(rusqlite::params![id, created, updated, rperm, wperm, data])
                .map_err(sql_err)?;
            let mut stored = object.clone();
            stored.retain(|_, v| !v.is_null());
            Ok(WriteOutcome::Created(stored))
        }
        WriteOp::Update {
            class_name,
            object_id,
            updated_at,
            changes,
            precondition,
        } => {
            let class = schemas.get(class_name).ok_or(StoreError::NotFound)?;
            let before = load_for_write(state, schemas, class, object_id, precondition)?
                .ok_or(StoreError::NotFound)?;
            let mut after = before.clone();
            apply_update(&mut after, changes)?;
            after.insert("updatedAt".into(), Value::String(updated_at.clone()));
            let (_, _, updated, rperm, wperm, data) = columns_of(&after)?;
            let sql = format!(
                "UPDATE {} SET updatedAt = ?1, _rperm = ?2, _wperm = ?3, data = ?4 WHERE objectId = ?5",
                quote_ident(class_name)
            );
            let mut stmt = state.conn.prepare_cached(&sql).map_err(sql_err)?;
            stmt.execute(rusqlite::params![updated, rperm, wperm, data, object_id])
                .map_err(sql_err)?;
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

#[async_trait]
impl Store for SqliteStore {
    async fn load_schemas(&self) -> StoreResult<Vec<ClassSchema>> {
        self.read(|conn| {
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
        })
        .await
    }

    async fn ensure_fields(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<ClassSchema> {
        let class_name = class_name.to_owned();
        let fields = fields.clone();
        self.write_task(move |state| {
            let current = load_schema(&state.conn, &class_name)?;
            let (schema, changed) = merge_fields(&class_name, current, &fields)?;
            if changed {
                let raw = serde_json::to_string(&schema).map_err(StoreError::backend)?;
                state
                    .conn
                    .execute(
                        "INSERT INTO \"_SCHEMA\" (className, schema) VALUES (?1, ?2)
                         ON CONFLICT(className) DO UPDATE SET schema = excluded.schema",
                        rusqlite::params![class_name, raw],
                    )
                    .map_err(StoreError::backend)?;
                create_table(state, &class_name)?;
            }
            Ok(schema)
        })
        .await
    }

    async fn find(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Vec<Object>> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(Vec::new());
        };
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let select = Compiler::new(schemas).select(class, query)?;
        self.request_indexes(select.index_hints);
        let keys = query.keys.clone();
        let (sql, params, with_score) = (select.sql, select.params, select.with_score);
        self.read(move |conn| {
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

    async fn count(&self, schemas: &SchemaView, query: &Query) -> StoreResult<u64> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(0);
        };
        let select = Compiler::new(schemas).count(class, &query.filter)?;
        self.request_indexes(select.index_hints);
        let (sql, params) = (select.sql, select.params);
        self.read(move |conn| {
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
        let atomic = batch.atomic;
        self.write_task(move |state| {
            if atomic {
                let mut out = Vec::with_capacity(batch.ops.len());
                for op in &batch.ops {
                    // The first failure fails the task, which rolls
                    // back every op before it.
                    out.push(Ok(apply_op(state, &schemas, op)?));
                }
                Ok(out)
            } else {
                Ok(batch
                    .ops
                    .iter()
                    .map(|op| savepoint_op(state, &schemas, op))
                    .collect())
            }
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.read(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))
                .map_err(StoreError::backend)
        })
        .await
    }
}

fn savepoint_op(
    state: &mut WriterState,
    schemas: &SchemaView,
    op: &WriteOp,
) -> StoreResult<WriteOutcome> {
    state
        .conn
        .execute_batch("SAVEPOINT op")
        .map_err(StoreError::backend)?;
    let result = apply_op(state, schemas, op);
    if result.is_err() {
        let _ = state.conn.execute_batch("ROLLBACK TO op");
        state.tables.clear();
    }
    state
        .conn
        .execute_batch("RELEASE op")
        .map_err(StoreError::backend)?;
    result
}
