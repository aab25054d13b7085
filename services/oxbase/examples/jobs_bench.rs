//! Jobs benchmarks against a running `oxbase jobs` and its nats-server;
//! `ops/bench/jobs.sh` sets them up and runs each mode.
//!
//! - `throughput`: a no-op NATS worker in this process answers every run
//!   of `noop` on the `default` queue at once. `--count` jobs are submitted
//!   over NATS in arrays of `--batch` (1000), `--in-flight` requests at a
//!   time, and the clock runs from the first submit until the jobs
//!   process's `oxbase_jobs_succeeded_total` (polled on its /metrics) has
//!   grown by `--count`: submitted, run by the worker and recorded as
//!   succeeded, end to end. The submit rate (until the last submission is
//!   answered) is printed on its own.
//! - `latency`: with the worker running, one job per NATS request at
//!   `--rate` per second (open loop) until `--count`; prints how long a
//!   submission takes to be answered, and how long from the submit to the
//!   worker's call (the job carries its send time).
//! - `delayed`: submits `--count` jobs due in an hour (`delayMs`), in
//!   batches, so they all wait; then prints the resident memory of
//!   nats-server and of `oxbase jobs` (`--nats-pid`, `--jobs-pid`) before
//!   and after, and the JetStream storage the jobs take.
//! - `kv-puts`: no jobs, a yardstick for nats-server alone: `--count`
//!   writes of a 500-byte record to a scratch key-value bucket (file
//!   storage), each a compare-and-set awaited before the next, as the jobs
//!   service writes its records, from `--in-flight` writers at once. A job
//!   takes three such writes (submitted, active, finished).
//!
//! With `--nats-pid` and `--jobs-pid`, each mode also prints the CPU time
//! both processes (and this client) spent during it; with `--nats-monitor`,
//! what nats-server handled per job: messages, bytes, and subscriptions
//! made (every pull request of a dispatcher makes one for its inbox).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use oxbase_proto::jobs::JobRun;
use serde_json::{Value, json};
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Throughput,
    Latency,
    Delayed,
    KvPuts,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    #[arg(long)]
    nats: String,
    /// The jobs process's origin (its /metrics), such as
    /// http://127.0.0.1:18600.
    #[arg(long)]
    jobs: String,
    /// The NATS subject prefix (events.prefix).
    #[arg(long, default_value = "oxbase")]
    prefix: String,
    #[arg(long, default_value = "default")]
    queue: String,
    #[arg(long, default_value = "noop")]
    name: String,
    #[arg(long, default_value_t = 100_000)]
    count: usize,
    /// Jobs per submission (throughput and delayed).
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Submissions awaiting their answer at once (throughput and delayed).
    #[arg(long, default_value_t = 4)]
    in_flight: usize,
    /// Submissions per second (latency).
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// Submissions before the measured ones (latency).
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// How far ahead delayed jobs are due, in ms (delayed).
    #[arg(long, default_value_t = 3_600_000)]
    delay_ms: i64,
    #[arg(long)]
    nats_pid: Option<u32>,
    #[arg(long)]
    jobs_pid: Option<u32>,
    /// nats-server's storage directory, to measure on disk (delayed).
    #[arg(long)]
    nats_dir: Option<PathBuf>,
    /// nats-server's monitoring origin (`-m`), such as
    /// http://127.0.0.1:8222, to count the messages and JetStream API
    /// requests a job takes.
    #[arg(long)]
    nats_monitor: Option<String>,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

fn summary(name: &str, mut micros: Vec<u64>) {
    micros.sort_unstable();
    println!(
        "{name:<34} n={:<6} p50 {:7.2} ms   p90 {:7.2} ms   p99 {:7.2} ms   max {:7.2} ms",
        micros.len(),
        percentile(&micros, 0.50),
        percentile(&micros, 0.90),
        percentile(&micros, 0.99),
        percentile(&micros, 1.0),
    );
}

/// What the no-op worker has seen.
#[derive(Default)]
struct Worker {
    runs: AtomicUsize,
    /// Runs that were not a readable `JobRun`.
    unreadable: AtomicUsize,
    /// Submit-to-call latencies in microseconds, of jobs whose payload
    /// carries `sentAt`.
    latencies: Mutex<Vec<u64>>,
}

