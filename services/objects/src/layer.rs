//! Parse's object semantics over a [`Store`]: schema inference and
//! validation, the shape of create/update/delete responses, includes and
//! key selection. The store below stays backend-neutral; this is where
//! Parse's REST rules live.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::config::{AccountLockout, EmailConfig, Limits, PasswordPolicy};
use oxbase_store::include;
use oxbase_store::write::apply_update;
use oxbase_store::{
    Condition, EventContext, FieldPath, FieldType, Filter, Object, Query, QueryValue, SchemaView,
    Store, StoreError, UpdateOp, WriteBatch, WriteOp, WriteOutcome,
};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};

use crate::access::{self, Operation};
use crate::auth::Auth;
use crate::auth_data::{AuthConfig, Providers};
use crate::error::{ParseError, ParseResult, code};
use crate::maintenance;
use crate::query::FindOptions;
use crate::schemas::SchemaCache;
use crate::sessions::SessionCache;
use crate::values::{WriteKind, now, parse_write, validate_class_name};

#[derive(Debug, Clone)]
pub struct ObjectSettings {
    pub limits: Limits,
    /// Where events go (CloudEvents source, subject prefix); `None` turns
    /// the outbox off.
    pub events: Option<EventSettings>,
    /// The relay to wake once a write's events are committed.
    pub relay: Option<Arc<crate::relay::RelaySignals>>,
    pub allow_client_class_creation: bool,
    pub allow_custom_object_id: bool,
    /// Parse's `enforcePrivateUsers`: new users without an ACL are
    /// readable by themselves only.
    pub enforce_private_users: bool,
    /// How long a new session lasts.
    pub session_length_secs: u64,
    /// Parse's `revokeSessionOnPasswordReset`: a password change ends the
    /// user's sessions.
    pub revoke_session_on_password_reset: bool,
    /// `[auth]`: signing in with `authData`.
    pub auth: AuthConfig,
    pub account_lockout: AccountLockout,
    pub password_policy: PasswordPolicy,
    /// `[email]`: email verification and the rules of account mails.
    pub email: EmailConfig,
}

#[derive(Debug, Clone)]
pub struct EventSettings {
    pub source: String,
    pub prefix: String,
    pub policy: Arc<oxbase_store::EventPolicy>,
}

pub struct ObjectLayer {
    store: Arc<dyn Store>,
    schemas: Arc<SchemaCache>,
    pub(crate) sessions: SessionCache,
    /// The `authData` providers, with their signing keys.
    pub(crate) providers: Providers,
    settings: ObjectSettings,
}

/// A validated write, ready to commit alone or with others.
#[derive(Debug)]
pub struct PreparedWrite {
    op: WriteOp,
    echo: Vec<String>,
    /// Fields the reply carries besides the object's (`authDataResponse`).
    respond: Map<String, Value>,
    /// Who makes the write, for its event; `None` when events are off.
    events: Option<EventContext>,
    /// Installations this save duplicates, deleted once it is committed.
    duplicates: Vec<String>,
    /// Whether this update sets a user's password, which ends the user's
    /// sessions once it is committed.
    sets_password: bool,
    /// Whether this write gave a user a new email verification token, whose
    /// mail goes once it is committed.
    verifies_email: bool,
}

impl PreparedWrite {
    /// Also answers these fields of the saved object, as Parse does for
    /// fields a beforeSave hook changed.
    pub fn echo_also(&mut self, keys: impl IntoIterator<Item = String>) {
        for key in keys {
            if !self.echo.contains(&key) {
                self.echo.push(key);
            }
        }
    }

    pub fn class_name(&self) -> &str {
        self.op.class_name()
    }

    /// Parse's cloud context, for the write's event and so its after-hook.
    pub fn set_cloud_context(&mut self, context: Map<String, Value>) {
        if let Some(events) = &mut self.events {
            events.cloud_context = context;
        }
    }

    pub fn remove_after(&mut self, duplicates: Vec<String>) {
        self.duplicates = duplicates;
    }

    pub fn duplicates(&self) -> &[String] {
        &self.duplicates
    }

