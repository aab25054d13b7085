//! Push end to end: `POST /push` on `oxbase api`, resolved and sent by an
//! `oxbase push` process, to a fake FCM HTTP v1 server with its OAuth2
//! token endpoint, against a real nats-server.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{RSA_PKCS1_2048_8192_SHA256, RsaKeyPair, UnparsedPublicKey};
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

const KEY: &str = include_str!("fixtures/fcm-test-key.pem");
const PROJECT: &str = "oxbase-test";
const ACCOUNT: &str = "push@oxbase-test.iam.gserviceaccount.com";
const ACCESS_TOKEN: &str = "ya29.test-access-token";

/// A fake FCM: the token endpoint checks the service account's signed JWT,
/// and `messages:send` checks the access token and answers like Google,
/// by token: `dead-*` is UNREGISTERED, `flaky-*` is 503 the first time.
#[derive(Default)]
struct Fcm {
    /// Messages answered 200, by token.
    delivered: Mutex<HashMap<String, Vec<Value>>>,
    attempts: Mutex<HashMap<String, usize>>,
    tokens_minted: Mutex<usize>,
    public_key: Vec<u8>,
    token_uri: String,
    /// How long each message takes to answer.
    delay: Duration,
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    STANDARD.decode(body).unwrap()
}

async fn token(State(fcm): State<Arc<Fcm>>, form: String) -> Response {
    let pairs: HashMap<String, String> = form_pairs(&form);
    let assertion = pairs.get("assertion").cloned().unwrap_or_default();
    let parts: Vec<&str> = assertion.split('.').collect();
    let verified = parts.len() == 3
        && pairs.get("grant_type").map(String::as_str)
            == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
        && URL_SAFE_NO_PAD.decode(parts[2]).is_ok_and(|signature| {
            UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, &fcm.public_key)
                .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &signature)
                .is_ok()
        });
    let claims: Value = parts
        .get(1)
        .and_then(|c| URL_SAFE_NO_PAD.decode(c).ok())
        .and_then(|c| serde_json::from_slice(&c).ok())
        .unwrap_or_default();
    let now = chrono::Utc::now().timestamp();
    if !verified
        || claims["iss"] != ACCOUNT
        || claims["aud"] != fcm.token_uri.as_str()
        || claims["scope"] != "https://www.googleapis.com/auth/firebase.messaging"
        || claims["exp"].as_i64().is_none_or(|exp| exp <= now)
    {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": "Invalid JWT Signature."})),
        )
            .into_response();
    }
    *fcm.tokens_minted.lock().unwrap() += 1;
    Json(json!({"access_token": ACCESS_TOKEN, "expires_in": 3599, "token_type": "Bearer"}))
        .into_response()
}

fn form_pairs(form: &str) -> HashMap<String, String> {
    form.split('&')
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.replace("%3A", ":").replace("%2F", "/")))
        .collect()
}

fn google_error(status: StatusCode, name: &str, code: Option<&str>) -> Response {
    let mut details = Vec::new();
    if let Some(code) = code {
        details.push(json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code}));
    }
    let body = json!({"error": {"code": status.as_u16(), "message": name, "status": name, "details": details}});
    (status, Json(body)).into_response()
}

async fn send(
    State(fcm): State<Arc<Fcm>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if bearer != format!("Bearer {ACCESS_TOKEN}") {
        return google_error(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", None);
    }
    let message = body["message"].clone();
    let token = message["token"].as_str().unwrap_or_default().to_owned();
    let attempt = {
        let mut attempts = fcm.attempts.lock().unwrap();
        let count = attempts.entry(token.clone()).or_default();
        *count += 1;
        *count
    };
    tokio::time::sleep(fcm.delay).await;
    if token.starts_with("dead-") {
        return google_error(StatusCode::NOT_FOUND, "NOT_FOUND", Some("UNREGISTERED"));
    }
    if token.starts_with("flaky-") && attempt == 1 {
        return google_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            Some("UNAVAILABLE"),
        );
    }
    fcm.delivered
        .lock()
        .unwrap()
        .entry(token)
        .or_default()
        .push(message);
    Json(json!({"name": format!("projects/{PROJECT}/messages/{attempt}")})).into_response()
}

async fn fake_fcm(delay: Duration) -> (Arc<Fcm>, String) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let key = RsaKeyPair::from_pkcs8(&pem_der(KEY)).unwrap();
    let fcm = Arc::new(Fcm {
        public_key: key.public().as_ref().to_vec(),
        token_uri: format!("{base}/token"),
        delay,
        ..Fcm::default()
    });
    let app = Router::new()
        .route("/token", post(token))
        .route(&format!("/v1/projects/{PROJECT}/messages:send"), post(send))
        .with_state(Arc::clone(&fcm));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (fcm, base)
}

