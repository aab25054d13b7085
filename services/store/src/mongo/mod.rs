//! The MongoDB backend, on Parse Server's own layout, so Parse Server and
//! oxbase read and write the same database:
//!
//! - `_SCHEMA` holds one document per class in Parse's format (`schema`);
//! - each class is a collection named after it, its objects in Parse's
//!   document shape (`transform`);
//! - relations are `_Join:<key>:<Class>` collections of
//!   `{relatedId, owningId}` rows;
//! - Parse's indexes keep Parse's names (`indexes`).
//!
//! Queries translate to Mongo filters (`filter`), after subqueries and
//! relations are resolved by reading first (`resolve`), as Parse does.
//! Writes are single-document atomic operations, grouped into
//! transactions on replica sets (`writes`); their events go to the outbox
//! in the same transaction (`outbox`).
//!
//! Nothing is created or changed on connect: collections appear with their
//! first write, indexes with their class.

mod errors;
mod filter;
mod indexes;
mod outbox;
mod resolve;
mod schema;
mod transform;
mod update;
mod writes;

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::{StreamExt, TryStreamExt};
use mongodb::bson::{Document, doc};
use mongodb::options::{
    ClientOptions, DatabaseOptions, FindOptions, ReadPreference, SelectionCriteria,
};
use mongodb::{Client, Collection, Database};
use tokio::sync::watch;

use self::errors::{DUPLICATE_KEY, NAMESPACE_NOT_FOUND, has_code, query_error, schema_error};
use self::filter::{NearOrder, filter_document, projection, sort_document, text_fields};
use self::indexes::geo_index;
use self::schema::{
    SCHEMA_COLLECTION, check_class_name, check_field_name, field_options, indexes_document,
    is_stored_field, schema_document, schema_from_document, stored_class_level_permissions,
    type_string,
};
use self::transform::object_from_document;
use crate::error::{StoreError, StoreResult};
use crate::query::{Object, Query, project};
use crate::schema::{
    ClassSchema, FieldType, SchemaChange, SchemaView, join_class_name, merge_fields,
};
use crate::write::{WriteBatch, WriteOutcome};
use crate::{Store, StoreOptions};

/// The database the Node driver (and so Parse Server) uses when the URI
/// names none.
const DEFAULT_DATABASE: &str = "test";

/// How often a schema change is retried when another process changed the
/// class between our read and our write.
const SCHEMA_ATTEMPTS: usize = 3;

pub struct MongoStore {
    client: Client,
    /// Finds and counts, with the configured read preference.
    db: Database,
    /// Schema reads and writes, and the reads writes depend on.
    primary: Database,
    /// Whether the server runs multi-document transactions (a replica set
    /// or a sharded cluster; a standalone server does not).
    transactions: bool,
    /// Indexes this process created or found, as `collection\0name`, so a
    /// stale schema does not make every query ask for them again.
    known_indexes: Mutex<HashSet<String>>,
    /// Counts `_SCHEMA` changes seen on its change stream (replica sets and
    /// sharded clusters only).
    schema_changes: Option<watch::Receiver<u64>>,
    /// Set once this process has made sure the outbox collection and its
    /// index exist.
    outbox_ready: tokio::sync::OnceCell<()>,
    /// `maxTimeMS` of every find and count.
    query_timeout: Option<Duration>,
}

