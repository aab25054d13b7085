//! The hook registry: a JetStream key-value bucket that every API and
//! triggers process mirrors in memory, so looking up a hook is a hash
//! lookup and a change reaches every process as fast as the bucket's watch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures_util::StreamExt;
use oxbase_kit::{NatsError, Shutdown};
use oxbase_proto::{HookEntry, Subjects, TriggerName};
use tokio::sync::Notify;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("the hook is already registered")]
    Exists,
    #[error("no such hook")]
    NotFound,
    #[error("the hook registry is unavailable: {0}")]
    Nats(#[from] NatsError),
    #[error("cannot encode the hook: {0}")]
    Encode(#[source] serde_json::Error),
}

/// Every registered hook, by name.
#[derive(Debug, Default, Clone)]
struct Hooks {
    /// Registry key → (revision, entry), to apply changes in order.
    entries: HashMap<String, (u64, HookEntry)>,
    functions: HashMap<String, HookEntry>,
    jobs: HashMap<String, HookEntry>,
    /// className → the entry of each trigger, indexed like
    /// [`TriggerName::ALL`].
    triggers: HashMap<String, [Option<HookEntry>; TriggerName::ALL.len()]>,
    /// The entries with a `rateLimit`, which the API counts.
    rate_limited: Arc<[HookEntry]>,
}

impl Hooks {
    fn rebuild(entries: HashMap<String, (u64, HookEntry)>) -> Self {
        let mut functions = HashMap::new();
        let mut jobs = HashMap::new();
        let mut triggers: HashMap<String, [Option<HookEntry>; TriggerName::ALL.len()]> =
            HashMap::new();
        for (_, entry) in entries.values() {
            if let Some(name) = &entry.function_name {
                functions.insert(name.clone(), entry.clone());
            } else if let Some(name) = &entry.job_name {
                jobs.insert(name.clone(), entry.clone());
            } else if let (Some(class), Some(trigger)) = (&entry.class_name, entry.trigger_name) {
                triggers.entry(class.clone()).or_default()[index(trigger)] = Some(entry.clone());
            }
        }
        let rate_limited = entries
            .values()
            .filter(|(_, entry)| entry.rate_limit.is_some())
            .map(|(_, entry)| entry.clone())
            .collect();
        Self {
            entries,
            functions,
            jobs,
            triggers,
            rate_limited,
        }
    }
}

fn index(trigger: TriggerName) -> usize {
    TriggerName::ALL
        .iter()
        .position(|t| *t == trigger)
        .unwrap_or_default()
}

/// The key an entry is stored under, if the entry is well formed.
pub fn key_of(entry: &HookEntry) -> Option<String> {
    match (
        &entry.function_name,
        &entry.class_name,
        entry.trigger_name,
        &entry.job_name,
    ) {
        (Some(name), None, None, None) => Some(HookEntry::function_key(name)),
        (None, Some(class), Some(trigger), None) => Some(HookEntry::trigger_key(class, trigger)),
        (None, None, None, Some(name)) => Some(HookEntry::job_key(name)),
        _ => None,
    }
}

/// The in-memory mirror of the `<PREFIX>_HOOKS` bucket.
pub struct HookRegistry {
    jetstream: jetstream::Context,
    bucket: String,
    replicas: usize,
    kv: tokio::sync::OnceCell<kv::Store>,
    hooks: RwLock<Arc<Hooks>>,
    /// Whether any trigger is registered, so writes to classes without
    /// hooks skip even the lookup's lock.
    any_triggers: AtomicBool,
    loaded: AtomicBool,
    loaded_signal: Notify,
}

impl std::fmt::Debug for HookRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookRegistry").finish_non_exhaustive()
    }
}

/// `<PREFIX>_HOOKS`.
pub fn bucket_name(subjects: &Subjects) -> String {
    oxbase_proto::stream_name(subjects, "HOOKS")
}

impl HookRegistry {
    /// A registry that is empty until [`HookRegistry::run`] has opened the
    /// bucket (creating it if needed) and loaded it. Nothing here waits for
    /// NATS, so a process can start while NATS is down.
    pub fn new(jetstream: jetstream::Context, subjects: &Subjects, replicas: usize) -> Arc<Self> {
        Arc::new(Self {
            jetstream,
            bucket: bucket_name(subjects),
            replicas: replicas.max(1),
            kv: tokio::sync::OnceCell::new(),
            hooks: RwLock::new(Arc::default()),
            any_triggers: AtomicBool::new(false),
            loaded: AtomicBool::new(false),
            loaded_signal: Notify::new(),
        })
    }

