//! Settling ticks, exactly once across every cron process.
//!
//! Ticks are claimed by keys of `<PREFIX>_CRON_SLOTS`. The ticks of one
//! instant are split by a hash of their schedule's name into [`SHARDS`]
//! groups, each claimed by one `create` of `b.<ms>.<shard>` whose value
//! lists the schedules it settles: 10,000 ticks of one second cost 64
//! claims, not 10,000. Each process lists the schedules it knows, so two
//! lists can differ (a schedule one process has seen and another not yet).
//! The stored list decides: a tick it names is the group's, and a process
//! holding a tick it leaves out claims that tick alone, under
//! `t.<schedule>.<ms>`. A list is fixed when its key is created, so no tick
//! is under two claims.
//!
//! The winner of a claim submits its jobs (each slot id is its job's
//! idempotency key), publishes the runs, and marks the claim done. A
//! process that loses the create looks again after the lease: a claim
//! still not done then, and not touched for a lease, is taken over with a
//! compare-and-set and settled again. Repeating a settle is harmless: a
//! job's idempotency key returns the job already submitted, and a run's
//! `Nats-Msg-Id` keeps its record single.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::jetstream::kv;
use bytes::Bytes;
use oxbase_jobs::JobsError;
use oxbase_kit::{NatsError, Shutdown};
use oxbase_proto::cron::{CronRun, CronSchedule, RunOutcome, slot_id};
use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::book::{ScheduleBook, queue_of};
use crate::service::{Metrics, ParseSchedules, is_parse};
use crate::{CronError, now_ms, rfc3339};

/// One tick of one schedule, and whether it should fire (a misfire its
/// policy skips should not).
#[derive(Debug, Clone)]
pub(crate) struct Tick {
    pub schedule: Arc<CronSchedule>,
    pub at_ms: i64,
    pub fire: bool,
}

/// How many claims the ticks of one instant are split into.
const SHARDS: u64 = 64;

/// Ticks claimed by one key.
pub(crate) struct Group {
    key: String,
    at_ms: i64,
    ticks: Vec<Tick>,
}

/// Splits ticks into their groups: by instant, then by shard.
pub(crate) fn groups(ticks: Vec<Tick>) -> Vec<Group> {
    let mut by_key: HashMap<(i64, u64), Vec<Tick>> = HashMap::new();
    for tick in ticks {
        by_key
            .entry((tick.at_ms, shard(&tick.schedule.name)))
            .or_default()
            .push(tick);
    }
    by_key
        .into_iter()
        .map(|((at_ms, shard), ticks)| Group {
            key: format!("b.{at_ms}.{shard}"),
            at_ms,
            ticks,
        })
        .collect()
}

/// FNV-1a: every process, whatever its build, must agree on a name's
/// shard.
fn shard(name: &str) -> u64 {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
    });
    hash % SHARDS
}

/// A claim's key: who holds it, since when, and what it decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    process: String,
    at: i64,
    /// The ticks it settles: schedule name → whether the tick fires.
    ticks: BTreeMap<String, bool>,
    #[serde(default)]
    done: bool,
    /// The `_JobStatus` of each Parse schedule's tick, kept so that a
    /// takeover reuses it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    status_ids: BTreeMap<String, String>,
}

/// What settling needs.
pub(crate) struct Settler {
    pub book: Arc<ScheduleBook>,
    pub slots: kv::Store,
    pub process: String,
    pub parse: Option<Arc<dyn ParseSchedules>>,
    pub metrics: Arc<Metrics>,
    /// Bounds the bookkeeping in flight (see [`Settler::win`]).
    pub recording: Semaphore,
    pub burst: Arc<Burst>,
}

/// The longest a claim's bookkeeping waits for the burst to be queued.
const BURST_WAIT: Duration = Duration::from_secs(2);

/// Runs published before their acks are awaited.
const PUBLISH_WINDOW: usize = 256;

/// Claims whose runs are being recorded at once.
pub(crate) const MAX_RECORDING: usize = 8;

/// Counts the groups between their first claim attempt and their jobs
/// queued (or their claim lost): the bookkeeping of a burst waits for it
/// to reach zero, so that the jobs of a burst go first.
#[derive(Debug, Default)]
pub(crate) struct Burst {
    count: AtomicUsize,
    drained: Notify,
}

