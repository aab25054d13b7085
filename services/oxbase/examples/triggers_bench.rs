//! Trigger benchmarks against a running `oxbase api` (events on) and its
//! nats-server; `ops/bench/triggers.sh` sets them up and runs each mode.
//!
//! - `throughput`: afterSave deliveries per second to a local webhook. It
//!   registers an afterSave webhook served by this process, runs `oxbase
//!   triggers` once so its consumers exist, stops it, writes `--count`
//!   objects (in `/batch` requests) while no triggers process runs, then
//!   starts `oxbase triggers` again and times how long the webhook takes to
//!   receive them all: the delivery pipeline alone, not the API.
//! - `latency`: with `oxbase triggers` running, creates at `--rate` per
//!   second (open loop) for `--seconds`; each object carries its send time,
//!   and the webhook measures send-to-delivery latency (an upper bound on
//!   event-to-webhook: it also counts the create's own HTTP request).
//! - `before-save`: a NATS handler in this process answers every beforeSave
//!   at once; one connection creates objects one after another, alternating
//!   between a class with that hook and one without, and reports both
//!   latency distributions. The difference is the hook's cost in the API.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tokio::time::MissedTickBehavior;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Mode {
    Throughput,
    Latency,
    BeforeSave,
}

#[derive(Debug, Parser)]
struct Args {
    #[arg(long, value_enum)]
    mode: Mode,
    /// The API's origin, such as http://127.0.0.1:18337.
    #[arg(long)]
    base: String,
    #[arg(long)]
    nats: String,
    #[arg(long, default_value = "bench")]
    app_id: String,
    #[arg(long, default_value = "bench-master")]
    master_key: String,
    /// The oxbase binary, to run `oxbase triggers` (throughput mode).
    #[arg(long)]
    oxbase: Option<String>,
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    #[arg(long, default_value_t = 2)]
    warmup: u64,
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or_default()
}

/// What the webhook has seen.
#[derive(Default)]
struct Received {
    count: AtomicUsize,
    first: Mutex<Option<Instant>>,
    last: Mutex<Option<Instant>>,
    /// Send-to-delivery latencies in microseconds, of objects that carry
    /// `sentAt`.
    latencies: Mutex<Vec<u64>>,
}

/// A minimal HTTP/1.1 keep-alive server that answers every POST with
/// `{"success":true}` and records what arrived.
async fn webhook(received: Arc<Received>) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            let received = Arc::clone(&received);
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut reader = BufReader::new(read);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        match reader.read_line(&mut line).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(value) = lower.strip_prefix("content-length:") {
                            length = value.trim().parse().unwrap_or(0);
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let at = Instant::now();
                    let arrived = now_micros();
                    if let Ok(value) = serde_json::from_slice::<Value>(&body)
                        && let Some(sent) = value["object"]["sentAt"].as_u64()
                    {
                        received
                            .latencies
                            .lock()
                            .await
                            .push(arrived.saturating_sub(sent));
                    }
                    received.first.lock().await.get_or_insert(at);
                    *received.last.lock().await = Some(at);
                    received.count.fetch_add(1, Ordering::Relaxed);
                    let reply = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"success\":true}";
                    if write.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    Ok(port)
}

struct Api {
    http: reqwest::Client,
    base: String,
    app_id: String,
    master_key: String,
}

impl Api {
    async fn post(&self, path: &str, body: Value, master: bool) -> Result<Value> {
        let mut request = self
            .http
            .post(format!("{}/parse/{path}", self.base))
            .header("X-Parse-Application-Id", &self.app_id)
            .json(&body);
        if master {
            request = request.header("X-Parse-Master-Key", &self.master_key);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("POST {path}: {status} {body}");
        }
        Ok(body)
    }

    async fn hook(&self, body: Value) -> Result<()> {
        self.post("hooks/triggers", body, true).await.map(|_| ())
    }
}