struct Setup {
    _dir: tempfile::TempDir,
    nats: Nats,
    api: Oxbase,
    push: ServiceProcess,
    fcm: Arc<Fcm>,
    /// What an `oxbase push` process of this setup needs.
    push_env: Vec<(&'static str, String)>,
}

async fn setup() -> Setup {
    setup_with(Duration::ZERO, &[]).await
}

/// NATS, `oxbase api`, a fake FCM answering each message after `delay`,
/// and one `oxbase push` process with `env` added.
async fn setup_with(delay: Duration, env: &[(&'static str, &str)]) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let data = dir.path().join("data");
    let api = Oxbase::start(&data, &nats.url(), &[]).await;
    let (fcm, base) = fake_fcm(delay).await;
    let account = dir.path().join("service-account.json");
    std::fs::write(
        &account,
        json!({
            "type": "service_account",
            "project_id": PROJECT,
            "private_key_id": "test",
            "private_key": KEY,
            "client_email": ACCOUNT,
            "token_uri": format!("{base}/token"),
        })
        .to_string(),
    )
    .unwrap();
    let mut push_env = vec![
        ("OXBASE_DATA_DIR", data.display().to_string()),
        (
            "OXBASE_PUSH__FCM__SERVICE_ACCOUNT",
            account.display().to_string(),
        ),
        ("OXBASE_PUSH__FCM__ENDPOINT", base),
    ];
    push_env.extend(env.iter().map(|(k, v)| (*k, (*v).to_owned())));
    Setup {
        _dir: dir,
        push: start_push(&nats, &push_env).await,
        nats,
        api,
        fcm,
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

    /// The push data each token received (the last message to it).
    fn received(&self) -> HashMap<String, Value> {
        self.fcm
            .delivered
            .lock()
            .unwrap()
            .iter()
            .map(|(token, messages)| {
                let data = &messages.last().unwrap()["data"];
                let payload = serde_json::from_str(data["data"].as_str().unwrap()).unwrap();
                (token.clone(), payload)
            })
            .collect()
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
        .install(json!({"deviceType": "ios", "installationId": "i-ios",
                        "deviceToken": "ab".repeat(32), "channels": ["news"]}))
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
        json!({"android": 1, "ios": 1}),
        "{status}"
    );
    assert_eq!(status["source"], "rest");
    assert_eq!(
        serde_json::from_str::<Value>(status["query"].as_str().unwrap()).unwrap(),
        json!({"channels": {"$in": ["news"]}})
    );

    let received = setup.received();
    let mut tokens: Vec<&String> = received.keys().collect();
    tokens.sort();
    assert_eq!(tokens, ["a1", "flaky-a3"]);
    assert_eq!(
        received["a1"],
        json!({"alert": "hello", "badge": 1, "custom": 7})
    );
    // Its badge was 4; the 503 was retried.
    assert_eq!(received["flaky-a3"]["badge"], 5);
    assert_eq!(setup.fcm.attempts.lock().unwrap()["flaky-a3"], 2);
    let message = setup.fcm.delivered.lock().unwrap()["a1"][0].clone();
    assert_eq!(message["data"]["push_id"], id.as_str());
    assert_eq!(message["android"]["priority"], "high");
    // One access token served every message.
    assert_eq!(*setup.fcm.tokens_minted.lock().unwrap(), 1);

    // UNREGISTERED removed the token.
    let installation = setup
        .api
        .master_call(
            reqwest::Method::GET,
            &format!("classes/_Installation/{dead}"),
            Value::Null,
        )
        .await;
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
    assert_eq!(setup.received()["a4"], json!({"alert": "goal"}));
    let message = setup.fcm.delivered.lock().unwrap()["a4"][0].clone();
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
    assert!(setup.received().is_empty(), "sent before its time");
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

/// `kill -9` of the push process in the middle of a fan-out: another
/// process takes over, every device is reached, and only the batch in
/// flight can be sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_push_process_mid_fan_out_loses_no_device() {
    const DEVICES: usize = 1000;
    const BATCH: usize = 100;
    let setup = setup_with(
        Duration::from_millis(10),
        &[
            ("OXBASE_PUSH__BATCH_SIZE", "100"),
            ("OXBASE_PUSH__CONCURRENCY", "4"),
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
    let delivered = || -> usize {
        setup
            .fcm
            .delivered
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum()
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while delivered() < 250 {
        assert!(Instant::now() < deadline, "the fan-out never started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    setup.push.kill();
    let at_kill = delivered();
    assert!(at_kill < DEVICES, "the fan-out ended before the kill");
    let _second = start_push(&setup.nats, &setup.push_env).await;
    let status = setup.wait_succeeded(&id).await;

    let delivered = setup.fcm.delivered.lock().unwrap().clone();
    let missing: Vec<usize> = (0..DEVICES)
        .filter(|i| !delivered.contains_key(&format!("token-{i}")))
        .collect();
    assert!(missing.is_empty(), "never reached: {missing:?}");
    let duplicates: usize = delivered.values().map(|m| m.len() - 1).sum();
    println!("killed after {at_kill} of {DEVICES} messages; {duplicates} sent twice");
    assert!(
        duplicates <= BATCH,
        "{duplicates} duplicates, more than one batch"
    );
    assert_eq!(status["count"], DEVICES);
    assert_eq!(status["numSent"], DEVICES, "{status}");
}
