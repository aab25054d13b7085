//! Push benchmark: one push to `--installations` devices, sent by one
//! `oxbase push` process to the local FCM and APNs fakes; `ops/bench/push.sh`
//! starts nats-server and `oxbase api` first.
//!
//! 1. Starts the fakes (in this process), and writes their keys.
//! 2. Seeds the installations straight into the store, as a Parse
//!    database being migrated would hold them: `--android-percent` of them
//!    `android`, the rest `ios`, each with a device token.
//! 3. Starts `oxbase push`, sends `POST /push` to every installation, and
//!    waits for its `_PushStatus` to be `succeeded`.
//!
//! It prints how long the push took from the request to `succeeded`, the
//! notifications the fakes accepted, and the push process's peak memory
//! (`VmHWM`) and CPU.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use oxbase_push_fakes::{
    APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, ApnsAuth, FakeApns, FakeFcm, Options, fixture,
};
use oxbase_store::{SchemaView, StoreOptions, WriteBatch, WriteOp};
use serde_json::{Map, Value, json};

#[derive(Debug, Parser)]
struct Args {
    /// The API's mount, such as http://127.0.0.1:1337/parse.
    #[arg(long)]
    api: String,
    #[arg(long)]
    app_id: String,
    #[arg(long)]
    master_key: String,
    /// The API's store.
    #[arg(long)]
    database: String,
    #[arg(long)]
    nats: String,
    /// The oxbase binary, for `oxbase push`.
    #[arg(long)]
    oxbase: PathBuf,
    /// Where keys and the push process's log go.
    #[arg(long)]
    dir: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    installations: usize,
    #[arg(long, default_value_t = 50)]
    android_percent: usize,
    /// `data.badge` of the push: "Increment" raises every badge.
    #[arg(long)]
    badge: Option<String>,
    /// nats-server and `oxbase api`, for the CPU they spend on the push.
    #[arg(long)]
    nats_pid: u32,
    #[arg(long)]
    api_pid: u32,
}

/// Peak resident memory (MiB) and CPU seconds of a process.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let peak_kib: f64 = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<f64> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15; `rest` starts at field 3.
    let cpu = (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) / 100.0;
    (peak_kib / 1024.0, cpu)
}

struct Api {
    http: reqwest::Client,
    args: Arc<Args>,
}

impl Api {
    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> Result<Value> {
        let mut request = self
            .http
            .request(method, format!("{}/{path}", self.args.api))
            .header("X-Parse-Application-Id", &self.args.app_id)
            .header("X-Parse-Master-Key", &self.args.master_key);
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await?;
        let status = response.status();
        let body: Value = response.json().await?;
        if !status.is_success() {
            bail!("{path} answered {status}: {body}");
        }
        Ok(body)
    }
}

