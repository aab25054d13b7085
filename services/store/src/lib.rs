//! oxbase storage: the [`Store`] trait every backend implements, the
//! backend-neutral query and write models it speaks, and the backends.
//!
//! The object layer talks to a `dyn Store` and never sees SQL. Every write goes
//! through [`Store::write`], so whatever must accompany each write (the
//! event outbox) lives in one place per backend.

pub mod acl;
pub mod aggregate;
mod error;
pub mod geo;
pub mod include;
pub mod matcher;
pub mod mongo;
pub mod outbox;
pub mod pattern;
pub mod postgres;
pub mod query;
pub mod schema;
mod sql;
pub mod sqlite;
pub mod text;
pub mod write;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;

pub use error::{BackendError, StoreError, StoreResult};
pub use matcher::{MatchError, Matcher, acl_allows};
pub use outbox::{EventContext, EventPolicy, NATS_HEADER_ROOM, OutboxEntry};
pub use query::{Condition, FieldPath, Filter, Object, Query, QueryValue, SortKey};
pub use schema::{ClassSchema, FieldSpec, FieldType, SchemaChange, SchemaView, join_class_name};
pub use write::{RelationChange, UpdateOp, WriteBatch, WriteOp, WriteOutcome};

#[async_trait]
pub trait Store: Send + Sync {
    /// Every class schema as stored.
    async fn load_schemas(&self) -> StoreResult<Vec<ClassSchema>>;

