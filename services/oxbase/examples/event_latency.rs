//! Write-to-event latency: how long after a create is committed its
//! CloudEvent reaches a subscriber, under a fixed open-loop write rate.
//!
//! Run it against a running `oxbase api` with events on and its nats-server
//! (`ops/bench/event_latency.sh` sets both up):
//!
//! ```text
//! cargo run --release -p oxbase --example event_latency -- \
//!     --base http://127.0.0.1:18337 --nats nats://127.0.0.1:18339 \
//!     --rate 1000 --seconds 20
//! ```
//!
//! It subscribes first, then `POST`s `/parse/classes/<class>` at `--rate`
//! per second from a `MissedTickBehavior::Burst` interval, each request in
//! its own task, so slow responses do not lower the offered rate (open
//! loop). The subscriber is, by default, a core NATS subscription on
//! `oxbase.events.<class>.created`: the moment nats-server routes the relay's
//! publish to subscribers, which is what "arrival at a subscriber" means
//! here. `--subscriber ordered` uses an ordered JetStream consumer on the
//! events stream instead, which adds the stream's store-and-deliver step.
//! The subscriber runs on its own thread and runtime and only timestamps
//! messages; they are decoded after the run.
//!
//! Commit time is not visible to a client, so latency is bracketed:
//!
//! - `response -> arrival`: from the HTTP response's headers arriving to the
//!   event arriving. The commit happened before the response was sent, so
//!   this is a lower bound on commit-to-arrival (it can even be negative
//!   when the event beats the response).
//! - `event time -> arrival`: from the event's `time` (stamped by oxbase
//!   when it records the write, before the commit; milliseconds, truncated)
//!   to arrival, by the wall clock. Same machine, same clock, but only
//!   millisecond precision: an upper bound to within 1 ms.
//! - `send -> arrival`: from the request being sent to the event arriving:
//!   an upper bound that also counts the HTTP request's own time.
//!
//! Two context rows follow: `send -> response` (the create's HTTP latency)
//! and `schedule -> send` (how far sends lag the nominal `i / rate`
//! schedule: about 1 ms is tokio's timer granularity; more means the
//! client was short of CPU).
//!
//! Writes sent in the first `--warmup` seconds are made but not counted.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use async_nats::jetstream::{self, consumer};
use clap::{Parser, ValueEnum};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::MissedTickBehavior;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Subscriber {
    /// A core NATS subscription on the created subject.
    Core,
    /// An ordered JetStream consumer on the events stream.
    Ordered,
}

#[derive(Debug, Parser)]
#[command(about = "Write-to-event latency at a fixed write rate")]
struct Args {
    /// The oxbase server, without the Parse mount.
    #[arg(long, default_value = "http://127.0.0.1:18337")]
    base: String,
    /// Where the Parse API is mounted.
    #[arg(long, default_value = "/parse")]
    mount: String,
    /// The nats-server oxbase publishes to.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    nats: String,
    #[arg(long, default_value = "bench")]
    app_id: String,
    /// The class the creates go to; use a fresh one per run.
    #[arg(long, default_value = "Bench")]
    class: String,
    /// Creates per second, offered open-loop.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// How long to write, warm-up included.
    #[arg(long, default_value_t = 20.0)]
    seconds: f64,
    /// Writes sent in the first this many seconds are not counted.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Longest wait for events after the last write was acknowledged.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
    /// Idle keep-alive connections the HTTP client keeps.
    #[arg(long, default_value_t = 128)]
    connections: usize,
    #[arg(long, value_enum, default_value = "core")]
    subscriber: Subscriber,
    /// The events subject prefix.
    #[arg(long, default_value = "oxbase.events")]
    prefix: String,
    /// The events stream, for `--subscriber ordered`.
    #[arg(long, default_value = "OXBASE_EVENTS")]
    stream: String,
}

/// One create as the client saw it.
struct Write {
    /// When it was due by the schedule (`i / rate`), from the start.
    scheduled: Duration,
    /// `scheduled` as an instant: how far `sent` lags it shows whether the
    /// client kept up.
    due: Instant,
    sent: Instant,
    outcome: Outcome,
}