/// Writes the installations in transactions of 10,000.
async fn seed(args: &Args, api: &Api) -> Result<()> {
    // One through the API, so the class and its schema exist as Parse
    // makes them.
    api.call(
        reqwest::Method::POST,
        "installations",
        json!({"deviceType": "android", "installationId": "bench-0", "deviceToken": "android-0"}),
    )
    .await?;
    let store = oxbase_store::open(&args.database, &StoreOptions::default()).await?;
    let schemas = SchemaView::new(store.load_schemas().await?);
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let started = Instant::now();
    for start in (1..args.installations).step_by(10_000) {
        let ops = (start..(start + 10_000).min(args.installations))
            .map(|i| {
                let (kind, token) = if i % 100 < args.android_percent {
                    ("android", format!("android-{i}"))
                } else {
                    ("ios", format!("{i:064x}"))
                };
                let object: Map<String, Value> = match json!({
                    "objectId": format!("b{i:09}"),
                    "createdAt": now, "updatedAt": now,
                    "deviceType": kind, "deviceToken": token,
                    "installationId": format!("bench-{i}"), "appIdentifier": APNS_TOPIC,
                    "channels": ["all"], "badge": 0, "pushType": if kind == "android" { "gcm" } else { "" },
                }) {
                    Value::Object(object) => object,
                    _ => unreachable!(),
                };
                WriteOp::Create {
                    class_name: "_Installation".into(),
                    object,
                    relations: Vec::new(),
                }
            })
            .collect();
        let batch = WriteBatch {
            ops,
            atomic: true,
            events: None,
        };
        store.write(&schemas, batch).await?;
    }
    println!(
        "seeded {} installations in {:.1} s",
        args.installations,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn start_push(args: &Args, fcm: &FakeFcm, apns: &FakeApns) -> Result<Child> {
    let account = args.dir.join("service-account.json");
    std::fs::write(&account, fcm.service_account().to_string())?;
    let path = |name: &str| fixture(name).display().to_string();
    let log = std::fs::File::create(args.dir.join("push.log"))?;
    let child = Command::new(&args.oxbase)
        .arg("push")
        .args(["--port", "0"])
        .env("OXBASE_NATS_URL", &args.nats)
        .env("OXBASE_DATABASE_URI", &args.database)
        .env("OXBASE_APP_ID", &args.app_id)
        .env("OXBASE_MASTER_KEY", &args.master_key)
        .env("OXBASE_LOG_LEVEL", "warn")
        .env("OXBASE_PUSH__FCM__SERVICE_ACCOUNT", &account)
        .env("OXBASE_PUSH__FCM__ENDPOINT", &fcm.base)
        .env("OXBASE_PUSH__APNS__KEY", path("apns-auth-key.p8"))
        .env("OXBASE_PUSH__APNS__KEY_ID", APNS_KEY_ID)
        .env("OXBASE_PUSH__APNS__TEAM_ID", APNS_TEAM_ID)
        .env("OXBASE_PUSH__APNS__TOPIC", APNS_TOPIC)
        .env("OXBASE_PUSH__APNS__ENDPOINT", &apns.base)
        .env("OXBASE_PUSH__APNS__CA_CERTIFICATE", path("ca.pem"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .context("cannot start oxbase push")?;
    Ok(child)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let args = Arc::new(Args::parse());
    let options = Options {
        record: false,
        ..Options::default()
    };
    let fcm = FakeFcm::start(options).await;
    let apns = FakeApns::start(ApnsAuth::Token, options).await;
    let api = Api {
        http: reqwest::Client::new(),
        args: Arc::clone(&args),
    };
    seed(&args, &api).await?;
    let mut push = start_push(&args, &fcm, &apns)?;
    // Started once its consumers are up: give it the time to connect.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut data = json!({"alert": "bench", "sound": "default"});
    if let Some(badge) = &args.badge {
        data["badge"] = json!(badge);
    }
    let others = [args.nats_pid, args.api_pid, std::process::id()];
    let cpu_before: Vec<f64> = others.iter().map(|pid| usage(*pid).1).collect();
    let started = Instant::now();
    let answer = api
        .http
        .post(format!("{}/push", args.api))
        .header("X-Parse-Application-Id", &args.app_id)
        .header("X-Parse-Master-Key", &args.master_key)
        .json(&json!({"where": {}, "data": data}))
        .send()
        .await?;
    let Some(id) = answer
        .headers()
        .get("X-Parse-Push-Status-Id")
        .and_then(|id| id.to_str().ok())
        .map(str::to_owned)
    else {
        bail!("/push answered {}", answer.text().await?);
    };
    let answered = started.elapsed();
    let mut last_print = Instant::now();
    let status = loop {
        let status = api
            .call(
                reqwest::Method::GET,
                &format!("classes/_PushStatus/{id}"),
                Value::Null,
            )
            .await?;
        if status["status"] == "succeeded" || status["status"] == "failed" {
            break status;
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            last_print = Instant::now();
            println!(
                "  {:>5.1} s: {} accepted by the fakes, status {}",
                started.elapsed().as_secs_f64(),
                fcm.received.accepted() + apns.received.accepted(),
                status["status"]
            );
        }
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the push did not finish in 10 minutes: {status}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let took = started.elapsed();
    let (peak, cpu) = usage(push.id());
    let cpu_others: Vec<f64> = others
        .iter()
        .zip(cpu_before)
        .map(|(pid, before)| usage(*pid).1 - before)
        .collect();
    let _ = push.kill();
    let _ = push.wait();
    let accepted = fcm.received.accepted() + apns.received.accepted();
    println!(
        "push to {} installations ({}% android): {} in {:.1} s ({:.0} notifications/s), answered in {:.1} ms",
        args.installations,
        args.android_percent,
        status["status"],
        took.as_secs_f64(),
        accepted as f64 / took.as_secs_f64(),
        answered.as_secs_f64() * 1000.0
    );
    println!(
        "  _PushStatus: numSent {} numFailed {} sentPerType {}",
        status["numSent"], status["numFailed"], status["sentPerType"]
    );
    println!(
        "  accepted by the fakes: {accepted} (FCM {}, APNs {}); FCM access tokens minted {}, APNs provider tokens {}",
        fcm.received.accepted(),
        apns.received.accepted(),
        fcm.tokens_minted.load(std::sync::atomic::Ordering::Relaxed),
        apns.provider_tokens.lock().map(|t| t.len()).unwrap_or(0),
    );
    println!("  oxbase push: peak memory (VmHWM) {peak:.0} MiB, CPU {cpu:.1} s");
    println!(
        "  CPU during the push: nats-server {:.1} s, oxbase api {:.1} s, this client and the fakes {:.1} s",
        cpu_others[0], cpu_others[1], cpu_others[2]
    );
    Ok(())
}
