//! Schedules end to end: `oxbase cron` processes firing ticks into the
//! jobs queues, run by an `oxbase jobs` process on NATS workers written
//! with async-nats, against a real nats-server.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use oxbase_proto::jobs::{JobRecord, JobRun};
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

struct Setup {
    _dir: tempfile::TempDir,
    nats: Nats,
    api: Oxbase,
    client: async_nats::Client,
    data: std::path::PathBuf,
    _jobs: ServiceProcess,
}

/// NATS, `oxbase api` and one `oxbase jobs` process.
async fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let data = dir.path().join("data");
    let api = Oxbase::start(&data, &nats.url(), &[]).await;
    let client = async_nats::connect(nats.url()).await.unwrap();
    let data_dir = data.display().to_string();
    let jobs = ServiceProcess::start("jobs", &nats.url(), &[("OXBASE_DATA_DIR", &data_dir)]).await;
    Setup {
        _dir: dir,
        nats,
        api,
        client,
        data,
        _jobs: jobs,
    }
}

/// Cron settings short enough for a test: a takeover after 2 s.
const CRON_ENV: &[(&str, &str)] = &[("OXBASE_CRON__LEASE_MS", "2000")];

impl Setup {
    async fn cron(&self) -> ServiceProcess {
        let data = self.data.display().to_string();
        let mut env = vec![("OXBASE_DATA_DIR", data.as_str())];
        env.extend_from_slice(CRON_ENV);
        ServiceProcess::start("cron", &self.nats.url(), &env).await
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        self.api.master_request(method, path, body).await
    }

    async fn create(&self, schedule: Value) -> Value {
        let (status, body) = self
            .call(reqwest::Method::POST, "/cron/schedules", schedule)
            .await;
        assert_eq!(status, 201, "{body}");
        body
    }

    async fn runs(&self, name: &str) -> Vec<Value> {
        let (status, body) = self
            .call(
                reqwest::Method::GET,
                &format!("/cron/schedules/{name}/runs?limit=1000"),
                Value::Null,
            )
            .await;
        assert_eq!(status, 200, "{body}");
        let mut runs = body["results"].as_array().unwrap().clone();
        runs.reverse();
        runs
    }

    /// Records each job published to the ready queues, by idempotency key.
    async fn watch_enqueued(&self) -> Arc<Mutex<Vec<JobRecord>>> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut messages = self.client.subscribe("oxbase.jobs.ready.>").await.unwrap();
        self.client.flush().await.unwrap();
        let out = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(message) = messages.next().await {
                if let Ok(record) = serde_json::from_slice::<JobRecord>(&message.payload) {
                    out.lock().unwrap().push(record);
                }
            }
        });
        seen
    }
}

/// A NATS worker for job `name` that answers success and counts runs by
/// job id.
async fn worker(client: &async_nats::Client, name: &str) -> Arc<Mutex<HashMap<String, usize>>> {
    let runs = Arc::new(Mutex::new(HashMap::new()));
    let mut requests = client
        .queue_subscribe(format!("oxbase.jobs.run.default.{name}"), "w".into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let seen = Arc::clone(&runs);
    let reply_with = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
            *seen.lock().unwrap().entry(run.id).or_insert(0) += 1;
            if let Some(reply) = request.reply {
                let _ = reply_with
                    .publish(reply, br#"{"success": true}"#.to_vec().into())
                    .await;
            }
        }
    });
    runs
}

fn tick_of(slot: &str) -> i64 {
    slot.rsplit_once('@').unwrap().1.parse().unwrap()
}