    /// The object a create makes or an update or delete targets.
    pub fn object_id(&self) -> Option<&str> {
        match &self.op {
            WriteOp::Create { object, .. } => object.get("objectId").and_then(Value::as_str),
            WriteOp::Update { object_id, .. } | WriteOp::Delete { object_id, .. } => {
                Some(object_id)
            }
        }
    }

    pub(crate) fn is_delete(&self) -> bool {
        matches!(self.op, WriteOp::Delete { .. })
    }

    /// Marks a delete as part of purging its class: its event runs no
    /// afterDelete trigger.
    pub fn mark_purge(&mut self) {
        if let Some(events) = &mut self.events {
            events.purge = true;
        }
    }

    /// The object a create makes.
    pub(crate) fn created_object(&self) -> Option<&Object> {
        match &self.op {
            WriteOp::Create { object, .. } => Some(object),
            _ => None,
        }
    }

    /// Sets a field of the object a create makes, after its class's rules
    /// ran (which would refuse it from a client).
    pub(crate) fn set_on_create(&mut self, field: &str, value: Value) {
        if let WriteOp::Create { object, .. } = &mut self.op {
            object.insert(field.to_owned(), value);
        }
    }

    /// Narrows an update's or delete's precondition: it applies only while
    /// the object also matches `filter`, and is 101 otherwise.
    pub fn require(&mut self, filter: Filter) {
        if let WriteOp::Update { precondition, .. } | WriteOp::Delete { precondition, .. } =
            &mut self.op
        {
            let current = std::mem::replace(precondition, Filter::All);
            *precondition = current.and(filter);
        }
    }

    /// Adds changes the server makes itself to an update, past the class's
    /// rules (which ran on the client's part).
    pub(crate) fn add_changes(&mut self, extra: Vec<(FieldPath, UpdateOp)>) {
        if let WriteOp::Update { changes, .. } = &mut self.op {
            changes.extend(extra);
        }
    }

    /// The user this write gave a new email verification token.
    pub(crate) fn verifies_email_of(&self) -> Option<&str> {
        self.verifies_email.then(|| self.object_id()).flatten()
    }

    /// The user whose password this write changes.
    pub(crate) fn password_changed_for(&self) -> Option<&str> {
        match &self.op {
            WriteOp::Update { object_id, .. } if self.sets_password => Some(object_id),
            _ => None,
        }
    }
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
    random_string(10)
}

