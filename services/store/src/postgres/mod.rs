//! The PostgreSQL backend, on Parse Server's own layout (see `layout`), so
//! an app moving from Parse Server keeps its database as it is.
//!
//! On start it creates `_SCHEMA` if it is missing and nothing else: tables
//! are created when classes are, and nothing is dropped or rewritten. It
//! needs no extension (geo distances use core SQL, not PostGIS).

mod compile;
mod connect;
mod layout;
mod outbox;
mod values;
mod writes;

use std::collections::BTreeMap;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use self::compile::Compiler;
use self::layout::columns;
use self::values::{acl_from, decode, put_defaults};
use crate::error::{BackendError, StoreError, StoreResult};
use crate::query::{Object, Query, project};
use crate::schema::{
    ClassSchema, FieldType, SchemaChange, SchemaView, join_class_name, merge_fields,
};
use crate::sql::quote_ident;
use crate::write::{WriteBatch, WriteOutcome};
use crate::{Store, StoreOptions};

/// Parse Server listens for this to reload its schema cache (when it runs
/// with `enableSchemaHooks`); any sender id other than its own will do.
const SCHEMA_CHANGED: &str = "NOTIFY \"schema.change\", '{\"senderId\":\"oxbase\"}'";

/// Lifts `statement_timeout` for the rest of a transaction, for the
/// schema work that may rightly run long (building an index).
const NO_TIME_LIMIT: &str = "SET LOCAL statement_timeout = 0";

pub struct PostgresStore {
    pool: Pool,
    /// Where finds and counts go; the primary unless a replica is set.
    read_pool: Pool,
    schema_changes: tokio::sync::watch::Receiver<u64>,
}

/// A pool of connections to `target`, `pool_size` of them unless the URI
/// says otherwise.
fn pool(target: &connect::Target, pool_size: usize) -> StoreResult<Pool> {
    let manager = Manager::from_config(
        target.config.clone(),
        target.tls.clone(),
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(target.pool_size.unwrap_or(pool_size).max(1))
        .build()
        .map_err(StoreError::backend)
}

/// A connection from `pool`, made now: a server that refuses it (no TLS
/// where TLS is required, a certificate that fails the check, bad
/// credentials) stops the start with its reason.
async fn check(pool: &Pool, which: &str) -> StoreResult<deadpool_postgres::Object> {
    pool.get().await.map_err(|err| {
        let message = format!("cannot connect to {which}: {}", with_causes(&err));
        StoreError::Backend(BackendError::with_message(message, err))
    })
}

/// `err` and its causes, `: `-separated: the pool's and the driver's
/// texts say only "error performing TLS handshake" or "db error", and the
/// reason (an unknown issuer, a refused login) is in a cause.
fn with_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(err) = cause {
        let more = err.to_string();
        if !text.ends_with(&more) {
            text = format!("{text}: {more}");
        }
        cause = err.source();
    }
    text
}