/// Answers every run of `<prefix>.jobs.run.<queue>.<name>` with
/// `{"success": null}`, in a queue group, as a Rust worker would.
async fn start_worker(client: &async_nats::Client, args: &Args) -> Result<Arc<Worker>> {
    let subject = format!("{}.jobs.run.{}.{}", args.prefix, args.queue, args.name);
    let mut runs = client
        .queue_subscribe(subject, "bench-workers".into())
        .await?;
    client.flush().await?;
    let worker = Arc::new(Worker::default());
    let seen = Arc::clone(&worker);
    let replier = client.clone();
    tokio::spawn(async move {
        let answer = bytes_of(&json!({ "success": null }));
        while let Some(message) = runs.next().await {
            let arrived = now_micros();
            match serde_json::from_slice::<JobRun>(&message.payload) {
                Ok(run) => {
                    if let Some(sent) = run.payload["sentAt"].as_u64() {
                        seen.latencies
                            .lock()
                            .await
                            .push(arrived.saturating_sub(sent));
                    }
                }
                Err(_) => {
                    seen.unreadable.fetch_add(1, Ordering::Relaxed);
                }
            }
            seen.runs.fetch_add(1, Ordering::Relaxed);
            if let Some(reply) = message.reply {
                let _ = replier.publish(reply, answer.clone()).await;
            }
        }
    });
    Ok(worker)
}

fn bytes_of(value: &Value) -> axum::body::Bytes {
    axum::body::Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

/// The jobs process's counters.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    started: u64,
    succeeded: u64,
    retried: u64,
    dead: u64,
    running: i64,
}

async fn counters(http: &reqwest::Client, jobs: &str) -> Result<Counters> {
    let text = http
        .get(format!("{jobs}/metrics"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let mut out = Counters::default();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let Some((name, value)) = line.split_once(' ') else {
            continue;
        };
        let value = value.trim();
        match name {
            "oxbase_jobs_started_total" => out.started = value.parse()?,
            "oxbase_jobs_succeeded_total" => out.succeeded = value.parse()?,
            "oxbase_jobs_retried_total" => out.retried = value.parse()?,
            "oxbase_jobs_dead_total" => out.dead = value.parse()?,
            "oxbase_jobs_running" => out.running = value.parse()?,
            _ => {}
        }
    }
    Ok(out)
}

/// Waits until `succeeded_total` reaches `target`; fails when it stops
/// moving for `stall`.
async fn wait_succeeded(
    http: &reqwest::Client,
    jobs: &str,
    target: u64,
    stall: Duration,
) -> Result<Counters> {
    let mut last = counters(http, jobs).await?;
    let mut moved = Instant::now();
    loop {
        let now = counters(http, jobs).await?;
        if now.succeeded >= target {
            return Ok(now);
        }
        if now.succeeded != last.succeeded {
            moved = Instant::now();
        } else if moved.elapsed() > stall {
            bail!(
                "succeeded_total stuck at {} of {target} for {} s: {now:?}",
                now.succeeded,
                stall.as_secs()
            );
        }
        last = now;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A process's CPU time (user + system) so far, from /proc.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command (which may hold spaces) start at `state`.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    // USER_HZ is 100 on Linux.
    Some((utime + stime) / 100.0)
}

fn own_cpu_seconds() -> Option<f64> {
    cpu_seconds(std::process::id())
}

/// VmRSS of a process in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or("?".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0))
}

fn disk_usage(path: &Path) -> u64 {
    let Ok(meta) = std::fs::symlink_metadata(path) else {
        return 0;
    };
    if !meta.is_dir() {
        return std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    }
    std::fs::read_dir(path)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| disk_usage(&e.path()))
                .sum()
        })
        .unwrap_or(0)
}

/// nats-server's own counts, from its monitoring endpoint.
#[derive(Debug, Clone, Copy, Default)]
struct Traffic {
    in_msgs: u64,
    out_msgs: u64,
    in_bytes: u64,
    out_bytes: u64,
    api: u64,
    /// Subscriptions made (each pull request makes one, for its inbox).
    subscribes: u64,
}

