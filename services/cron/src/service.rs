//! The cron process: every schedule's ticks, handed to [`Settler`] as
//! they fall due.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::kv;
use futures_util::StreamExt;
use oxbase_kit::{
    Config, MetricsSource, NatsError, PortError, Readiness, Service, ServiceError, Shutdown,
};
use oxbase_proto::cron::{CronRun, CronSchedule, Misfire, RunOutcome};
use serde_json::{Map, Value};
use tokio::task::JoinSet;

use crate::book::{ScheduleBook, schedule_key};
use crate::slots::{self, Settler, Tick};
use crate::timing::Timing;
use crate::{CronError, now_ms};

/// Groups of ticks being settled at once by one process.
const MAX_IN_FLIGHT: usize = 2048;
/// How many leases before its last run a returning process looks again
/// at a schedule's ticks.
const RESUME_LEASES: i64 = 3;
/// How often Parse's `_JobSchedule` is read again without an event saying
/// it changed.
const PARSE_RESYNC: Duration = Duration::from_secs(30);
/// Schedule names of Parse's `_JobSchedule` entries: `_parse_<objectId>`.
pub(crate) const PARSE_PREFIX: &str = "_parse_";

pub(crate) fn is_parse(name: &str) -> bool {
    name.starts_with(PARSE_PREFIX)
}

/// Why [`ParseSchedules`] could not read or write: the store's error,
/// made with `.map_err(ParseSchedulesError::new)`.
pub type ParseSchedulesError = PortError;

/// Parse's `_JobSchedule`, read and written through the object layer
/// (`parse_schedules.rs`).
#[async_trait::async_trait]
pub trait ParseSchedules: Send + Sync {
    /// Every `_JobSchedule` object, in REST form.
    async fn load(&self) -> Result<Vec<Map<String, Value>>, ParseSchedulesError>;
    /// Creates the `_JobStatus` (`running`) of a scheduled run of Parse
    /// job `job_name`; its objectId.
    async fn open_status(
        &self,
        job_name: &str,
        params: &Value,
    ) -> Result<String, ParseSchedulesError>;
    /// Sets `lastRun` (Unix seconds) on the schedule's `_JobSchedule`.
    async fn ran(&self, schedule: &str, tick_ms: i64) -> Result<(), ParseSchedulesError>;
}

#[derive(Debug, Default)]
pub struct Metrics {
    fired: AtomicU64,
    skipped: AtomicU64,
    failed: AtomicU64,
    pub(crate) lost: AtomicU64,
    pub(crate) taken_over: AtomicU64,
}

impl Metrics {
    pub(crate) fn count(&self, outcome: RunOutcome) {
        let counter = match outcome {
            RunOutcome::Fired => &self.fired,
            RunOutcome::Skipped => &self.skipped,
            RunOutcome::Failed => &self.failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self) -> String {
        oxbase_kit::health::counters(&[
            (
                "oxbase_cron_fired_total",
                "Ticks this process fired.",
                &self.fired,
            ),
            (
                "oxbase_cron_skipped_total",
                "Missed ticks this process recorded as skipped.",
                &self.skipped,
            ),
            (
                "oxbase_cron_failed_total",
                "Ticks whose job was refused.",
                &self.failed,
            ),
            (
                "oxbase_cron_claims_lost_total",
                "Ticks another process claimed first.",
                &self.lost,
            ),
            (
                "oxbase_cron_taken_over_total",
                "Ticks taken over from a silent process.",
                &self.taken_over,
            ),
        ])
    }
}

/// One schedule as this process follows it.
struct Entry {
    schedule: Arc<CronSchedule>,
    timing: Timing,
    /// The next tick not yet handed out.
    cursor: Option<i64>,
}

pub struct CronService {
    book: Arc<ScheduleBook>,
    configured: Vec<CronSchedule>,
    parse: Option<Arc<dyn ParseSchedules>>,
    parse_queue: String,
    process: String,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for CronService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronService")
            .field("process", &self.process)
            .finish_non_exhaustive()
    }
}

