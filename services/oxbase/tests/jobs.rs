//! Background jobs end to end: jobs submitted over HTTP and NATS, run by
//! `oxbase jobs` processes on NATS workers written with async-nats, against
//! a real nats-server.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oxbase_proto::jobs::JobRun;
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

/// What a worker does with a run: wait, then answer this body.
type Answer = Arc<dyn Fn(&JobRun) -> (Duration, Value) + Send + Sync>;

/// A NATS worker for the job `name` of `queue`: records each run it
/// receives (in arrival order) and answers it.
async fn worker(
    nats: &async_nats::Client,
    queue: &str,
    name: &str,
    answer: Answer,
) -> Arc<Mutex<Vec<(Instant, JobRun)>>> {
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
            seen.lock().unwrap().push((Instant::now(), run.clone()));
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
        let mut request = self
            .api
            .request(method, path)
            .header("X-Parse-Master-Key", "mk");
        if !body.is_null() {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        (status, response.json().await.unwrap())
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
        .map(|(_, run)| {
            (
                run.payload["priority"].as_u64().unwrap(),
                run.payload["seq"].as_u64().unwrap(),
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
    let times: Vec<Instant> = runs.lock().unwrap().iter().map(|(at, _)| *at).collect();
    assert_eq!(times.len(), 3);
    for pair in times.windows(2) {
        // The fixed backoff, rounded up to the schedule's whole second.
        let gap = pair[1] - pair[0];
        assert!(gap >= Duration::from_millis(1400), "retried after {gap:?}");
        assert!(gap < Duration::from_millis(3600), "retried after {gap:?}");
    }

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
    let ran_after = runs.lock().unwrap()[0].0 - submitted_at;
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
        .map(|(_, r)| r.id.clone())
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
