//! A rolling restart under load: a 3-node NATS cluster, PostgreSQL, two
//! `oxbase api` processes behind a round-robin proxy, and two each of
//! `oxbase triggers`, `jobs`, `cron` and `push`. While a client writes
//! objects and submits Parse jobs through the proxy and a schedule ticks
//! every second, every process is stopped (SIGTERM), waited for and
//! started again, one after another, NATS nodes included.
//!
//! At the end: no request failed, every object's afterSave reached the
//! webhook (at least once, as the triggers service promises), every job
//! ran exactly once, and every tick of the schedule between the start and
//! the end of the load fired exactly once.
//!
//! Needs PostgreSQL (`OXBASE_TEST_POSTGRES_URI`; `source ops/postgres.sh`
//! sets it) and skips, saying so, without it.

mod common;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::{StreamExt, TryStreamExt};
use oxbase_proto::jobs::JobRun;
use oxbase_test_support::{POSTGRES_URI_VARIABLE, PostgresDatabase};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use common::free_port;

/// How long a stopping API process keeps serving with `/ready` failing:
/// several of the proxy's readiness polls.
const DRAIN_DELAY_MS: &str = "1000";
/// The proxy's look at each backend's `/ready`.
const READY_POLL: Duration = Duration::from_millis(100);

/// One process of the deployment, started again on the same ports.
struct Process {
    name: String,
    program: std::path::PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    /// Where readiness is read: `/ready` of an oxbase process, `/healthz`
    /// of a NATS node.
    ready_url: String,
    child: Option<Child>,
}

impl Process {
    fn start(&mut self) {
        let log = || match std::env::var_os("OXBASE_TEST_LOG_DIR") {
            Some(dir) => std::process::Stdio::from(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(std::path::Path::new(&dir).join(format!("rolling-{}.log", self.name)))
                    .unwrap(),
            ),
            None => std::process::Stdio::null(),
        };
        let child = Command::new(&self.program)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(log())
            .stderr(log())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.name));
        self.child = Some(child);
    }

    async fn wait_ready(&self, http: &reqwest::Client) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = http
                .get(&self.ready_url)
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if answer.is_ok_and(|a| a.status().is_success()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never became ready",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, and its exit.
    async fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let pid = child.id().expect("not yet reaped").to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success());
        tokio::time::timeout(Duration::from_secs(30), child.wait())
            .await
            .unwrap_or_else(|_| panic!("{} did not stop within 30 s", self.name))
            .unwrap()
    }
}

/// A round-robin HTTP proxy over the API processes: it sends requests only
/// to the ones whose `/ready` answers, and tries another only when a
/// connection could not be made (the request never left). A request that
/// may have reached a process is never sent again: its failure is the
/// client's.
struct Proxy {
    backends: Vec<(String, AtomicBool)>,
    next: AtomicUsize,
    http: reqwest::Client,
}

impl Proxy {
    fn pick(&self, tried: &HashSet<usize>) -> Option<usize> {
        let n = self.backends.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| (start + i) % n)
            .find(|i| !tried.contains(i) && self.backends[*i].1.load(Ordering::SeqCst))
    }

    async fn watch(self: Arc<Self>) {
        loop {
            for (base, ready) in &self.backends {
                let answer = self
                    .http
                    .get(format!("{base}/ready"))
                    .timeout(Duration::from_millis(500))
                    .send()
                    .await;
                ready.store(
                    answer.is_ok_and(|a| a.status().is_success()),
                    Ordering::SeqCst,
                );
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }
}

async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut tried = HashSet::new();
    loop {
        let Some(index) = proxy.pick(&tried) else {
            // None ready (or every ready one refused): wait for one.
            if Instant::now() > deadline {
                return status(StatusCode::SERVICE_UNAVAILABLE, "no backend ready");
            }
            tried.clear();
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let mut outgoing = proxy
            .http
            .request(
                parts.method.clone(),
                format!("{}{path}", proxy.backends[index].0),
            )
            .body(body.clone());
        for (name, value) in &parts.headers {
            if !matches!(name.as_str(), "host" | "connection" | "content-length") {
                outgoing = outgoing.header(name, value);
            }
        }
        match outgoing.send().await {
            Ok(answer) => {
                let mut response = Response::builder().status(answer.status().as_u16());
                for (name, value) in answer.headers() {
                    if !matches!(
                        name.as_str(),
                        "connection" | "content-length" | "transfer-encoding"
                    ) {
                        response = response.header(name.as_str(), value.as_bytes());
                    }
                }
                return match answer.bytes().await {
                    Ok(bytes) => response.body(Body::from(bytes)).unwrap(),
                    Err(err) => status(StatusCode::BAD_GATEWAY, &format!("body: {err}")),
                };
            }
            Err(err) if err.is_connect() => {
                tried.insert(index);
            }
            Err(err) => return status(StatusCode::BAD_GATEWAY, &format!("{err:?}")),
        }
    }
}

fn status(code: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(code)
        .header("x-proxy-error", "1")
        .body(Body::from(text.to_owned()))
        .unwrap()
}

async fn serve(router: axum::Router) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    port
}