impl CronService {
    /// Checks the config file's schedules; nothing else happens until
    /// [`run`](Self::run).
    pub fn new(config: &Config, book: Arc<ScheduleBook>) -> Result<Self, CronError> {
        let mut configured = Vec::new();
        for (name, schedule) in &config.section::<crate::CronConfig>().schedules {
            let mut schedule = schedule.clone();
            if schedule.name.is_empty() {
                schedule.name = name.clone();
            }
            if &schedule.name != name {
                return Err(CronError::Invalid(format!(
                    "cron.schedules.{name}: its name says {:?}",
                    schedule.name
                )));
            }
            book.check(&schedule)
                .map_err(|err| CronError::Invalid(format!("cron.schedules.{name}: {err}")))?;
            configured.push(schedule);
        }
        Ok(Self {
            book,
            configured,
            parse: None,
            parse_queue: config.section::<oxbase_jobs::JobsConfig>().parse_queue,
            process: format!("cron-{}", uuid::Uuid::now_v7().simple()),
            metrics: Arc::default(),
        })
    }

    /// Fires Parse's `_JobSchedule` entries too.
    pub fn parse_schedules(mut self, parse: Arc<dyn ParseSchedules>) -> Self {
        self.parse = Some(parse);
        self
    }

    pub fn metrics(&self) -> Arc<Metrics> {
        Arc::clone(&self.metrics)
    }

