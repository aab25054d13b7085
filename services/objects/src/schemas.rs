//! The schema cache every request reads. It reloads from the store when a
//! request names a class or field it does not know, when the store says
//! another process changed a schema, and when the store reports that a
//! schema it was given is stale.

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Instant;

use oxbase_store::{ClassSchema, SchemaView, Store, StoreResult};

enum Change {
    Install(ClassSchema),
    Remove(String),
}

impl Change {
    fn apply(&self, view: &SchemaView) -> SchemaView {
        match self {
            Change::Install(schema) => view.with(schema.clone()),
            Change::Remove(class_name) => {
                let rest: Vec<ClassSchema> = view
                    .classes()
                    .filter(|class| class.class_name != *class_name)
                    .map(|class| (**class).clone())
                    .collect();
                SchemaView::new(rest)
            }
        }
    }
}

pub struct SchemaCache {
    store: Arc<dyn Store>,
    view: RwLock<SchemaView>,
    /// While a reload reads the store: the changes this process made
    /// meanwhile, which the reload applies on top of what it read, so that
    /// a read that started before a change cannot undo it.
    during_reload: Mutex<Option<Vec<Change>>>,
    last_reload: Mutex<Instant>,
    /// One reload at a time; callers that waited reuse its result.
    reloading: tokio::sync::Mutex<()>,
}

impl SchemaCache {
    pub async fn load(store: Arc<dyn Store>) -> StoreResult<Arc<Self>> {
        let view = SchemaView::new(store.load_schemas().await?);
        let cache = Arc::new(Self {
            store,
            view: RwLock::new(view),
            during_reload: Mutex::new(None),
            last_reload: Mutex::new(Instant::now()),
            reloading: tokio::sync::Mutex::new(()),
        });
        if let Some(changes) = cache.store.schema_changes() {
            tokio::spawn(follow(Arc::downgrade(&cache), changes));
        }
        Ok(cache)
    }

    /// How long ago the schemas were last read from the store.
    pub fn age(&self) -> std::time::Duration {
        self.last_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .elapsed()
    }

    pub fn current(&self) -> SchemaView {
        self.view.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads from the store, unless a reload that started after this
    /// call was made has already finished.
    pub async fn reload(&self) -> StoreResult<SchemaView> {
        let asked = Instant::now();
        let _one_at_a_time = self.reloading.lock().await;
        if *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) >= asked {
            return Ok(self.current());
        }
        let started = Instant::now();
        *self.during_reload.lock().unwrap_or_else(|e| e.into_inner()) = Some(Vec::new());
        let loaded = self.store.load_schemas().await;
        // Under the view's lock, as changes are made, so none falls between
        // taking the log and replacing the view.
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        let changes = self
            .during_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
            .unwrap_or_default();
        let mut fresh = SchemaView::new(loaded?);
        for change in &changes {
            fresh = change.apply(&fresh);
        }
        *view = fresh.clone();
        drop(view);
        *self.last_reload.lock().unwrap_or_else(|e| e.into_inner()) = started;
        Ok(fresh)
    }

    /// The schemas, reloaded first when they do not know the class or one
    /// of `fields` (another process may have just added them). Requests
    /// naming classes that do not exist cannot hammer the store: reloads
    /// run one at a time, and every request that waited on one shares it.
    pub(crate) async fn for_class(
        &self,
        class_name: &str,
        fields: &[&str],
    ) -> StoreResult<SchemaView> {
        let view = self.current();
        let known = view
            .get(class_name)
            .is_some_and(|class| fields.iter().all(|f| class.fields.contains_key(*f)));
        if known {
            return Ok(view);
        }
        self.reload().await
    }

    /// Records a class's schema this process just changed.
    pub fn install(&self, schema: ClassSchema) {
        self.change(Change::Install(schema));
    }

    /// Forgets a class this process just deleted.
    pub fn remove(&self, class_name: &str) {
        self.change(Change::Remove(class_name.to_owned()));
    }

    fn change(&self, change: Change) {
        let mut view = self.view.write().unwrap_or_else(|e| e.into_inner());
        *view = change.apply(&view);
        if let Some(log) = self
            .during_reload
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            log.push(change);
        }
    }
}

/// Reloads on every change the store reports, until the cache is gone.
async fn follow(cache: Weak<SchemaCache>, mut changes: tokio::sync::watch::Receiver<u64>) {
    while changes.changed().await.is_ok() {
        let Some(cache) = cache.upgrade() else {
            return;
        };
        if let Err(err) = cache.reload().await {
            tracing::warn!(%err, "cannot reload schemas after a change");
        }
    }
}