enum Outcome {
    Acknowledged {
        object_id: String,
        response: Instant,
    },
    Failed(String),
}

/// One message as the subscriber saw it, decoded after the run.
struct Arrival {
    at: Instant,
    wall: SystemTime,
    message: async_nats::Message,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if args.rate <= 0.0 || args.seconds <= args.warmup || args.warmup < 0.0 {
        bail!("need --rate > 0 and --seconds > --warmup >= 0");
    }
    let received = Arc::new(AtomicUsize::new(0));
    let (stop_tx, stop_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subscriber = {
        let args = SubscriberArgs {
            nats: args.nats.clone(),
            subject: format!("{}.{}.created", args.prefix, args.class),
            stream: args.stream.clone(),
            kind: args.subscriber,
        };
        let received = received.clone();
        std::thread::Builder::new()
            .name("subscriber".into())
            .spawn(move || -> Result<Vec<Arrival>> {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?
                    .block_on(subscribe(args, received, ready_tx, stop_rx))
            })?
    };
    ready_rx
        .recv()
        .context("the subscriber stopped before it was ready")??;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let run = runtime.block_on(write_load(&args, &received));
    let _ = stop_tx.send(());
    let arrivals = subscriber
        .join()
        .map_err(|_| anyhow::anyhow!("the subscriber panicked"))??;
    let (writes, elapsed) = run?;
    report(&args, &writes, elapsed, &arrivals)
}

struct SubscriberArgs {
    nats: String,
    subject: String,
    stream: String,
    kind: Subscriber,
}

/// Subscribes, says so on `ready`, then timestamps every message until
/// `stop`.
async fn subscribe(
    args: SubscriberArgs,
    received: Arc<AtomicUsize>,
    ready: std::sync::mpsc::Sender<Result<()>>,
    stop: oneshot::Receiver<()>,
) -> Result<Vec<Arrival>> {
    let setup = async {
        let client = async_nats::connect(&args.nats)
            .await
            .with_context(|| format!("cannot connect to {}", args.nats))?;
        let messages: futures_util::stream::BoxStream<'static, async_nats::Message> =
            match args.kind {
                Subscriber::Core => {
                    let subscription = client.subscribe(args.subject.clone()).await?;
                    client.flush().await?;
                    subscription.boxed()
                }
                Subscriber::Ordered => {
                    let js = jetstream::new(client.clone());
                    let stream = js
                        .get_stream(&args.stream)
                        .await
                        .with_context(|| format!("no stream {} (is oxbase ready?)", args.stream))?;
                    let consumer = stream
                        .create_consumer(consumer::pull::OrderedConfig {
                            filter_subject: args.subject.clone(),
                            deliver_policy: consumer::DeliverPolicy::New,
                            ..Default::default()
                        })
                        .await?;
                    consumer
                        .messages()
                        .await?
                        .filter_map(|m| async move { m.ok().map(|m| m.message) })
                        .boxed()
                }
            };
        anyhow::Ok((client, messages))
    };
    let (client, mut messages) = match setup.await {
        Ok(ok) => {
            let _ = ready.send(Ok(()));
            ok
        }
        Err(err) => {
            let _ = ready.send(Err(anyhow::anyhow!("{err:#}")));
            return Err(err);
        }
    };
    let mut arrivals = Vec::new();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            message = messages.next() => {
                let Some(message) = message else { break };
                let at = Instant::now();
                let wall = SystemTime::now();
                arrivals.push(Arrival { at, wall, message });
                received.fetch_add(1, Ordering::Release);
            }
            _ = &mut stop => break,
        }
    }
    drop(messages);
    drop(client);
    Ok(arrivals)
}

