//! Push end to end: `POST /push` on `oxbase api`, resolved and sent by an
//! `oxbase push` process to local fakes of FCM HTTP v1 (with its OAuth2
//! token endpoint) and APNs (HTTP/2 over TLS), against a real nats-server.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use oxbase_push_fakes::{
    APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, ApnsAuth, FakeApns, FakeFcm, Options, fixture,
};
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

struct Setup {
    _dir: tempfile::TempDir,
    nats: Nats,
    api: Oxbase,
    push: ServiceProcess,
    fcm: Arc<FakeFcm>,
    apns: Arc<FakeApns>,
    /// What an `oxbase push` process of this setup needs.
    push_env: Vec<(&'static str, String)>,
}

async fn setup() -> Setup {
    setup_with(Duration::ZERO, &[]).await
}

async fn setup_with(delay: Duration, env: &[(&'static str, &str)]) -> Setup {
    setup_full(ApnsAuth::Token, delay, env).await
}

/// NATS, `oxbase api`, a fake FCM and a fake APNs (with `auth`) answering
/// each message after `delay`, and one `oxbase push` process with `env`
/// added.
async fn setup_full(auth: ApnsAuth, delay: Duration, env: &[(&'static str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let data = dir.path().join("data");
    let api = Oxbase::start(&data, &nats.url(), &[]).await;
    let options = Options {
        delay,
        ..Options::default()
    };
    let fcm = FakeFcm::start(options).await;
    let apns = FakeApns::start(auth, options).await;
    let account = dir.path().join("service-account.json");
    std::fs::write(&account, fcm.service_account().to_string()).unwrap();
    let path = |name: &str| fixture(name).display().to_string();
    let mut push_env = vec![
        ("OXBASE_DATA_DIR", data.display().to_string()),
        (
            "OXBASE_PUSH__FCM__SERVICE_ACCOUNT",
            account.display().to_string(),
        ),
        ("OXBASE_PUSH__FCM__ENDPOINT", fcm.base.clone()),
        ("OXBASE_PUSH__APNS__TOPIC", APNS_TOPIC.into()),
        ("OXBASE_PUSH__APNS__ENDPOINT", apns.base.clone()),
        ("OXBASE_PUSH__APNS__CA_CERTIFICATE", path("ca.pem")),
    ];
    push_env.extend(match auth {
        ApnsAuth::Token => [
            ("OXBASE_PUSH__APNS__KEY", path("apns-auth-key.p8")),
            ("OXBASE_PUSH__APNS__KEY_ID", APNS_KEY_ID.into()),
            ("OXBASE_PUSH__APNS__TEAM_ID", APNS_TEAM_ID.into()),
        ],
        ApnsAuth::Certificate => [
            ("OXBASE_PUSH__APNS__CERTIFICATE", path("apns-client.pem")),
            (
                "OXBASE_PUSH__APNS__CERTIFICATE_KEY",
                path("apns-client.key"),
            ),
            ("OXBASE_PUSH__APNS__PRODUCTION", "true".into()),
        ],
    });
    push_env.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Setup {
        _dir: dir,
        push: start_push(&nats, &push_env).await,
        nats,
        api,
        fcm,
        apns,
        push_env,
    }
}

async fn start_push(nats: &Nats, env: &[(&'static str, String)]) -> ServiceProcess {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    ServiceProcess::start("push", &nats.url(), &env).await
}

impl Setup {
    async fn install(&self, installation: Value) -> String {
        let body = self
            .api
            .master_call(reqwest::Method::POST, "installations", installation)
            .await;
        body["objectId"].as_str().unwrap().to_owned()
    }

    /// Sends a push; its `_PushStatus` id.
    async fn push(&self, body: Value) -> String {
        let response = self
            .api
            .request(reqwest::Method::POST, "push")
            .header("X-Parse-Master-Key", "mk")
            .json(&body)
            .send()
            .await
            .unwrap();
        let id = response
            .headers()
            .get("X-Parse-Push-Status-Id")
            .map(|id| id.to_str().unwrap().to_owned());
        let status = response.status().as_u16();
        let answer: Value = response.json().await.unwrap();
        assert_eq!((status, &answer), (200, &json!({"result": true})));
        id.expect("an X-Parse-Push-Status-Id header")
    }

    async fn status(&self, id: &str) -> Value {
        self.api
            .master_call(
                reqwest::Method::GET,
                &format!("classes/_PushStatus/{id}"),
                Value::Null,
            )
            .await
    }

    async fn wait_succeeded(&self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.status(id).await;
            if status["status"] == "succeeded" {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the push never finished: {status}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn installation(&self, id: &str) -> Value {
        self.api
            .master_call(
                reqwest::Method::GET,
                &format!("classes/_Installation/{id}"),
                Value::Null,
            )
            .await
    }

    /// Messages accepted by the fake FCM, per token.
    fn fcm_delivered(&self) -> HashMap<String, Vec<Value>> {
        self.fcm.received.delivered.lock().unwrap().clone()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_exactly_their_audience_through_fcm() {
    let setup = setup().await;
    let android = |token: &str, channel: &str| {
        json!({"deviceType": "android", "installationId": format!("i-{token}"),
               "deviceToken": token, "channels": [channel]})
    };
    setup.install(android("a1", "news")).await;
    let dead = setup.install(android("dead-a2", "news")).await;
    let mut flaky = android("flaky-a3", "news");
    flaky["badge"] = json!(4);
    setup.install(flaky).await;
    setup.install(android("a4", "sport")).await;
    setup
        .install(json!({"deviceType": "win", "installationId": "i-win",
                        "deviceToken": "w1", "channels": ["news"]}))
        .await;
    // No token: not in any audience.
    setup
        .install(json!({"deviceType": "android", "installationId": "i-none", "channels": ["news"]}))
        .await;

    let id = setup
        .push(json!({"channels": ["news"],
                     "data": {"alert": "hello", "badge": "Increment", "custom": 7}}))
        .await;
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(status["count"], 4, "{status}");
    assert_eq!(status["numSent"], 2, "{status}");
    assert_eq!(status["numFailed"], 2, "{status}");
    assert_eq!(status["sentPerType"], json!({"android": 2}), "{status}");
    assert_eq!(
        status["failedPerType"],
        json!({"android": 1, "win": 1}),
        "{status}"
    );
    assert_eq!(status["source"], "rest");
    assert_eq!(
        serde_json::from_str::<Value>(status["query"].as_str().unwrap()).unwrap(),
        json!({"channels": {"$in": ["news"]}})
    );

    let received = setup.fcm.payloads();
    let mut tokens: Vec<&String> = received.keys().collect();
    tokens.sort();
    assert_eq!(tokens, ["a1", "flaky-a3"]);
    assert_eq!(
        received["a1"],
        json!({"alert": "hello", "badge": 1, "custom": 7})
    );
    // Its badge was 4; the 503 was retried.
    assert_eq!(received["flaky-a3"]["badge"], 5);
    assert_eq!(setup.fcm.received.attempts.lock().unwrap()["flaky-a3"], 2);
    let message = setup.fcm_delivered()["a1"][0].clone();
    assert_eq!(message["data"]["push_id"], id.as_str());
    assert_eq!(message["android"]["priority"], "high");
    // One access token served every message.
    assert_eq!(setup.fcm.tokens_minted.load(Ordering::Relaxed), 1);

    // UNREGISTERED removed the token.
    let installation = setup.installation(&dead).await;
    assert!(installation.get("deviceToken").is_none(), "{installation}");

    // A `where` query.
    let id = setup
        .push(
            json!({"where": {"deviceType": "android", "channels": "sport"},
                     "data": {"alert": "goal"}, "expiration_interval": 600}),
        )
        .await;
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(
        (status["count"].clone(), status["numSent"].clone()),
        (json!(1), json!(1))
    );
    assert_eq!(setup.fcm.payloads()["a4"], json!({"alert": "goal"}));
    let message = setup.fcm_delivered()["a4"][0].clone();
    let ttl = message["android"]["ttl"].as_str().unwrap();
    assert!(ttl.ends_with('s') && ttl.trim_end_matches('s').parse::<u64>().unwrap() > 590);

    let metrics = reqwest::get(format!("{}/metrics", setup.push.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "oxbase_push_requests_total 2",
        "oxbase_push_sent_total 3",
        "oxbase_push_failed_total 2",
        "oxbase_push_dead_tokens_total 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_apple_devices_through_apns_with_a_provider_token() {
    let setup = setup().await;
    let apple = |kind: &str, token: &str| {
        json!({"deviceType": kind, "installationId": format!("i-{token}"),
               "deviceToken": token, "channels": ["apple"], "appIdentifier": APNS_TOPIC})
    };
    let mut phone = apple("ios", &"ab".repeat(32));
    phone["badge"] = json!(2);
    setup.install(phone).await;
    let dead = setup.install(apple("ios", "dead-i1")).await;
    let bad = setup.install(apple("ios", "bad-i2")).await;
    setup.install(apple("ios", "flaky-i3")).await;
    let mut mac = apple("osx", "mac1");
    mac.as_object_mut().unwrap().remove("appIdentifier");
    setup.install(mac).await;
    let mut other = apple("ios", "other1");
    other["appIdentifier"] = json!("com.example.other");
    let other = setup.install(other).await;
    let mut tv = apple("tvos", "tv1");
    tv["channels"] = json!(["elsewhere"]);
    setup.install(tv).await;

    let id = setup
        .push(
            json!({"channels": ["apple"], "push_type": "background", "priority": 5,
                     "collapse_id": "c1", "expiration_interval": 600,
                     "data": {"alert": "hi", "title": "T", "badge": "Increment", "sound": "s",
                              "content-available": 1, "custom": "x"}}),
        )
        .await;
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(status["count"], 6, "{status}");
    assert_eq!(status["numSent"], 3, "{status}");
    assert_eq!(status["numFailed"], 3, "{status}");
    assert_eq!(
        status["sentPerType"],
        json!({"ios": 2, "osx": 1}),
        "{status}"
    );
    assert_eq!(status["failedPerType"], json!({"ios": 3}), "{status}");

    let payloads = setup.apns.payloads();
    let mut tokens: Vec<&String> = payloads.keys().collect();
    tokens.sort();
    assert_eq!(tokens, [&"ab".repeat(32), "flaky-i3", "mac1"]);
    assert_eq!(
        payloads[&"ab".repeat(32)],
        json!({"aps": {"alert": {"title": "T", "body": "hi"}, "badge": 3, "sound": "s",
                       "content-available": 1}, "custom": "x"})
    );
    assert_eq!(payloads["mac1"]["aps"]["badge"], 1);
    let message = setup.apns.received.last()["mac1"].clone();
    let headers = &message["headers"];
    assert_eq!(headers["apns-topic"], APNS_TOPIC);
    assert_eq!(headers["apns-push-type"], "background");
    assert_eq!(headers["apns-priority"], "5");
    assert_eq!(headers["apns-collapse-id"], "c1");
    let expires: i64 = headers["apns-expiration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let left = expires - chrono::Utc::now().timestamp();
    assert!((590..=601).contains(&left), "{left}");
    // The 429 was retried; one provider token signed every request.
    assert_eq!(setup.apns.received.attempts.lock().unwrap()["flaky-i3"], 2);
    assert_eq!(setup.apns.provider_tokens.lock().unwrap().len(), 1);
    // Over one HTTP/2 connection.
    assert_eq!(setup.apns.connections.load(Ordering::Relaxed), 1);

    // 410 and BadDeviceToken removed the tokens; another app's device
    // was not sent to, and keeps its token.
    for gone in [&dead, &bad] {
        let installation = setup.installation(gone).await;
        assert!(installation.get("deviceToken").is_none(), "{installation}");
    }
    assert_eq!(setup.installation(&other).await["deviceToken"], "other1");

    // Without push_type, Parse Server's `alert`.
    let id = setup
        .push(json!({"where": {"deviceType": "tvos"}, "data": {"alert": "tv"}}))
        .await;
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(status["numSent"], 1, "{status}");
    let message = setup.apns.received.last()["tv1"].clone();
    assert_eq!(message["headers"]["apns-push-type"], "alert");
    assert_eq!(message["payload"], json!({"aps": {"alert": "tv"}}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pushes_reach_apple_devices_with_a_client_certificate() {
    let setup = setup_full(ApnsAuth::Certificate, Duration::ZERO, &[]).await;
    setup
        .install(json!({"deviceType": "ios", "installationId": "i-cert", "deviceToken": "cert1"}))
        .await;
    let id = setup
        .push(json!({"where": {}, "data": {"alert": "signed"}}))
        .await;
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(status["numSent"], 1, "{status}");
    assert_eq!(
        setup.apns.payloads()["cert1"],
        json!({"aps": {"alert": "signed"}})
    );

    // The fake refuses a client without the certificate.
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(&std::fs::read(fixture("ca.pem")).unwrap()).unwrap(),
        )
        .build()
        .unwrap();
    let refused = anonymous
        .post(format!("{}/3/device/cert1", setup.apns.base))
        .body(r#"{"aps":{}}"#)
        .send()
        .await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(setup.apns.received.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_push_goes_out_at_its_time() {
    let setup = setup().await;
    setup
        .install(
            json!({"deviceType": "android", "installationId": "i-later", "deviceToken": "later"}),
        )
        .await;
    // A whole second, as sent.
    let at = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp() + 3, 0).unwrap();
    let id = setup
        .push(json!({"where": {}, "data": {"alert": "later"},
                     "push_time": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)}))
        .await;
    assert_eq!(setup.status(&id).await["status"], "scheduled");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(setup.fcm.received.accepted(), 0, "sent before its time");
    let status = setup.wait_succeeded(&id).await;
    assert_eq!(status["numSent"], 1);
    assert!(chrono::Utc::now() >= at, "finished before its push_time");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pushes_get_parse_errors() {
    let setup = setup().await;
    let (status, body) = {
        let response = setup
            .api
            .request(reqwest::Method::POST, "push")
            .json(&json!({"channels": ["a"], "data": {"alert": "x"}}))
            .send()
            .await
            .unwrap();
        (
            response.status().as_u16(),
            response.json::<Value>().await.unwrap(),
        )
    };
    assert_eq!(status, 403, "{body}");
    let cases = [
        (
            json!({"data": {"alert": "x"}}),
            "Sending a push requires either \"channels\" or a \"where\" query.",
        ),
        (
            json!({"channels": ["a"], "where": {}, "data": {}}),
            "Channels and query can not be set at the same time.",
        ),
        (
            json!({"channels": "a", "data": {}}),
            "channels must be an array of strings.",
        ),
        (json!({"channels": ["a"]}), "data must be an object."),
        (
            json!({"channels": ["a"], "data": {"badge": "more"}}),
            "badge must be a number or \"Increment\".",
        ),
        (
            json!({"channels": ["a"], "data": {}, "expiration_time": 2000000000, "expiration_interval": 60}),
            "expiration_time and expiration_interval cannot both be set.",
        ),
        (
            json!({"channels": ["a"], "data": {}, "expiration_interval": -1}),
            "expiration_interval must be a number greater than 0.",
        ),
        (
            json!({"channels": ["a"], "data": {}, "push_time": "tomorrow"}),
            "push_time is not a valid time: \"tomorrow\"",
        ),
        (
            json!({"channels": ["a"], "data": {}, "priority": 7}),
            "priority must be 10, 5 or 1.",
        ),
        (
            json!({"channels": ["a"], "data": {"push_type": 1}}),
            "push_type must be a string.",
        ),
        (
            json!({"channels": ["a"], "data": {}, "collapse_id": "x".repeat(65)}),
            "collapse_id must be at most 64 bytes.",
        ),
    ];
    for (body, message) in cases {
        let (status, answer) = setup
            .api
            .master_request(reqwest::Method::POST, "push", body.clone())
            .await;
        assert_eq!(
            (status, answer),
            (400, json!({"code": 115, "error": message})),
            "{body}"
        );
    }
    let (status, answer) = setup
        .api
        .master_request(
            reqwest::Method::POST,
            "push",
            json!({"where": {"badge": {"$bogus": 1}}, "data": {}}),
        )
        .await;
    assert_eq!(
        (status, answer["code"].clone()),
        (400, json!(102)),
        "{answer}"
    );
    // Nothing was queued: no status was created.
    let (_, statuses) = setup
        .api
        .master_request(reqwest::Method::GET, "classes/_PushStatus", Value::Null)
        .await;
    assert_eq!(statuses["results"], json!([]), "{statuses}");
}

const DEVICES: usize = 1000;
const BATCH: usize = 100;

/// `kill -9` of the push process in the middle of a fan-out: another
/// process takes over, every device is reached, and only the batches in
/// flight (two here) can be sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_push_process_mid_fan_out_loses_no_device() {
    let duplicates = interrupt_a_fan_out(|push| push.kill()).await;
    assert!(
        duplicates <= 2 * BATCH,
        "{duplicates} duplicates, more than the batches in flight"
    );
}

/// A push process stopped the way an operator does (SIGTERM) finishes
/// the batches it holds, and another sends the rest: nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_process_stopped_mid_fan_out_finishes_its_batches() {
    let duplicates = interrupt_a_fan_out(|push| {
        let exit = tokio::task::block_in_place(|| push.terminate());
        assert!(exit.success(), "{exit}");
    })
    .await;
    assert_eq!(duplicates, 0);
}

/// Pushes to `DEVICES` android devices, stops the push process with
/// `stop` a quarter of the way, starts another, and checks every device
/// was reached and counted once; how many got the push twice.
async fn interrupt_a_fan_out(stop: impl FnOnce(&ServiceProcess)) -> usize {
    let setup = setup_with(
        Duration::from_millis(10),
        &[
            ("OXBASE_PUSH__BATCH_SIZE", "100"),
            ("OXBASE_PUSH__CONCURRENCY", "4"),
            ("OXBASE_PUSH__BATCHES_IN_FLIGHT", "2"),
            ("OXBASE_PUSH__ACK_WAIT_MS", "1500"),
        ],
    )
    .await;
    for chunk in (0..DEVICES).collect::<Vec<_>>().chunks(50) {
        let requests: Vec<Value> = chunk
            .iter()
            .map(|i| {
                json!({"method": "POST", "path": "/parse/installations", "body": {
                    "deviceType": "android", "installationId": format!("k-{i}"),
                    "deviceToken": format!("token-{i}")}})
            })
            .collect();
        let answers = setup
            .api
            .master_call(
                reqwest::Method::POST,
                "batch",
                json!({ "requests": requests }),
            )
            .await;
        assert!(
            answers
                .as_array()
                .unwrap()
                .iter()
                .all(|a| a.get("success").is_some())
        );
    }
    let id = setup
        .push(json!({"where": {}, "data": {"alert": "all"}}))
        .await;
    let delivered = || setup.fcm.received.accepted() as usize;
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered() < 250 {
        assert!(Instant::now() < deadline, "the fan-out never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop(&setup.push);
    let at_kill = delivered();
    assert!(at_kill < DEVICES, "the fan-out ended before the stop");
    let _second = start_push(&setup.nats, &setup.push_env).await;
    let status = setup.wait_succeeded(&id).await;

    let delivered = setup.fcm_delivered();
    let missing: Vec<usize> = (0..DEVICES)
        .filter(|i| !delivered.contains_key(&format!("token-{i}")))
        .collect();
    assert!(missing.is_empty(), "never reached: {missing:?}");
    let duplicates: usize = delivered.values().map(|m| m.len() - 1).sum();
    println!("stopped after {at_kill} of {DEVICES} messages; {duplicates} sent twice");
    assert_eq!(status["count"], DEVICES);
    assert_eq!(status["numSent"], DEVICES, "{status}");
    duplicates
}
