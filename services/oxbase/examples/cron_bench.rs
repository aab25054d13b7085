//! Cron benchmark against running `oxbase cron` processes and their
//! nats-server; `ops/bench/cron.sh` sets them up.
//!
//! It writes `--schedules` schedules that fire every minute (`* * * * *`)
//! through the schedule book, as the API does, then listens on the jobs
//! queues' ready subjects for `--minutes` ticks. Each queued job carries
//! its slot id (`<schedule>@<tick ms>`) as its idempotency key, so its
//! lateness is when it reached this client less its tick: how long after
//! its scheduled second a job was enqueued. No jobs process runs, so the
//! jobs stay queued and the figure is the cron service's alone.
//!
//! With `--cron-pids`, it also prints the CPU the cron processes spent:
//! over the measured minutes, and idle (from second 10 to second 50 of a
//! minute, between ticks).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use futures_util::StreamExt;
use oxbase_kit::Config;
use oxbase_proto::cron::CronSchedule;
use oxbase_proto::jobs::{JobRecord, JobSpec};

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    nats: String,
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    #[arg(long, default_value_t = 2)]
    minutes: usize,
    /// The cron processes, for their CPU time.
    #[arg(long, value_delimiter = ',')]
    cron_pids: Vec<u32>,
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// CPU seconds a process has used (user + system).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    (ticks(11) + ticks(12)) / 100.0
}

fn total_cpu(pids: &[u32]) -> f64 {
    pids.iter().map(|pid| cpu_seconds(*pid)).sum()
}

fn percentile(sorted: &[i64], p: f64) -> i64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Sleeps until `second` of the next minute (or this one, when still ahead).
async fn until_second(second: i64) {
    let now = now_ms();
    let minute = now - now.rem_euclid(60_000);
    let mut at = minute + second * 1000;
    if at <= now {
        at += 60_000;
    }
    tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let client = async_nats::connect(&args.nats)
        .await
        .context("cannot reach NATS")?;
    let jetstream = async_nats::jetstream::new(client.clone());
    let config = Config::default();
    let queue = oxbase_jobs::JobQueue::new(
        jetstream.clone(),
        Arc::new(oxbase_jobs::Settings::from_config(&config)?),
    );
    let book = oxbase_cron::ScheduleBook::new(
        jetstream,
        oxbase_cron::Settings::from_config(&config)?,
        queue,
    );

    let started = std::time::Instant::now();
    let created = futures_util::stream::iter(0..args.schedules)
        .map(|i| {
            let book = Arc::clone(&book);
            async move {
                book.create(CronSchedule {
                    name: format!("bench-{i}"),
                    cron: "* * * * *".into(),
                    time_zone: "UTC".into(),
                    job: JobSpec {
                        name: "noop".into(),
                        ..JobSpec::default()
                    },
                    misfire: Default::default(),
                    enabled: true,
                    since: None,
                })
                .await
            }
        })
        .buffer_unordered(64)
        .filter(|created| std::future::ready(created.is_err()))
        .count()
        .await;
    println!(
        "{} schedules written in {:.1} s ({} refused, such as names in use)",
        args.schedules,
        started.elapsed().as_secs_f64(),
        created
    );

    let mut ready = client.subscribe("oxbase.jobs.ready.>").await?;
    client.flush().await?;
    // Count from the first whole minute every cron process has seen every
    // schedule for: ticks start the minute after the next.
    until_second(0).await;
    let first = now_ms() - now_ms().rem_euclid(60_000) + 60_000;
    let last = first + (args.minutes as i64 - 1) * 60_000;
    let cpu_start = total_cpu(&args.cron_pids);
    let window_start = std::time::Instant::now();
    let mut late: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
    let deadline = tokio::time::Instant::now()
        + Duration::from_millis((last + 30_000 - now_ms()).max(0) as u64);
    loop {
        let message = tokio::select! {
            message = ready.next() => message,
            () = tokio::time::sleep_until(deadline) => break,
        };
        let Some(message) = message else { break };
        let arrived = now_ms();
        let Ok(record) = serde_json::from_slice::<JobRecord>(&message.payload) else {
            continue;
        };
        let Some(tick) = record
            .idempotency_key
            .as_deref()
            .and_then(|slot| slot.rsplit_once('@'))
            .and_then(|(_, at)| at.parse::<i64>().ok())
        else {
            continue;
        };
        if (first..=last).contains(&tick) {
            late.entry(tick).or_default().push(arrived - tick);
        }
        let done: usize = late.values().map(Vec::len).sum();
        if done == args.schedules * args.minutes {
            break;
        }
    }
    let cpu_busy = total_cpu(&args.cron_pids) - cpu_start;
    let busy_secs = window_start.elapsed().as_secs_f64();

    let mut all = Vec::new();
    for (tick, lateness) in &mut late {
        lateness.sort_unstable();
        println!(
            "tick {}: {} jobs enqueued; late p50 {} ms, p99 {} ms, max {} ms",
            chrono::DateTime::from_timestamp_millis(*tick).unwrap_or_default(),
            lateness.len(),
            percentile(lateness, 50.0),
            percentile(lateness, 99.0),
            lateness.last().copied().unwrap_or(0),
        );
        all.extend_from_slice(lateness);
    }
    all.sort_unstable();
    println!(
        "all ticks: {} of {} jobs enqueued; late p50 {} ms, p99 {} ms, max {} ms",
        all.len(),
        args.schedules * args.minutes,
        percentile(&all, 50.0),
        percentile(&all, 99.0),
        all.last().copied().unwrap_or(0),
    );
    if !args.cron_pids.is_empty() {
        println!(
            "cron CPU over the measured minutes: {:.1} s in {:.0} s ({:.1}% of one core)",
            cpu_busy,
            busy_secs,
            100.0 * cpu_busy / busy_secs
        );
        until_second(10).await;
        let idle_start = total_cpu(&args.cron_pids);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let idle = total_cpu(&args.cron_pids) - idle_start;
        println!(
            "cron CPU idle (seconds 10 to 50 of a minute): {:.2} s in 40 s ({:.2}% of one core)",
            idle,
            100.0 * idle / 40.0
        );
    }
    Ok(())
}