/// A small deterministic generator, so a failing run can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 33) % n as u64) as usize
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_tick_fires_once_while_cron_processes_are_killed_and_restarted() {
    let setup = setup().await;
    let runs = worker(&setup.client, "beat").await;
    let enqueued = setup.watch_enqueued().await;
    let mut crons: Vec<Option<ServiceProcess>> = Vec::new();
    for _ in 0..3 {
        crons.push(Some(setup.cron().await));
    }
    let mut since = BTreeMap::new();
    for i in 0..5 {
        let name = format!("beat-{i}");
        let created = setup
            .create(json!({
                "name": name,
                "cron": "@every 1s",
                "job": {"name": "beat", "payload": {"schedule": name}},
            }))
            .await;
        since.insert(name, created["since"].as_i64().unwrap());
    }

    // 125 s of chaos: every 2 to 5 s, one process is killed (kill -9) or a
    // dead one restarted; at least one stays up throughout.
    let mut rng = Lcg(0x5eed);
    let started = Instant::now();
    let mut kills = 0;
    while started.elapsed() < Duration::from_secs(125) {
        tokio::time::sleep(Duration::from_millis(2000 + 1000 * rng.below(4) as u64)).await;
        let pick = rng.below(3);
        let alive = crons.iter().filter(|c| c.is_some()).count();
        match &crons[pick] {
            Some(process) if alive > 1 => {
                process.kill();
                crons[pick] = None;
                kills += 1;
            }
            Some(_) => {}
            None => crons[pick] = Some(setup.cron().await),
        }
    }
    let end = chrono::Utc::now().timestamp_millis();
    if crons.iter().all(Option::is_none) {
        crons[0] = Some(setup.cron().await);
    }
    assert!(kills >= 10, "only {kills} kills");
    // Every tick due by `end` settles within a takeover or two.
    tokio::time::sleep(Duration::from_secs(8)).await;

    let enqueued = enqueued.lock().unwrap().clone();
    let mut by_slot: HashMap<String, Vec<&JobRecord>> = HashMap::new();
    for record in &enqueued {
        let slot = record.idempotency_key.clone().expect("a slot id");
        by_slot.entry(slot).or_default().push(record);
    }
    let runs = runs.lock().unwrap().clone();
    let mut ticks = 0;
    for (name, since) in &since {
        let first = (since / 1000 + 1) * 1000;
        let mut at = first;
        while at <= end {
            let slot = format!("{name}@{at}");
            let jobs = by_slot.get(&slot).map_or(0, Vec::len);
            assert_eq!(jobs, 1, "{slot} was enqueued {jobs} times");
            let id = &by_slot[&slot][0].id;
            assert_eq!(
                runs.get(id),
                Some(&1),
                "{slot}'s job {id} ran {:?} times",
                runs.get(id)
            );
            at += 1000;
            ticks += 1;
        }
        let recorded = setup.runs(name).await;
        let fired: Vec<i64> = recorded
            .iter()
            .filter(|run| run["outcome"] == "fired")
            .map(|run| tick_of(run["slot"].as_str().unwrap()))
            .collect();
        assert!(
            recorded.iter().all(|run| run["outcome"] == "fired"),
            "{name}: a tick was skipped while a process was up"
        );
        let mut unique = fired.clone();
        unique.dedup();
        assert_eq!(unique, fired, "{name}: a run recorded twice");
    }
    assert!(ticks >= 5 * 120, "only {ticks} ticks checked");
    // Nothing was enqueued that is not a tick.
    assert!(
        by_slot
            .keys()
            .all(|slot| since.contains_key(slot.split('@').next().unwrap()))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn missed_ticks_follow_each_schedules_misfire_policy() {
    let setup = setup().await;
    let _runs = worker(&setup.client, "beat").await;
    for (name, misfire) in [("skipper", "skip"), ("catcher", "fireOnce")] {
        setup
            .create(json!({
                "name": name,
                "cron": "@every 1s",
                "misfire": misfire,
                "job": {"name": "beat"},
            }))
            .await;
    }
    let cron = setup.cron().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cron.kill();
    // Every process down for 6 ticks.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let _cron = setup.cron().await;
    tokio::time::sleep(Duration::from_secs(4)).await;

    // Both schedules missed the same ticks, planned at the same moment on
    // return: the skipper skips them all, the catcher fires the latest.
    let mut skipped = HashMap::new();
    let mut fired = HashMap::new();
    for name in ["skipper", "catcher"] {
        let mut runs: Vec<(i64, String)> = setup
            .runs(name)
            .await
            .iter()
            .map(|run| {
                (
                    tick_of(run["slot"].as_str().unwrap()),
                    run["outcome"].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        runs.sort();
        for pair in runs.windows(2) {
            assert_eq!(
                pair[1].0 - pair[0].0,
                1000,
                "{name}: {runs:?} has a gap or a repeat"
            );
        }
        let skips: Vec<i64> = runs
            .iter()
            .filter(|r| r.1 == "skipped")
            .map(|r| r.0)
            .collect();
        assert!(
            skips.windows(2).all(|p| p[1] - p[0] == 1000),
            "{name}: skips not together: {runs:?}"
        );
        assert!(
            runs.iter().all(|r| r.1 == "skipped" || r.1 == "fired"),
            "{runs:?}"
        );
        fired.insert(
            name,
            runs.iter()
                .filter(|r| r.1 == "fired")
                .map(|r| r.0)
                .collect::<Vec<_>>(),
        );
        skipped.insert(name, skips);
    }
    let missed = &skipped["skipper"];
    assert!(missed.len() >= 4, "skipper skipped {missed:?}");
    let latest = *missed.last().unwrap();
    assert_eq!(skipped["catcher"], missed[..missed.len() - 1]);
    assert!(fired["catcher"].contains(&latest));
    assert!(!fired["skipper"].contains(&latest));
    assert!(
        fired["skipper"].iter().any(|t| *t > latest),
        "the skipper never resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parse_job_schedules_fire_through_the_jobs_service() {
    let setup = setup().await;
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            "/hooks/jobs",
            json!({"jobName": "cleanup", "nats": true}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let mut requests = setup
        .client
        .subscribe("oxbase.jobs.run.default.cleanup")
        .await
        .unwrap();
    setup.client.flush().await.unwrap();
    let _cron = setup.cron().await;

    // Not deployed: refused as Parse Server refuses it.
    let (status, body) = setup
        .call(
            reqwest::Method::POST,
            "/cloud_code/jobs",
            json!({"job_schedule": {"jobName": "nope"}}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(141)), "{body}");

    let start = chrono::Utc::now() + chrono::Duration::seconds(2);
    let (status, created) = setup
        .call(
            reqwest::Method::POST,
            "/cloud_code/jobs",
            json!({"job_schedule": {
                "jobName": "cleanup",
                "description": "nightly",
                "params": "{\"days\": 30}",
                "startAfter": start.to_rfc3339(),
            }}),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["objectId"].as_str().unwrap().to_owned();

    let request = tokio::time::timeout(Duration::from_secs(15), requests.next())
        .await
        .expect("the scheduled job never ran")
        .unwrap();
    let ran_at = chrono::Utc::now();
    assert!(ran_at >= start, "ran before startAfter");
    let run: JobRun = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(run.payload, json!({"days": 30}));
    setup
        .client
        .publish(
            request.reply.unwrap(),
            br#"{"success": "done"}"#.to_vec().into(),
        )
        .await
        .unwrap();

    // The run shows in _JobStatus, and lastRun on the schedule.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, statuses) = setup
            .call(reqwest::Method::GET, "/classes/_JobStatus", Value::Null)
            .await;
        let (_, schedules) = setup
            .call(reqwest::Method::GET, "/cloud_code/jobs", Value::Null)
            .await;
        let status = statuses["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["jobName"] == "cleanup")
            .cloned();
        let schedule = schedules
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["objectId"] == id.as_str())
            .cloned()
            .unwrap();
        if let Some(status) = &status
            && status["status"] == "succeeded"
            && schedule["lastRun"].is_number()
        {
            assert_eq!(status["params"], json!({"days": 30}));
            assert_eq!(schedule["description"], "nightly");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status {status:?}, schedule {schedule}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // It ran once: a one-off schedule does not fire again.
    assert!(
        tokio::time::timeout(Duration::from_secs(3), requests.next())
            .await
            .is_err()
    );

    let (status, data) = setup
        .call(reqwest::Method::GET, "/cloud_code/jobs/data", Value::Null)
        .await;
    assert_eq!(status, 200);
    assert_eq!(data, json!({"in_use": ["cleanup"], "jobs": ["cleanup"]}));

    let (status, body) = setup
        .call(
            reqwest::Method::PUT,
            &format!("/cloud_code/jobs/{id}"),
            json!({"job_schedule": {"description": "weekly"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = setup
        .call(
            reqwest::Method::PUT,
            &format!("/cloud_code/jobs/{id}"),
            json!({"job_schedule": {"timeOfDay": "25:00"}}),
        )
        .await;
    assert_eq!((status, body["code"].as_i64()), (400, Some(142)), "{body}");
    let (status, _) = setup
        .call(
            reqwest::Method::DELETE,
            &format!("/cloud_code/jobs/{id}"),
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    let (_, schedules) = setup
        .call(reqwest::Method::GET, "/cloud_code/jobs", Value::Null)
        .await;
    assert_eq!(schedules, json!([]));
    // The cron service lets go of it too.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, all) = setup
            .call(reqwest::Method::GET, "/cron/schedules", Value::Null)
            .await;
        let names: Vec<&str> = all["results"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["name"].as_str())
            .collect();
        if names.is_empty() {
            break;
        }
        assert_eq!(names, [format!("_parse_{id}")]);
        assert!(
            Instant::now() < deadline,
            "the schedule outlived its _JobSchedule"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Master key only.
    let response = setup
        .api
        .request(reqwest::Method::GET, "/cloud_code/jobs")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_schedules_get_clear_errors() {
    let setup = setup().await;
    let job = json!({"name": "beat"});
    setup
        .create(json!({"name": "taken", "cron": "*/5 * * * *", "job": job}))
        .await;
    for (schedule, code, needle) in [
        (
            json!({"name": "x", "cron": "61 * * * *", "job": job}),
            142,
            "invalid cron expression",
        ),
        (
            json!({"name": "x", "cron": "* * *", "job": job}),
            142,
            "5 fields",
        ),
        (
            json!({"name": "x", "cron": "@every 0s", "job": job}),
            142,
            "too short",
        ),
        (
            json!({"name": "x", "cron": "0 9 * * *", "timeZone": "Moon/Base", "job": job}),
            142,
            "unknown time zone",
        ),
        (
            json!({"name": "x", "cron": "0 9 * * *", "job": {"name": "beat", "queue": "nope"}}),
            142,
            "no job queue",
        ),
        (
            json!({"name": "x", "cron": "0 9 * * *", "job": {"name": "beat", "priority": 12}}),
            142,
            "priority",
        ),
        (
            json!({"name": "x", "cron": "0 9 * * *", "job": {"name": "beat", "delayMs": 5}}),
            142,
            "runAt",
        ),
        (
            json!({"name": "taken", "cron": "0 9 * * *", "job": job}),
            137,
            "already exists",
        ),
        (
            json!({"name": "_mine", "cron": "0 9 * * *", "job": job}),
            142,
            "schedule name",
        ),
        (
            json!({"name": "x", "cron": "0 9 * * *", "job": job, "extra": 1}),
            142,
            "unknown field",
        ),
        (json!({"name": "x", "job": job}), 142, "cron"),
    ] {
        let (status, body) = setup
            .call(reqwest::Method::POST, "/cron/schedules", schedule.clone())
            .await;
        assert_eq!(status, 400, "{schedule}: {body}");
        assert_eq!(body["code"], code, "{schedule}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(needle),
            "{schedule}: {body}"
        );
    }
    let (status, body) = setup
        .call(reqwest::Method::GET, "/cron/schedules/missing", Value::Null)
        .await;
    assert_eq!((status, body["code"].as_i64()), (404, Some(101)), "{body}");
    let (status, body) = setup
        .call(
            reqwest::Method::PUT,
            "/cron/schedules/taken",
            json!({"name": "renamed", "cron": "0 9 * * *", "job": job}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    // Without the master key.
    let response = setup
        .api
        .request(reqwest::Method::GET, "/cron/schedules")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    // The one good schedule is all there is, and it can be changed and
    // deleted.
    let (_, all) = setup
        .call(reqwest::Method::GET, "/cron/schedules", Value::Null)
        .await;
    let names: Vec<&str> = all["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["taken"]);
    let (status, body) = setup
        .call(
            reqwest::Method::PUT,
            "/cron/schedules/taken",
            json!({"cron": "0 10 * * *", "enabled": false, "job": job}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["enabled"], false);
    let (status, _) = setup
        .call(
            reqwest::Method::DELETE,
            "/cron/schedules/taken",
            Value::Null,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = setup
        .call(reqwest::Method::GET, "/cron/schedules/taken", Value::Null)
        .await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn schedules_in_the_config_file_are_written_and_fire() {
    let setup = setup().await;
    let runs = worker(&setup.client, "filed").await;
    let config = setup.data.with_file_name("oxbase.toml");
    std::fs::write(
        &config,
        r#"
[cron.schedules.from-file]
cron = "@every 1s"
misfire = "fireOnce"
job = { name = "filed", priority = 7, payload = { source = "file" } }
"#,
    )
    .unwrap();
    let data = setup.data.display().to_string();
    let config = config.display().to_string();
    let _cron = ServiceProcess::start(
        "cron",
        &setup.nats.url(),
        &[("OXBASE_DATA_DIR", &data), ("OXBASE_CONFIG", &config)],
    )
    .await;
    let (status, schedule) = setup
        .call(
            reqwest::Method::GET,
            "/cron/schedules/from-file",
            Value::Null,
        )
        .await;
    assert_eq!(status, 200, "{schedule}");
    assert_eq!(schedule["misfire"], "fireOnce");
    assert_eq!(schedule["job"]["payload"], json!({"source": "file"}));
    tokio::time::sleep(Duration::from_secs(4)).await;
    let fired = setup.runs("from-file").await;
    assert!(fired.len() >= 2, "{fired:?}");
    let ran = runs.lock().unwrap().len();
    assert!(ran >= 2, "the worker saw {ran} runs");
}

/// The claims of an instant list their schedules, and the stored list
/// decides: a tick a finished claim lists is not fired again, a tick no
/// list names is claimed alone and fires, and a tick a silent process's
/// claim lists is taken over and fires. The claims of the other
/// processes are written here by hand, for every one of the 64 groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stored_claim_list_decides_which_process_settles_a_tick() {
    let setup = setup().await;
    let _cron = setup.cron().await;
    let enqueued = setup.watch_enqueued().await;
    let whole_second = |s: i64| {
        let now = chrono::Utc::now().timestamp_millis();
        now - now.rem_euclid(1000) + s * 1000
    };
    let (first, second) = (whole_second(6), whole_second(7));
    let at = |ms: i64| {
        let time = chrono::DateTime::from_timestamp_millis(ms).unwrap();
        format!("@at {}", time.to_rfc3339())
    };
    for (name, tick) in [
        ("settled-elsewhere", first),
        ("left-out", first),
        ("held-by-the-dead", second),
    ] {
        setup
            .create(json!({"name": name, "cron": at(tick), "job": {"name": "noop"}}))
            .await;
    }
    let js = async_nats::jetstream::new(setup.client.clone());
    let slots = js.get_key_value("OXBASE_CRON_SLOTS").await.unwrap();
    for group in 0..64 {
        let claims = [
            (first, json!({"settled-elsewhere": true}), true),
            (second, json!({"held-by-the-dead": true}), false),
        ];
        for (tick, ticks, done) in claims {
            let claim = json!({"process": "elsewhere", "at": 0, "ticks": ticks, "done": done});
            slots
                .create(format!("b.{tick}.{group}"), claim.to_string().into())
                .await
                .unwrap();
        }
    }
    assert!(
        chrono::Utc::now().timestamp_millis() < first - 500,
        "the claims must be written before the tick"
    );

    // The takeover comes a lease (2 s) after the second tick.
    tokio::time::sleep(Duration::from_millis(
        (second + 4000 - chrono::Utc::now().timestamp_millis()) as u64,
    ))
    .await;
    let slots_enqueued: Vec<String> = enqueued
        .lock()
        .unwrap()
        .iter()
        .filter_map(|job| job.idempotency_key.clone())
        .collect();
    assert_eq!(
        slots_enqueued
            .iter()
            .filter(|s| s.starts_with("left-out@"))
            .count(),
        1,
        "{slots_enqueued:?}"
    );
    assert_eq!(
        slots_enqueued
            .iter()
            .filter(|s| s.starts_with("held-by-the-dead@"))
            .count(),
        1,
        "{slots_enqueued:?}"
    );
    assert!(
        !slots_enqueued
            .iter()
            .any(|s| s.starts_with("settled-elsewhere@")),
        "{slots_enqueued:?}"
    );
    assert!(setup.runs("settled-elsewhere").await.is_empty());
    for (name, tick) in [("left-out", first), ("held-by-the-dead", second)] {
        let runs = setup.runs(name).await;
        assert_eq!(runs.len(), 1, "{name}: {runs:?}");
        assert_eq!(runs[0]["outcome"], "fired", "{name}: {runs:?}");
        assert_eq!(runs[0]["slot"], format!("{name}@{tick}"));
    }
}