/// Issues the creates open-loop, waits for the responses and then for the
/// events (up to `--drain`). Returns every write and how long the writing
/// took.
async fn write_load(args: &Args, received: &AtomicUsize) -> Result<(Vec<Write>, Duration)> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()?;
    let url = format!(
        "{}{}/classes/{}",
        args.base.trim_end_matches('/'),
        args.mount,
        args.class
    );
    let total = (args.rate * args.seconds).round() as u64;
    let (tx, mut rx) = mpsc::unbounded_channel::<Write>();
    let mut interval = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let start = Instant::now();
    for i in 0..total {
        interval.tick().await;
        let scheduled = Duration::from_secs_f64(i as f64 / args.rate);
        let due = start + scheduled;
        let client = client.clone();
        let url = url.clone();
        let app_id = args.app_id.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let body = serde_json::json!({
                "score": i,
                "name": format!("player {}", i % 1000),
                "active": true,
            });
            let sent = Instant::now();
            let outcome = create(&client, &url, &app_id, &body).await;
            let _ = tx.send(Write {
                scheduled,
                due,
                sent,
                outcome,
            });
        });
    }
    drop(tx);
    let mut writes = Vec::with_capacity(total as usize);
    while let Some(write) = rx.recv().await {
        writes.push(write);
    }
    let elapsed = start.elapsed();
    let acknowledged = writes
        .iter()
        .filter(|w| matches!(w.outcome, Outcome::Acknowledged { .. }))
        .count();
    let deadline = Instant::now() + Duration::from_secs_f64(args.drain);
    while received.load(Ordering::Acquire) < acknowledged && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let the subscriber take in whatever is already on its socket.
    tokio::time::sleep(Duration::from_millis(100)).await;
    Ok((writes, elapsed))
}

async fn create(
    client: &reqwest::Client,
    url: &str,
    app_id: &str,
    body: &serde_json::Value,
) -> Outcome {
    let response = match client
        .post(url)
        .header("X-Parse-Application-Id", app_id)
        .json(body)
        .send()
        .await
    {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(format!("{err}")),
    };
    let at = Instant::now();
    let status = response.status();
    let json: serde_json::Value = match response.json().await {
        Ok(json) => json,
        Err(err) => return Outcome::Failed(format!("{status}: {err}")),
    };
    match json["objectId"].as_str() {
        Some(id) if status.is_success() => Outcome::Acknowledged {
            object_id: id.to_owned(),
            response: at,
        },
        _ => Outcome::Failed(format!("{status}: {json}")),
    }
}