    /// The bucket, opened (or created) on first use.
    async fn kv(&self) -> Result<&kv::Store, RegistryError> {
        self.kv
            .get_or_try_init(|| async {
                match self.jetstream.get_key_value(&self.bucket).await {
                    Ok(kv) => Ok(kv),
                    Err(_) => self
                        .jetstream
                        .create_key_value(kv::Config {
                            bucket: self.bucket.clone(),
                            description: "oxbase hook registry: functions and triggers".into(),
                            history: 1,
                            storage: jetstream::stream::StorageType::File,
                            num_replicas: self.replicas,
                            ..Default::default()
                        })
                        .await
                        .map_err(|err| NatsError::from(err).into()),
                }
            })
            .await
    }

    fn snapshot(&self) -> Arc<Hooks> {
        Arc::clone(&self.hooks.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The hooks with a `rateLimit`. The same `Arc` until the registry
    /// changes, so a reader can tell when to look again.
    pub fn rate_limited(&self) -> Arc<[HookEntry]> {
        Arc::clone(
            &self
                .hooks
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .rate_limited,
        )
    }

    /// The function registered under `name`.
    pub fn function(&self, name: &str) -> Option<HookEntry> {
        self.snapshot().functions.get(name).cloned()
    }

    /// The handler registered for the job `name`.
    pub fn job(&self, name: &str) -> Option<HookEntry> {
        self.snapshot().jobs.get(name).cloned()
    }

    /// Every job handler, sorted by name.
    pub fn jobs(&self) -> Vec<HookEntry> {
        let mut out: Vec<_> = self.snapshot().jobs.values().cloned().collect();
        out.sort_by(|a, b| a.job_name.cmp(&b.job_name));
        out
    }

    /// The hook of `trigger` on `class_name`. Cheap when the class has none.
    pub fn trigger(&self, class_name: &str, trigger: TriggerName) -> Option<HookEntry> {
        if !self.any_triggers.load(Ordering::Relaxed) {
            return None;
        }
        let hooks = self.hooks.read().unwrap_or_else(|e| e.into_inner());
        hooks.triggers.get(class_name)?[index(trigger)].clone()
    }

    /// Every function, sorted by name.
    pub fn functions(&self) -> Vec<HookEntry> {
        let mut out: Vec<_> = self.snapshot().functions.values().cloned().collect();
        out.sort_by(|a, b| a.function_name.cmp(&b.function_name));
        out
    }

    /// Every trigger, sorted by class, then trigger.
    pub fn triggers(&self) -> Vec<HookEntry> {
        let mut out: Vec<_> = self
            .snapshot()
            .triggers
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect();
        out.sort_by_key(|e| (e.class_name.clone(), e.trigger_name.map(index)));
        out
    }

    /// The hook stored under `key`, read from the bucket rather than the
    /// mirror: a hook another process registered a moment ago may not have
    /// reached the mirror yet. The mirror is left alone, since a delete
    /// that overtook this read would be undone.
    pub async fn fetch(&self, key: &str) -> Result<Option<HookEntry>, RegistryError> {
        let entry = self.kv().await?.entry(key).await.map_err(NatsError::from)?;
        Ok(entry
            .filter(|e| e.operation == kv::Operation::Put)
            .and_then(|e| parse_entry(&e)))
    }

    /// Whether the first load has finished.
    pub fn is_loaded(&self) -> bool {
        self.loaded.load(Ordering::Acquire)
    }

    /// Waits for the first load, at most `timeout`.
    pub async fn wait_loaded(&self, timeout: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.loaded_signal.notified();
                if self.is_loaded() {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok()
    }

    /// Registers a new hook; fails if its key is taken.
    pub async fn create(&self, entry: HookEntry) -> Result<HookEntry, RegistryError> {
        let key = key_of(&entry).ok_or(RegistryError::NotFound)?;
        let value = serde_json::to_vec(&entry).map_err(RegistryError::Encode)?;
        match self.kv().await?.create(&key, value.into()).await {
            Ok(revision) => {
                self.apply(&key, revision, Some(entry.clone()));
                Ok(entry)
            }
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                Err(RegistryError::Exists)
            }
            Err(err) => Err(NatsError::from(err).into()),
        }
    }

    /// Replaces a registered hook; fails if there is none.
    pub async fn update(&self, entry: HookEntry) -> Result<HookEntry, RegistryError> {
        let key = key_of(&entry).ok_or(RegistryError::NotFound)?;
        let kv = self.kv().await?;
        let current = kv
            .entry(key.as_str())
            .await
            .map_err(NatsError::from)?
            .filter(|e| e.operation == kv::Operation::Put)
            .ok_or(RegistryError::NotFound)?;
        let value = serde_json::to_vec(&entry).map_err(RegistryError::Encode)?;
        let revision = kv
            .update(&key, value.into(), current.revision)
            .await
            .map_err(NatsError::from)?;
        self.apply(&key, revision, Some(entry.clone()));
        Ok(entry)
    }

    /// Removes the hook stored under `key`. Removing a hook that is not
    /// there succeeds, as in Parse Server.
    pub async fn delete(&self, key: &str) -> Result<(), RegistryError> {
        let kv = self.kv().await?;
        kv.delete(key).await.map_err(NatsError::from)?;
        let revision = kv
            .entry(key)
            .await
            .map_err(NatsError::from)?
            .map(|e| e.revision)
            .unwrap_or(0);
        self.apply(key, revision, None);
        Ok(())
    }

    /// Applies one change, unless the mirror already holds a later one.
    fn apply(&self, key: &str, revision: u64, entry: Option<HookEntry>) {
        let mut hooks = self.hooks.write().unwrap_or_else(|e| e.into_inner());
        if hooks
            .entries
            .get(key)
            .is_some_and(|(seen, _)| *seen >= revision && revision != 0)
        {
            return;
        }
        let mut entries = hooks.entries.clone();
        match entry {
            Some(entry) => {
                entries.insert(key.to_owned(), (revision, entry));
            }
            None => {
                entries.remove(key);
            }
        }
        let rebuilt = Hooks::rebuild(entries);
        self.any_triggers
            .store(!rebuilt.triggers.is_empty(), Ordering::Relaxed);
        *hooks = Arc::new(rebuilt);
    }

    /// Keeps the mirror in step with the bucket until `shutdown`: a full
    /// load, then the bucket's changes as they happen. A lost connection
    /// starts over with a full load.
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut backoff = Duration::from_millis(100);
        loop {
            let result = tokio::select! {
                result = self.follow() => result,
                () = shutdown.wait() => return,
            };
            if let Err(err) = result {
                tracing::warn!(error = %err, "hook registry watch failed; reloading");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn follow(&self) -> Result<(), RegistryError> {
        let kv = self.kv().await?;
        let status = kv.status().await.map_err(NatsError::from)?;
        let last = status.info.state.last_sequence;
        let mut entries = HashMap::new();
        let mut keys = kv.keys().await.map_err(NatsError::from)?;
        while let Some(key) = keys.next().await {
            let key = key.map_err(NatsError::from)?;
            if let Some(entry) = kv.entry(key.as_str()).await.map_err(NatsError::from)?
                && entry.operation == kv::Operation::Put
                && let Some(hook) = parse_entry(&entry)
            {
                entries.insert(key, (entry.revision, hook));
            }
        }
        {
            let rebuilt = Hooks::rebuild(entries);
            self.any_triggers
                .store(!rebuilt.triggers.is_empty(), Ordering::Relaxed);
            *self.hooks.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rebuilt);
        }
        self.loaded.store(true, Ordering::Release);
        self.loaded_signal.notify_waiters();
        let mut watch = kv
            .watch_all_from_revision(last + 1)
            .await
            .map_err(NatsError::from)?;
        while let Some(change) = watch.next().await {
            let change = change.map_err(NatsError::from)?;
            match change.operation {
                kv::Operation::Put => match parse_entry(&change) {
                    Some(hook) => self.apply(&change.key, change.revision, Some(hook)),
                    None => tracing::warn!(key = %change.key, "ignoring a malformed hook entry"),
                },
                kv::Operation::Delete | kv::Operation::Purge => {
                    self.apply(&change.key, change.revision, None)
                }
            }
        }
        Err(NatsError::new("the watch ended").into())
    }
}

/// An entry whose value is a [`HookEntry`] stored under its own key.
fn parse_entry(entry: &kv::Entry) -> Option<HookEntry> {
    let hook: HookEntry = serde_json::from_slice(&entry.value).ok()?;
    (key_of(&hook).as_deref() == Some(entry.key.as_str())).then_some(hook)
}