/// What the load saw.
#[derive(Default)]
struct Load {
    requests: AtomicU64,
    failures: Mutex<Vec<String>>,
    latencies: Mutex<Vec<Duration>>,
    created: Mutex<Vec<String>>,
    /// The `n` of each Parse job whose submission succeeded.
    jobs: Mutex<Vec<u64>>,
}

impl Load {
    /// One request through the proxy: its body when it succeeded.
    async fn send(&self, request: reqwest::RequestBuilder, what: &str) -> Option<Value> {
        let started = Instant::now();
        self.requests.fetch_add(1, Ordering::Relaxed);
        let answer = request.send().await;
        let outcome = match answer {
            Ok(answer) if answer.status().is_success() => answer.json::<Value>().await.ok(),
            Ok(answer) => {
                let code = answer.status();
                let body = answer.text().await.unwrap_or_default();
                self.failures
                    .lock()
                    .unwrap()
                    .push(format!("{what}: {code}: {body}"));
                return None;
            }
            Err(err) => {
                self.failures.lock().unwrap().push(format!("{what}: {err}"));
                return None;
            }
        };
        self.latencies.lock().unwrap().push(started.elapsed());
        outcome
    }
}

/// A NATS worker for Parse job `name`: counts its runs by `key` of the run.
async fn worker(
    client: &async_nats::Client,
    name: &str,
    key: fn(&JobRun) -> String,
) -> Arc<Mutex<HashMap<String, usize>>> {
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let mut requests = client
        .queue_subscribe(format!("oxbase.jobs.run.default.{name}"), "workers".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let seen = Arc::clone(&runs);
    let replies = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Ok(run) = serde_json::from_slice::<JobRun>(&request.payload) else {
                continue;
            };
            *seen.lock().unwrap().entry(key(&run)).or_insert(0) += 1;
            if let Some(reply) = request.reply {
                let _ = replies
                    .publish(reply, br#"{"success": true}"#.to_vec().into())
                    .await;
            }
        }
    });
    runs
}