fn spawn_triggers(args: &Args) -> Result<Child> {
    let binary = args
        .oxbase
        .as_deref()
        .context("--oxbase is needed to run the triggers service")?;
    Command::new(binary)
        .arg("triggers")
        .env("OXBASE_NATS_URL", &args.nats)
        .env("OXBASE_LOG_LEVEL", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start oxbase triggers")
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let _ = child.wait();
}

async fn wait_for(received: &Received, n: usize, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while received.count.load(Ordering::Relaxed) < n {
        if Instant::now() > deadline {
            bail!(
                "only {} of {n} deliveries arrived",
                received.count.load(Ordering::Relaxed)
            );
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
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

async fn throughput(args: &Args, api: &Api) -> Result<()> {
    let received = Arc::new(Received::default());
    let port = webhook(Arc::clone(&received)).await?;
    api.hook(
        json!({"className": "BenchThroughput", "triggerName": "afterSave",
        "url": format!("http://127.0.0.1:{port}/after")}),
    )
    .await?;
    // One delivery end to end, so the triggers service's consumers exist
    // before the measured events are written.
    let triggers = spawn_triggers(args)?;
    api.post("classes/BenchThroughput", json!({"warmup": true}), false)
        .await?;
    wait_for(&received, 1, Duration::from_secs(30)).await?;
    stop(triggers);

    let batches = args.count.div_ceil(50);
    let mut written = 0;
    for _ in 0..batches {
        let n = (args.count - written).min(50);
        let requests: Vec<Value> = (0..n)
            .map(|i| json!({"method": "POST", "path": "/parse/classes/BenchThroughput", "body": {"i": written + i}}))
            .collect();
        api.post("batch", json!({ "requests": requests }), false)
            .await?;
        written += n;
    }
    // The relay publishes what the writes left; give it a moment.
    tokio::time::sleep(Duration::from_secs(2)).await;
    received.count.store(0, Ordering::Relaxed);
    *received.first.lock().await = None;

    let started = Instant::now();
    let triggers = spawn_triggers(args)?;
    let result = wait_for(&received, args.count, Duration::from_secs(300)).await;
    let total = started.elapsed();
    stop(triggers);
    result?;
    let first = received.first.lock().await.context("nothing arrived")?;
    let last = received.last.lock().await.context("nothing arrived")?;
    let steady = last.duration_since(first);
    println!(
        "afterSave deliveries: {} in {:.2} s from the triggers service's start ({:.0}/s); {:.0}/s from the first delivery to the last",
        args.count,
        total.as_secs_f64(),
        args.count as f64 / total.as_secs_f64(),
        (args.count - 1) as f64 / steady.as_secs_f64(),
    );
    Ok(())
}

async fn latency(args: &Args, api: &Api) -> Result<()> {
    let received = Arc::new(Received::default());
    let port = webhook(Arc::clone(&received)).await?;
    api.hook(
        json!({"className": "BenchLatency", "triggerName": "afterSave",
        "url": format!("http://127.0.0.1:{port}/after")}),
    )
    .await?;
    let api = Arc::new(Api {
        http: api.http.clone(),
        base: api.base.clone(),
        app_id: api.app_id.clone(),
        master_key: api.master_key.clone(),
    });
    let mut ticks = tokio::time::interval(Duration::from_micros(1_000_000 / args.rate));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let total = args.rate * (args.warmup + args.seconds);
    let warm = args.rate * args.warmup;
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        ticks.tick().await;
        let api = Arc::clone(&api);
        tasks.push(tokio::spawn(async move {
            // Warm-up objects carry no send time, so they are not counted.
            let body = if i < warm {
                json!({"i": i})
            } else {
                json!({"i": i, "sentAt": now_micros()})
            };
            api.post("classes/BenchLatency", body, false).await
        }));
    }
    for task in tasks {
        task.await??;
    }
    wait_for(&received, total as usize, Duration::from_secs(60)).await?;
    let latencies = std::mem::take(&mut *received.latencies.lock().await);
    println!(
        "afterSave at {} creates/s for {} s (after {} s of warm-up):",
        args.rate, args.seconds, args.warmup
    );
    summary("create sent -> webhook called", latencies);
    Ok(())
}

async fn before_save(args: &Args, api: &Api) -> Result<()> {
    let nats = async_nats::connect(&args.nats).await?;
    let mut requests = nats
        .queue_subscribe("oxbase.triggers.beforeSave.BenchHooked", "bench".into())
        .await?;
    nats.flush().await?;
    let replier = nats.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(reply) = request.reply {
                let _ = replier.publish(reply, "{\"success\":true}".into()).await;
            }
        }
    });
    api.hook(json!({"className": "BenchHooked", "triggerName": "beforeSave", "nats": true}))
        .await?;
    let n = args.count;
    let (mut hooked, mut plain) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..(n + 500) {
        for (class, out) in [("BenchHooked", &mut hooked), ("BenchPlain", &mut plain)] {
            let started = Instant::now();
            api.post(&format!("classes/{class}"), json!({"i": i}), false)
                .await?;
            if i >= 500 {
                out.push(started.elapsed().as_micros() as u64);
            }
        }
    }
    println!("creates one at a time on one connection, alternating classes:");
    summary("class with a NATS beforeSave", hooked.clone());
    summary("class without hooks", plain.clone());
    hooked.sort_unstable();
    plain.sort_unstable();
    println!(
        "beforeSave overhead: p50 {:.3} ms, p99 {:.3} ms",
        percentile(&hooked, 0.5) - percentile(&plain, 0.5),
        percentile(&hooked, 0.99) - percentile(&plain, 0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let api = Api {
        http: reqwest::Client::new(),
        base: args.base.clone(),
        app_id: args.app_id.clone(),
        master_key: args.master_key.clone(),
    };
    match args.mode {
        Mode::Throughput => throughput(&args, &api).await,
        Mode::Latency => latency(&args, &api).await,
        Mode::BeforeSave => before_save(&args, &api).await,
    }
}