async fn traffic(http: &reqwest::Client, monitor: Option<&str>) -> Option<Traffic> {
    let monitor = monitor?;
    let get = |path: &'static str| async move {
        http.get(format!("{monitor}/{path}"))
            .send()
            .await
            .ok()?
            .json::<Value>()
            .await
            .ok()
    };
    let varz = get("varz").await?;
    let jsz = get("jsz").await?;
    let subsz = get("subsz").await?;
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    Some(Traffic {
        in_msgs: n(&varz["in_msgs"]),
        out_msgs: n(&varz["out_msgs"]),
        in_bytes: n(&varz["in_bytes"]),
        out_bytes: n(&varz["out_bytes"]),
        api: n(&jsz["api"]["total"]),
        subscribes: n(&subsz["num_inserts"]),
    })
}

/// What nats-server handled per job between two readings.
fn print_traffic(before: Option<Traffic>, after: Option<Traffic>, jobs: usize, unit: &str) {
    let (Some(a), Some(b)) = (before, after) else {
        return;
    };
    let per = |x: u64, y: u64| (y - x) as f64 / jobs.max(1) as f64;
    println!(
        "  nats-server per {unit}: {:.1} messages in ({:.0} bytes), {:.1} out ({:.0} bytes), {:.1} subscriptions made, {:.2} JetStream API (management) requests",
        per(a.in_msgs, b.in_msgs),
        per(a.in_bytes, b.in_bytes),
        per(a.out_msgs, b.out_msgs),
        per(a.out_bytes, b.out_bytes),
        per(a.subscribes, b.subscribes),
        per(a.api, b.api),
    );
}

/// CPU time of the processes involved, to print what a run cost.
struct Cpu {
    at: Vec<(&'static str, Option<u32>, Option<f64>)>,
}

impl Cpu {
    fn start(args: &Args) -> Self {
        Self {
            at: vec![
                (
                    "nats-server",
                    args.nats_pid,
                    args.nats_pid.and_then(cpu_seconds),
                ),
                (
                    "oxbase jobs",
                    args.jobs_pid,
                    args.jobs_pid.and_then(cpu_seconds),
                ),
                ("this client", Some(std::process::id()), own_cpu_seconds()),
            ],
        }
    }