    pub async fn run(self, readiness: Readiness, shutdown: Shutdown) -> Result<(), CronError> {
        readiness.register("cron");
        let mut backoff = Duration::from_millis(100);
        let storage = loop {
            match self.book.storage().await {
                Ok(storage) => break storage,
                Err(err) => tracing::warn!(%err, "cannot open the cron buckets yet"),
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = shutdown.wait() => return Ok(()),
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        for schedule in &self.configured {
            self.book.put(schedule.clone()).await?;
        }
        let mut watch = storage
            .schedules
            .watch_with_history(">")
            .await
            .map_err(NatsError::from)?;
        // The `_parse_` schedules this process knows of, for the Parse
        // sync to find the ones whose `_JobSchedule` is gone.
        let known_parse = Arc::new(Mutex::new(HashSet::new()));
        if let Some(parse) = self.parse.clone() {
            tokio::spawn(sync_parse(
                Arc::clone(&self.book),
                parse,
                self.parse_queue.clone(),
                Arc::clone(&known_parse),
                shutdown.clone(),
            ));
        }
        let settler = Arc::new(Settler {
            book: Arc::clone(&self.book),
            slots: storage.slots.clone(),
            process: self.process.clone(),
            parse: self.parse.clone(),
            metrics: Arc::clone(&self.metrics),
            recording: tokio::sync::Semaphore::new(slots::MAX_RECORDING),
            burst: Arc::default(),
        });
        tracing::info!(process = %self.process, "firing schedules");
        readiness.set("cron", true);

        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut timers: BTreeSet<(i64, String)> = BTreeSet::new();
        let mut settling = JoinSet::new();
        let in_flight = Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT));
        loop {
            let next = timers.first().map(|(at, _)| *at);
            let sleep = async {
                match next {
                    Some(at) => {
                        let wait = (at - now_ms()).max(0) as u64;
                        tokio::time::sleep(Duration::from_millis(wait)).await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = shutdown.wait() => break,
                change = watch.next() => {
                    let Some(Ok(entry)) = change else {
                        if let Some(Err(err)) = change {
                            tracing::warn!(%err, "schedule watch failed; watching again");
                        }
                        watch = storage.schedules.watch_with_history(">").await.map_err(NatsError::from)?;
                        continue;
                    };
                    if let Some(name) = entry.key.strip_prefix("s.").filter(|name| is_parse(name)) {
                        let mut known = known_parse.lock().unwrap_or_else(|e| e.into_inner());
                        if entry.operation == kv::Operation::Put {
                            known.insert(name.to_owned());
                        } else {
                            known.remove(name);
                        }
                    }
                    self.apply(&entry, &mut entries, &mut timers).await;
                }
                () = sleep => {
                    let now = now_ms();
                    // Schedules sharing an expression share its next tick:
                    // one evaluation per expression and tick in a wake.
                    let mut next_of: HashMap<(String, String, i64), Option<i64>> = HashMap::new();
                    let mut due_ticks = Vec::new();
                    while let Some((at, name)) = timers.first().cloned() {
                        if at > now {
                            break;
                        }
                        timers.pop_first();
                        let Some(entry) = entries.get_mut(&name) else { continue };
                        if entry.cursor != Some(at) {
                            continue;
                        }
                        let key = (entry.schedule.cron.clone(), entry.schedule.time_zone.clone(), at);
                        let next = *next_of
                            .entry(key)
                            .or_insert_with(|| entry.timing.next_after(at));
                        let due = match next {
                            // The usual case: only the tick it woke for.
                            Some(next) if next > now => {
                                entry.cursor = Some(next);
                                vec![at]
                            }
                            _ => {
                                let settings = self.book.settings();
                                let due = entry.timing.due_between(at - 1, now, settings.max_catch_up);
                                entry.cursor = entry.timing.next_after(now);
                                due
                            }
                        };
                        if let Some(next) = entry.cursor {
                            timers.insert((next, name.clone()));
                        }
                        due_ticks.extend(self.plan(entry, due, now));
                    }
                    for group in slots::groups(due_ticks) {
                        let settler = Arc::clone(&settler);
                        let Ok(permit) = Arc::clone(&in_flight).acquire_owned().await else {
                            break;
                        };
                        let permit = slots::InBurst::new(permit, Arc::clone(&settler.burst));
                        let stop = shutdown.clone();
                        settling.spawn(async move {
                            settler.settle(group, permit, &stop).await;
                        });
                    }
                }
                Some(_) = settling.join_next(), if !settling.is_empty() => {}
            }
        }
        // The ticks this process claimed are settled (the caller bounds how
        // long); the rest are left to the processes still running.
        while settling.join_next().await.is_some() {}
        Ok(())
    }

    /// Takes in a change of the schedule bucket.
    async fn apply(
        &self,
        change: &kv::Entry,
        entries: &mut HashMap<String, Entry>,
        timers: &mut BTreeSet<(i64, String)>,
    ) {
        let Some(name) = change.key.strip_prefix("s.") else {
            return;
        };
        let schedule = match change.operation {
            kv::Operation::Put => serde_json::from_slice::<CronSchedule>(&change.value).ok(),
            _ => None,
        };
        let Some(schedule) = schedule.filter(|s| s.enabled && s.name == name) else {
            if let Some(old) = entries.remove(name)
                && let Some(at) = old.cursor
            {
                timers.remove(&(at, name.to_owned()));
            }
            return;
        };
        let timing = match Timing::parse(&schedule.cron, &schedule.time_zone) {
            Ok(timing) => timing,
            Err(err) => {
                tracing::warn!(%err, schedule = name, "ignoring a schedule that does not parse");
                return;
            }
        };
        let schedule = Arc::new(schedule);
        if let Some(entry) = entries.get_mut(name)
            && entry.schedule.since == schedule.since
        {
            // Same timing: only what it submits changed.
            entry.schedule = schedule;
            return;
        }
        if let Some(old) = entries.remove(name)
            && let Some(at) = old.cursor
        {
            timers.remove(&(at, name.to_owned()));
        }
        let start = self.resume_after(&schedule).await;
        let cursor = timing.next_after(start);
        if let Some(at) = cursor {
            timers.insert((at, name.to_owned()));
        }
        entries.insert(
            name.to_owned(),
            Entry {
                schedule,
                timing,
                cursor,
            },
        );
    }

    /// The time after which a schedule's ticks are still to be settled:
    /// its last recorded run, less a few leases (a tick claimed then by a
    /// process that died may be unsettled, if every process that saw it
    /// died too), and never before the schedule took its current form.
    async fn resume_after(&self, schedule: &CronSchedule) -> i64 {
        let since = schedule.since.unwrap_or_else(now_ms) - 1;
        let last = match self.last_run(&schedule.name).await {
            Ok(last) => last,
            Err(err) => {
                tracing::warn!(%err, schedule = %schedule.name, "cannot read the last run; resuming from now");
                Some(now_ms())
            }
        };
        let lease = self.book.settings().lease.as_millis() as i64;
        match last {
            Some(last) => (last - RESUME_LEASES * lease).max(since),
            None => since,
        }
    }

    async fn last_run(&self, name: &str) -> Result<Option<i64>, CronError> {
        let storage = self.book.storage().await?;
        match storage
            .runs
            .direct_get_last_for_subject(self.book.settings().subjects.cron_runs(name))
            .await
        {
            Ok(message) => Ok(serde_json::from_slice::<CronRun>(&message.payload)
                .ok()
                .and_then(|run| {
                    chrono::DateTime::parse_from_rfc3339(&run.scheduled_at)
                        .ok()
                        .map(|at| at.timestamp_millis())
                })),
            Err(err)
                if err.kind() == async_nats::jetstream::stream::DirectGetErrorKind::NotFound =>
            {
                Ok(None)
            }
            Err(err) => Err(NatsError::from(err).into()),
        }
    }

    /// Marks each due tick of `entry` fire or skip: ticks later than the
    /// misfire grace are misfires, which the schedule's policy skips, or
    /// fires the latest of once.
    fn plan(&self, entry: &Entry, mut due: Vec<i64>, now: i64) -> Vec<Tick> {
        due.sort_unstable();
        let grace = self.book.settings().misfire_grace.as_millis() as i64;
        let last_missed = due.iter().rev().find(|at| **at < now - grace).copied();
        due.into_iter()
            .map(|at| {
                let missed = at < now - grace;
                let fire = !missed
                    || (entry.schedule.misfire == Misfire::FireOnce && Some(at) == last_missed);
                Tick {
                    schedule: Arc::clone(&entry.schedule),
                    at_ms: at,
                    fire,
                }
            })
            .collect()
    }
}

#[async_trait::async_trait]
impl Service for CronService {
    fn name(&self) -> &'static str {
        "cron"
    }

    fn metrics(&self) -> MetricsSource {
        let metrics = CronService::metrics(self);
        Arc::new(move || metrics.render())
    }

    async fn run(
        self: Box<Self>,
        readiness: Readiness,
        shutdown: Shutdown,
    ) -> Result<(), ServiceError> {
        Ok(CronService::run(*self, readiness, shutdown).await?)
    }
}

/// Keeps the `_parse_<objectId>` schedules equal to Parse's `_JobSchedule`:
/// at start, whenever an object event says the class changed, and every
/// [`PARSE_RESYNC`].
async fn sync_parse(
    book: Arc<ScheduleBook>,
    parse: Arc<dyn ParseSchedules>,
    parse_queue: String,
    known: Arc<Mutex<HashSet<String>>>,
    shutdown: Shutdown,
) {
    let subjects = &book.settings().subjects;
    let changes = book
        .jetstream()
        .client()
        .subscribe(subjects.class_events_wildcard("_JobSchedule"))
        .await;
    let mut changes = match changes {
        Ok(changes) => Some(changes),
        Err(err) => {
            tracing::warn!(%err, "cannot follow _JobSchedule changes; reading it every 30 s");
            None
        }
    };
    loop {
        if let Err(err) = sync_parse_once(&book, parse.as_ref(), &parse_queue, &known).await {
            tracing::warn!(%err, "cannot sync Parse's _JobSchedule");
        }
        let changed = async {
            match changes.as_mut() {
                Some(changes) => {
                    changes.next().await;
                    // Take in a burst of edits at once.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(PARSE_RESYNC) => {}
            () = changed => {}
        }
    }
}

async fn sync_parse_once(
    book: &ScheduleBook,
    parse: &dyn ParseSchedules,
    parse_queue: &str,
    known: &Mutex<HashSet<String>>,
) -> Result<(), CronError> {
    let objects = parse.load().await?;
    let mut wanted = HashMap::new();
    for object in &objects {
        match crate::parse::from_job_schedule(object, parse_queue) {
            Ok(schedule) => {
                wanted.insert(schedule.name.clone(), schedule);
            }
            Err(err) => {
                let id = object
                    .get("objectId")
                    .and_then(Value::as_str)
                    .unwrap_or("?");
                tracing::warn!(%err, object_id = id, "a _JobSchedule that cannot fire");
            }
        }
    }
    let gone: Vec<String> = known
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .filter(|name| !wanted.contains_key(*name))
        .cloned()
        .collect();
    let storage = book.storage().await?;
    for name in gone {
        storage
            .schedules
            .delete(schedule_key(&name))
            .await
            .map_err(NatsError::from)?;
    }
    for schedule in wanted.into_values() {
        book.put(schedule).await?;
    }
    Ok(())
}