/// A read preference by name: Parse's upper-case forms
/// (`SECONDARY_PREFERRED`) and the URI's (`secondaryPreferred`) alike.
fn read_preference(name: &str) -> StoreResult<ReadPreference> {
    let normalized: String = name
        .chars()
        .filter(|c| *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    Ok(match normalized.as_str() {
        "primary" => ReadPreference::Primary,
        "primarypreferred" => ReadPreference::PrimaryPreferred { options: None },
        "secondary" => ReadPreference::Secondary { options: None },
        "secondarypreferred" => ReadPreference::SecondaryPreferred { options: None },
        "nearest" => ReadPreference::Nearest { options: None },
        _ => {
            return Err(StoreError::backend_message(format!(
                "unknown MongoDB read preference {name:?}"
            )));
        }
    })
}

impl MongoStore {
    /// Connects to the database the URI names (or `test`, as Parse Server
    /// would), and checks the server answers.
    pub async fn connect(uri: &str, options: &StoreOptions) -> StoreResult<Self> {
        let mut client_options = ClientOptions::parse(uri)
            .await
            .map_err(|e| StoreError::backend_context("bad MongoDB URI", e))?;
        client_options.max_pool_size =
            Some(u32::try_from(options.pool_size.max(1)).unwrap_or(u32::MAX));
        if let Some(name) = &options.read_preference {
            client_options.selection_criteria =
                Some(SelectionCriteria::ReadPreference(read_preference(name)?));
        }
        let database = client_options
            .default_database
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE.to_owned());
        let client = Client::with_options(client_options).map_err(StoreError::backend)?;
        let db = client.database(&database);
        let primary = client.database_with_options(
            &database,
            DatabaseOptions::builder()
                .selection_criteria(SelectionCriteria::ReadPreference(ReadPreference::Primary))
                .build(),
        );
        let transactions = supports_transactions(&primary).await?;
        // Change streams need what transactions need.
        let schema_changes =
            transactions.then(|| watch_schema_changes(primary.collection(SCHEMA_COLLECTION)));
        Ok(Self {
            client,
            db,
            primary,
            transactions,
            known_indexes: Mutex::new(HashSet::new()),
            schema_changes,
            outbox_ready: tokio::sync::OnceCell::new(),
            query_timeout: options.query_timeout,
        })
    }

    /// Whether batches run in transactions on this server.
    pub fn uses_transactions(&self) -> bool {
        self.transactions
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    fn primary_collection(&self, name: &str) -> Collection<Document> {
        self.primary.collection(name)
    }

    fn schema_collection(&self) -> Collection<Document> {
        self.primary_collection(SCHEMA_COLLECTION)
    }

    fn index_key(collection: &str, name: &str) -> String {
        format!("{collection}\0{name}")
    }

    fn knows_index(&self, collection: &str, name: &str) -> bool {
        let known = self.known_indexes.lock().unwrap_or_else(|e| e.into_inner());
        known.contains(&Self::index_key(collection, name))
    }

    fn remember_index(&self, collection: &str, name: &str) {
        let mut known = self.known_indexes.lock().unwrap_or_else(|e| e.into_inner());
        known.insert(Self::index_key(collection, name));
    }

    fn forget_index(&self, collection: &str, name: &str) {
        let mut known = self.known_indexes.lock().unwrap_or_else(|e| e.into_inner());
        known.remove(&Self::index_key(collection, name));
    }

    fn forget_collection(&self, collection: &str) {
        let prefix = Self::index_key(collection, "");
        let mut known = self.known_indexes.lock().unwrap_or_else(|e| e.into_inner());
        known.retain(|key| !key.starts_with(&prefix));
    }

    async fn load_schema(&self, class_name: &str) -> StoreResult<Option<ClassSchema>> {
        self.schema_collection()
            .find_one(doc! {"_id": class_name})
            .await
            .map_err(StoreError::backend)?
            .map(|doc| schema_from_document(&doc))
            .transpose()
    }

    /// Inserts a class's `_SCHEMA` document and builds its indexes; a
    /// declared index Mongo refuses takes the class back out.
    async fn insert_class(&self, schema: &ClassSchema) -> StoreResult<()> {
        let document = schema_document(schema)?;
        match self.schema_collection().insert_one(&document).await {
            Ok(_) => {}
            Err(err) if has_code(&err, DUPLICATE_KEY) => {
                return Err(StoreError::ClassExists(schema.class_name.clone()));
            }
            Err(err) => return Err(schema_error(err)),
        }
        if let Err(err) = self.create_class_indexes(schema).await {
            let _ = self
                .schema_collection()
                .delete_one(doc! {"_id": schema.class_name.clone()})
                .await;
            return Err(err);
        }
        Ok(())
    }

    /// Adds one field to `_SCHEMA` if it is not there yet, in one atomic
    /// step (Parse's `addFieldIfNotExists`). A concurrent addition makes
    /// the upsert collide on `_id`, which is fine: the caller re-reads.
    async fn add_field(
        &self,
        class_name: &str,
        name: &str,
        field_type: &FieldType,
    ) -> StoreResult<()> {
        let Some(stored) = type_string(field_type) else {
            return Ok(());
        };
        let result = self
            .schema_collection()
            .update_one(
                doc! {"_id": class_name, name: {"$exists": false}},
                doc! {"$set": {name: stored}},
            )
            .upsert(true)
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(err) if has_code(&err, DUPLICATE_KEY) => Ok(()),
            Err(err) => Err(schema_error(err)),
        }
    }

    /// One attempt of `ensure_fields`; `None` when another process changed
    /// the class meanwhile and it must be read again.
    async fn ensure_fields_once(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<Option<ClassSchema>> {
        let current = self.load_schema(class_name).await?;
        let existed = current.is_some();
        // Every field is checked against the stored types, but only the
        // ones `_SCHEMA` lists are added: the ACL's columns and `_User`'s
        // hash never are, and would never read back.
        merge_fields(class_name, current.clone(), fields)?;
        let fields: BTreeMap<String, FieldType> = fields
            .iter()
            .filter(|(name, field_type)| {
                is_stored_field(class_name, name) && type_string(field_type).is_some()
            })
            .map(|(name, field_type)| (name.clone(), field_type.clone()))
            .collect();
        let (schema, changed) = merge_fields(class_name, current.clone(), &fields)?;
        if !changed {
            return Ok(Some(schema));
        }
        check_one_geo_point(&schema)?;
        if !existed {
            return match self.insert_class(&schema).await {
                Ok(()) => Ok(Some(schema)),
                Err(StoreError::ClassExists(_)) => Ok(None),
                Err(err) => Err(err),
            };
        }
        let current = current.unwrap_or_else(|| ClassSchema::new(class_name));
        let mut added = Vec::new();
        for (name, field_type) in &fields {
            if current.field_type(name).is_some() {
                continue;
            }
            check_field_name(name)?;
            self.add_field(class_name, name, field_type).await?;
            added.extend(geo_index(name, field_type));
        }
        self.create_auxiliary_indexes(class_name, added).await;
        let stored = self.load_schema(class_name).await?;
        let (schema, changed) = merge_fields(class_name, stored, &fields)?;
        Ok((!changed).then_some(schema))
    }

    /// One attempt of `update_class`; `None` when another process added a
    /// field meanwhile.
    async fn update_class_once(
        &self,
        class_name: &str,
        change: &SchemaChange,
    ) -> StoreResult<Option<ClassSchema>> {
        let current = self
            .load_schema(class_name)
            .await?
            .ok_or_else(|| StoreError::ClassMissing(class_name.to_owned()))?;
        let next = change.apply(&current)?;
        check_one_geo_point(&next)?;
        for name in change.add_fields.keys() {
            check_field_name(name)?;
        }
        // Indexes first: one Mongo refuses leaves everything unchanged.
        for (name, spec) in &change.add_indexes {
            self.create_declared_index(&next, name, spec).await?;
        }
        let (filter, update) = schema_change_update(&current, &next, change)?;
        if !update.is_empty() {
            let result = self
                .schema_collection()
                .update_one(filter, update)
                .await
                .map_err(schema_error)?;
            if result.matched_count == 0 {
                return Ok(None);
            }
        }
        for name in &change.delete_fields {
            if let Some(field_type) = current.field_type(name) {
                self.delete_field_values(&current, name, field_type).await?;
            }
        }
        for name in &change.delete_indexes {
            self.drop_declared_index(class_name, name).await?;
        }
        let geo = change
            .add_fields
            .iter()
            .filter_map(|(name, spec)| geo_index(name, &spec.field_type))
            .collect();
        self.create_auxiliary_indexes(class_name, geo).await;
        Ok(Some(next))
    }

    /// Removes a deleted field's values: `$unset` from every object (Parse's
    /// `deleteFields`), or the join collection of a relation.
    async fn delete_field_values(
        &self,
        class: &ClassSchema,
        name: &str,
        field_type: &FieldType,
    ) -> StoreResult<()> {
        if let FieldType::Relation { .. } = field_type {
            return self
                .drop_collection(&join_class_name(name, &class.class_name))
                .await;
        }
        let key = filter::top_key(class, name);
        self.primary_collection(&class.class_name)
            .update_many(
                doc! {key.clone(): {"$exists": true}},
                doc! {"$unset": {key: ""}},
            )
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn drop_collection(&self, name: &str) -> StoreResult<()> {
        match self.primary_collection(name).drop().await {
            Ok(()) => {}
            Err(err) if has_code(&err, &[NAMESPACE_NOT_FOUND]) => {}
            Err(err) => return Err(StoreError::backend(err)),
        }
        self.forget_collection(name);
        Ok(())
    }

    /// The filter and options of a find, shared by `find` and `explain`,
    /// after resolving subqueries and making the text indexes `$text`
    /// needs (as Parse does before either).
    async fn compile_find(
        &self,
        schemas: &SchemaView,
        class: &ClassSchema,
        query: &Query,
    ) -> StoreResult<FindCommand> {
        let resolved = self.resolve(schemas, class, &query.filter).await?;
        self.ensure_text_indexes(class, &resolved).await;
        find_command(class, query, resolved)
    }

    /// Parse's recovery from `err` when a `$nearSphere` order lacks its
    /// index: builds the `2d` index so the caller can try once more. Any
    /// other error is the query's.
    async fn recover_near_index(
        &self,
        class: &ClassSchema,
        command: &FindCommand,
        err: mongodb::error::Error,
    ) -> StoreResult<()> {
        if command.near != NearOrder::ByDistance || !lacks_geo_index(&err) {
            return Err(query_error(err));
        }
        let Some((path, _)) = command.resolved.near_sphere() else {
            return Err(query_error(err));
        };
        let key = filter::stored_path(class, path)?;
        self.create_near_index(&class.class_name, &key).await
    }

    async fn find_documents(
        &self,
        class: &ClassSchema,
        command: &FindCommand,
    ) -> Result<Vec<Document>, mongodb::error::Error> {
        let mut options = command.options.clone();
        options.max_time = self.query_timeout;
        self.collection(&class.class_name)
            .find(command.filter.clone())
            .with_options(options)
            .await?
            .try_collect()
            .await
    }

    /// Runs a read command with the configured read preference, as finds
    /// and counts use.
    async fn run_read_command(&self, command: Document) -> Result<Document, mongodb::error::Error> {
        let run = self.db.run_command(command);
        match self.db.selection_criteria() {
            Some(criteria) => run.selection_criteria(criteria.clone()).await,
            None => run.await,
        }
    }
}

/// What a find sends (its filter and options), and what its `$nearSphere`
/// index recovery needs.
struct FindCommand {
    filter: Document,
    options: FindOptions,
    near: NearOrder,
    resolved: crate::query::Filter,
}

/// The find of `query` once its filter is `resolved`.
fn find_command(
    class: &ClassSchema,
    query: &Query,
    resolved: crate::query::Filter,
) -> StoreResult<FindCommand> {
    let has_text = !text_fields(&resolved).is_empty();
    let sort = sort_document(class, &query.order, has_text)?;
    // `$nearSphere` orders by distance when nothing else orders; Mongo
    // cannot combine it with `$text`.
    let near = if sort.is_none() && !has_text {
        NearOrder::ByDistance
    } else {
        NearOrder::None
    };
    let filter = filter_document(class, &resolved, near)?;
    let mut options = FindOptions::default();
    options.sort = sort;
    options.projection = projection(class, query.keys.as_deref(), has_text);
    options.skip = (query.skip > 0).then(|| u64::try_from(query.skip).unwrap_or(u64::MAX));
    options.limit = query.limit.map(|l| i64::try_from(l).unwrap_or(i64::MAX));
    Ok(FindCommand {
        filter,
        options,
        near,
        resolved,
    })
}

/// The `explain` command of a find as the Node driver (and so Parse's
/// `explain: true`) sends it: the `find` command with the filter and the
/// options as the driver serializes them, at `allPlansExecution`.
fn explain_command(collection: &str, command: &FindCommand) -> StoreResult<Document> {
    let mut find = doc! {"find": collection, "filter": command.filter.clone()};
    find.extend(mongodb::bson::to_document(&command.options).map_err(StoreError::backend)?);
    Ok(doc! {"explain": find, "verbosity": "allPlansExecution"})
}

/// Whether `hello` says the server runs transactions: a replica set member
/// reports `setName`, a mongos `msg: "isdbgrid"`.
async fn supports_transactions(db: &Database) -> StoreResult<bool> {
    let hello = match db.run_command(doc! {"hello": 1}).await {
        Ok(reply) => reply,
        // Servers before 4.4.2 only know the old name.
        Err(_) => db
            .run_command(doc! {"isMaster": 1})
            .await
            .map_err(StoreError::backend)?,
    };
    Ok(hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid"))
}

/// Counts changes to `_SCHEMA`, whoever makes them (another oxbase, or
/// Parse Server, whose `enableSchemaHooks` watches the same stream), so
/// callers caching schemas know to reload. Reconnects with capped backoff
/// and counts a reconnection as a change, since changes made while away
/// are not replayed. Stops when the store (holding the receiver) is gone.
fn watch_schema_changes(collection: Collection<Document>) -> watch::Receiver<u64> {
    let (tx, rx) = watch::channel(0u64);
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(200);
        while !tx.is_closed() {
            match collection.watch().await {
                Ok(mut stream) => {
                    backoff = Duration::from_millis(200);
                    tx.send_modify(|n| *n += 1);
                    loop {
                        tokio::select! {
                            event = stream.next() => match event {
                                Some(Ok(_)) => tx.send_modify(|n| *n += 1),
                                Some(Err(_)) | None => break,
                            },
                            _ = tx.closed() => return,
                        }
                    }
                }
                Err(err) => tracing::debug!(%err, "cannot watch _SCHEMA"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
    });
    rx
}

/// Mongo can index one GeoPoint per class for `$nearSphere`; Parse refuses
/// a second (`addFieldIfNotExists`).
fn check_one_geo_point(schema: &ClassSchema) -> StoreResult<()> {
    let geo_points = schema
        .fields
        .values()
        .filter(|spec| spec.field_type == FieldType::GeoPoint)
        .count();
    if geo_points > 1 {
        return Err(StoreError::InvalidSchema(
            "MongoDB only supports one GeoPoint field in a class.".into(),
        ));
    }
    Ok(())
}

/// The `_SCHEMA` update of a class change, as Parse makes it piece by
/// piece (`$set` of new fields and metadata, `$unset` of deleted fields),
/// so changes other processes make to other fields survive. The filter
/// fails to match if one of the new fields appeared meanwhile.
fn schema_change_update(
    current: &ClassSchema,
    next: &ClassSchema,
    change: &SchemaChange,
) -> StoreResult<(Document, Document)> {
    let class_name = &next.class_name;
    let mut filter = doc! {"_id": class_name.clone()};
    let mut set = Document::new();
    let mut unset = Document::new();
    for (name, spec) in &change.add_fields {
        if !is_stored_field(class_name, name) {
            continue;
        }
        let Some(stored) = type_string(&spec.field_type) else {
            continue;
        };
        filter.insert(name.clone(), doc! {"$exists": false});
        set.insert(name.clone(), stored);
        if let Some(options) = field_options(spec) {
            set.insert(format!("_metadata.fields_options.{name}"), options);
        }
    }
    for name in &change.delete_fields {
        unset.insert(name.clone(), "");
        unset.insert(format!("_metadata.fields_options.{name}"), "");
    }
    if change.class_level_permissions.is_some() {
        match stored_class_level_permissions(&next.class_level_permissions)? {
            Some(clp) => {
                set.insert("_metadata.class_permissions", clp);
            }
            None => {
                unset.insert("_metadata.class_permissions", "");
            }
        }
    }
    if next.indexes != current.indexes {
        if next.indexes.is_empty() {
            unset.insert("_metadata.indexes", "");
        } else {
            set.insert("_metadata.indexes", indexes_document(&next.indexes)?);
        }
    }
    let mut update = Document::new();
    if !set.is_empty() {
        update.insert("$set", set);
    }
    if !unset.is_empty() {
        update.insert("$unset", unset);
    }
    Ok((filter, update))
}

#[async_trait]
impl Store for MongoStore {
    async fn load_schemas(&self) -> StoreResult<Vec<ClassSchema>> {
        let documents: Vec<Document> = self
            .schema_collection()
            .find(doc! {})
            .await
            .map_err(StoreError::backend)?
            .try_collect()
            .await
            .map_err(StoreError::backend)?;
        let mut out = Vec::with_capacity(documents.len());
        for document in &documents {
            match schema_from_document(document) {
                Ok(schema) => out.push(schema),
                // One unreadable document must not take every class down.
                Err(err) => tracing::warn!(%err, "skipping an unreadable _SCHEMA document"),
            }
        }
        Ok(out)
    }

    async fn ensure_fields(
        &self,
        class_name: &str,
        fields: &BTreeMap<String, FieldType>,
    ) -> StoreResult<ClassSchema> {
        check_class_name(class_name)?;
        for _ in 0..SCHEMA_ATTEMPTS {
            if let Some(schema) = self.ensure_fields_once(class_name, fields).await? {
                return Ok(schema);
            }
        }
        Err(StoreError::StaleSchema)
    }

    async fn create_class(&self, schema: &ClassSchema) -> StoreResult<ClassSchema> {
        check_one_geo_point(schema)?;
        self.insert_class(schema).await?;
        Ok(schema.clone())
    }

    async fn update_class(
        &self,
        class_name: &str,
        change: &SchemaChange,
    ) -> StoreResult<ClassSchema> {
        for _ in 0..SCHEMA_ATTEMPTS {
            if let Some(schema) = self.update_class_once(class_name, change).await? {
                return Ok(schema);
            }
        }
        Err(StoreError::StaleSchema)
    }

    async fn delete_class(&self, class_name: &str) -> StoreResult<()> {
        let schema = self
            .load_schema(class_name)
            .await?
            .ok_or_else(|| StoreError::ClassMissing(class_name.to_owned()))?;
        let any = self
            .primary_collection(class_name)
            .find_one(doc! {})
            .projection(doc! {"_id": 1})
            .await
            .map_err(StoreError::backend)?;
        if any.is_some() {
            return Err(StoreError::ClassNotEmpty(class_name.to_owned()));
        }
        self.drop_collection(class_name).await?;
        for (name, spec) in &schema.fields {
            if matches!(spec.field_type, FieldType::Relation { .. }) {
                self.drop_collection(&join_class_name(name, class_name))
                    .await?;
            }
        }
        self.schema_collection()
            .delete_one(doc! {"_id": class_name})
            .await
            .map_err(StoreError::backend)?;
        Ok(())
    }

    async fn find(&self, schemas: &SchemaView, query: &Query) -> StoreResult<Vec<Object>> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(Vec::new());
        };
        if query.limit == Some(0) {
            return Ok(Vec::new());
        }
        let command = self.compile_find(schemas, class, query).await?;
        let documents = match self.find_documents(class, &command).await {
            Ok(documents) => documents,
            Err(err) => {
                self.recover_near_index(class, &command, err).await?;
                self.find_documents(class, &command)
                    .await
                    .map_err(query_error)?
            }
        };
        let mut out = Vec::with_capacity(documents.len());
        for document in &documents {
            let mut object = object_from_document(class, document);
            if let Some(keys) = &query.keys {
                project(&mut object, keys);
            }
            out.push(object);
        }
        Ok(out)
    }

    async fn explain(&self, schemas: &SchemaView, query: &Query) -> StoreResult<serde_json::Value> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(serde_json::Value::Array(Vec::new()));
        };
        let command = self.compile_find(schemas, class, query).await?;
        let explain = explain_command(&class.class_name, &command)?;
        let reply = match self.run_read_command(explain.clone()).await {
            Ok(reply) => reply,
            Err(err) => {
                self.recover_near_index(class, &command, err).await?;
                self.run_read_command(explain).await.map_err(query_error)?
            }
        };
        Ok(mongodb::bson::Bson::Document(reply).into_relaxed_extjson())
    }

    async fn count(&self, schemas: &SchemaView, query: &Query) -> StoreResult<u64> {
        let Some(class) = schemas.get(&query.class_name) else {
            return Ok(0);
        };
        let resolved = self.resolve(schemas, class, &query.filter).await?;
        self.ensure_text_indexes(class, &resolved).await;
        let filter = filter_document(class, &resolved, NearOrder::None)?;
        let collection = self.collection(&class.class_name);
        // Parse counts an unfiltered class from the collection's metadata
        // rather than scanning it.
        let counted = if filter.is_empty() {
            collection.estimated_document_count().await
        } else {
            let mut count = collection.count_documents(filter);
            if let Some(limit) = self.query_timeout {
                count = count.max_time(limit);
            }
            count.await
        };
        counted.map_err(query_error)
    }

    async fn write(
        &self,
        schemas: &SchemaView,
        batch: WriteBatch,
    ) -> StoreResult<Vec<StoreResult<WriteOutcome>>> {
        self.write_batch(schemas, batch).await
    }

    async fn outbox_claim(
        &self,
        relay: &str,
        lease: Duration,
        limit: usize,
    ) -> StoreResult<Option<Vec<crate::OutboxEntry>>> {
        self.outbox_claim_entries(relay, lease, limit).await
    }

    async fn outbox_release(&self, relay: &str) -> StoreResult<()> {
        self.outbox_release_lease(relay).await
    }

    async fn outbox_sent(&self, seqs: &[i64]) -> StoreResult<()> {
        self.outbox_mark_sent(seqs).await
    }

    async fn outbox_prune(&self, older_than: Duration) -> StoreResult<u64> {
        self.outbox_delete_sent(older_than).await
    }

    async fn outbox_backlog(&self) -> StoreResult<u64> {
        self.outbox_pending_count().await
    }

    async fn outbox_dead_letter(&self, seq: i64, reason: &str) -> StoreResult<()> {
        self.outbox_move_aside(seq, reason).await
    }

    async fn outbox_dead_letters(&self) -> StoreResult<u64> {
        self.primary_collection(outbox::DEAD_COLLECTION)
            .count_documents(doc! {})
            .await
            .map_err(StoreError::backend)
    }

    async fn ensure_auth_data_uniqueness(&self, provider: &str) -> StoreResult<()> {
        self.create_auth_data_index(provider).await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(StoreError::backend)
    }

    fn schema_changes(&self) -> Option<watch::Receiver<u64>> {
        self.schema_changes.clone()
    }
}

