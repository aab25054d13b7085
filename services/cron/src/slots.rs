//! Settling one tick, exactly once across every cron process.
//!
//! The slot's key in `<PREFIX>_CRON_SLOTS` is created by the first process
//! to reach it; that process submits the job (the slot id is the job's
//! idempotency key), publishes the run, and marks the slot done. A process
//! that loses the create looks again after the lease: a slot still not
//! done then, and not touched for a lease, is taken over with a
//! compare-and-set and settled again. Repeating a settle is harmless: the
//! job's idempotency key returns the job already submitted, and the run's
//! `Nats-Msg-Id` keeps its record single.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use bytes::Bytes;
use oxbase_jobs::JobsError;
use oxbase_proto::cron::{CronRun, CronSchedule, RunOutcome, slot_id};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::book::{ScheduleBook, queue_of};
use crate::service::{Metrics, ParseSchedules, is_parse};
use crate::{CronError, nats, now_ms, rfc3339};

/// One tick of one schedule, and whether it should fire (a misfire its
/// policy skips should not).
#[derive(Debug, Clone)]
pub(crate) struct Tick {
    pub schedule: Arc<CronSchedule>,
    pub at_ms: i64,
    pub fire: bool,
}

/// A slot's key: who holds it, since when, and what it decided.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claim {
    process: String,
    at: i64,
    fire: bool,
    #[serde(default)]
    done: bool,
    /// A Parse schedule's `_JobStatus`, kept so that a takeover reuses it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    status_id: Option<String>,
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

/// The longest a tick's bookkeeping waits for the burst to be queued.
const BURST_WAIT: Duration = Duration::from_secs(2);

/// Counts the ticks between their first claim attempt and their job
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

/// A tick's place in the burst, and in the ticks in flight; let go
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

/// Ticks whose record and done mark are being written at once.
pub(crate) const MAX_RECORDING: usize = 64;

fn slot_key(tick: &Tick) -> String {
    format!("t.{}.{}", tick.schedule.name, tick.at_ms)
}

fn encode(claim: &Claim) -> Result<Bytes, CronError> {
    serde_json::to_vec(claim)
        .map(Bytes::from)
        .map_err(|e| CronError::Nats(e.to_string()))
}