/// `len` letters and digits from a cryptographic generator, as Parse's
/// `cryptoUtils.randomString` makes ids, tokens and usernames.
pub(crate) fn random_string(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

impl ObjectLayer {
    pub async fn open(store: Arc<dyn Store>, settings: ObjectSettings) -> ParseResult<Self> {
        let schemas = SchemaCache::load(Arc::clone(&store)).await?;
        let layer = Self {
            store,
            schemas,
            sessions: SessionCache::default(),
            providers: Providers::new(settings.auth.clone()),
            settings,
        };
        if layer.schemas().get("_User").is_some() {
            layer.ensure_auth_data_indexes().await;
        }
        Ok(layer)
    }

    /// The store itself, for routes with their own rules (`/schemas`,
    /// `/config`, files) that do not go through object semantics.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub(crate) fn schema_cache(&self) -> &SchemaCache {
        &self.schemas
    }

    pub fn relay(&self) -> Option<&Arc<crate::relay::RelaySignals>> {
        self.settings.relay.as_ref()
    }

    pub fn settings(&self) -> &ObjectSettings {
        &self.settings
    }

    pub fn limits(&self) -> &Limits {
        &self.settings.limits
    }

    pub fn schemas(&self) -> SchemaView {
        self.schemas.current()
    }

    pub(crate) async fn schemas_for(
        &self,
        class_name: &str,
        fields: &[&str],
    ) -> ParseResult<SchemaView> {
        Ok(self.schemas.for_class(class_name, fields).await?)
    }

    /// Runs a store call; when the store says the schemas it was given are
    /// stale (another process changed a class), reloads them into `view`
    /// and runs it once more.
    /// One store write, retried once if the schema changed under it.
    async fn write_batch(
        &self,
        batch: WriteBatch,
    ) -> ParseResult<Vec<oxbase_store::StoreResult<WriteOutcome>>> {
        self.retry_stale(&mut self.schemas(), |v| {
            let (store, batch) = (&self.store, batch.clone());
            async move { store.write(&v, batch).await }
        })
        .await
    }

    async fn retry_stale<T, F, Fut>(&self, view: &mut SchemaView, call: F) -> ParseResult<T>
    where
        F: Fn(SchemaView) -> Fut,
        Fut: std::future::Future<Output = oxbase_store::StoreResult<T>>,
    {
        match call(view.clone()).await {
            Err(StoreError::StaleSchema) => {
                *view = self.schemas.reload().await?;
                Ok(call(view.clone()).await?)
            }
            other => Ok(other?),
        }
    }

    /// A query straight to the store, under the current schemas, for
    /// lookups the object layer makes itself (users, sessions, roles).
    pub async fn find_raw(&self, query: &Query) -> ParseResult<Vec<Object>> {
        let mut view = self.schemas_for(&query.class_name, &[]).await?;
        if view.get(&query.class_name).is_none() {
            return Ok(Vec::new());
        }
        self.retry_stale(
            &mut view,
            |v| async move { self.store.find(&v, query).await },
        )
        .await
    }

    /// Makes sure the class has these fields, adding what is missing when
    /// the class-level permissions allow adding fields.
    pub async fn ensure_fields(
        &self,
        auth: &Auth,
        class_name: &str,
        types: &BTreeMap<String, FieldType>,
    ) -> ParseResult<()> {
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
        if class.is_some() {
            access::check_class(auth, class.map(Arc::as_ref), Operation::AddField)?;
        }
        // Parse allows one GeoPoint field per class.
        let new_geo_points = missing
            .values()
            .filter(|t| **t == FieldType::GeoPoint)
            .count();
        let old_geo_points = usize::from(class.and_then(|c| c.geo_point_field()).is_some());
        if new_geo_points + old_geo_points > 1 {
            return Err(ParseError::new(
                code::INCORRECT_TYPE,
                "there can only be one geopoint field in a class",
            ));
        }
        let schema = self.store.ensure_fields(class_name, &missing).await?;
        self.schemas.install(schema);
        if class_name == "_User" && class.is_none() {
            self.ensure_auth_data_indexes().await;
        }
        Ok(())
    }

    fn check_class_exists(
        &self,
        auth: &Auth,
        view: &SchemaView,
        class_name: &str,
    ) -> ParseResult<()> {
        if view.get(class_name).is_none()
            && !matches!(class_name, "_User" | "_Role" | "_Session" | "_Installation")
            && !auth.master
            && !self.settings.allow_client_class_creation
        {
            return Err(ParseError::new(
                code::OPERATION_FORBIDDEN,
                format!("This user is not allowed to access non-existent class: {class_name}"),
            ));
        }
        Ok(())
    }

    /// `GET /classes/{class}`: the matching objects, and their count when
    /// asked for, as far as the request may see them.
    pub async fn find(
        &self,
        auth: &Auth,
        class_name: &str,
        options: &FindOptions,
    ) -> ParseResult<(Vec<Object>, Option<u64>)> {
        validate_class_access(auth, class_name)?;
        installations_need_master(auth, class_name, "find")?;
        let mut view = self
            .schemas_for(class_name, &options.filter.fields())
            .await?;
        // The owning class of a `$relatedTo` may be new to this process.
        for (owner, key) in options.filter.relations_read() {
            view = self.schemas_for(owner, &[key]).await?;
        }
        self.check_class_exists(auth, &view, class_name)?;
        let class = view.get(class_name).map(Arc::as_ref);
        let mut restrict = Vec::new();
        if options.limit != 0 || !options.count {
            restrict.push(access::check_class(auth, class, Operation::Find)?);
        }
        if options.count {
            restrict.push(access::check_class(auth, class, Operation::Count)?);
        }
        let protected = access::protected_fields(auth, class);
        let order_fields: Vec<&str> = options
            .order
            .iter()
            .filter_map(|key| match key {
                oxbase_store::SortKey::Field { path, .. } => Some(path.field.as_str()),
                oxbase_store::SortKey::TextScore => None,
            })
            .collect();
        access::check_query_fields(
            class_name,
            &protected,
            &options.filter.fields(),
            &order_fields,
        )?;
        let mut query = store_query(class_name, options);
        query.filter = self.restricted(auth, &view, class_name, query.filter, restrict)?;
        let objects = if options.limit == 0 {
            Vec::new()
        } else {
            self.retry_stale(&mut view, |v| {
                let (store, query) = (&self.store, &query);
                async move { store.find(&v, query).await }
            })
            .await?
        };
        let count = if options.count {
            Some(
                self.retry_stale(&mut view, |v| {
                    let (store, query) = (&self.store, &query);
                    async move { store.count(&v, query).await }
                })
                .await?,
            )
        } else {
            None
        };
        let objects = self
            .finish(auth, &view, class_name, objects, options, &protected)
            .await?;
        Ok((objects, count))
    }

    /// The store's plan for a find (`explain`), for the master key, which
    /// sees every object, so no permission narrows the query.
    pub async fn explain(&self, class_name: &str, options: &FindOptions) -> ParseResult<Value> {
        let mut view = self
            .schemas_for(class_name, &options.filter.fields())
            .await?;
        let query = store_query(class_name, options);
        self.retry_stale(&mut view, |v| {
            let (store, query) = (&self.store, &query);
            async move { store.explain(&v, query).await }
        })
        .await
    }

    /// The class a find with `redirectClassNameForKey` reads: the target
    /// of the relation `key`, or the class itself when `key` is not one.
    pub async fn relation_target(&self, class_name: &str, key: &str) -> ParseResult<String> {
        let view = self.schemas_for(class_name, &[key]).await?;
        Ok(
            match view.get(class_name).and_then(|class| class.field_type(key)) {
                Some(FieldType::Relation { target_class }) => target_class.clone(),
                _ => class_name.to_owned(),
            },
        )
    }

    /// `GET /classes/{class}/{id}`.
    pub async fn get(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
        options: &FindOptions,
    ) -> ParseResult<Object> {
        validate_class_access(auth, class_name)?;
        let mut view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        let class = view.get(class_name).map(Arc::as_ref);
        let clp = access::check_class(auth, class, Operation::Get)?;
        let protected = access::protected_fields(auth, class);
        let mut options = options.clone();
        options.filter = Filter::field(
            "objectId",
            Condition::Eq(QueryValue::String(object_id.to_owned())),
        );
        let mut query = store_query(class_name, &options);
        query.filter = self.restricted(auth, &view, class_name, query.filter, vec![clp])?;
        let objects = self
            .retry_stale(&mut view, |v| {
                let (store, query) = (&self.store, &query);
                async move { store.find(&v, query).await }
            })
            .await?;
        let objects = self
            .finish(auth, &view, class_name, objects, &options, &protected)
            .await?;
        objects.into_iter().next().ok_or_else(ParseError::not_found)
    }

    /// The stored object a before-hook is shown for an update or delete:
    /// all of it, but only if `auth` may make that write, so a hook never
    /// runs for a write that would be refused.
    pub async fn object_for_hook(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
        operation: Operation,
    ) -> ParseResult<Object> {
        validate_class_access(auth, class_name)?;
        let mut view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        let class = view.get(class_name).map(Arc::as_ref);
        let clp = access::check_class(auth, class, operation)?;
        let options = FindOptions {
            filter: Filter::field(
                "objectId",
                Condition::Eq(QueryValue::String(object_id.to_owned())),
            )
            .and(write_precondition(auth, clp)),
            order: Vec::new(),
            skip: 0,
            limit: 1,
            count: false,
            keys: None,
            exclude_keys: Vec::new(),
            include: Vec::new(),
            include_all: false,
        };
        let query = store_query(class_name, &options);
        let objects = self
            .retry_stale(&mut view, |v| {
                let (store, query) = (&self.store, &query);
                async move { store.find(&v, query).await }
            })
            .await?;
        let master = Auth::master();
        let objects = self
            .finish(&master, &view, class_name, objects, &options, &[])
            .await?;
        objects.into_iter().next().ok_or_else(ParseError::not_found)
    }

    /// A client's filter narrowed to what it may read: its subqueries
    /// under their classes' permissions, then the class-level `restrict`
    /// filters and the ACL.
    fn restricted(
        &self,
        auth: &Auth,
        view: &SchemaView,
        class_name: &str,
        mut filter: Filter,
        restrict: Vec<Filter>,
    ) -> ParseResult<Filter> {
        if auth.master {
            return Ok(filter);
        }
        restrict_subqueries(auth, view, &mut filter)?;
        for extra in restrict {
            filter = filter.and(extra);
        }
        // Sessions belong to their user, whatever their ACL says.
        if class_name == "_Session" {
            let me = auth.user_id().unwrap_or_default();
            filter = filter.and(Filter::field(
                "user",
                Condition::Eq(QueryValue::Pointer {
                    class_name: "_User".into(),
                    object_id: me.to_owned(),
                }),
            ));
        }
        Ok(filter.and(access::acl_filter(auth, false)))
    }

    /// Includes (as far as the request may read them), nested key
    /// selection, excluded keys, relation fields, and redaction of
    /// `protected` and internal fields.
    async fn finish(
        &self,
        auth: &Auth,
        view: &SchemaView,
        class_name: &str,
        mut objects: Vec<Object>,
        options: &FindOptions,
        protected: &[String],
    ) -> ParseResult<Vec<Object>> {
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
            let readable = |target: &str| -> Filter {
                if auth.master {
                    return Filter::All;
                }
                match access::check_class(auth, view.get(target).map(Arc::as_ref), Operation::Get) {
                    Ok(clp) => clp.and(access::acl_filter(auth, false)),
                    Err(_) => Filter::Nothing,
                }
            };
            include::resolve(self.store.as_ref(), view, &mut objects, &paths, &readable).await?;
        }
        let relations: Vec<(String, String)> = view
            .get(class_name)
            .map(|class| {
                class
                    .fields
                    .iter()
                    .filter_map(|(name, spec)| match &spec.field_type {
                        FieldType::Relation { target_class } => {
                            Some((name.clone(), target_class.clone()))
                        }
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        for object in &mut objects {
            access::redact(auth, class_name, object, protected);
            if class_name == "_User"
                && let Some(auth_data) = object.get_mut("authData")
            {
                self.providers.after_find(auth_data);
            }
            for value in object.values_mut() {
                redact_included(auth, view, &self.providers, value);
            }
            for (name, target) in &relations {
                if options.keys.as_ref().is_none_or(|keys| keys.contains(name)) {
                    object.insert(
                        name.clone(),
                        json!({"__type": "Relation", "className": target}),
                    );
                }
            }
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
    ) -> ParseResult<PreparedWrite> {
        validate_class_access(auth, class_name)?;
        auth.require_writable("create")?;
        let maintained = maintenance::split(auth, class_name, body, true)?;
        let body = maintained.body.as_ref().unwrap_or(body);
        let mut parsed = parse_write(
            body,
            WriteKind::Create {
                allow_custom_id: self.settings.allow_custom_object_id,
            },
        )?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        access::check_class(
            auth,
            view.get(class_name).map(Arc::as_ref),
            Operation::Create,
        )?;
        let object_id = parsed.object_id.take().unwrap_or_else(new_object_id);
        match class_name {
            "_User" => {
                self.user_create_rules(auth, &object_id, &mut parsed)
                    .await?
            }
            "_Role" => crate::users::role_create_rules(&parsed)?,
            "_Session" if !auth.master => {
                return Err(ParseError::new(
                    code::SESSION_MISSING,
                    "Sessions are created by signing up or logging in.",
                ));
            }
            _ => {}
        }
        self.ensure_fields(auth, class_name, &parsed.types).await?;
        let verifies_email = verifies_email(class_name, &parsed);
        parsed.changes.extend(maintained.changes);
        let mut object = Object::new();
        apply_update(&mut object, &parsed.changes)?;
        let timestamp = now();
        object.insert("objectId".into(), Value::String(object_id));
        object.insert(
            "createdAt".into(),
            Value::String(maintained.created_at.unwrap_or_else(|| timestamp.clone())),
        );
        object.insert(
            "updatedAt".into(),
            Value::String(maintained.updated_at.unwrap_or(timestamp)),
        );
        Ok(PreparedWrite {
            op: WriteOp::Create {
                class_name: class_name.to_owned(),
                object,
                relations: parsed.relations,
            },
            echo: parsed.echo,
            respond: parsed.respond,
            events: self.event_context(auth),
            duplicates: Vec::new(),
            sets_password: false,
            verifies_email,
        })
    }

    pub async fn prepare_update(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
        body: &Map<String, Value>,
    ) -> ParseResult<PreparedWrite> {
        validate_class_access(auth, class_name)?;
        auth.require_writable("update")?;
        let maintained = maintenance::split(auth, class_name, body, false)?;
        let mut parsed = parse_write(
            maintained.body.as_ref().unwrap_or(body),
            WriteKind::Update { object_id },
        )?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        if view.get(class_name).is_none() {
            return Err(ParseError::not_found());
        }
        let clp = access::check_class(
            auth,
            view.get(class_name).map(Arc::as_ref),
            Operation::Update,
        )?;
        match class_name {
            "_User" => self.user_update_rules(auth, object_id, &mut parsed).await?,
            "_Role" => crate::users::role_update_rules(&parsed)?,
            "_Session" => crate::users::session_update_rules(auth, &parsed)?,
            _ => {}
        }
        self.ensure_fields(auth, class_name, &parsed.types).await?;
        let sets_password = class_name == "_User"
            && parsed
                .changes
                .iter()
                .any(|(path, _)| path.field == "_hashed_password");
        let verifies_email = verifies_email(class_name, &parsed);
        // A hash set as it is changes no password: no session ends.
        parsed.changes.extend(maintained.changes);
        Ok(PreparedWrite {
            op: WriteOp::Update {
                class_name: class_name.to_owned(),
                object_id: object_id.to_owned(),
                updated_at: now(),
                changes: parsed.changes,
                relations: parsed.relations,
                precondition: write_precondition(auth, clp),
            },
            echo: parsed.echo,
            respond: parsed.respond,
            events: self.event_context(auth),
            duplicates: Vec::new(),
            sets_password,
            verifies_email,
        })
    }

    /// An update the server makes itself, past every client rule: the
    /// changes are already checked.
    pub(crate) fn prepare_system_update(
        &self,
        class_name: &str,
        object_id: &str,
        changes: Vec<(FieldPath, UpdateOp)>,
    ) -> PreparedWrite {
        PreparedWrite {
            op: WriteOp::Update {
                class_name: class_name.to_owned(),
                object_id: object_id.to_owned(),
                updated_at: now(),
                changes,
                relations: Vec::new(),
                precondition: Filter::All,
            },
            echo: Vec::new(),
            respond: Map::new(),
            events: self.event_context(&Auth::master()),
            duplicates: Vec::new(),
            sets_password: false,
            verifies_email: false,
        }
    }

    pub async fn prepare_delete(
        &self,
        auth: &Auth,
        class_name: &str,
        object_id: &str,
    ) -> ParseResult<PreparedWrite> {
        validate_class_access(auth, class_name)?;
        installations_need_master(auth, class_name, "delete")?;
        auth.require_writable("delete")?;
        let view = self.schemas_for(class_name, &[]).await?;
        self.check_class_exists(auth, &view, class_name)?;
        if view.get(class_name).is_none() {
            return Err(ParseError::not_found());
        }
        let clp = access::check_class(
            auth,
            view.get(class_name).map(Arc::as_ref),
            Operation::Delete,
        )?;
        if class_name == "_User" && !auth.master && auth.user.is_none() {
            return Err(ParseError::new(
                code::SESSION_MISSING,
                "Insufficient auth to delete user",
            ));
        }
        Ok(PreparedWrite {
            op: WriteOp::Delete {
                class_name: class_name.to_owned(),
                object_id: object_id.to_owned(),
                precondition: write_precondition(auth, clp),
            },
            echo: Vec::new(),
            respond: Map::new(),
            events: self.event_context(auth),
            duplicates: Vec::new(),
            sets_password: false,
            verifies_email: false,
        })
    }

    fn event_context(&self, auth: &Auth) -> Option<EventContext> {
        let settings = self.settings.events.as_ref()?;
        Some(EventContext {
            source: settings.source.clone(),
            prefix: settings.prefix.clone(),
            user_id: auth.user_id().map(str::to_owned),
            installation_id: auth.installation_id.clone(),
            master: auth.master,
            request_id: auth.request_id.clone(),
            purge: false,
            cloud_context: Map::new(),
            traceparent: oxbase_kit::trace_context::current_traceparent(),
            policy: settings.policy.clone(),
        })
    }

    /// Commits prepared writes in one store call. Non-atomic: one result
    /// per write. Atomic: all or nothing, and an error names the failure.
    pub async fn commit(
        &self,
        writes: Vec<PreparedWrite>,
        atomic: bool,
    ) -> ParseResult<Vec<ParseResult<WriteReply>>> {
        let echoes: Vec<(Vec<String>, Map<String, Value>)> = writes
            .iter()
            .map(|w| (w.echo.clone(), w.respond.clone()))
            .collect();
        // The writes of one call share one request, so one context.
        let events = writes.first().and_then(|w| w.events.clone());
        let has_events = events.is_some();
        let batch = WriteBatch {
            ops: writes.into_iter().map(|w| w.op).collect(),
            atomic,
            events,
        };
        let outcomes = self.write_batch(batch).await?;
        if has_events && let Some(relay) = &self.settings.relay {
            relay.wake.notify_one();
        }
        Ok(outcomes
            .into_iter()
            .zip(echoes)
            .map(|(outcome, (echo, respond))| Ok(reply(outcome?, &echo, respond)))
            .collect())
    }

    /// Writes Parse's internal `_User` fields (failed log-ins, password
    /// timestamps) straight to the store, as Parse Server does: no hooks,
    /// no event, and `updatedAt` kept at `updated_at`, the user's as read,
    /// so this bookkeeping stays out of the app's sight. The user after the
    /// write, or `None` when it is gone or no longer matches `precondition`.
    pub(crate) async fn write_user_internals(
        &self,
        user_id: &str,
        updated_at: &str,
        changes: Vec<(FieldPath, UpdateOp)>,
        precondition: Filter,
    ) -> ParseResult<Option<Object>> {
        let batch = WriteBatch::one(WriteOp::Update {
            class_name: "_User".into(),
            object_id: user_id.to_owned(),
            updated_at: updated_at.to_owned(),
            changes,
            relations: Vec::new(),
            precondition,
        });
        let outcomes = self.write_batch(batch).await?;
        match outcomes.into_iter().next() {
            Some(Ok(WriteOutcome::Updated { after, .. })) => Ok(Some(after)),
            Some(Err(StoreError::NotFound)) => Ok(None),
            Some(Err(err)) => Err(err.into()),
            Some(Ok(_)) | None => Err(ParseError::internal("an update answered no update")),
        }
    }

    /// Commits one prepared write.
    pub async fn commit_one(&self, write: PreparedWrite) -> ParseResult<WriteReply> {
        self.commit(vec![write], false)
            .await?
            .pop()
            .unwrap_or_else(|| Err(ParseError::internal("store returned no result")))
    }
}

/// Whether a user write sets a new email verification token (only the
/// server's rules set it).
fn verifies_email(class_name: &str, parsed: &crate::values::ParsedWrite) -> bool {
    class_name == "_User"
        && parsed
            .changes
            .iter()
            .any(|(path, op)| path.field == "_email_verify_token" && matches!(op, UpdateOp::Set(_)))
}

/// Classes `/classes` serves: any valid name, and the system classes
/// whose rules oxbase implements.
pub(crate) fn validate_class_access(auth: &Auth, class_name: &str) -> ParseResult<()> {
    match class_name {
        "_User" | "_Role" | "_Session" | "_Installation" => Ok(()),
        // Written by the jobs and cron services; Parse Server lets only
        // the master key near them.
        "_JobStatus" | "_JobSchedule" | "_PushStatus" | "_Audience" if auth.master => Ok(()),
        "_JobStatus" | "_JobSchedule" | "_PushStatus" | "_Audience" => Err(ParseError::new(
            code::OPERATION_FORBIDDEN,
            format!(
                "Clients aren't allowed to perform this operation on the {class_name} collection."
            ),
        )),
        _ => validate_class_name(class_name),
    }
}

/// A device may read and write its own installation by id, but only the
/// master key lists or deletes installations, as in Parse Server.
fn installations_need_master(auth: &Auth, class_name: &str, operation: &str) -> ParseResult<()> {
    if class_name == "_Installation" && !auth.master {
        return Err(ParseError::new(
            code::OPERATION_FORBIDDEN,
            format!(
                "Clients aren't allowed to perform the {operation} operation on the installation collection."
            ),
        ));
    }
    Ok(())
}

/// An update or delete applies only to an object the request may write.
fn write_precondition(auth: &Auth, clp: Filter) -> Filter {
    if auth.master {
        Filter::All
    } else {
        clp.and(access::acl_filter(auth, true))
    }
}

/// Puts every `$inQuery`/`$select` subquery under the ACL, and refuses
/// one on a class the request may not find.
pub(crate) fn restrict_subqueries(
    auth: &Auth,
    view: &SchemaView,
    filter: &mut Filter,
) -> ParseResult<()> {
    match filter {
        Filter::And(parts) | Filter::Or(parts) | Filter::Nor(parts) => parts
            .iter_mut()
            .try_for_each(|part| restrict_subqueries(auth, view, part)),
        Filter::Field(
            _,
            Condition::InQuery(sub)
            | Condition::NotInQuery(sub)
            | Condition::Select { query: sub, .. }
            | Condition::DontSelect { query: sub, .. },
        ) => {
            restrict_subqueries(auth, view, &mut sub.filter)?;
            installations_need_master(auth, &sub.class_name, "find")?;
            let clp = access::check_class(
                auth,
                view.get(&sub.class_name).map(Arc::as_ref),
                Operation::Find,
            )?;
            let inner = std::mem::replace(&mut sub.filter, Filter::All);
            sub.filter = inner.and(clp).and(access::acl_filter(auth, false));
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Redacts objects that `include` put inside a result, at any depth; an
/// included user's `authData` is answered as a found user's.
fn redact_included(auth: &Auth, view: &SchemaView, providers: &Providers, value: &mut Value) {
    match value {
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| redact_included(auth, view, providers, item)),
        Value::Object(map) => {
            if map.get("__type").and_then(Value::as_str) == Some("Object")
                && let Some(class_name) = map
                    .get("className")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            {
                let protected =
                    access::protected_fields(auth, view.get(&class_name).map(Arc::as_ref));
                map.remove("__type");
                map.remove("className");
                access::redact(auth, &class_name, map, &protected);
                if class_name == "_User"
                    && let Some(auth_data) = map.get_mut("authData")
                {
                    providers.after_find(auth_data);
                }
                map.insert("__type".into(), Value::from("Object"));
                map.insert("className".into(), Value::from(class_name));
            }
            map.values_mut()
                .for_each(|item| redact_included(auth, view, providers, item));
        }
        _ => {}
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
fn reply(outcome: WriteOutcome, echo: &[String], respond: Map<String, Value>) -> WriteReply {
    let echoed = |object: &Object, body: &mut Map<String, Value>| {
        for key in echo {
            if let Some(value) = object.get(key) {
                body.insert(key.clone(), value.clone());
            }
        }
        body.extend(respond);
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