    /// Adds `fields` to the class, creating the class if needed, in one
    /// atomic step; a field already stored with another type fails with
    /// [`StoreError::SchemaMismatch`]. Returns the class's schema after.
    async fn ensure_fields(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<ClassSchema>;

    /// Creates a class with exactly this schema; fails with
    /// [`StoreError::ClassExists`] if it exists.
    async fn create_class(&self, schema: &ClassSchema) -> StoreResult<ClassSchema>;

    /// Changes a class's schema (see [`SchemaChange::apply`]). Deleting a
    /// field deletes its values from every object (or its join table).
    async fn update_class(
        &self,
        class_name: &str,
        change: &SchemaChange,
    ) -> StoreResult<ClassSchema>;

    /// Deletes an empty class; fails with [`StoreError::ClassNotEmpty`]
    /// while it holds objects.
    async fn delete_class(&self, class_name: &str) -> StoreResult<()>;

    /// Objects matching the query. `schemas` says how fields are typed and
    /// which classes exist; a class missing from it has no objects.
    async fn find(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Vec<Object>>;

    /// How many objects match the query's filter (ignoring skip and limit).
    async fn count(&self, schemas: &SchemaView, query: &Query) -> StoreResult<u64>;

    /// The database's own plan for the statement [`Store::find`] would run
    /// for this query (Parse's `explain`), in the backend's shape: SQLite's
    /// `EXPLAIN QUERY PLAN` rows as `[{"id", "parent", "detail"}]`,
    /// PostgreSQL's `EXPLAIN (FORMAT JSON)` rows as
    /// `[{"QUERY PLAN": [{"Plan": ...}]}]` (as Parse Server answers),
    /// MongoDB's `explain` reply (`queryPlanner`, `executionStats`, ...).
    /// A class missing from `schemas` has no plan: `[]`.
    async fn explain(&self, schemas: &SchemaView, query: &Query) -> StoreResult<serde_json::Value>;

    /// Applies a batch of writes. For a non-atomic batch, the result holds
    /// each op's outcome in order. For an atomic batch, an `Err` means
    /// nothing was applied and holds the failing op's error.
    async fn write(
        &self,
        schemas: &SchemaView,
        batch: WriteBatch,
    ) -> StoreResult<Vec<StoreResult<WriteOutcome>>>;

    /// Parse Server 9's unique index on one `authData` provider's `id` in
    /// `_User` (its `ensureAuthDataUniqueness`, under its names), so that
    /// of two sign-ups racing with one provider id only one succeeds: the
    /// other's write fails with [`StoreError::Duplicate`] naming
    /// `_auth_data_<provider>`. Users without that provider's id are not
    /// indexed. `_User` must exist; existing duplicates fail the call with
    /// [`StoreError::Duplicate`]. `provider` is a provider name (letters,
    /// digits, `_`).
    async fn ensure_auth_data_uniqueness(&self, provider: &str) -> StoreResult<()>;

    /// Checks the storage answers.
    async fn ping(&self) -> StoreResult<()>;

    /// Takes or renews the outbox lease for `relay` (one relay per
    /// database at a time, so events leave in commit order) and returns up
    /// to `limit` pending events, oldest first; `None` while another relay
    /// holds an unexpired lease.
    async fn outbox_claim(
        &self,
        relay: &str,
        lease: std::time::Duration,
        limit: usize,
    ) -> StoreResult<Option<Vec<OutboxEntry>>>;

    /// Gives up the outbox lease if `relay` holds it, so another relay can
    /// claim at once rather than after the lease runs out: what a stopping
    /// process does last.
    async fn outbox_release(&self, relay: &str) -> StoreResult<()>;

    /// Marks events published (acknowledged by the stream).
    async fn outbox_sent(&self, seqs: &[i64]) -> StoreResult<()>;

    /// Deletes events sent longer ago than `older_than`.
    async fn outbox_prune(&self, older_than: std::time::Duration) -> StoreResult<u64>;

    /// How many events wait to be published.
    async fn outbox_backlog(&self) -> StoreResult<u64>;

    /// Moves the pending event `seq` aside, for good: it is copied with
    /// `reason` to `_oxbase_outbox_dead` and the relay passes over it. For
    /// an event the stream can never take (larger than its message limit),
    /// which would otherwise hold back every event after it. `seq` must be
    /// the oldest pending event.
    async fn outbox_dead_letter(&self, seq: i64, reason: &str) -> StoreResult<()>;

    /// How many events were moved aside.
    async fn outbox_dead_letters(&self) -> StoreResult<u64>;

    /// Parse Config (`{"params": {...}, "masterKeyOnly": {...}}`), for
    /// backends whose layout keeps it outside the class tables, as Parse
    /// Server's PostgreSQL layout does (no `_SCHEMA` entry, no timestamps).
    /// `None` means the backend keeps it as the class `_GlobalConfig`.
    async fn load_config(&self) -> Option<StoreResult<Option<Object>>> {
        None
    }

    /// Applies `changes` (paths under `params` and `masterKeyOnly`) to the
    /// Parse Config atomically, creating it when needed. `None` as for
    /// [`Store::load_config`].
    async fn update_config(&self, changes: &[(FieldPath, UpdateOp)]) -> Option<StoreResult<()>> {
        let _ = changes;
        None
    }

    /// A counter that moves when another process (another oxbase, or Parse
    /// Server with `enableSchemaHooks`) reports a schema change, so callers
    /// caching schemas can reload them. `None` when the backend cannot
    /// tell.
    fn schema_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// How to connect, beyond the URI.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Connections per pool (PostgreSQL) or per client (MongoDB).
    pub pool_size: usize,
    /// A read replica for finds and counts (PostgreSQL). Reads there may
    /// lag the primary, so a client may not see its own latest write.
    pub read_uri: Option<String>,
    /// MongoDB read preference: `primary`, `primaryPreferred`,
    /// `secondary`, `secondaryPreferred` or `nearest`.
    pub read_preference: Option<String>,
    /// Longest a query may run in the database before it is stopped
    /// ([`StoreError::QueryTimeout`]): PostgreSQL's `statement_timeout`,
    /// MongoDB's `maxTimeMS`, an interrupt on SQLite. `None` for no limit.
    pub query_timeout: Option<std::time::Duration>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            pool_size: 10,
            read_uri: None,
            read_preference: None,
            query_timeout: None,
        }
    }
}

/// Opens the store a URI names: `sqlite://<path>` for the embedded store,
/// `postgres://...` for PostgreSQL, `mongodb://...` for MongoDB.
pub async fn open(uri: &str, options: &StoreOptions) -> StoreResult<Arc<dyn Store>> {
    let scheme = uri.split("://").next().unwrap_or(uri);
    match scheme {
        "postgres" | "postgresql" => Ok(Arc::new(
            postgres::PostgresStore::connect(uri, options).await?,
        )),
        "mongodb" | "mongodb+srv" => Ok(Arc::new(mongo::MongoStore::connect(uri, options).await?)),
        "sqlite" => {
            let path = &uri["sqlite://".len()..];
            let sqlite_options = sqlite::SqliteOptions {
                query_timeout: options.query_timeout,
                ..Default::default()
            };
            let store = sqlite::SqliteStore::open(Path::new(path), sqlite_options)?;
            Ok(Arc::new(store))
        }
        _ => {
            let _ = options;
            Err(StoreError::backend_message(format!(
                "database scheme {scheme:?} is not supported (use sqlite://, postgres:// or mongodb://)"
            )))
        }
    }
}