/// Listens on `schema.change` (Parse Server's channel, which oxbase also
/// notifies) and counts notifications, reconnecting with capped backoff.
fn listen_for_schema_changes(target: connect::Target) -> tokio::sync::watch::Receiver<u64> {
    let connect::Target { config, tls, .. } = target;
    let (tx, rx) = tokio::sync::watch::channel(0u64);
    tokio::spawn(async move {
        let mut backoff = std::time::Duration::from_millis(200);
        while !tx.is_closed() {
            match config.connect(tls.clone()).await {
                Ok((client, mut connection)) => {
                    backoff = std::time::Duration::from_millis(200);
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    let listen = client.batch_execute("LISTEN \"schema.change\"");
                    let mut listen = std::pin::pin!(listen);
                    let mut listening = false;
                    loop {
                        tokio::select! {
                            result = &mut listen, if !listening => {
                                if result.is_err() { break; }
                                listening = true;
                                // Changes made while we were away count too.
                                tx.send_modify(|n| *n += 1);
                            }
                            message = futures_util::StreamExt::next(&mut messages) => match message {
                                Some(Ok(tokio_postgres::AsyncMessage::Notification(_))) => tx.send_modify(|n| *n += 1),
                                Some(Ok(_)) => {}
                                Some(Err(_)) | None => break,
                            },
                            _ = tx.closed() => return,
                        }
                    }
                }
                Err(err) => tracing::debug!(%err, "schema listener cannot connect"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(std::time::Duration::from_secs(10));
        }
    });
    rx
}

/// The SELECT a find runs (shared by `find` and `explain`); `None` when
/// the class does not exist.
fn compile_find(schemas: &SchemaView, query: &Query) -> StoreResult<Option<compile::Select>> {
    schemas
        .get(&query.class_name)
        .map(|class| Compiler::new(schemas).select(class, query))
        .transpose()
}

pub(super) fn pg_err(err: tokio_postgres::Error) -> StoreError {
    let Some(db) = err.as_db_error() else {
        return StoreError::backend(err);
    };
    match *db.code() {
        SqlState::UNIQUE_VIOLATION => {
            // Parse's unique indexes are named `<Class>_unique_<field>`.
            let field = db
                .constraint()
                .and_then(|c| c.split_once("_unique_"))
                .map(|(_, field)| crate::sql::unique_index_field(field));
            StoreError::Duplicate { field }
        }
        SqlState::UNDEFINED_TABLE | SqlState::UNDEFINED_COLUMN => StoreError::StaleSchema,
        SqlState::QUERY_CANCELED => StoreError::QueryTimeout,
        SqlState::INVALID_REGULAR_EXPRESSION => {
            StoreError::InvalidQuery(format!("invalid $regex: {}", db.message()))
        }
        SqlState::UNDEFINED_OBJECT | SqlState::SYNTAX_ERROR_OR_ACCESS_RULE_VIOLATION => {
            StoreError::InvalidQuery(db.message().to_owned())
        }
        SqlState::STATEMENT_TOO_COMPLEX | SqlState::PROGRAM_LIMIT_EXCEEDED => {
            StoreError::InvalidQuery(format!("query too complex: {}", db.message()))
        }
        SqlState::NUMERIC_VALUE_OUT_OF_RANGE
        | SqlState::DATETIME_FIELD_OVERFLOW
        | SqlState::INVALID_DATETIME_FORMAT => StoreError::InvalidQuery(db.message().to_owned()),
        _ => {
            let message = format!("{} ({}): {}", err, db.code().code(), db.message());
            StoreError::Backend(BackendError::with_message(message, err))
        }
    }
}

/// The SELECT list of a class: the five default columns, then `columns`.
pub(super) fn select_list(alias: &str, schema: &ClassSchema) -> Vec<String> {
    let mut list = vec![
        format!("{alias}.\"objectId\""),
        format!("{alias}.\"createdAt\""),
        format!("{alias}.\"updatedAt\""),
        format!("{alias}.\"_rperm\""),
        format!("{alias}.\"_wperm\""),
    ];
    list.extend(
        columns(schema)
            .iter()
            .map(|(name, t)| values::select_expr(alias, name, t)),
    );
    list
}

pub(super) fn decode_row(row: &Row, columns: &[(String, FieldType)]) -> StoreResult<Object> {
    decode_row_at(row, 0, columns)
}

/// Decodes the object whose [`select_list`] starts at column `at`.
pub(super) fn decode_row_at(
    row: &Row,
    at: usize,
    columns: &[(String, FieldType)],
) -> StoreResult<Object> {
    let get = |i: usize| -> StoreResult<Option<String>> {
        row.try_get(at + i).map_err(StoreError::backend)
    };
    let date = |i: usize| -> StoreResult<Option<String>> {
        let value: Option<chrono::DateTime<chrono::Utc>> =
            row.try_get(at + i).map_err(StoreError::backend)?;
        Ok(value.map(values::iso))
    };
    let perms = |i: usize| -> StoreResult<Option<Vec<String>>> {
        row.try_get(at + i).map_err(StoreError::backend)
    };
    let mut object = Object::new();
    put_defaults(
        &mut object,
        get(0)?.unwrap_or_default(),
        date(1)?.unwrap_or_default(),
        date(2)?.unwrap_or_default(),
    );
    if let Some(acl) = acl_from(perms(3)?, perms(4)?) {
        object.insert("ACL".into(), acl);
    }
    for (i, (name, field_type)) in columns.iter().enumerate() {
        if let Some(value) = decode(row, at + 5 + i, field_type)? {
            object.insert(name.clone(), value);
        }
    }
    Ok(object)
}

impl PostgresStore {
    pub async fn connect(uri: &str, options: &StoreOptions) -> StoreResult<Self> {
        let target = connect::target(uri, options.query_timeout)?;
        let pool = pool(&target, options.pool_size)?;
        let read_pool = match &options.read_uri {
            Some(read_uri) => {
                let read_pool = self::pool(
                    &connect::target(read_uri, options.query_timeout)?,
                    options.pool_size,
                )?;
                let _connection = check(&read_pool, "the PostgreSQL read replica").await?;
                read_pool
            }
            None => pool.clone(),
        };
        let mut client = check(&pool, "PostgreSQL").await?;
        // Under a lock: processes starting together on an empty database
        // would otherwise race in `CREATE TABLE IF NOT EXISTS`, which
        // PostgreSQL answers with a unique violation for the loser.
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.batch_execute(
            "SELECT pg_advisory_xact_lock(hashtext('oxbase:bootstrap')); \
             CREATE TABLE IF NOT EXISTS \"_SCHEMA\" (\"className\" varChar(120), \"schema\" jsonb, \"isParseClass\" bool, PRIMARY KEY (\"className\"))",
        )
        .await
        .map_err(pg_err)?;
        tx.batch_execute(outbox::TABLES).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        drop(client);
        let schema_changes = listen_for_schema_changes(target);
        Ok(Self {
            pool,
            read_pool,
            schema_changes,
        })
    }

    async fn client(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool.get().await.map_err(StoreError::backend)
    }

    /// Parse Config, in the table Parse Server keeps it in:
    /// `"_GlobalConfig"("objectId", params, "masterKeyOnly")`, one row `1`.
    async fn read_config(&self) -> StoreResult<Option<Object>> {
        let client = self.client().await?;
        let rows = match client
            .query(
                r#"SELECT params, "masterKeyOnly" FROM "_GlobalConfig" WHERE "objectId" = '1'"#,
                &[],
            )
            .await
        {
            Err(err) if err.code() == Some(&SqlState::UNDEFINED_TABLE) => return Ok(None),
            other => other.map_err(pg_err)?,
        };
        rows.first().map(config_object).transpose()
    }

    async fn write_config(
        &self,
        changes: &[(crate::FieldPath, crate::UpdateOp)],
    ) -> StoreResult<()> {
        let mut client = self.client().await?;
        client
            .batch_execute(
                r#"CREATE TABLE IF NOT EXISTS "_GlobalConfig" ("objectId" text PRIMARY KEY, params jsonb, "masterKeyOnly" jsonb)"#,
            )
            .await
            .map_err(pg_err)?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.execute(
            r#"INSERT INTO "_GlobalConfig" ("objectId", params, "masterKeyOnly") VALUES ('1', '{}', '{}') ON CONFLICT DO NOTHING"#,
            &[],
        )
        .await
        .map_err(pg_err)?;
        let row = tx
            .query_one(
                r#"SELECT params, "masterKeyOnly" FROM "_GlobalConfig" WHERE "objectId" = '1' FOR UPDATE"#,
                &[],
            )
            .await
            .map_err(pg_err)?;
        let mut config = config_object(&row)?;
        crate::write::apply_update(&mut config, changes)?;
        let params = config
            .remove("params")
            .unwrap_or_else(|| Value::Object(Default::default()));
        let master_only = config
            .remove("masterKeyOnly")
            .unwrap_or_else(|| Value::Object(Default::default()));
        tx.execute(
            r#"UPDATE "_GlobalConfig" SET params = $1, "masterKeyOnly" = $2 WHERE "objectId" = '1'"#,
            &[&params, &master_only],
        )
        .await
        .map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    /// Runs `work` in a transaction holding a lock on the class's schema,
    /// so concurrent schema changes to one class (from any process) apply
    /// one after another.
    async fn with_schema_lock<T>(
        &self,
        class_name: &str,
        work: impl AsyncFnOnce(
            &deadpool_postgres::Transaction<'_>,
            Option<ClassSchema>,
        ) -> StoreResult<T>,
    ) -> StoreResult<T> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        // The query time limit is for clients' queries: adding an index to
        // a large table may take longer, and must not be cancelled for it.
        tx.batch_execute(NO_TIME_LIMIT).await.map_err(pg_err)?;
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('oxbase:schema:' || $1::text))",
            &[&class_name],
        )
        .await
        .map_err(pg_err)?;
        let row = tx
            .query_opt(
                "SELECT \"schema\", xmin::text FROM \"_SCHEMA\" WHERE \"className\" = $1::text",
                &[&class_name],
            )
            .await
            .map_err(pg_err)?;
        let current = match row {
            Some(row) => {
                let stored: Value = row.try_get(0).map_err(StoreError::backend)?;
                let mut schema = layout::from_stored(class_name, &stored)?;
                schema.stored_version = row.try_get(1).map_err(StoreError::backend)?;
                Some(schema)
            }
            None => None,
        };
        let out = work(&tx, current).await?;
        tx.batch_execute(SCHEMA_CHANGED).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }
}

