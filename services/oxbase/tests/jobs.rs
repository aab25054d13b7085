//! Background jobs end to end: jobs submitted over HTTP and NATS, run by
//! `oxbase jobs` processes on NATS workers written with async-nats, against
//! a real nats-server.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt;
use oxbase_proto::jobs::JobRun;
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

/// What a worker does with a run: wait, then answer this body.
type Answer = Arc<dyn Fn(&JobRun) -> (Duration, Value) + Send + Sync>;

/// A run as a worker received it.
#[derive(Debug, Clone)]
struct Received {
    at: Instant,
    wall: SystemTime,
    run: JobRun,
}

type Runs = Arc<Mutex<Vec<Received>>>;

/// A NATS worker for the job `name` of `queue`: records each run it
/// receives (in arrival order) and answers it.
async fn worker(nats: &async_nats::Client, queue: &str, name: &str, answer: Answer) -> Runs {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut requests = nats
        .queue_subscribe(format!("oxbase.jobs.run.{queue}.{name}"), "workers".into())
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let seen = Arc::clone(&runs);
    let client = nats.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
            seen.lock().unwrap().push(Received {
                at: Instant::now(),
                wall: SystemTime::now(),
                run: run.clone(),
            });
            let (wait, body) = answer(&run);
            let client = client.clone();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                if let Some(reply) = request.reply {
                    let _ = client
                        .publish(reply, serde_json::to_vec(&body).unwrap().into())
                        .await;
                }
            });
        }
    });
    runs
}

fn succeed() -> Answer {
    Arc::new(|_| (Duration::ZERO, json!({"success": "ok"})))
}

struct Setup {
    _dir: tempfile::TempDir,
    nats: Nats,
    api: Oxbase,
    client: async_nats::Client,
    data: std::path::PathBuf,
}