impl Burst {
    async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// A group's place in the burst, and in the groups in flight; let go
/// together.
pub(crate) struct InBurst {
    _permit: OwnedSemaphorePermit,
    burst: Arc<Burst>,
}

impl InBurst {
    pub(crate) fn new(permit: OwnedSemaphorePermit, burst: Arc<Burst>) -> Self {
        burst.count.fetch_add(1, Ordering::SeqCst);
        Self {
            _permit: permit,
            burst,
        }
    }
}

impl Drop for InBurst {
    fn drop(&mut self) {
        if self.burst.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.burst.drained.notify_waiters();
        }
    }
}

fn encode(claim: &Claim) -> Result<Bytes, CronError> {
    serde_json::to_vec(claim)
        .map(Bytes::from)
        .map_err(|source| CronError::Encode {
            what: "a claim",
            source,
        })
}

impl Settler {
    /// Settles `group`, or leaves its ticks to the process that claimed
    /// them; retries through NATS failures. `permit` is held until the
    /// group's jobs are queued or its claim is lost, not while a lost claim
    /// is watched.
    ///
    /// Once `stop` fires it claims nothing more and stops watching the
    /// others' claims (the processes still running claim and watch), but
    /// settles what it claimed: a claim left undone would wait a lease for
    /// another process to take it over.
    pub async fn settle(&self, group: Group, permit: InBurst, stop: &Shutdown) {
        let mut backoff = Duration::from_millis(100);
        let mut permit = Some(permit);
        while !stop.is_triggered() {
            let settled = self
                .settle_once(&group.key, group.at_ms, &group.ticks, &mut permit, stop)
                .await;
            match settled {
                Ok(()) => return,
                Err(err) => {
                    tracing::warn!(%err, claim = %group.key, "cannot settle ticks yet");
                }
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.wait() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    async fn settle_once(
        &self,
        key: &str,
        at_ms: i64,
        ticks: &[Tick],
        permit: &mut Option<InBurst>,
        stop: &Shutdown,
    ) -> Result<(), CronError> {
        let Some(held) = self.claim(key, at_ms, ticks, permit).await? else {
            return Ok(());
        };
        let (listed, alone): (Vec<Tick>, Vec<Tick>) = ticks
            .iter()
            .cloned()
            .partition(|tick| held.ticks.contains_key(&tick.schedule.name));
        // The ticks the stored list leaves out are claimed one by one,
        // while this group still counts in the burst.
        let alone = futures_util::future::join_all(
            alone
                .into_iter()
                .map(|tick| Box::pin(self.settle_alone(at_ms, tick, stop))),
        )
        .await;
        permit.take();
        alone.into_iter().collect::<Result<Vec<()>, _>>()?;
        if listed.is_empty() {
            return Ok(());
        }
        Box::pin(self.watch(key, at_ms, listed, stop)).await
    }

    async fn settle_alone(&self, at_ms: i64, tick: Tick, stop: &Shutdown) -> Result<(), CronError> {
        let key = format!("t.{}.{at_ms}", tick.schedule.name);
        let ticks = [tick];
        if self.claim(&key, at_ms, &ticks, &mut None).await?.is_none() {
            return Ok(());
        }
        Box::pin(self.watch(&key, at_ms, ticks.into(), stop)).await
    }

    /// Claims `ticks` under `key` and settles them; or, when another
    /// process holds the key, the claim it holds.
    async fn claim(
        &self,
        key: &str,
        at_ms: i64,
        ticks: &[Tick],
        permit: &mut Option<InBurst>,
    ) -> Result<Option<Claim>, CronError> {
        let claim = Claim {
            process: self.process.clone(),
            at: now_ms(),
            ticks: ticks
                .iter()
                .map(|tick| (tick.schedule.name.clone(), tick.fire))
                .collect(),
            done: false,
            status_ids: BTreeMap::new(),
        };
        // Boxed, as are the other large steps: a group waiting out a lease
        // holds only its own small state, not room for theirs.
        let created = Box::pin(self.slots.create(key, encode(&claim)?)).await;
        match created {
            Ok(revision) => {
                Box::pin(self.win(key, at_ms, ticks.to_vec(), claim, revision, permit)).await?;
                return Ok(None);
            }
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {}
            Err(err) => return Err(NatsError::from(err).into()),
        }
        // None when expired: settled long ago.
        let held = self.read(key).await?.map(|(held, _)| held);
        if let Some(held) = &held {
            let mine = ticks
                .iter()
                .filter(|tick| held.ticks.contains_key(&tick.schedule.name))
                .count();
            self.metrics.lost.fetch_add(mine as u64, Ordering::Relaxed);
        }
        Ok(held)
    }

    /// Follows a claim another process holds, and takes it over when it
    /// stays undone and silent for a lease; until `stop`.
    async fn watch(
        &self,
        key: &str,
        at_ms: i64,
        known: Vec<Tick>,
        stop: &Shutdown,
    ) -> Result<(), CronError> {
        let lease = self.book.settings().lease;
        loop {
            tokio::select! {
                () = tokio::time::sleep(lease) => {}
                () = stop.wait() => return Ok(()),
            }
            let Some((held, revision)) = self.read(key).await? else {
                return Ok(());
            };
            if held.done {
                return Ok(());
            }
            if now_ms() - held.at < lease.as_millis() as i64 {
                continue;
            }
            let taken = Claim {
                process: self.process.clone(),
                at: now_ms(),
                ..held
            };
            match self.slots.update(key, encode(&taken)?, revision).await {
                Ok(revision) => {
                    tracing::info!(claim = %key, "took over ticks whose process went silent");
                    self.metrics
                        .taken_over
                        .fetch_add(taken.ticks.len() as u64, Ordering::Relaxed);
                    let ticks = self.ticks_of(&taken, at_ms, &known).await?;
                    return Box::pin(self.win(key, at_ms, ticks, taken, revision, &mut None)).await;
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(NatsError::from(err).into()),
            }
        }
    }

    /// The ticks a claim lists, as its holder decided them. A schedule
    /// this process has not seen yet is read from the book; one deleted
    /// since has nothing left to fire.
    async fn ticks_of(
        &self,
        claim: &Claim,
        at_ms: i64,
        known: &[Tick],
    ) -> Result<Vec<Tick>, CronError> {
        let known: HashMap<&str, &Arc<CronSchedule>> = known
            .iter()
            .map(|tick| (tick.schedule.name.as_str(), &tick.schedule))
            .collect();
        let mut ticks = Vec::with_capacity(claim.ticks.len());
        for (name, &fire) in &claim.ticks {
            let schedule = match known.get(name.as_str()) {
                Some(schedule) => Arc::clone(schedule),
                None => match self.book.get(name).await {
                    Ok(schedule) => Arc::new(schedule),
                    Err(CronError::NotFound) => continue,
                    Err(err) => return Err(err),
                },
            };
            ticks.push(Tick {
                schedule,
                at_ms,
                fire,
            });
        }
        Ok(ticks)
    }

    async fn read(&self, key: &str) -> Result<Option<(Claim, u64)>, CronError> {
        let Some(entry) = self.slots.entry(key).await.map_err(NatsError::from)? else {
            return Ok(None);
        };
        if entry.operation != kv::Operation::Put {
            return Ok(None);
        }
        let claim =
            serde_json::from_slice(&entry.value).map_err(|source| CronError::Unreadable {
                what: format!("claim {key}"),
                source,
            })?;
        Ok(Some((claim, entry.revision)))
    }

    /// Settles ticks this process holds at `revision`. The jobs go first;
    /// `permit` is let go once they are queued, and the bookkeeping after
    /// them (the runs' records, the claim marked done) waits until the
    /// burst's jobs are queued, then for a place among [`MAX_RECORDING`]:
    /// the two cores and NATS serve the queueing of jobs before the
    /// records.
    async fn win(
        &self,
        key: &str,
        at_ms: i64,
        ticks: Vec<Tick>,
        mut claim: Claim,
        mut revision: u64,
        permit: &mut Option<InBurst>,
    ) -> Result<(), CronError> {
        if let Some(parse) = &self.parse {
            let mut opened = false;
            for tick in &ticks {
                let name = &tick.schedule.name;
                if tick.fire && is_parse(name) && !claim.status_ids.contains_key(name) {
                    let job = &tick.schedule.job;
                    let status = parse.open_status(&job.name, &job.payload).await?;
                    claim.status_ids.insert(name.clone(), status);
                    opened = true;
                }
            }
            if opened {
                match self.slots.update(key, encode(&claim)?, revision).await {
                    Ok(next) => revision = next,
                    // Taken over meanwhile: the new holder settles it.
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        return Ok(());
                    }
                    Err(err) => return Err(NatsError::from(err).into()),
                }
            }
        }
        let firing: Vec<&Tick> = ticks.iter().filter(|tick| tick.fire).collect();
        let specs = firing
            .iter()
            .map(|tick| {
                let schedule = &tick.schedule;
                let mut spec = schedule.job.clone();
                spec.idempotency_key = Some(slot_id(&schedule.name, at_ms));
                let status = claim.status_ids.get(&schedule.name).cloned();
                (queue_of(schedule).to_owned(), spec, status)
            })
            .collect();
        let submitted = Box::pin(self.book.jobs().submit_many(specs)).await;
        let mut outcomes: HashMap<&str, Result<String, JobsError>> = HashMap::new();
        for (tick, submitted) in firing.iter().zip(submitted) {
            let outcome = match submitted {
                Ok(submitted) => Ok(submitted.job.id),
                Err(JobsError::Nats(err)) => return Err(CronError::Nats(err)),
                Err(err) if err.is_internal() => return Err(CronError::Jobs(err)),
                // Refused for good (its queue is gone, say): recorded, not
                // retried forever.
                Err(err) => Err(err),
            };
            outcomes.insert(tick.schedule.name.as_str(), outcome);
        }
        let at = rfc3339(now_ms());
        let runs: Vec<CronRun> = ticks
            .iter()
            .map(|tick| {
                let name = &tick.schedule.name;
                let (outcome, job_id, error) = match outcomes.remove(name.as_str()) {
                    None => (RunOutcome::Skipped, None, None),
                    Some(Ok(id)) => (RunOutcome::Fired, Some(id), None),
                    Some(Err(error)) => (RunOutcome::Failed, None, Some(error.to_string())),
                };
                CronRun {
                    schedule: name.clone(),
                    slot: slot_id(name, at_ms),
                    scheduled_at: rfc3339(at_ms),
                    outcome,
                    process: self.process.clone(),
                    job_id,
                    error,
                    at: at.clone(),
                }
            })
            .collect();
        permit.take();
        // A group stuck retrying must not hold every record back.
        let _ = tokio::time::timeout(BURST_WAIT, self.burst.drained()).await;
        // Never closed: the permit is always there to wait for.
        let _recording = self.recording.acquire().await;
        self.publish_runs(&runs).await?;
        if let Some(parse) = &self.parse {
            for run in &runs {
                if is_parse(&run.schedule)
                    && run.outcome == RunOutcome::Fired
                    && let Err(err) = parse.ran(&run.schedule, at_ms).await
                {
                    tracing::warn!(%err, schedule = %run.schedule, "cannot record lastRun on the _JobSchedule");
                }
            }
        }
        claim.done = true;
        match self.slots.update(key, encode(&claim)?, revision).await {
            Ok(_) => {}
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(err) => return Err(NatsError::from(err).into()),
        }
        for run in &runs {
            self.metrics.count(run.outcome);
        }
        Ok(())
    }

    /// Publishes runs with a window of acks awaited together.
    async fn publish_runs(&self, runs: &[CronRun]) -> Result<(), CronError> {
        let jetstream = self.book.jetstream();
        let subjects = &self.book.settings().subjects;
        for window in runs.chunks(PUBLISH_WINDOW) {
            let mut acks = Vec::with_capacity(window.len());
            for run in window {
                let body = serde_json::to_vec(run).map_err(|source| CronError::Encode {
                    what: "a run",
                    source,
                })?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(async_nats::header::NATS_MESSAGE_ID, run.slot.as_str());
                let ack = jetstream
                    .publish_with_headers(
                        subjects.cron_runs(&run.schedule),
                        headers,
                        Bytes::from(body),
                    )
                    .await
                    .map_err(NatsError::from)?;
                acks.push(ack);
            }
            for ack in acks {
                ack.await.map_err(NatsError::from)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_always_has_the_same_shard() {
        // Fixed values: processes of different builds must agree.
        assert_eq!(shard(""), 0xcbf2_9ce4_8422_2325 % SHARDS);
        assert_eq!(shard("nightly"), shard("nightly"));
        let spread: std::collections::HashSet<u64> =
            (0..1000).map(|i| shard(&format!("s{i}"))).collect();
        assert_eq!(spread.len(), SHARDS as usize, "1000 names fill every shard");
    }
}