impl Settler {
    /// Settles `tick`, or leaves it to the process that claimed it; retries
    /// through NATS failures until `stop` resolves. `permit` is held until
    /// the first claim attempt is answered, not while a lost claim is
    /// watched.
    pub async fn settle(
        &self,
        tick: Tick,
        permit: InBurst,
        stop: impl std::future::Future<Output = ()>,
    ) {
        let work = async {
            let mut backoff = Duration::from_millis(100);
            let mut permit = Some(permit);
            loop {
                match self.settle_once(&tick, &mut permit).await {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(%err, schedule = %tick.schedule.name, tick = tick.at_ms, "cannot settle a tick yet");
                    }
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        };
        tokio::select! {
            () = work => {}
            () = stop => {}
        }
    }

    async fn settle_once(
        &self,
        tick: &Tick,
        permit: &mut Option<InBurst>,
    ) -> Result<(), CronError> {
        let key = slot_key(tick);
        let claim = Claim {
            process: self.process.clone(),
            at: now_ms(),
            fire: tick.fire,
            done: false,
            status_id: None,
        };
        let created = Box::pin(self.slots.create(&key, encode(&claim)?)).await;
        match created {
            // Boxed, as are the other large steps: a tick waiting out a lease
            // holds only its own small state, not room for theirs.
            Ok(revision) => return Box::pin(self.win(tick, &key, claim, revision, permit)).await,
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => {
                self.metrics
                    .lost
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Err(err) => return Err(nats(err)),
        }
        permit.take();
        let lease = self.book.settings().lease;
        loop {
            tokio::time::sleep(lease).await;
            let Some(entry) = self.slots.entry(&key).await.map_err(nats)? else {
                // Expired: settled long ago.
                return Ok(());
            };
            if entry.operation != kv::Operation::Put {
                return Ok(());
            }
            let held: Claim = serde_json::from_slice(&entry.value)
                .map_err(|e| CronError::Nats(format!("slot {key} is unreadable: {e}")))?;
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
            match self
                .slots
                .update(&key, encode(&taken)?, entry.revision)
                .await
            {
                Ok(revision) => {
                    tracing::info!(slot = %key, from = %taken.process, "took over a tick whose process went silent");
                    self.metrics
                        .taken_over
                        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let tick = Tick {
                        fire: taken.fire,
                        ..tick.clone()
                    };
                    return Box::pin(self.win(&tick, &key, taken, revision, &mut None)).await;
                }
                Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => continue,
                Err(err) => return Err(nats(err)),
            }
        }
    }

    /// Settles a tick this process holds at `revision`. The job goes first;
    /// `permit` is let go once it is queued, and the bookkeeping after it
    /// (the run's record, the slot marked done) waits until the burst's
    /// jobs are queued, then for a place among [`MAX_RECORDING`]: the two
    /// cores and NATS serve the queueing of jobs before the records.
    async fn win(
        &self,
        tick: &Tick,
        key: &str,
        mut claim: Claim,
        mut revision: u64,
        permit: &mut Option<InBurst>,
    ) -> Result<(), CronError> {
        let schedule = &tick.schedule;
        let slot = slot_id(&schedule.name, tick.at_ms);
        let parse = self.parse.as_ref().filter(|_| is_parse(&schedule.name));
        let mut run = CronRun {
            schedule: schedule.name.clone(),
            slot: slot.clone(),
            scheduled_at: rfc3339(tick.at_ms),
            outcome: RunOutcome::Skipped,
            process: self.process.clone(),
            job_id: None,
            error: None,
            at: String::new(),
        };
        if claim.fire {
            if let (Some(parse), None) = (parse, &claim.status_id) {
                let status = parse
                    .open_status(&schedule.job.name, &schedule.job.payload)
                    .await
                    .map_err(CronError::Nats)?;
                claim.status_id = Some(status);
                match self.slots.update(key, encode(&claim)?, revision).await {
                    Ok(next) => revision = next,
                    // Taken over meanwhile: the new holder settles it.
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {
                        return Ok(());
                    }
                    Err(err) => return Err(nats(err)),
                }
            }
            let mut spec = schedule.job.clone();
            spec.idempotency_key = Some(slot.clone());
            let jobs = self.book.jobs();
            match Box::pin(jobs.submit(queue_of(schedule), spec, claim.status_id.clone())).await {
                Ok(submitted) => {
                    run.outcome = RunOutcome::Fired;
                    run.job_id = Some(submitted.job.id);
                }
                Err(JobsError::Nats(detail)) => return Err(CronError::Nats(detail)),
                // Refused for good (its queue is gone, say): recorded, not
                // retried forever.
                Err(err) => {
                    run.outcome = RunOutcome::Failed;
                    run.error = Some(err.to_string());
                }
            }
        }
        run.at = rfc3339(now_ms());
        permit.take();
        // A tick stuck retrying must not hold every record back.
        let _ = tokio::time::timeout(BURST_WAIT, self.burst.drained()).await;
        let _recording = self
            .recording
            .acquire()
            .await
            .map_err(|e| CronError::Nats(e.to_string()))?;
        self.publish_run(&run).await?;
        if let Some(parse) = parse
            && run.outcome == RunOutcome::Fired
            && let Err(err) = parse.ran(&schedule.name, tick.at_ms).await
        {
            tracing::warn!(%err, schedule = %schedule.name, "cannot record lastRun on the _JobSchedule");
        }
        claim.done = true;
        match self.slots.update(key, encode(&claim)?, revision).await {
            Ok(_) => {}
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => {}
            Err(err) => return Err(nats(err)),
        }
        self.metrics.count(run.outcome);
        Ok(())
    }

    async fn publish_run(&self, run: &CronRun) -> Result<(), CronError> {
        let body = serde_json::to_vec(run).map_err(|e| CronError::Nats(e.to_string()))?;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(async_nats::header::NATS_MESSAGE_ID, run.slot.as_str());
        let jetstream: &jetstream::Context = self.book.jetstream();
        jetstream
            .publish_with_headers(
                self.book.settings().subjects.cron_runs(&run.schedule),
                headers,
                Bytes::from(body),
            )
            .await
            .map_err(nats)?
            .await
            .map_err(nats)?;
        Ok(())
    }
}