/// Whether a find failed for want of a geo index (`$nearSphere`).
fn lacks_geo_index(err: &mongodb::error::Error) -> bool {
    errors::code_of(err).is_some_and(|(code, message)| {
        code == 17007 || code == 291 || message.contains("unable to find index for $geoNear")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use mongodb::bson::Bson;
    use serde_json::json;

    #[test]
    fn read_preferences_by_either_spelling() {
        assert_eq!(read_preference("primary").unwrap(), ReadPreference::Primary);
        assert!(matches!(
            read_preference("SECONDARY_PREFERRED").unwrap(),
            ReadPreference::SecondaryPreferred { .. }
        ));
        assert!(matches!(
            read_preference("nearest").unwrap(),
            ReadPreference::Nearest { .. }
        ));
        assert!(read_preference("fastest").is_err());
    }

    #[test]
    fn schema_changes_touch_only_what_changed() {
        let mut current = ClassSchema::new("Shape");
        current
            .fields
            .insert("tags".into(), FieldType::Array.into());
        let mut color = crate::schema::FieldSpec::from(FieldType::String);
        color.default_value = Some(json!("red"));
        let change = SchemaChange {
            delete_fields: vec!["tags".into()],
            add_fields: [("color".to_owned(), color)].into_iter().collect(),
            class_level_permissions: Some(json!({"find": {"*": true}})),
            add_indexes: json!({"by_color": {"color": 1}})
                .as_object()
                .unwrap()
                .clone(),
            ..SchemaChange::default()
        };
        let next = change.apply(&current).unwrap();
        let (filter, update) = schema_change_update(&current, &next, &change).unwrap();
        assert_eq!(filter, doc! {"_id": "Shape", "color": {"$exists": false}});
        assert_eq!(
            update,
            doc! {
                "$set": {
                    "color": "string",
                    "_metadata.fields_options.color": {"defaultValue": "red"},
                    "_metadata.class_permissions": {"find": {"*": true}},
                    "_metadata.indexes": {"by_color": {"color": 1}},
                },
                "$unset": {"tags": "", "_metadata.fields_options.tags": ""},
            }
        );
        // Back to the default CLP and no indexes: Parse's "absent" forms.
        let reset = SchemaChange {
            class_level_permissions: Some(crate::schema::default_class_level_permissions()),
            delete_indexes: vec!["by_color".into()],
            ..SchemaChange::default()
        };
        let last = reset.apply(&next).unwrap();
        let (_, update) = schema_change_update(&next, &last, &reset).unwrap();
        assert_eq!(
            update,
            doc! {"$unset": {"_metadata.class_permissions": "", "_metadata.indexes": ""}}
        );
        let (_, update) = schema_change_update(&next, &next, &SchemaChange::default()).unwrap();
        assert!(update.is_empty());
    }

    #[test]
    fn explain_wraps_the_find_command() {
        use crate::query::{Condition, FieldPath, Filter, QueryValue, SortKey};
        let mut class = ClassSchema::new("GameScore");
        class
            .fields
            .insert("score".into(), FieldType::Number.into());
        class
            .fields
            .insert("playerName".into(), FieldType::String.into());
        let filter = Filter::field("score", Condition::Gte(QueryValue::Number(1000.into())));
        let mut query = Query::new("GameScore").filter(filter.clone()).limit(10);
        query.skip = 5;
        query.order = vec![SortKey::Field {
            path: FieldPath::new("score"),
            descending: true,
        }];
        query.keys = Some(vec!["playerName".into()]);
        let command = find_command(&class, &query, filter).unwrap();
        let explain = explain_command("GameScore", &command).unwrap();
        let find = explain.get_document("explain").unwrap();
        assert_eq!(
            explain.get_str("verbosity"),
            Ok("allPlansExecution"),
            "Parse's `explain: true`"
        );
        // Exactly what the find sends: the compiled filter and options.
        assert_eq!(find.get_str("find"), Ok("GameScore"));
        assert_eq!(find.get_document("filter"), Ok(&command.filter));
        assert_eq!(
            find.get_document("filter"),
            Ok(&doc! {"score": {"$gte": 1000}})
        );
        assert_eq!(find.get_document("sort"), Ok(&doc! {"score": -1}));
        assert_eq!(
            find.get("projection"),
            command
                .options
                .projection
                .clone()
                .map(Bson::Document)
                .as_ref()
        );
        assert_eq!(find.get_i64("skip"), Ok(5));
        assert_eq!(find.get_i64("limit"), Ok(10));
        let keys: Vec<&str> = find.keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            ["find", "filter", "limit", "projection", "skip", "sort"]
        );

        // No options: the bare find.
        let all = find_command(&class, &Query::new("GameScore"), Filter::All).unwrap();
        assert_eq!(
            explain_command("GameScore", &all).unwrap(),
            doc! {
                "explain": {"find": "GameScore", "filter": {}},
                "verbosity": "allPlansExecution",
            }
        );
    }

    #[test]
    fn one_geo_point_per_class() {
        let mut schema = ClassSchema::new("Place");
        schema.fields.insert("a".into(), FieldType::GeoPoint.into());
        assert!(check_one_geo_point(&schema).is_ok());
        schema.fields.insert("b".into(), FieldType::GeoPoint.into());
        assert!(matches!(
            check_one_geo_point(&schema),
            Err(StoreError::InvalidSchema(_))
        ));
    }
}