/// Waits until every stream and consumer has a leader and every replica
/// has caught up, as an operator waits between restarts of NATS nodes: one
/// restarted before the last one caught up would leave streams without a
/// quorum.
async fn wait_cluster_current(js: &async_nats::jetstream::Context) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !cluster_current(js).await.unwrap_or(false) {
        assert!(
            Instant::now() < deadline,
            "the NATS cluster never caught up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn cluster_current(js: &async_nats::jetstream::Context) -> Result<bool, async_nats::Error> {
    let current = |cluster: Option<&async_nats::jetstream::stream::ClusterInfo>| {
        cluster.is_some_and(|cluster| {
            cluster.leader.is_some()
                && cluster
                    .replicas
                    .iter()
                    .all(|peer| peer.current && !peer.offline)
        })
    };
    let names: Vec<String> = js.stream_names().try_collect().await?;
    for name in names {
        let mut stream = js.get_stream(&name).await?;
        if !current(stream.info().await?.cluster.as_ref()) {
            return Ok(false);
        }
        let consumers: Vec<_> = stream.consumers().try_collect().await?;
        if !consumers.iter().all(|info| current(info.cluster.as_ref())) {
            return Ok(false);
        }
    }
    Ok(true)
}

fn p99(latencies: &mut [Duration]) -> Duration {
    latencies.sort_unstable();
    latencies
        .get((latencies.len() * 99 / 100).min(latencies.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rolling_restart_fails_no_request_and_loses_nothing() {
    if std::env::var_os(POSTGRES_URI_VARIABLE).is_none() {
        eprintln!(
            "SKIPPED: the rolling restart test needs PostgreSQL: set {POSTGRES_URI_VARIABLE} \
             (`source ops/postgres.sh` sets it)"
        );
        return;
    }
    let began = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let database = PostgresDatabase::create("oxbase_rolling", "checked above").await;
    let http = reqwest::Client::new();

    // Three NATS nodes, one cluster.
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nats: Vec<Process> = (0..3)
        .map(|i| {
            let monitor = free_port();
            let store = dir.path().join(format!("nats{i}"));
            Process {
                name: format!("nats{i}"),
                program: "nats-server".into(),
                args: [
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &client_ports[i].to_string(),
                    "-m",
                    &monitor.to_string(),
                    "-sd",
                    &store.display().to_string(),
                    "-n",
                    &format!("n{i}"),
                    "--cluster_name",
                    "oxbase-rolling",
                    "--cluster",
                    &format!("nats://127.0.0.1:{}", cluster_ports[i]),
                    "--routes",
                    &routes,
                ]
                .map(String::from)
                .to_vec(),
                env: Vec::new(),
                ready_url: format!("http://127.0.0.1:{monitor}/healthz"),
                child: None,
            }
        })
        .collect();
    for node in &mut nats {
        node.start();
    }
    for node in &nats {
        node.wait_ready(&http).await;
    }
    let nats_url = client_ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");

    // The webhook: records the objectId of each afterSave it is sent.
    let delivered: Arc<Mutex<Vec<String>>> = Arc::default();
    let hook_port = serve(
        axum::Router::new()
            .route(
                "/hook",
                axum::routing::post(
                    |State(delivered): State<Arc<Mutex<Vec<String>>>>,
                     axum::Json(body): axum::Json<Value>| async move {
                        if let Some(id) = body["object"]["objectId"].as_str() {
                            delivered.lock().unwrap().push(id.to_owned());
                        }
                        axum::Json(json!({"success": {}}))
                    },
                ),
            )
            .with_state(Arc::clone(&delivered)),
    )
    .await;

    // The oxbase processes, each on ports of its own for good.
    let shared_env: Vec<(String, String)> = [
        ("OXBASE_HOST", "127.0.0.1"),
        ("OXBASE_APP_ID", "app"),
        ("OXBASE_MASTER_KEY", "mk"),
        ("OXBASE_NATS_URL", nats_url.as_str()),
        ("OXBASE_DATABASE_URI", database.uri()),
        ("OXBASE_ALLOW_CLIENT_CLASS_CREATION", "true"),
        ("OXBASE_EVENTS__STREAM__REPLICAS", "3"),
        ("OXBASE_TRIGGERS__REPLICAS", "3"),
        ("OXBASE_JOBS__REPLICAS", "3"),
        ("OXBASE_CRON__REPLICAS", "3"),
        ("OXBASE_PUSH__REPLICAS", "3"),
        ("OXBASE_CRON__HISTORY", "1000"),
        ("OXBASE_LIVEQUERY__ENABLED", "false"),
        ("OXBASE_DRAIN_DELAY_MS", DRAIN_DELAY_MS),
        ("OXBASE_SHUTDOWN_TIMEOUT_SECS", "10"),
        // A run whose request or answer a NATS node took down with it
        // fails soon, and runs again.
        ("OXBASE_JOBS__QUEUES__DEFAULT__HEARTBEAT_MS", "5000"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let oxbase = |command: &str, index: usize| {
        let port = free_port();
        let data = dir.path().join(format!("{command}{index}"));
        Process {
            name: format!("{command}{index}"),
            program: env!("CARGO_BIN_EXE_oxbase").into(),
            args: vec![command.into(), "--port".into(), port.to_string()],
            env: shared_env
                .iter()
                .cloned()
                .chain([("OXBASE_DATA_DIR".into(), data.display().to_string())])
                .collect(),
            ready_url: format!("http://127.0.0.1:{port}/ready"),
            child: None,
        }
    };
    // One at a time: the first sets up the database.
    let mut apis: Vec<Process> = (0..2).map(|i| oxbase("api", i)).collect();
    for api in &mut apis {
        api.start();
        api.wait_ready(&http).await;
    }

    let proxy = Arc::new(Proxy {
        backends: apis
            .iter()
            .map(|api| {
                let base = api.ready_url.trim_end_matches("/ready").to_owned();
                (base, AtomicBool::new(false))
            })
            .collect(),
        next: AtomicUsize::new(0),
        http: reqwest::Client::new(),
    });
    tokio::spawn(Arc::clone(&proxy).watch());
    let proxy_port = serve(
        axum::Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&proxy)),
    )
    .await;
    let base = format!("http://127.0.0.1:{proxy_port}/parse");
    let master = |method: reqwest::Method, path: &str| {
        http.request(method, format!("{base}/{path}"))
            .header("X-Parse-Application-Id", "app")
            .header("X-Parse-Master-Key", "mk")
    };
    let setup = |what: &'static str| {
        move |answer: reqwest::Response| {
            assert!(answer.status().is_success(), "{what}: {answer:?}");
        }
    };
    setup("afterSave hook")(
        master(reqwest::Method::POST, "hooks/triggers")
            .json(&json!({
                "className": "Item",
                "triggerName": "afterSave",
                "url": format!("http://127.0.0.1:{hook_port}/hook"),
            }))
            .send()
            .await
            .unwrap(),
    );
    setup("the job")(
        master(reqwest::Method::POST, "hooks/jobs")
            .json(&json!({"jobName": "report", "nats": true}))
            .send()
            .await
            .unwrap(),
    );

    // The job handlers: a NATS client of the test, on every node.
    let workers = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(nats_url.split(',').collect::<Vec<_>>())
        .await
        .unwrap();
    let reports = worker(&workers, "report", |run| run.payload["n"].to_string()).await;
    let beats = worker(&workers, "beat", |run| run.id.clone()).await;

    let mut services: Vec<Process> = ["triggers", "jobs", "cron", "push"]
        .iter()
        .flat_map(|command| (0..2).map(|i| oxbase(command, i)))
        .collect();
    for service in &mut services {
        service.start();
    }
    for service in &services {
        service.wait_ready(&http).await;
    }
    setup("the schedule")(
        master(reqwest::Method::POST, "cron/schedules")
            .json(&json!({
                "name": "beat",
                "cron": "@every 1s",
                "job": {"name": "beat", "payload": {}},
            }))
            .send()
            .await
            .unwrap(),
    );

    // The load: two writers and a job submitter, through the proxy.
    let load = Arc::new(Load::default());
    let running = Arc::new(AtomicBool::new(true));
    let seq = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..2 {
        let (load, running, seq) = (Arc::clone(&load), Arc::clone(&running), Arc::clone(&seq));
        let (http, base) = (http.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            while running.load(Ordering::SeqCst) {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let request = http
                    .post(format!("{base}/classes/Item"))
                    .header("X-Parse-Application-Id", "app")
                    .json(&json!({"seq": n}));
                if let Some(created) = load.send(request, "create").await
                    && let Some(id) = created["objectId"].as_str()
                {
                    load.created.lock().unwrap().push(id.to_owned());
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    {
        let (load, running) = (Arc::clone(&load), Arc::clone(&running));
        let (http, base) = (http.clone(), base.clone());
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while running.load(Ordering::SeqCst) {
                n += 1;
                let request = http
                    .post(format!("{base}/jobs/report"))
                    .header("X-Parse-Application-Id", "app")
                    .header("X-Parse-Master-Key", "mk")
                    .json(&json!({"n": n}));
                if load.send(request, "job").await.is_some() {
                    load.jobs.lock().unwrap().push(n);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }

    // Ticks from here on must each fire once.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_start = chrono::Utc::now().timestamp_millis();
    let rolled = Instant::now();
    let cluster = async_nats::jetstream::new(workers.clone());
    wait_cluster_current(&cluster).await;
    for node in &mut nats {
        node.stop().await;
        node.start();
        node.wait_ready(&http).await;
        wait_cluster_current(&cluster).await;
    }
    for process in apis.iter_mut().chain(services.iter_mut()) {
        let exit = process.stop().await;
        assert!(exit.success(), "{} stopped with {exit}", process.name);
        process.start();
        process.wait_ready(&http).await;
    }
    let rolled = rolled.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let load_end = chrono::Utc::now().timestamp_millis();
    running.store(false, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }

    let failures = load.failures.lock().unwrap().clone();
    assert!(failures.is_empty(), "failed requests: {failures:#?}");

    // Every afterSave arrives.
    let created = load.created.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (events, missing) = loop {
        let delivered = delivered.lock().unwrap().clone();
        let got: HashSet<&String> = delivered.iter().collect();
        let missing: Vec<&String> = created.iter().filter(|id| !got.contains(id)).collect();
        if missing.is_empty() || Instant::now() > deadline {
            break (delivered.len(), missing.len());
        }
        drop(got);
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(missing, 0, "objects whose afterSave never came");

    // Every job runs, once.
    let jobs = load.jobs.lock().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let runs = reports.lock().unwrap().clone();
        if jobs.iter().all(|n| runs.contains_key(&n.to_string())) || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let runs = reports.lock().unwrap().clone();
    for n in &jobs {
        assert_eq!(runs.get(&n.to_string()), Some(&1), "job {n}: {runs:?}");
    }

    // Every tick of the load fires, once.
    let first_tick = (load_start / 1000 + 1) * 1000;
    let ticks: Vec<i64> = (first_tick..=load_end).step_by(1000).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    let fired: BTreeMap<i64, Value> = loop {
        let runs: Value = master(reqwest::Method::GET, "cron/schedules/beat/runs?limit=1000")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let fired: BTreeMap<i64, Value> = runs["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|run| {
                let slot = run["slot"].as_str().unwrap();
                let at: i64 = slot.rsplit_once('@').unwrap().1.parse().unwrap();
                (at, run.clone())
            })
            .collect();
        let settled = ticks.iter().all(|at| fired.contains_key(at));
        let run_once = |run: &Value| {
            run["jobId"]
                .as_str()
                .and_then(|id| beats.lock().unwrap().get(id).copied())
                == Some(1)
        };
        let ran = ticks.iter().filter_map(|at| fired.get(at)).all(run_once);
        if (settled && ran) || Instant::now() > deadline {
            break fired;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let beats = beats.lock().unwrap().clone();
    for at in &ticks {
        let run = fired
            .get(at)
            .unwrap_or_else(|| panic!("the tick {at} never fired"));
        assert_eq!(run["outcome"], "fired", "{run}");
        let job = run["jobId"].as_str().unwrap();
        assert_eq!(beats.get(job), Some(&1), "the tick {at}'s job {job}");
    }

    let mut latencies = load.latencies.lock().unwrap().clone();
    println!(
        "rolling restart: requests={} failures={} objects={} events={} (duplicates {}) jobs={} \
         ticks={} restarts={} rolled={:.1}s duration={:.1}s p99={}ms",
        load.requests.load(Ordering::Relaxed),
        failures.len(),
        created.len(),
        events,
        events - created.len(),
        jobs.len(),
        ticks.len(),
        nats.len() + apis.len() + services.len(),
        rolled.as_secs_f64(),
        began.elapsed().as_secs_f64(),
        p99(&mut latencies).as_millis(),
    );
}