    fn print(&self, wall: Duration, per: Option<(usize, &str)>) {
        let mut parts = Vec::new();
        for (name, pid, before) in &self.at {
            let (Some(pid), Some(before)) = (pid, before) else {
                continue;
            };
            let Some(after) = cpu_seconds(*pid) else {
                continue;
            };
            let used = after - before;
            let mut part = format!(
                "{name} {used:.2} s ({:.0}% of a core)",
                100.0 * used / wall.as_secs_f64()
            );
            if let Some((n, unit)) = per.filter(|(n, _)| *n > 0) {
                part.push_str(&format!(", {:.0} µs/{unit}", used * 1e6 / n as f64));
            }
            parts.push(part);
        }
        if !parts.is_empty() {
            println!("  cpu: {}", parts.join("; "));
        }
    }
}

/// Submits `count` jobs, each made by `spec`, in arrays of `batch` with
/// An array submission's answer, read only as far as refusals.
#[derive(serde::Deserialize)]
struct BatchAnswer {
    success: Vec<ItemAnswer>,
}

#[derive(serde::Deserialize)]
struct ItemAnswer {
    #[serde(default)]
    error: Option<Value>,
}

/// `in_flight` awaiting their answer; returns the jobs refused.
async fn submit_all(
    client: &async_nats::Client,
    args: &Args,
    count: usize,
    spec: Value,
) -> Result<usize> {
    let subject = format!("{}.jobs.submit", args.prefix);
    let full = bytes_of(&Value::Array(vec![spec.clone(); args.batch]));
    let sizes: Vec<usize> = (0..count.div_ceil(args.batch))
        .map(|i| (count - i * args.batch).min(args.batch))
        .collect();
    let mut answers = futures_util::stream::iter(sizes)
        .map(|n| {
            let client = client.clone();
            let subject = subject.clone();
            let body = if n == args.batch {
                full.clone()
            } else {
                bytes_of(&Value::Array(vec![spec.clone(); n]))
            };
            async move {
                let reply = client
                    .request(subject, body)
                    .await
                    .context("a submission was not answered in time")?;
                // Only whether each job was refused: the answers carry
                // whole records, and building them as values would cost
                // this client (which shares the machine) more than needed.
                let Ok(answer) = serde_json::from_slice::<BatchAnswer>(&reply.payload) else {
                    bail!(
                        "a submission failed: {}",
                        String::from_utf8_lossy(&reply.payload)
                    );
                };
                if answer.success.len() != n {
                    bail!("{n} jobs submitted, {} answers", answer.success.len());
                }
                let refused: Vec<&Value> = answer
                    .success
                    .iter()
                    .filter_map(|i| i.error.as_ref())
                    .collect();
                if let Some(first) = refused.first() {
                    eprintln!("{} of {n} jobs refused, such as {first}", refused.len());
                }
                Ok(refused.len())
            }
        })
        .buffer_unordered(args.in_flight.max(1));
    let mut refused = 0;
    while let Some(answer) = answers.next().await {
        refused += answer?;
    }
    Ok(refused)
}

/// One job through the whole path, so the consumers, the worker and the
/// connections are up before the clock starts.
async fn warm_up(client: &async_nats::Client, args: &Args, http: &reqwest::Client) -> Result<()> {
    let before = counters(http, &args.jobs).await?;
    let spec = json!({ "name": args.name, "queue": args.queue });
    let reply = client
        .request(format!("{}.jobs.submit", args.prefix), bytes_of(&spec))
        .await?;
    let answer: Value = serde_json::from_slice(&reply.payload)?;
    if answer.get("success").is_none() {
        bail!("the warm-up job was refused: {answer}");
    }
    wait_succeeded(
        http,
        &args.jobs,
        before.succeeded + 1,
        Duration::from_secs(30),
    )
    .await
    .context("the warm-up job did not succeed")?;
    Ok(())
}

async fn throughput(args: &Args, client: &async_nats::Client) -> Result<()> {
    let http = reqwest::Client::new();
    let worker = start_worker(client, args).await?;
    warm_up(client, args, &http).await?;
    let before = counters(&http, &args.jobs).await?;
    let runs_before = worker.runs.load(Ordering::Relaxed);
    let n = args.count;
    let monitor = args.nats_monitor.as_deref();
    let traffic_before = traffic(&http, monitor).await;
    let cpu = Cpu::start(args);

    let started = Instant::now();
    // When the worker reached each tenth of the jobs, to see whether the
    // rate holds as the queue's bucket fills.
    let tenths = {
        let worker = Arc::clone(&worker);
        tokio::spawn(async move {
            let mut reached = Vec::with_capacity(10);
            while reached.len() < 10 {
                let runs = worker.runs.load(Ordering::Relaxed) - runs_before;
                while reached.len() < 10 && runs >= n * (reached.len() + 1) / 10 {
                    reached.push(started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            reached
        })
    };
    let refused = submit_all(
        client,
        args,
        n,
        json!({ "name": args.name, "queue": args.queue }),
    )
    .await?;
    let submitted = started.elapsed();
    let at_submit = counters(&http, &args.jobs).await?;
    let target = before.succeeded + (n - refused) as u64;
    let after = wait_succeeded(&http, &args.jobs, target, Duration::from_secs(60)).await?;
    let total = started.elapsed();

    println!(
        "no-op jobs end to end: {n} in {:.2} s from the first submit to the last success ({:.0} jobs/s)",
        total.as_secs_f64(),
        n as f64 / total.as_secs_f64()
    );
    println!(
        "  submit: {n} in {:.2} s ({:.0} jobs/s) in batches of {}, {} in flight; {} had succeeded by then; {refused} refused",
        submitted.as_secs_f64(),
        n as f64 / submitted.as_secs_f64(),
        args.batch,
        args.in_flight,
        at_submit.succeeded - before.succeeded,
    );
    let drained = total.saturating_sub(submitted);
    if drained > Duration::from_millis(50) {
        let left = target.saturating_sub(at_submit.succeeded);
        println!(
            "  after the last submit: {left} left, run in {:.2} s ({:.0} jobs/s)",
            drained.as_secs_f64(),
            left as f64 / drained.as_secs_f64()
        );
    }
    println!(
        "  worker calls {}, unreadable {}; jobs process: started {}, retried {}, dead {}",
        worker.runs.load(Ordering::Relaxed) - runs_before,
        worker.unreadable.load(Ordering::Relaxed),
        after.started - before.started,
        after.retried - before.retried,
        after.dead - before.dead,
    );
    if let Ok(Ok(reached)) = tokio::time::timeout(Duration::from_secs(1), tenths).await {
        let mut last = Duration::ZERO;
        let rates: Vec<String> = reached
            .iter()
            .map(|at| {
                let rate = (n / 10) as f64 / (*at - last).as_secs_f64().max(1e-3);
                last = *at;
                format!("{rate:.0}")
            })
            .collect();
        println!("  worker calls/s by tenth of the jobs: {}", rates.join(" "));
    }
    cpu.print(total, Some((n, "job")));
    print_traffic(traffic_before, traffic(&http, monitor).await, n, "job");
    Ok(())
}

async fn latency(args: &Args, client: &async_nats::Client) -> Result<()> {
    let http = reqwest::Client::new();
    let worker = start_worker(client, args).await?;
    warm_up(client, args, &http).await?;
    let runs_before = worker.runs.load(Ordering::Relaxed);
    let before = counters(&http, &args.jobs).await?;
    let subject = format!("{}.jobs.submit", args.prefix);
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate.max(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let total = args.warmup + args.count;
    let mut tasks = Vec::with_capacity(total);
    let monitor = args.nats_monitor.as_deref();
    let traffic_before = traffic(&http, monitor).await;
    let cpu = Cpu::start(args);
    let started = Instant::now();
    for i in 0..total {
        ticks.tick().await;
        let client = client.clone();
        let subject = subject.clone();
        // Warm-up jobs carry no send time, so the worker does not count
        // them.
        let spec = if i < args.warmup {
            json!({ "name": args.name, "queue": args.queue })
        } else {
            json!({ "name": args.name, "queue": args.queue, "payload": { "sentAt": now_micros() } })
        };
        let measured = i >= args.warmup;
        tasks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let reply = client.request(subject, bytes_of(&spec)).await?;
            let took = sent.elapsed().as_micros() as u64;
            let answer: Value = serde_json::from_slice(&reply.payload)?;
            if answer.get("success").is_none() {
                bail!("a submission was refused: {answer}");
            }
            anyhow::Ok(measured.then_some(took))
        }));
    }
    let sending = started.elapsed();
    let mut submit = Vec::with_capacity(args.count);
    for task in tasks {
        if let Some(took) = task.await?? {
            submit.push(took);
        }
    }
    let target = before.succeeded + total as u64;
    wait_succeeded(&http, &args.jobs, target, Duration::from_secs(60)).await?;
    let elapsed = started.elapsed();
    let runs = worker.runs.load(Ordering::Relaxed) - runs_before;
    let called = std::mem::take(&mut *worker.latencies.lock().await);
    println!(
        "one job per NATS request at {} submits/s ({} sent in {:.2} s; {} measured after {} of warm-up):",
        args.rate,
        total,
        sending.as_secs_f64(),
        args.count,
        args.warmup,
    );
    summary("submit -> answered", submit);
    summary("submit -> worker called", called);
    println!("  worker calls {runs}");
    cpu.print(elapsed, Some((total, "job")));
    print_traffic(traffic_before, traffic(&http, monitor).await, total, "job");
    Ok(())
}

async fn delayed(args: &Args, client: &async_nats::Client) -> Result<()> {
    let http = reqwest::Client::new();
    let jetstream = async_nats::jetstream::new(client.clone());
    // The stream and the bucket exist once the jobs process is ready.
    let rss_before = (
        args.nats_pid.and_then(rss_kib),
        args.jobs_pid.and_then(rss_kib),
    );
    let storage_before = jetstream.query_account().await.map(|a| a.storage).ok();
    let n = args.count;
    let monitor = args.nats_monitor.as_deref();
    let traffic_before = traffic(&http, monitor).await;
    let cpu = Cpu::start(args);
    let started = Instant::now();
    let refused = submit_all(
        client,
        args,
        n,
        json!({ "name": args.name, "queue": args.queue, "delayMs": args.delay_ms }),
    )
    .await?;
    let submitted = started.elapsed();
    println!(
        "delayed jobs (due in {} s): {n} submitted in {:.2} s ({:.0} jobs/s) in batches of {}, {} in flight; {refused} refused",
        args.delay_ms / 1000,
        submitted.as_secs_f64(),
        n as f64 / submitted.as_secs_f64(),
        args.batch,
        args.in_flight,
    );
    cpu.print(submitted, Some((n, "job")));
    print_traffic(traffic_before, traffic(&http, monitor).await, n, "job");
    // Let both processes settle (pending acks, freed buffers) before
    // reading their memory.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let after = counters(&http, &args.jobs).await?;
    if after.started > 0 {
        println!("  warning: {} jobs started already", after.started);
    }
    println!(
        "  resident memory (VmRSS), before -> after: nats-server {} -> {}; oxbase jobs {} -> {}",
        mib(rss_before.0),
        mib(args.nats_pid.and_then(rss_kib)),
        mib(rss_before.1),
        mib(args.jobs_pid.and_then(rss_kib)),
    );
    if let Ok(account) = jetstream.query_account().await {
        println!(
            "  JetStream file storage: {:.1} MiB (was {:.1} MiB), {} streams, {} consumers",
            account.storage as f64 / (1024.0 * 1024.0),
            storage_before.unwrap_or(0) as f64 / (1024.0 * 1024.0),
            account.streams,
            account.consumers,
        );
    }
    let mut streams = jetstream.streams();
    while let Some(info) = streams.next().await {
        let info = info?;
        println!(
            "    stream {:<20} {:>9} messages {:>8.1} MiB, {} subjects",
            info.config.name,
            info.state.messages,
            info.state.bytes as f64 / (1024.0 * 1024.0),
            info.state.subjects_count,
        );
    }
    if let Some(dir) = &args.nats_dir {
        println!(
            "  nats-server storage directory on disk: {:.1} MiB",
            disk_usage(dir) as f64 / (1024.0 * 1024.0)
        );
    }
    Ok(())
}

async fn kv_puts(args: &Args, client: &async_nats::Client) -> Result<()> {
    use async_nats::jetstream::{self, kv};
    let http = reqwest::Client::new();
    let jetstream = jetstream::new(client.clone());
    let bucket = "BENCH_KV_PUTS";
    let _ = jetstream.delete_key_value(bucket).await;
    let store = jetstream
        .create_key_value(kv::Config {
            bucket: bucket.into(),
            history: 1,
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    let record = axum::body::Bytes::from(vec![b'x'; 500]);
    let writers = args.in_flight.max(1);
    let n = args.count;
    let monitor = args.nats_monitor.as_deref();
    let traffic_before = traffic(&http, monitor).await;
    let cpu = Cpu::start(args);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(writers);
    for w in 0..writers {
        let store = store.clone();
        let record = record.clone();
        let mine = n / writers + usize::from(w < n % writers);
        tasks.push(tokio::spawn(async move {
            for i in 0..mine {
                // A create, then an update at its revision: the two kinds
                // of compare-and-set the jobs service makes.
                let key = format!("job.{w}-{}", i / 2);
                if i % 2 == 0 {
                    store.create(&key, record.clone()).await?;
                } else {
                    let revision = store.entry(&key).await?.map_or(0, |e| e.revision);
                    store.update(&key, record.clone(), revision).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let took = started.elapsed();
    println!(
        "key-value compare-and-set writes (half creates, half read + update): {n} in {:.2} s ({:.0}/s) from {writers} writers",
        took.as_secs_f64(),
        n as f64 / took.as_secs_f64()
    );
    cpu.print(took, Some((n, "write")));
    print_traffic(traffic_before, traffic(&http, monitor).await, n, "write");
    let _ = jetstream.delete_key_value(bucket).await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    if args.batch == 0 || args.batch > 1000 {
        bail!("--batch is 1 to 1000 (the jobs service's limit)");
    }
    let client = async_nats::ConnectOptions::new()
        // A batch of 1000 may take a while on a loaded machine.
        .request_timeout(Some(Duration::from_secs(120)))
        .connect(&args.nats)
        .await
        .with_context(|| format!("cannot reach NATS at {}", args.nats))?;
    match args.mode {
        Mode::Throughput => throughput(&args, &client).await,
        Mode::Latency => latency(&args, &client).await,
        Mode::Delayed => delayed(&args, &client).await,
        Mode::KvPuts => kv_puts(&args, &client).await,
    }
}