/// Stores the schema and records the version it is stored as.
async fn save_schema(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &mut ClassSchema,
) -> StoreResult<()> {
    let row = tx
        .query_one(
            "INSERT INTO \"_SCHEMA\" (\"className\", \"schema\", \"isParseClass\") VALUES ($1::text, $2::jsonb, true)
         ON CONFLICT (\"className\") DO UPDATE SET \"schema\" = EXCLUDED.\"schema\" RETURNING xmin::text",
            &[&schema.class_name, &layout::to_stored(schema)],
        )
        .await
        .map_err(pg_err)?;
    schema.stored_version = row.try_get(0).map_err(StoreError::backend)?;
    Ok(())
}

async fn create_storage(
    tx: &deadpool_postgres::Transaction<'_>,
    schema: &ClassSchema,
) -> StoreResult<()> {
    for statement in layout::create_statements(schema) {
        tx.batch_execute(&statement).await.map_err(pg_err)?;
    }
    Ok(())
}

/// `{"params", "masterKeyOnly"}` of a `_GlobalConfig` row; NULLs read as
/// empty objects.
fn config_object(row: &Row) -> StoreResult<Object> {
    let mut config = Object::new();
    for (i, key) in ["params", "masterKeyOnly"].into_iter().enumerate() {
        let value: Option<Value> = row.try_get(i).map_err(pg_err)?;
        config.insert(
            key.to_owned(),
            value.unwrap_or_else(|| Value::Object(Default::default())),
        );
    }
    Ok(config)
}

#[async_trait]
impl Store for PostgresStore {
    async fn load_schemas(&self) -> StoreResult<Vec<ClassSchema>> {
        let client = self.read_pool.get().await.map_err(StoreError::backend)?;
        let rows = client
            .query(
                "SELECT \"className\", \"schema\", xmin::text FROM \"_SCHEMA\"",
                &[],
            )
            .await
            .map_err(pg_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let name: String = row.try_get(0).map_err(StoreError::backend)?;
            let stored: Value = row.try_get(1).map_err(StoreError::backend)?;
            match layout::from_stored(&name, &stored) {
                Ok(mut schema) => {
                    schema.stored_version = row.try_get(2).map_err(StoreError::backend)?;
                    out.push(schema);
                }
                // One unreadable row must not take every class down.
                Err(err) => {
                    tracing::warn!(class = %name, %err, "skipping an unreadable _SCHEMA row")
                }
            }
        }
        // Parse Server keeps no `_SCHEMA` row for its volatile classes;
        // where such a table exists, the class has its default schema.
        // (Config and hooks have stores of their own.)
        let unlisted: Vec<&str> = crate::schema::VOLATILE_CLASSES
            .iter()
            .copied()
            .filter(|name| !matches!(*name, "_GlobalConfig" | "_Hooks" | "_GraphQLConfig"))
            .filter(|name| !out.iter().any(|class| class.class_name == *name))
            .collect();
        if !unlisted.is_empty() {
            let tables = client
                .query(
                    "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') AND c.relname = ANY($1::text[])",
                    &[&unlisted],
                )
                .await
                .map_err(pg_err)?;
            for row in tables {
                let name: String = row.try_get(0).map_err(StoreError::backend)?;
                out.push(ClassSchema::new(&name));
            }
        }
        Ok(out)
    }

    async fn ensure_fields(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<ClassSchema> {
        self.with_schema_lock(class_name, async |tx, current| {
            let existed = current.is_some();
            let (mut schema, changed) = merge_fields(class_name, current, fields)?;
            if !changed {
                return Ok(schema);
            }
            if existed {
                for (name, field_type) in fields {
                    if let Some(ddl) = layout::add_field_ddl(class_name, name, field_type) {
                        tx.batch_execute(&ddl).await.map_err(pg_err)?;
                    }
                }
            } else {
                create_storage(tx, &schema).await?;
            }
            save_schema(tx, &mut schema).await?;
            Ok(schema)
        })
        .await
    }

    async fn create_class(&self, schema: &ClassSchema) -> StoreResult<ClassSchema> {
        self.with_schema_lock(&schema.class_name, async |tx, current| {
            if current.is_some() {
                return Err(StoreError::ClassExists(schema.class_name.clone()));
            }
            create_storage(tx, schema).await?;
            let mut schema = schema.clone();
            save_schema(tx, &mut schema).await?;
            Ok(schema)
        })
        .await
    }

    async fn update_class(
        &self,
        class_name: &str,
        change: &SchemaChange,
    ) -> StoreResult<ClassSchema> {
        self.with_schema_lock(class_name, async |tx, current| {
            let current = current.ok_or_else(|| StoreError::ClassMissing(class_name.to_owned()))?;
            let mut next = change.apply(&current)?;
            let table = quote_ident(class_name);
            for field in &change.delete_fields {
                let ddl = match current.field_type(field) {
                    Some(FieldType::Relation { .. }) => {
                        format!(
                            "DROP TABLE IF EXISTS {}",
                            quote_ident(&join_class_name(field, class_name))
                        )
                    }
                    _ => format!(
                        "ALTER TABLE {table} DROP COLUMN IF EXISTS {}",
                        quote_ident(field)
                    ),
                };
                tx.batch_execute(&ddl).await.map_err(pg_err)?;
            }
            for (name, spec) in &change.add_fields {
                if let Some(ddl) = layout::add_field_ddl(class_name, name, &spec.field_type) {
                    tx.batch_execute(&ddl).await.map_err(pg_err)?;
                }
            }
            for name in &change.delete_indexes {
                tx.batch_execute(&format!("DROP INDEX IF EXISTS {}", quote_ident(name)))
                    .await
                    .map_err(pg_err)?;
            }
            for (name, spec) in &change.add_indexes {
                if let Some(ddl) = layout::index_ddl(class_name, name, spec) {
                    tx.batch_execute(&ddl).await.map_err(pg_err)?;
                }
            }
            save_schema(tx, &mut next).await?;
            Ok(next)
        })
        .await
    }

    async fn delete_class(&self, class_name: &str) -> StoreResult<()> {
        self.with_schema_lock(class_name, async |tx, current| {
            let current = current.ok_or_else(|| StoreError::ClassMissing(class_name.to_owned()))?;
            let table = quote_ident(class_name);
            let has_rows = tx
                .query_opt(&format!("SELECT 1 FROM {table} LIMIT 1"), &[])
                .await;
            match has_rows.map_err(pg_err) {
                Ok(Some(_)) => return Err(StoreError::ClassNotEmpty(class_name.to_owned())),
                Ok(None) | Err(StoreError::StaleSchema) => {}
                Err(err) => return Err(err),
            }
            tx.batch_execute(&format!("DROP TABLE IF EXISTS {table}"))
                .await
                .map_err(pg_err)?;
            for (name, spec) in &current.fields {
                if matches!(spec.field_type, FieldType::Relation { .. }) {
                    let join = quote_ident(&join_class_name(name, class_name));
                    tx.batch_execute(&format!("DROP TABLE IF EXISTS {join}"))
                        .await
                        .map_err(pg_err)?;
                }
            }
            tx.execute(
                "DELETE FROM \"_SCHEMA\" WHERE \"className\" = $1::text",
                &[&class_name],
            )
            .await
            .map_err(pg_err)?;
            Ok(())
        })
        .await
    }

    async fn find(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Vec<Object>> {
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let Some(select) = compile_find(schemas, query)? else {
            return Ok(Vec::new());
        };
        let client = self.read_pool.get().await.map_err(StoreError::backend)?;
        let statement = client.prepare_cached(&select.sql).await.map_err(pg_err)?;
        let rows = client
            .query(&statement, &select.params.refs())
            .await
            .map_err(pg_err)?;
        let version = select.stored_version_column();
        if let Some(row) = rows.first() {
            let stored: Option<String> = row.try_get(version).map_err(StoreError::backend)?;
            if stored != select.stored_version {
                return Err(StoreError::StaleSchema);
            }
        }
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut object = decode_row(&row, &select.columns)?;
            if select.with_score {
                let score: f64 = row
                    .try_get(5 + select.columns.len())
                    .map_err(StoreError::backend)?;
                object.insert("score".into(), Value::from(score));
            }
            if let Some(keys) = &query.keys {
                project(&mut object, keys);
            }
            out.push(object);
        }
        Ok(out)
    }

    async fn explain(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Value> {
        let Some(select) = compile_find(schemas, query)? else {
            return Ok(Value::Array(Vec::new()));
        };
        let client = self.read_pool.get().await.map_err(StoreError::backend)?;
        let sql = format!("EXPLAIN (FORMAT JSON) {}", select.sql);
        let rows = client
            .query(&sql, &select.params.refs())
            .await
            .map_err(pg_err)?;
        // Parse Server answers the rows as they come: one, whose
        // `QUERY PLAN` column holds `[{"Plan": {...}}]`.
        rows.iter()
            .map(|row| {
                let plan: Value = row.try_get(0).map_err(StoreError::backend)?;
                let mut out = serde_json::Map::new();
                out.insert(row.columns()[0].name().to_owned(), plan);
                Ok(Value::Object(out))
            })
            .collect::<StoreResult<Vec<_>>>()
            .map(Value::Array)
    }

    async fn count(&self, schemas: &SchemaView, query: &Query) -> StoreResult<u64> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(0);
        };
        let (sql, params) = Compiler::new(schemas).count(class, &query.filter)?;
        let client = self.read_pool.get().await.map_err(StoreError::backend)?;
        let statement = client.prepare_cached(&sql).await.map_err(pg_err)?;
        let row = client
            .query_one(&statement, &params.refs())
            .await
            .map_err(pg_err)?;
        let n: i64 = row.try_get(0).map_err(StoreError::backend)?;
        Ok(n.max(0) as u64)
    }

    async fn write(
        &self,
        schemas: &SchemaView,
        batch: WriteBatch,
    ) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
        let mut client = self.client().await?;
        if let [op] = batch.ops.as_slice()
            && (batch.events.is_none() || matches!(op, crate::WriteOp::Create { .. }))
            && writes::is_single_statement(schemas, op)
        {
            // One statement is atomic on its own: no transaction round trips.
            // A create writes its event in that statement too.
            let result = writes::apply_op(&client, schemas, op, batch.events.as_ref()).await;
            return match result {
                Err(err) if batch.atomic => Err(err),
                result => Ok(vec![result]),
            };
        }
        let tx = client.transaction().await.map_err(pg_err)?;
        let mut out = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            if batch.atomic {
                // The first failure returns, dropping (rolling back) the
                // transaction with every op before it.
                out.push(Ok(writes::apply_op(
                    &tx,
                    schemas,
                    op,
                    batch.events.as_ref(),
                )
                .await?));
                continue;
            }
            tx.batch_execute("SAVEPOINT op").await.map_err(pg_err)?;
            let result = writes::apply_op(&tx, schemas, op, batch.events.as_ref()).await;
            let end = if result.is_ok() {
                "RELEASE SAVEPOINT op"
            } else {
                "ROLLBACK TO SAVEPOINT op"
            };
            tx.batch_execute(end).await.map_err(pg_err)?;
            out.push(result);
        }
        tx.commit().await.map_err(pg_err)?;
        Ok(out)
    }

    async fn outbox_claim(
        &self,
        relay: &str,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Option<Vec<crate::OutboxEntry>>> {
        outbox::claim(&self.client().await?, relay, lease, limit).await
    }

    async fn outbox_release(&self, relay: &str) -> StoreResult<()> {
        outbox::release(&self.client().await?, relay).await
    }

    async fn outbox_sent(&self, seqs: &[i64]) -> StoreResult<()> {
        outbox::mark_sent(&self.client().await?, seqs).await
    }

    async fn outbox_prune(&self, older_than: std::time::Duration) -> StoreResult<u64> {
        outbox::prune(&self.client().await?, older_than).await
    }

    async fn outbox_backlog(&self) -> StoreResult<u64> {
        outbox::backlog(&self.client().await?).await
    }

    async fn outbox_dead_letter(&self, seq: i64, reason: &str) -> StoreResult<()> {
        outbox::dead_letter(&self.client().await?, seq, reason).await
    }

    async fn outbox_dead_letters(&self) -> StoreResult<u64> {
        outbox::dead_letters(&self.client().await?).await
    }

    async fn ensure_auth_data_uniqueness(&self, provider: &str) -> StoreResult<()> {
        let name = crate::sql::auth_data_index(provider)?;
        // Parse Server's statement, so either server finds the other's index.
        let sql = format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {} ON \"_User\" ((\"authData\"->'{provider}'->>'id')) \
             WHERE \"authData\"->'{provider}'->>'id' IS NOT NULL",
            quote_ident(&name)
        );
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg_err)?;
        tx.batch_execute(NO_TIME_LIMIT).await.map_err(pg_err)?;
        tx.batch_execute(&sql).await.map_err(pg_err)?;
        tx.commit().await.map_err(pg_err)
    }

    async fn ping(&self) -> StoreResult<()> {
        let client = self.client().await?;
        client.query_one("SELECT 1", &[]).await.map_err(pg_err)?;
        Ok(())
    }

    async fn load_config(&self) -> Option<StoreResult<Option<Object>>> {
        Some(self.read_config().await)
    }

    async fn update_config(
        &self,
        changes: &[(crate::FieldPath, crate::UpdateOp)],
    ) -> Option<StoreResult<()>> {
        Some(self.write_config(changes).await)
    }

    fn schema_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.schema_changes.clone())
    }
}
