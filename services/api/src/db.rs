//! Parse's object semantics over a [`Store`]: schema inference and
//! validation, the shape of create/update/delete responses, includes and
//! key selection. The store below stays backend-neutral; this is where
//! Parse's REST rules live.

use std::collections::BTreeMap;
use std::sync::Arc;

use oxbase_kit::Limits;
use oxbase_store::include;
use oxbase_store::write::apply_update;
use oxbase_store::{
    Condition, FieldType, Filter, Object, Query, QueryValue, SchemaView, Store, StoreError,
    WriteBatch, WriteOp, WriteOutcome,
};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use crate::auth::Auth;
use crate::error::{ApiError, ApiResult, code};
use crate::query::FindOptions;
use crate::schemas::SchemaCache;
use crate::values::{WriteKind, now, parse_write, validate_class_name};

#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    pub limits: Limits,
    pub allow_client_class_creation: bool,
    pub allow_custom_object_id: bool,
}

pub struct Database {
    store: Arc<dyn Store>,
    schemas: Arc<SchemaCache>,
    settings: DatabaseSettings,
}

/// A validated write, ready to commit alone or with others.
#[derive(Debug)]
pub struct PreparedWrite {
    op: WriteOp,
    echo: Vec<String>,
}

/// What a committed write answers.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteReply {
    Created { object_id: String, body: Value },
    Updated { body: Value },
    Deleted,
}

impl WriteReply {
    pub fn body(&self) -> Value {
        match self {
            WriteReply::Created { body, .. } | WriteReply::Updated { body } => body.clone(),
            WriteReply::Deleted => json!({}),
        }
    }
}

fn new_object_id() -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(10)
        .map(char::from)
        .collect()
}

impl Database {
    pub async fn open(store: Arc<dyn Store>, settings: DatabaseSettings) -> ApiResult<Self> {
        let schemas = SchemaCache::load(Arc::clone(&store)).await?;
        Ok(Self {
            store,
            schemas,
            settings,
        })
    }