fn report(args: &Args, writes: &[Write], elapsed: Duration, arrivals: &[Arrival]) -> Result<()> {
    let warmup = Duration::from_secs_f64(args.warmup);
    let window = args.seconds - args.warmup;

    // objectId -> (arrival instant, arrival wall clock, event time in µs).
    let mut events: HashMap<String, (Instant, SystemTime, i64)> = HashMap::new();
    let mut undecodable = 0usize;
    let mut duplicates = 0usize;
    for arrival in arrivals {
        match serde_json::from_slice::<oxbase_proto::Event>(&arrival.message.payload) {
            Ok(event) => {
                let Some(id) = event.data.object.get("objectId").and_then(|v| v.as_str()) else {
                    undecodable += 1;
                    continue;
                };
                let time = event.time.timestamp_micros();
                if events
                    .insert(id.to_owned(), (arrival.at, arrival.wall, time))
                    .is_some()
                {
                    duplicates += 1;
                }
            }
            Err(err) => {
                if undecodable == 0 {
                    eprintln!("undecodable event on {}: {err}", arrival.message.subject);
                }
                undecodable += 1;
            }
        }
    }

    let measured: Vec<&Write> = writes.iter().filter(|w| w.scheduled >= warmup).collect();
    let mut failures: HashMap<&str, usize> = HashMap::new();
    let mut acknowledged = 0usize;
    let mut missing = 0usize;
    let mut response_to_arrival = Vec::new();
    let mut time_to_arrival = Vec::new();
    let mut send_to_arrival = Vec::new();
    let mut send_to_response = Vec::new();
    let mut send_lag = Vec::new();
    let mut first_sent: Option<Instant> = None;
    let mut last_response: Option<Instant> = None;
    let mut negative = 0usize;
    let mut ours = 0usize;
    for write in writes {
        let Outcome::Acknowledged { object_id, .. } = &write.outcome else {
            continue;
        };
        if events.contains_key(object_id) {
            ours += 1;
        }
    }
    for write in &measured {
        send_lag.push(signed_ms(write.due, write.sent));
        first_sent = Some(first_sent.map_or(write.sent, |first| first.min(write.sent)));
        match &write.outcome {
            Outcome::Failed(reason) => {
                *failures.entry(reason.as_str()).or_default() += 1;
            }
            Outcome::Acknowledged {
                object_id,
                response,
            } => {
                acknowledged += 1;
                last_response = last_response.max(Some(*response));
                send_to_response.push(signed_ms(write.sent, *response));
                let Some((at, wall, time)) = events.get(object_id) else {
                    missing += 1;
                    continue;
                };
                let after_response = signed_ms(*response, *at);
                if after_response < 0.0 {
                    negative += 1;
                }
                response_to_arrival.push(after_response);
                send_to_arrival.push(signed_ms(write.sent, *at));
                let wall_us = wall
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or_default();
                time_to_arrival.push((wall_us - time) as f64 / 1000.0);
            }
        }
    }
    let matched = response_to_arrival.len();
    let achieved = match (first_sent, last_response) {
        (Some(first), Some(last)) if last > first => {
            acknowledged as f64 / (last - first).as_secs_f64()
        }
        _ => 0.0,
    };
    let unexpected = events.len().saturating_sub(ours);

    println!(
        "write-to-event latency: POST {}{}/classes/{} -> {}",
        args.base,
        args.mount,
        args.class,
        match args.subscriber {
            Subscriber::Core => format!(
                "core NATS subscription on {}.{}.created",
                args.prefix, args.class
            ),
            Subscriber::Ordered => format!(
                "ordered JetStream consumer on {} ({}.{}.created)",
                args.stream, args.prefix, args.class
            ),
        }
    );
    println!(
        "offered {:.0} writes/s for {:.1} s ({} sent, writing took {:.2} s); first {:.1} s are warm-up",
        args.rate,
        args.seconds,
        writes.len(),
        elapsed.as_secs_f64(),
        args.warmup
    );
    println!(
        "measured window {:.1} s: {} writes sent, {} acknowledged ({:.1} writes/s achieved, \
         first send to last response), {} failed",
        window,
        measured.len(),
        acknowledged,
        achieved,
        measured.len() - acknowledged
    );
    for (reason, n) in &failures {
        println!("  failed x{n}: {reason}");
    }
    println!(
        "events: {} received, {matched} matched, {missing} missing, {unexpected} unexpected, \
         {duplicates} duplicate, {undecodable} undecodable",
        arrivals.len()
    );
    println!();
    println!(
        "{:<34} {:>6} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "latency (ms)", "n", "min", "p50", "p90", "p99", "max"
    );
    for (name, values) in [
        (
            "response -> arrival (lower bound)",
            &mut response_to_arrival,
        ),
        ("event time -> arrival (wall, ±1)", &mut time_to_arrival),
        ("send -> arrival (upper bound)", &mut send_to_arrival),
        ("send -> response (HTTP create)", &mut send_to_response),
        ("schedule -> send (client lag)", &mut send_lag),
    ] {
        print_row(name, values);
    }
    if negative > 0 {
        println!();
        println!("{negative} events arrived before their HTTP response did (negative lower bound)");
    }
    if missing > 0 || matched == 0 {
        bail!("{missing} acknowledged writes had no event");
    }
    Ok(())
}

fn signed_ms(from: Instant, to: Instant) -> f64 {
    if to >= from {
        (to - from).as_secs_f64() * 1000.0
    } else {
        -((from - to).as_secs_f64() * 1000.0)
    }
}

fn print_row(name: &str, values: &mut [f64]) {
    if values.is_empty() {
        println!("{name:<34} {:>6}", 0);
        return;
    }
    values.sort_by(f64::total_cmp);
    let pick = |q: f64| {
        let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
        values[rank - 1]
    };
    println!(
        "{name:<34} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
        values.len(),
        values[0],
        pick(0.50),
        pick(0.90),
        pick(0.99),
        values[values.len() - 1]
    );
}