/// NATS and `oxbase api` (which queues jobs but runs none).
async fn setup(env: &[(&str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let data = dir.path().join("data");
    let api = Oxbase::start(&data, &nats.url(), env).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    Setup {
        _dir: dir,
        nats,
        api,
        client,
        data,
    }
}

impl Setup {
    /// An `oxbase jobs` process on the same NATS and store.
    async fn jobs(&self, env: &[(&str, &str)]) -> ServiceProcess {
        let data = self.data.display().to_string();
        let mut all = vec![("OXBASE_DATA_DIR", data.as_str())];
        all.extend_from_slice(env);
        ServiceProcess::start("jobs", &self.nats.url(), &all).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        self.api.master_request(method, path, body).await
    }

    async fn submit(&self, queue: &str, spec: Value) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::POST,
                &format!("/queues/{queue}/jobs"),
                spec,
            )
            .await;
        assert!(status == 201 || status == 200, "{status}: {body}");
        body
    }

    async fn job(&self, queue: &str, id: &str) -> Value {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/queues/{queue}/jobs/{id}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// Waits until the job is in `state`; returns it.
    async fn wait_state(&self, queue: &str, id: &str, state: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let job = self.job(queue, id).await;
            if job["state"] == state {
                return job;
            }
            assert!(Instant::now() < deadline, "job never became {state}: {job}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_for(mut done: impl FnMut() -> bool, within: Duration, what: &str) {
    let deadline = Instant::now() + within;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_worker_runs_queued_jobs_by_priority_then_first_in_first_out() {
    let setup = setup(&[]).await;
    // Everything is queued before any jobs process runs, so all 1,000
    // compete for one slot.
    for seq in 0..1000u32 {
        let priority = (seq * 7) % 10;
        let spec = json!({"name": "order", "priority": priority, "payload": {"seq": seq, "priority": priority}});
        let submitted = setup.submit("default", spec).await;
        assert_eq!(submitted["job"]["state"], "waiting", "{submitted}");
    }
    let runs = worker(&setup.client, "default", "order", succeed()).await;
    let _jobs = setup
        .jobs(&[("OXBASE_JOBS__QUEUES__DEFAULT__CONCURRENCY", "1")])
        .await;
    wait_for(
        || runs.lock().unwrap().len() >= 1000,
        Duration::from_secs(120),
        "1,000 runs",
    )
    .await;
    let order: Vec<(u64, u64)> = runs
        .lock()
        .unwrap()
        .iter()
        .map(|received| {
            (
                received.run.payload["priority"].as_u64().unwrap(),
                received.run.payload["seq"].as_u64().unwrap(),
            )
        })
        .collect();
    let mut expected = order.clone();
    expected.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    assert_eq!(order.len(), 1000);
    assert_eq!(
        order, expected,
        "not highest priority first, FIFO within one"
    );
}

#[tokio::test]
async fn failures_back_off_then_die_and_a_retry_from_the_api_runs_the_job_again() {
    let setup = setup(&[]).await;
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let failing = Arc::clone(&fail);
    let runs = worker(
        &setup.client,
        "default",
        "flaky",
        Arc::new(move |_| {
            if failing.load(std::sync::atomic::Ordering::SeqCst) {
                (Duration::ZERO, json!({"error": "upstream is down"}))
            } else {
                (Duration::ZERO, json!({"success": {"done": true}}))
            }
        }),
    )
    .await;
    let _jobs = setup.jobs(&[]).await;
    let submitted = setup
        .submit(
            "default",
            json!({"name": "flaky", "maxAttempts": 3, "backoff": {"type": "fixed", "delayMs": 1500}}),
        )
        .await;
    let id = submitted["job"]["id"].as_str().unwrap().to_owned();
    let dead = setup
        .wait_state("default", &id, "dead", Duration::from_secs(30))
        .await;
    assert_eq!(dead["attempts"], 3, "{dead}");
    let errors = dead["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "{dead}");
    assert!(
        errors.iter().all(|e| e["error"] == "upstream is down"),
        "{dead}"
    );
    let times: Vec<Instant> = runs.lock().unwrap().iter().map(|r| r.at).collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(1500), "retried after {gap:?}");
        assert!(gap < Duration::from_millis(2500), "retried after {gap:?}");
    }

    let (status, listed) = setup
        .call(
            reqwest::Method::GET,
            "/queues/default/jobs?state=dead",
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{listed}");
    let listed: Vec<&str> = listed["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec![id.as_str()]);
    let (status, body) = setup
        .call(
            reqwest::Method::GET,
            "/queues/default/jobs?state=sleeping",
            Value::Null,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(142)), "{body}");

    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    let (status, retried) = setup
        .call(
            reqwest::Method::POST,
            &format!("/queues/default/jobs/{id}/retry"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{retried}");
    let done = setup
        .wait_state("default", &id, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["result"], json!({"done": true}));
    assert_eq!(
        done["errors"].as_array().unwrap().len(),
        3,
        "history kept: {done}"
    );
    assert_eq!(runs.lock().unwrap().len(), 4);
}

#[tokio::test]
async fn delays_idempotency_keys_and_cancel() {
    let setup = setup(&[]).await;
    let runs = worker(&setup.client, "default", "later", succeed()).await;
    let _jobs = setup.jobs(&[]).await;

    let submitted_at = Instant::now();
    let first = setup
        .submit(
            "default",
            json!({"name": "later", "delayMs": 2000, "idempotencyKey": "order-42"}),
        )
        .await;
    assert_eq!(first["duplicate"], false);
    assert_eq!(first["job"]["state"], "delayed");
    let (status, second) = setup
        .call(
            reqwest::Method::POST,
            "/queues/default/jobs",
            json!({"name": "later", "delayMs": 2000, "idempotencyKey": "order-42"}),
        )
        .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["duplicate"], true);
    assert_eq!(second["job"]["id"], first["job"]["id"]);

    let cancelled = setup
        .submit("default", json!({"name": "later", "delayMs": 1500}))
        .await;
    let cancelled_id = cancelled["job"]["id"].as_str().unwrap().to_owned();
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            &format!("/queues/default/jobs/{cancelled_id}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "cancelled");

    let id = first["job"]["id"].as_str().unwrap();
    setup
        .wait_state("default", id, "succeeded", Duration::from_secs(10))
        .await;
    let ran_after = runs.lock().unwrap()[0].at - submitted_at;
    assert!(
        ran_after >= Duration::from_millis(2000) && ran_after < Duration::from_millis(3100),
        "a 2 s delay ran after {ran_after:?}"
    );
    // Past the cancelled job's time: it never ran, and the key ran once.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let ran: Vec<String> = runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.run.id.clone())
        .collect();
    assert_eq!(ran, vec![id.to_owned()]);
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            &format!("/queues/default/jobs/{id}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(142)), "{body}");
}

#[tokio::test]
async fn bad_submissions_get_clear_errors() {
    let setup = setup(&[("OXBASE_JOBS__MAX_PAYLOAD_BYTES", "1024")]).await;
    let cases = [
        ("nowhere", json!({"name": "a"}), "no job queue"),
        ("default", json!({"name": "a", "priority": 10}), "priority"),
        ("default", json!({"name": "a", "priority": -1}), "priority"),
        ("default", json!({"name": "a", "delayMs": -5}), "negative"),
        (
            "default",
            json!({"name": "a", "payload": "x".repeat(2000)}),
            "limit is 1024",
        ),
        ("default", json!({"name": "a b"}), "job name"),
        ("default", json!({"name": "a", "priorty": 1}), "priorty"),
        (
            "default",
            json!({"name": "a", "runAt": "tomorrow"}),
            "RFC 3339",
        ),
    ];
    for (queue, spec, says) in cases {
        let (status, body) = setup
            .call(
                reqwest::Method::POST,
                &format!("/queues/{queue}/jobs"),
                spec.clone(),
            )
            .await;
        assert_eq!(status, 400, "{spec}: {body}");
        assert_eq!(body["code"], 142, "{spec}: {body}");
        let text = body["error"].as_str().unwrap();
        assert!(text.contains(says), "{spec}: {text}");
    }
    let (status, body) = setup
        .call(
            reqwest::Method::GET,
            "/queues/default/jobs/nope",
            Value::Null,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (404, json!(101)), "{body}");
    let (status, _) = setup
        .call(reqwest::Method::GET, "/queues", Value::Null)
        .await;
    assert_eq!(status, 200, "the API is still up");
}

/// A worker that takes `busy` per run and tracks how many runs overlap,
/// per queue and in all.
struct Overlap {
    now: Mutex<HashMap<String, usize>>,
    most: Mutex<HashMap<String, usize>>,
}

impl Overlap {
    fn enter(&self, queue: &str) {
        let mut now = self.now.lock().unwrap();
        *now.entry(queue.into()).or_default() += 1;
        *now.entry("*".into()).or_default() += 1;
        let mut most = self.most.lock().unwrap();
        for key in [queue, "*"] {
            let current = now[key];
            let best = most.entry(key.into()).or_default();
            *best = (*best).max(current);
        }
    }

    fn leave(&self, queue: &str) {
        let mut now = self.now.lock().unwrap();
        *now.get_mut(queue).unwrap() -= 1;
        *now.get_mut("*").unwrap() -= 1;
    }

    fn most(&self, key: &str) -> usize {
        self.most.lock().unwrap().get(key).copied().unwrap_or(0)
    }
}

async fn busy_worker(
    nats: &async_nats::Client,
    queue: &'static str,
    busy: Duration,
    overlap: Arc<Overlap>,
) -> Runs {
    let runs = Arc::new(Mutex::new(Vec::new()));
    let mut requests = nats
        .subscribe(format!("oxbase.jobs.run.{queue}.busy"))
        .await
        .unwrap();
    nats.flush().await.unwrap();
    let (seen, client) = (Arc::clone(&runs), nats.clone());
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
            seen.lock().unwrap().push(Received {
                at: Instant::now(),
                wall: SystemTime::now(),
                run,
            });
            let (client, overlap) = (client.clone(), Arc::clone(&overlap));
            tokio::spawn(async move {
                overlap.enter(queue);
                tokio::time::sleep(busy).await;
                overlap.leave(queue);
                let reply = request.reply.unwrap();
                let _ = client
                    .publish(reply, br#"{"success":1}"#.to_vec().into())
                    .await;
            });
        }
    });
    runs
}

#[tokio::test]
async fn concurrency_limits_hold_per_queue_and_per_process() {
    let env = [
        ("OXBASE_JOBS__CONCURRENCY", "3"),
        ("OXBASE_JOBS__QUEUES__LIMITED__CONCURRENCY", "2"),
    ];
    let setup = setup(&env).await;
    let overlap = Arc::new(Overlap {
        now: Mutex::new(HashMap::new()),
        most: Mutex::new(HashMap::new()),
    });
    let busy = Duration::from_millis(300);
    let limited = busy_worker(&setup.client, "limited", busy, Arc::clone(&overlap)).await;
    let open = busy_worker(&setup.client, "default", busy, Arc::clone(&overlap)).await;
    for _ in 0..6 {
        setup.submit("limited", json!({"name": "busy"})).await;
        setup.submit("default", json!({"name": "busy"})).await;
    }
    let _jobs = setup.jobs(&env).await;
    wait_for(
        || limited.lock().unwrap().len() == 6 && open.lock().unwrap().len() == 6,
        Duration::from_secs(30),
        "12 runs",
    )
    .await;
    assert_eq!(overlap.most("limited"), 2, "the queue's limit, reached");
    assert_eq!(overlap.most("*"), 3, "the process's limit, reached");
}

#[tokio::test]
async fn a_rate_limit_holds_across_processes() {
    let env = [
        ("OXBASE_JOBS__QUEUES__RATED__RATE_LIMIT", "4"),
        ("OXBASE_JOBS__QUEUES__RATED__RATE_PERIOD_MS", "1000"),
    ];
    let setup = setup(&env).await;
    let runs = worker(&setup.client, "rated", "tick", succeed()).await;
    for _ in 0..12 {
        setup.submit("rated", json!({"name": "tick"})).await;
    }
    let _a = setup.jobs(&env).await;
    let _b = setup.jobs(&env).await;
    wait_for(
        || runs.lock().unwrap().len() == 12,
        Duration::from_secs(30),
        "12 runs",
    )
    .await;
    let mut per_window: HashMap<u128, usize> = HashMap::new();
    for received in runs.lock().unwrap().iter() {
        let ms = received
            .wall
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        *per_window.entry(ms / 1000).or_default() += 1;
    }
    assert!(per_window.values().all(|&n| n <= 4), "{per_window:?}");
    assert!(
        per_window.len() >= 3,
        "12 jobs at 4/s span 3 windows: {per_window:?}"
    );
}

const FAST_ACK: &[(&str, &str)] = &[("OXBASE_JOBS__ACK_WAIT_MS", "2000")];

#[tokio::test]
async fn a_job_running_on_a_killed_process_runs_again_and_no_job_is_lost() {
    let setup = setup(FAST_ACK).await;
    let first_attempt_hangs: Answer = Arc::new(|run| {
        if run.attempt == 1 && run.payload["hang"] == true {
            (Duration::from_secs(3600), json!({"success": null}))
        } else {
            (Duration::from_millis(20), json!({"success": run.attempt}))
        }
    });
    let runs = worker(&setup.client, "default", "work", first_attempt_hangs).await;
    let first = setup.jobs(FAST_ACK).await;
    let hanging = setup
        .submit(
            "default",
            json!({"name": "work", "payload": {"hang": true}}),
        )
        .await;
    let hanging = hanging["job"]["id"].as_str().unwrap().to_owned();
    let mut ids = vec![hanging.clone()];
    for n in 0..200 {
        let job = setup
            .submit("default", json!({"name": "work", "payload": {"n": n}}))
            .await;
        ids.push(job["job"]["id"].as_str().unwrap().to_owned());
    }
    wait_for(
        || runs.lock().unwrap().len() >= 50,
        Duration::from_secs(30),
        "50 runs",
    )
    .await;
    first.kill();
    let _second = setup.jobs(FAST_ACK).await;
    for id in &ids {
        let job = setup
            .wait_state("default", id, "succeeded", Duration::from_secs(60))
            .await;
        if *id == hanging {
            assert_eq!(job["attempts"], 2, "{job}");
            assert_eq!(job["result"], 2, "{job}");
        }
    }
    let seen: std::collections::HashSet<String> = runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.run.id.clone())
        .collect();
    assert_eq!(seen.len(), ids.len(), "every job ran");
}

#[tokio::test]
async fn three_processes_share_a_queue_and_run_each_job_once() {
    let setup = setup(&[]).await;
    let runs = worker(
        &setup.client,
        "default",
        "shared",
        Arc::new(|_| (Duration::from_millis(10), json!({"success": null}))),
    )
    .await;
    let env = [("OXBASE_JOBS__QUEUES__DEFAULT__CONCURRENCY", "4")];
    let _a = setup.jobs(&env).await;
    let _b = setup.jobs(&env).await;
    let _c = setup.jobs(&env).await;
    let mut ids = Vec::new();
    for n in 0..300 {
        let job = setup
            .submit("default", json!({"name": "shared", "payload": n}))
            .await;
        ids.push(job["job"]["id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        setup
            .wait_state("default", id, "succeeded", Duration::from_secs(60))
            .await;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for received in runs.lock().unwrap().iter() {
        *counts.entry(received.run.id.clone()).or_default() += 1;
    }
    assert_eq!(counts.len(), 300);
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "ran more than once: {twice:?}");
}

#[tokio::test]
async fn heartbeats_keep_a_long_run_alive_and_silence_fails_it() {
    let env = [("OXBASE_JOBS__QUEUES__DEFAULT__HEARTBEAT_MS", "1000")];
    let setup = setup(&env).await;
    // "steady" reports progress every 300 ms for 2.5 s, then answers;
    // "silent" never says anything.
    let mut requests = setup
        .client
        .subscribe("oxbase.jobs.run.default.*")
        .await
        .unwrap();
    setup.client.flush().await.unwrap();
    let client = setup.client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
            if run.name != "steady" {
                continue;
            }
            let client = client.clone();
            tokio::spawn(async move {
                let progress = run.progress_subject.clone().unwrap();
                for step in 1..=8 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let report =
                        json!({"progress": step as f64 * 12.5, "message": format!("step {step}")});
                    client
                        .publish(
                            progress.clone(),
                            serde_json::to_vec(&report).unwrap().into(),
                        )
                        .await
                        .unwrap();
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                let reply = request.reply.unwrap();
                client
                    .publish(reply, br#"{"success":"done"}"#.to_vec().into())
                    .await
                    .unwrap();
            });
        }
    });
    let _jobs = setup.jobs(&env).await;
    let steady = setup
        .submit("default", json!({"name": "steady", "maxAttempts": 1}))
        .await;
    let silent = setup
        .submit("default", json!({"name": "silent", "maxAttempts": 1}))
        .await;
    let steady = setup
        .wait_state(
            "default",
            steady["job"]["id"].as_str().unwrap(),
            "succeeded",
            Duration::from_secs(20),
        )
        .await;
    assert_eq!(steady["progress"], 100.0, "{steady}");
    assert_eq!(steady["message"], "step 8", "{steady}");
    let silent = setup
        .wait_state(
            "default",
            silent["job"]["id"].as_str().unwrap(),
            "dead",
            Duration::from_secs(20),
        )
        .await;
    let error = silent["errors"][0]["error"].as_str().unwrap();
    assert!(error.contains("no heartbeat"), "{error}");
}

#[tokio::test]
async fn parse_jobs_run_on_their_registered_handler_and_fill_job_status() {
    let setup = setup(&[]).await;
    let (status, body) = setup
        .call(reqwest::Method::POST, "/jobs/report", json!({}))
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(141)), "{body}");
    assert_eq!(body["error"], "Invalid job.");
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            "/hooks/jobs",
            json!({"jobName": "report", "nats": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    let mut requests = setup
        .client
        .subscribe("oxbase.jobs.run.default.report")
        .await
        .unwrap();
    setup.client.flush().await.unwrap();
    let client = setup.client.clone();
    // The worker reports progress, and answers once the report shows in
    // `_JobStatus` (read as the dashboard does, with the master key).
    let (http, base) = (setup.api.client.clone(), setup.api.base.clone());
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
            let halfway = format!("halfway through {}", run.payload["month"]);
            let report = json!({ "message": halfway });
            client
                .publish(
                    run.progress_subject.unwrap(),
                    serde_json::to_vec(&report).unwrap().into(),
                )
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let found: Value = http
                    .get(format!("{base}/parse/classes/_JobStatus"))
                    .header("X-Parse-Application-Id", "app")
                    .header("X-Parse-Master-Key", "mk")
                    .send()
                    .await
                    .unwrap()
                    .json()
                    .await
                    .unwrap();
                if found["results"][0]["message"] == halfway.as_str() {
                    break;
                }
                assert!(Instant::now() < deadline, "progress never showed: {found}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            client
                .publish(
                    request.reply.unwrap(),
                    br#"{"success":"all done"}"#.to_vec().into(),
                )
                .await
                .unwrap();
        }
    });
    let _jobs = setup.jobs(&[]).await;

    let response = setup
        .api
        .request(reqwest::Method::POST, "/jobs/report")
        .header("X-Parse-Master-Key", "mk")
        .json(&json!({"month": "May"}))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let status_id = response
        .headers()
        .get("X-Parse-Job-Status-Id")
        .map(|id| id.to_str().unwrap().to_owned());
    let body: Value = response.json().await.unwrap();
    assert_eq!((status.as_u16(), &body), (200, &json!({})));
    let status_id = status_id.expect("X-Parse-Job-Status-Id");

    let deadline = Instant::now() + Duration::from_secs(30);
    let done = loop {
        let (status, body) = setup
            .call(
                reqwest::Method::GET,
                &format!("/classes/_JobStatus/{status_id}"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        if body["status"] != "running" {
            break body;
        }
        assert!(Instant::now() < deadline, "still running: {body}");
        tokio::time::sleep(Duration::from_millis(30)).await;
    };
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["message"], "all done");
    assert_eq!(done["jobName"], "report");
    assert_eq!(done["source"], "api");
    assert_eq!(done["params"], json!({"month": "May"}));
    assert_eq!(done["finishedAt"]["__type"], "Date", "{done}");
    // Only the master key reads it.
    let response = setup
        .api
        .request(
            reqwest::Method::GET,
            &format!("/classes/_JobStatus/{status_id}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    assert_eq!(response.json::<Value>().await.unwrap()["code"], 119);
}

#[tokio::test]
async fn aging_lets_a_low_priority_job_through_a_flood_of_high_ones() {
    let env = [
        ("OXBASE_JOBS__QUEUES__AGED__AGING_MS", "300"),
        ("OXBASE_JOBS__QUEUES__AGED__CONCURRENCY", "1"),
    ];
    let setup = Arc::new(setup(&env).await);
    let runs = worker(
        &setup.client,
        "aged",
        "w",
        Arc::new(|_| (Duration::from_millis(100), json!({"success": null}))),
    )
    .await;
    let low = setup
        .submit(
            "aged",
            json!({"name": "w", "priority": 0, "payload": "low"}),
        )
        .await;
    let low = low["job"]["id"].as_str().unwrap().to_owned();
    let _jobs = setup.jobs(&env).await;
    // High-priority jobs arrive faster than they run, for 20 s: without
    // aging the low one waits until the flood is over (with it, about 4 s).
    let flood_ends = Instant::now() + Duration::from_secs(20);
    while Instant::now() < flood_ends {
        setup
            .submit("aged", json!({"name": "w", "priority": 9}))
            .await;
        if runs.lock().unwrap().iter().any(|r| r.run.id == low) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    let ran = runs
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.run.id == low)
        .map(|r| r.at);
    let ran = ran.expect("the low-priority job ran during the flood");
    assert!(ran < flood_ends);
}

#[tokio::test]
async fn queued_jobs_are_read_listed_and_cancelled_until_a_dispatcher_takes_them() {
    let fleeting = [("OXBASE_JOBS__QUEUES__FLEETING__KEEP_SUCCEEDED", "false")];
    let setup = setup(&fleeting).await;
    let runs = worker(
        &setup.client,
        "default",
        "hold",
        Arc::new(|_| (Duration::from_millis(1500), json!({"success": "held"}))),
    )
    .await;
    let fleeting_runs = worker(&setup.client, "fleeting", "hold", succeed()).await;
    // No jobs process yet: everything waits.
    let mut ids = Vec::new();
    for spec in [
        json!({"name": "hold", "payload": {"n": 1}}),
        json!({"name": "hold", "priority": 7, "payload": {"n": 2}}),
        json!({"name": "hold", "delayMs": 60_000}),
    ] {
        let body = setup.submit("default", spec).await;
        ids.push(body["job"]["id"].as_str().unwrap().to_owned());
    }
    let (first, second, later) = (&ids[0], &ids[1], &ids[2]);
    let job = setup.job("default", first).await;
    assert_eq!(
        (job["state"].clone(), job["attempts"].clone()),
        (json!("waiting"), json!(0))
    );
    assert_eq!(job["payload"], json!({"n": 1}));
    assert_eq!(setup.job("default", later).await["state"], "delayed");
    let listed = |state: &'static str| {
        let setup = &setup;
        async move {
            let (status, body) = setup
                .call(
                    reqwest::Method::GET,
                    &format!("/queues/default/jobs?state={state}"),
                    Value::Null,
                )
                .await;
            assert_eq!(status, 200, "{body}");
            body["results"]
                .as_array()
                .unwrap()
                .iter()
                .map(|job| job["id"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(listed("waiting").await, vec![first.clone(), second.clone()]);
    assert_eq!(listed("delayed").await, vec![later.clone()]);

    for id in [first, later] {
        let (status, body) = setup
            .call(
                reqwest::Method::POST,
                &format!("/queues/default/jobs/{id}/cancel"),
                Value::Null,
            )
            .await;
        assert_eq!(
            (status, body["state"].clone()),
            (200, json!("cancelled")),
            "{body}"
        );
        assert_eq!(setup.job("default", id).await["state"], "cancelled");
    }
    assert_eq!(listed("waiting").await, vec![second.clone()]);
    assert!(listed("delayed").await.is_empty());

    let _jobs = setup.jobs(&fleeting).await;
    let running = setup
        .wait_state("default", second, "active", Duration::from_secs(10))
        .await;
    assert_eq!(running["attempts"], 1, "{running}");
    assert_eq!(listed("active").await, vec![second.clone()]);
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            &format!("/queues/default/jobs/{second}/cancel"),
            Value::Null,
        )
        .await;
    assert_eq!((status, body["code"].clone()), (400, json!(142)), "{body}");
    let done = setup
        .wait_state("default", second, "succeeded", Duration::from_secs(10))
        .await;
    assert_eq!(done["result"], "held");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let ran: Vec<String> = runs
        .lock()
        .unwrap()
        .iter()
        .map(|r| r.run.id.clone())
        .collect();
    assert_eq!(ran, vec![second.clone()], "cancelled jobs never run");

    // A queue that forgets its succeeded jobs: the id is gone once done.
    let body = setup.submit("fleeting", json!({"name": "hold"})).await;
    let id = body["job"]["id"].as_str().unwrap().to_owned();
    wait_for(
        || !fleeting_runs.lock().unwrap().is_empty(),
        Duration::from_secs(10),
        "the fleeting job to run",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = setup
            .call(
                reqwest::Method::GET,
                &format!("/queues/fleeting/jobs/{id}"),
                Value::Null,
            )
            .await;
        if status == 404 {
            assert_eq!(body["code"], 101);
            break;
        }
        assert!(Instant::now() < deadline, "still found: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