    /// The store itself, for routes with their own rules (`/schemas`,
    /// `/config`, files) that do not go through object semantics.
    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn schema_cache(&self) -> &SchemaCache {
        &self.schemas
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    pub fn schemas(&self) -> SchemaView {
        self.schemas.current()
    }

    async fn schemas_for(&self, class_name: &str, fields: &[&str]) -> ApiResult<SchemaView> {
        Ok(self.schemas.for_class(class_name, fields).await?)
    }

    /// Runs a store call; when the store says the schemas it was given are
    /// stale (another process changed a class), reloads them and runs it
    /// once more.
    async fn retry_stale<T, F, Fut>(&self, view: SchemaView, call: F) -> ApiResult<T>
    where
        F: Fn(SchemaView) -> Fut,
        Fut: std::future::Future<Output = oxbase_store::StoreResult<T>>,
    {
        match call(view).await {
            Err(StoreError::StaleSchema) => Ok(call(self.schemas.reload().await?).await?),
            other => Ok(other?),
        }
    }

    /// Makes sure the class has these fields, adding what is missing.
    async fn ensure_fields(
        &self,
        class_name: &str,
        types: &BTreeMap<String, FieldType>,
    ) -> ApiResult<()> {
        let view = self.schemas();
        let class = view.get(class_name);
        let mut missing = BTreeMap::new();
        for (field, field_type) in types {
            match class.and_then(|c| c.field_type(field)) {
                Some(existing) if existing == field_type => {}
                Some(existing) => {
                    return Err(StoreError::SchemaMismatch {
                        class_name: class_name.to_owned(),
                        field: field.clone(),
                        expected: existing.clone(),
                        actual: field_type.clone(),
                    }
                    .into());
                }
                None => {
                    missing.insert(field.clone(), field_type.clone());
                }
            }
        }
        if class.is_some() && missing.is_empty() {
            return Ok(());
        }
        // Parse allows one GeoPoint field per class.
        let new_geo_points = missing
            .values()
            .filter(|t| **t == FieldType::GeoPoint)
            .count();
        let old_geo_points = usize::from(class.and_then(|c| c.geo_point_field()).is_some());
        if new_geo_points + old_geo_points > 1 {
            return Err(ApiError::new(
                code::INCORRECT_TYPE,
                "there can only be one geopoint field in a class",
            ));
        }
        let schema = self.store.ensure_fields(class_name, &missing).await?;
        self.schemas.install(schema);
        Ok(())
    }

    fn check_class_exists(
        &self,
        auth: &Auth,
        view: &SchemaView,
        class_name: &str,
    ) -> ApiResult<()> {
        if view.get(class_name).is_none()
            && !auth.master
            && !self.settings.allow_client_class_creation
        {
            return Err(ApiError::new(
                code::OPERATION_FORBIDDEN,
                format!("This user is not allowed to access non-existent class: {class_name}"),
            ));
        }
        Ok(())
    }

    /// `GET /classes/{class}`: the matching objects, and their count when
    /// asked for.
    pub async fn find(
        &self,
        auth: &Auth,
        class_name: &str,
        options: &FindOptions,
    ) -> ApiResult<(Vec<Object>, Option<u64>)> {
        validate_class_name(class_name)?;
        let view = self
            .schemas_for(class_name, &options.filter.fields())
            .await?;
        self.check_class_exists(auth, &view, class_name)?;
        let query = store_query(class_name, options);
        let objects = if options.limit == 0 {
            Vec::new()
        } else {
            self.retry_stale(view.clone(), |v| {
                let (store, query) = (&self.store, &query);
                async move { store.find(&v, query).await }
            })
            .await?
        };
        let count = if options.count {
            Some(
                self.retry_stale(view.clone(), |v| {
                    let (store, query) = (&self.store, &query);
                    async move { store.count(&v, query).await }
                })
                .await?,
            )
        } else {
            None
        };
        let objects = self.finish(&view, class_name, objects, options).await?;
        Ok((objects, count))
    }

    /// `GET /classes/{class}/{id}`.
    pub async fn get(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
        options: &FindOptions,
    ) -> ApiResult<Object> {
        validate_class_name(class_name)?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        let mut options = options.clone();
        options.filter = Filter::field(
            "objectId",
            Condition::Eq(QueryValue::String(object_id.to_owned())),
        );
        let query = store_query(class_name, &options);
        let objects = self
            .retry_stale(view.clone(), |v| {
                let (store, query) = (&self.store, &query);
                async move { store.find(&v, query).await }
            })
            .await?;
        let objects = self.finish(&view, class_name, objects, &options).await?;
        objects.into_iter().next().ok_or_else(ApiError::not_found)
    }

    /// Includes, nested key selection and excluded keys.
    async fn finish(
        &self,
        view: &SchemaView,
        class_name: &str,
        mut objects: Vec<Object>,
        options: &FindOptions,
    ) -> ApiResult<Vec<Object>> {
        let mut paths = options.include.clone();
        if options.include_all
            && let Some(class) = view.get(class_name)
        {
            for (name, spec) in &class.fields {
                if matches!(
                    spec.field_type,
                    FieldType::Pointer { .. } | FieldType::Array
                ) {
                    let path = vec![name.clone()];
                    if !paths.contains(&path) {
                        paths.insert(0, path);
                    }
                }
            }
        }
        if !paths.is_empty() && !objects.is_empty() {
            include::resolve(self.store.as_ref(), view, &mut objects, &paths).await?;
        }
        if let Some(keys) = &options.keys {
            include::select_nested(&mut objects, keys);
        }
        if !options.exclude_keys.is_empty() {
            include::exclude(&mut objects, &options.exclude_keys);
        }
        Ok(objects)
    }

    /// Validates a create and works out the object to store.
    pub async fn prepare_create(
        &self,
        auth: &Auth,
        class_name: &str,
        body: &Map<String, Value>,
    ) -> ApiResult<PreparedWrite> {
        validate_class_name(class_name)?;
        let parsed = parse_write(
            body,
            WriteKind::Create {
                allow_custom_id: self.settings.allow_custom_object_id,
            },
        )?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        self.ensure_fields(class_name, &parsed.types).await?;
        let mut object = Object::new();
        apply_update(&mut object, &parsed.changes)?;
        let object_id = parsed.object_id.unwrap_or_else(new_object_id);
        let timestamp = now();
        object.insert("objectId".into(), Value::String(object_id));
        object.insert("createdAt".into(), Value::String(timestamp.clone()));
        object.insert("updatedAt".into(), Value::String(timestamp));
        Ok(PreparedWrite {
            op: WriteOp::Create {
                class_name: class_name.to_owned(),
                object,
                relations: Vec::new(),
            },
            echo: parsed.echo,
        })
    }

    pub async fn prepare_update(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
        body: &Map<String, Value>,
    ) -> ApiResult<PreparedWrite> {
        validate_class_name(class_name)?;
        let parsed = parse_write(body, WriteKind::Update { object_id })?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        if view.get(class_name).is_none() {
            return Err(ApiError::not_found());
        }
        self.ensure_fields(class_name, &parsed.types).await?;
        Ok(PreparedWrite {
            op: WriteOp::Update {
                class_name: class_name.to_owned(),
                object_id: object_id.to_owned(),
                updated_at: now(),
                changes: parsed.changes,
                relations: Vec::new(),
                precondition: Filter::All,
            },
            echo: parsed.echo,
        })
    }

    pub async fn prepare_delete(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
    ) -> ApiResult<PreparedWrite> {
        validate_class_name(class_name)?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        if view.get(class_name).is_none() {
            return Err(ApiError::not_found());
        }
        Ok(PreparedWrite {
            op: WriteOp::Delete {
                class_name: class_name.to_owned(),
                object_id: object_id.to_owned(),
                precondition: Filter::All,
            },
            echo: Vec::new(),
        })
    }

    /// Commits prepared writes in one store call. Non-atomic: one result
    /// per write. Atomic: all or nothing, and an error names the failure.
    pub async fn commit(
        &self,
        writes: Vec<PreparedWrite>,
        atomic: bool,
    ) -> ApiResult<Vec<ApiResult<WriteReply>>> {
        let echoes: Vec<Vec<String>> = writes.iter().map(|w| w.echo.clone()).collect();
        let batch = WriteBatch {
            ops: writes.into_iter().map(|w| w.op).collect(),
            atomic,
        };
        let outcomes = self
            .retry_stale(self.schemas(), |v| {
                let (store, batch) = (&self.store, batch.clone());
                async move { store.write(&v, batch).await }
            })
            .await?;
        Ok(outcomes
            .into_iter()
            .zip(echoes)
            .map(|(outcome, echo)| Ok(reply(outcome?, &echo)))
            .collect())
    }

    /// Commits one prepared write.
    pub async fn commit_one(&self, write: PreparedWrite) -> ApiResult<WriteReply> {
        self.commit(vec![write], false)
            .await?
            .pop()
            .unwrap_or_else(|| Err(ApiError::internal("store returned no result")))
    }
}

fn store_query(class_name: &str, options: &FindOptions) -> Query {
    // The store projects top-level keys; dotted keys select the field
    // they start with, and the rest is applied to included objects.
    let keys = options.keys.as_ref().map(|keys| {
        let mut roots: Vec<String> = keys
            .iter()
            .map(|k| k.split('.').next().unwrap_or(k).to_owned())
            .collect();
        roots.sort();
        roots.dedup();
        roots
    });
    Query {
        class_name: class_name.to_owned(),
        filter: options.filter.clone(),
        order: options.order.clone(),
        skip: options.skip,
        limit: Some(options.limit),
        keys,
    }
}

/// Parse's responses: a create answers its id and creation time, an update
/// its update time; both add the results of atomic operators.
fn reply(outcome: WriteOutcome, echo: &[String]) -> WriteReply {
    let echoed = |object: &Object, body: &mut Map<String, Value>| {
        for key in echo {
            if let Some(value) = object.get(key) {
                body.insert(key.clone(), value.clone());
            }
        }
    };
    match outcome {
        WriteOutcome::Created(object) => {
            let mut body = Map::new();
            body.insert("objectId".into(), object["objectId"].clone());
            body.insert("createdAt".into(), object["createdAt"].clone());
            echoed(&object, &mut body);
            WriteReply::Created {
                object_id: object["objectId"].as_str().unwrap_or_default().to_owned(),
                body: Value::Object(body),
            }
        }
        WriteOutcome::Updated { after, .. } => {
            let mut body = Map::new();
            body.insert("updatedAt".into(), after["updatedAt"].clone());
            echoed(&after, &mut body);
            WriteReply::Updated {
                body: Value::Object(body),
            }
        }
        WriteOutcome::Deleted(_) => WriteReply::Deleted,
    }
}
