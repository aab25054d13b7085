//! The triggers service against the real binary and a real nats-server:
//! afterSave and afterDelete delivered to a webhook in this process (and
//! to a NATS handler), retried, dead-lettered and replayed; a triggers
//! process killed with SIGKILL mid-run; two processes sharing the work
//! with the order per object intact.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use common::{Nats, Oxbase, ServiceProcess, all_events, free_port, replay_dead_letters};

/// One request the webhook received.
#[derive(Debug, Clone)]
struct Hit {
    /// Header names in lower case.
    headers: HashMap<String, String>,
    body: Value,
    /// Whether the webhook answered it with success.
    succeeded: bool,
}

impl Hit {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
            .unwrap_or_default()
    }

    fn object_id(&self) -> &str {
        self.body["object"]["objectId"].as_str().unwrap_or_default()
    }
}

/// How the webhook answers a request.
enum Answer {
    Success,
    Status(u16),
    /// No answer at all, until the caller gives up and hangs up.
    Hang,
}

type Behaviour = dyn Fn(&Hit, &[Hit]) -> Answer + Send + Sync;

/// A minimal HTTP/1.1 keep-alive webhook that records every request and
/// answers as `behaviour` says, given the request and every request so far
/// (this one included).
struct Webhook {
    port: u16,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Webhook {
    async fn start(behaviour: impl Fn(&Hit, &[Hit]) -> Answer + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let hits = Arc::new(Mutex::new(Vec::new()));
        let behaviour: Arc<Behaviour> = Arc::new(behaviour);
        let recorded = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let hits = Arc::clone(&recorded);
                let behaviour = Arc::clone(&behaviour);
                tokio::spawn(serve_connection(socket, hits, behaviour));
            }
        });
        Self { port, hits }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hook", self.port)
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    /// Waits until `done` holds for the requests so far.
    async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Hit]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.hits()) {
            assert!(
                Instant::now() < deadline,
                "the webhook never saw {what}; it saw {} requests",
                self.hits().len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn serve_connection(
    socket: tokio::net::TcpStream,
    hits: Arc<Mutex<Vec<Hit>>>,
    behaviour: Arc<Behaviour>,
) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    loop {
        let mut headers = HashMap::new();
        let mut line = String::new();
        match reader.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        loop {
            line.clear();
            match reader.read_line(&mut line).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
            }
        }
        let length = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).await.is_err() {
            return;
        }
        let hit = Hit {
            headers,
            body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            succeeded: false,
        };
        let answer = {
            let mut hits = hits.lock().unwrap();
            hits.push(hit.clone());
            let answer = behaviour(&hit, &hits);
            if let (Answer::Success, Some(last)) = (&answer, hits.last_mut()) {
                last.succeeded = true;
            }
            answer
        };
        let reply = match answer {
            Answer::Success => {
                let body = r#"{"success":true}"#;
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                )
            }
            Answer::Status(status) => {
                format!("HTTP/1.1 {status} Failed\r\nContent-Length: 0\r\n\r\n")
            }
            Answer::Hang => {
                // Until the caller hangs up.
                let mut rest = [0u8; 1024];
                while matches!(reader.read(&mut rest).await, Ok(n) if n > 0) {}
                return;
            }
        };
        if write.write_all(reply.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// The requests per event id, in arrival order.
fn by_event(hits: &[Hit]) -> HashMap<String, Vec<Hit>> {
    let mut out: HashMap<String, Vec<Hit>> = HashMap::new();
    for hit in hits {
        out.entry(hit.header("Idempotency-Key").to_owned())
            .or_default()
            .push(hit.clone());
    }
    out
}

/// Checks what every after-hook request must carry, and that per object
/// the values of `n` arrive in the order they were written (a repeat of
/// the latest is a redelivery and allowed).
fn assert_well_formed_and_in_order(hits: &[Hit]) {
    let mut latest: HashMap<String, (i64, String)> = HashMap::new();
    for hit in hits {
        let key = hit.header("Idempotency-Key");
        assert!(!key.is_empty(), "no Idempotency-Key: {hit:?}");
        assert_eq!(hit.body["eventId"], json!(key), "{hit:?}");
        assert_eq!(hit.body["object"]["className"], json!("Item"), "{hit:?}");
        let n = hit.body["object"]["n"].as_i64().unwrap();
        let id = hit.object_id().to_owned();
        if let Some((previous, previous_key)) = latest.get(&id) {
            let history: Vec<_> = hits
                .iter()
                .filter(|h| h.object_id() == id)
                .map(|h| {
                    (
                        &h.body["object"]["n"],
                        h.header("Idempotency-Key"),
                        h.succeeded,
                    )
                })
                .collect();
            assert!(
                n > *previous || (n == *previous && previous_key == key),
                "object {id}: n = {n} (event {key}) arrived after n = {previous} (event {previous_key}); all its requests: {history:?}"
            );
        }
        latest.insert(id, (n, key.to_owned()));
    }
}

/// Event ids of the class's events, from the events stream.
async fn event_ids(js: &jetstream::Context) -> HashSet<String> {
    all_events(js)
        .await
        .into_iter()
        .filter(|(event, _)| event["data"]["className"] == json!("Item"))
        .map(|(event, _)| event["id"].as_str().unwrap().to_owned())
        .collect()
}

/// Creates `objects` objects with `n = 0`, then updates each to
/// `n = 1..updates`, through `/batch`; returns their ids.
async fn write(server: &Oxbase, objects: usize, updates: i64) -> Vec<String> {
    let mut ids = Vec::new();
    let creates: Vec<Value> = (0..objects)
        .map(|_| json!({"method": "POST", "path": "/parse/classes/Item", "body": {"n": 0}}))
        .collect();
    for chunk in creates.chunks(50) {
        let done = server
            .call(reqwest::Method::POST, "batch", json!({ "requests": chunk }))
            .await;
        for item in done.as_array().unwrap() {
            ids.push(item["success"]["objectId"].as_str().unwrap().to_owned());
        }
    }
    for n in 1..=updates {
        let changes: Vec<Value> = ids
            .iter()
            .map(|id| json!({"method": "PUT", "path": format!("/parse/classes/Item/{id}"), "body": {"n": n}}))
            .collect();
        for chunk in changes.chunks(50) {
            let done = server
                .call(reqwest::Method::POST, "batch", json!({ "requests": chunk }))
                .await;
            assert!(
                done.as_array()
                    .unwrap()
                    .iter()
                    .all(|r| r.get("success").is_some()),
                "{done}"
            );
        }
    }
    ids
}

async fn register_after_save(server: &Oxbase, url: &str) {
    server
        .master_call(
            reqwest::Method::POST,
            "hooks/triggers",
            json!({"className": "Item", "triggerName": "afterSave", "url": url}),
        )
        .await;
}

async fn stream_messages(js: &jetstream::Context, name: &str) -> u64 {
    js.get_stream(name)
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .state
        .messages
}

async fn eventually_messages(js: &jetstream::Context, name: &str, want: u64, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let have = stream_messages(js, name).await;
        if have == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} holds {have} messages, not {want}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Short timeouts and retries, so failures play out quickly.
const FAST: &[(&str, &str)] = &[
    ("OXBASE_TRIGGERS__TIMEOUT_MS", "1000"),
    ("OXBASE_TRIGGERS__RETRY_INITIAL_MS", "100"),
    ("OXBASE_TRIGGERS__RETRY_MAX_MS", "400"),
];

#[tokio::test]
async fn a_failing_webhook_is_retried_until_it_answers() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let mut env = FAST.to_vec();
    env.push(("OXBASE_TRIGGERS__WEBHOOK_KEY", "wk"));
    let server = Oxbase::start_command("all", &dir.path().join("api"), &nats.url(), &env).await;
    // 500, then no answer within the timeout, then success.
    let webhook = Webhook::start(|hit, hits| {
        let key = hit.header("Idempotency-Key");
        match hits
            .iter()
            .filter(|h| h.header("Idempotency-Key") == key)
            .count()
        {
            1 => Answer::Status(500),
            2 => Answer::Hang,
            _ => Answer::Success,
        }
    })
    .await;
    register_after_save(&server, &webhook.url()).await;

    let created = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 7}))
        .await;
    let id = created["objectId"].as_str().unwrap();
    webhook
        .wait_for("three attempts", Duration::from_secs(20), |hits| {
            hits.len() >= 3
        })
        .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    // Delivered: nothing waits for delivery and nothing is dead.
    eventually_messages(&js, "OXBASE_TRIGGERS", 0, Duration::from_secs(10)).await;
    assert_eq!(stream_messages(&js, "OXBASE_TRIGGERS_DEAD").await, 0);

    let hits = webhook.hits();
    assert_eq!(hits.len(), 3, "{hits:?}");
    let answered: Vec<bool> = hits.iter().map(|h| h.succeeded).collect();
    assert_eq!(answered, [false, false, true]);
    let events = event_ids(&js).await;
    assert_eq!(events.len(), 1);
    let event_id = events.iter().next().unwrap();
    for hit in &hits {
        assert_eq!(hit.header("Idempotency-Key"), event_id);
        assert_eq!(hit.header("X-Parse-Webhook-Key"), "wk");
        assert_eq!(hit.header("Content-Type"), "application/json");
        assert_eq!(hit.body["triggerName"], json!("afterSave"));
        assert_eq!(hit.body["eventId"], json!(event_id));
        assert_eq!(hit.body["object"]["objectId"], json!(id));
        assert_eq!(hit.body["object"]["className"], json!("Item"));
        assert_eq!(hit.body["object"]["n"], json!(7));
        assert_eq!(hit.body["master"], json!(false));
        assert!(hit.body.get("original").is_none(), "a create has none");
    }
}

#[tokio::test]
async fn a_webhook_that_always_fails_ends_in_the_dead_letters_and_is_replayed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let mut env = FAST.to_vec();
    env.push(("OXBASE_TRIGGERS__MAX_ATTEMPTS", "3"));
    let _triggers = ServiceProcess::start("triggers", &nats.url(), &env).await;
    let healthy = Arc::new(AtomicBool::new(false));
    let webhook = Webhook::start({
        let healthy = Arc::clone(&healthy);
        move |_, _| {
            if healthy.load(Ordering::SeqCst) {
                Answer::Success
            } else {
                Answer::Status(500)
            }
        }
    })
    .await;
    register_after_save(&server, &webhook.url()).await;

    server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 1}))
        .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    eventually_messages(&js, "OXBASE_TRIGGERS_DEAD", 1, Duration::from_secs(20)).await;
    let events = event_ids(&js).await;
    let event_id = events.iter().next().unwrap();
    let hits = webhook.hits();
    assert_eq!(hits.len(), 3, "three attempts, then the dead letters");
    assert!(hits.iter().all(|h| h.header("Idempotency-Key") == event_id));

    let dead = js.get_stream("OXBASE_TRIGGERS_DEAD").await.unwrap();
    let first = dead.get_info().await.unwrap().state.first_sequence;
    let letter = dead.get_raw_message(first).await.unwrap();
    assert_eq!(letter.subject.as_str(), "oxbase.dead.Item.afterSave");
    assert_eq!(letter.headers.get("Oxbase-Attempts").unwrap().as_str(), "3");
    assert_eq!(
        letter.headers.get("Oxbase-Last-Error").unwrap().as_str(),
        "webhook answered HTTP 500"
    );
    let body: Value = serde_json::from_slice(&letter.payload).unwrap();
    assert_eq!(body["id"], json!(event_id), "the event itself");

    // Replaying another class moves nothing.
    assert_eq!(
        replay_dead_letters(&nats.url(), &["--class", "Other"]).trim(),
        "replayed 0 dead letters of Other"
    );
    assert_eq!(stream_messages(&js, "OXBASE_TRIGGERS_DEAD").await, 1);

    healthy.store(true, Ordering::SeqCst);
    assert_eq!(
        replay_dead_letters(&nats.url(), &[]).trim(),
        "replayed 1 dead letter"
    );
    webhook
        .wait_for("the replayed delivery", Duration::from_secs(20), |hits| {
            hits.len() >= 4
        })
        .await;
    let replayed = &webhook.hits()[3];
    assert!(replayed.succeeded);
    assert_eq!(replayed.header("Idempotency-Key"), event_id);
    assert_eq!(replayed.body["object"]["n"], json!(1));
    eventually_messages(&js, "OXBASE_TRIGGERS", 0, Duration::from_secs(10)).await;
    assert_eq!(stream_messages(&js, "OXBASE_TRIGGERS_DEAD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_triggers_service_mid_run_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Arc::new(Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await);
    let first = ServiceProcess::start("triggers", &nats.url(), FAST).await;
    // From the 300th request on, the webhook holds its answers, so the
    // process is killed with deliveries in flight.
    let holding = Arc::new(AtomicBool::new(true));
    let webhook = Webhook::start({
        let holding = Arc::clone(&holding);
        move |_, hits| {
            if hits.len() >= 300 && holding.load(Ordering::SeqCst) {
                Answer::Hang
            } else {
                Answer::Success
            }
        }
    })
    .await;
    register_after_save(&server, &webhook.url()).await;

    // 100 objects, each created and updated 9 times: 1,000 afterSaves,
    // still being written (and routed) when the process is killed.
    let writer = {
        let server = Arc::clone(&server);
        tokio::spawn(async move { write(&server, 100, 9).await })
    };
    webhook
        .wait_for("300 deliveries", Duration::from_secs(30), |hits| {
            hits.len() >= 300
        })
        .await;
    first.kill();
    let at_kill = webhook.hits().len();
    assert!(at_kill < 1000, "the kill came after every delivery");
    holding.store(false, Ordering::SeqCst);
    let _second = ServiceProcess::start("triggers", &nats.url(), FAST).await;
    writer.await.unwrap();

    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    eventually_messages(&js, "OXBASE_EVENTS", 1000, Duration::from_secs(30)).await;
    let events = event_ids(&js).await;
    assert_eq!(events.len(), 1000);
    webhook
        .wait_for("every event delivered", Duration::from_secs(60), |hits| {
            let delivered: HashSet<&str> = hits
                .iter()
                .filter(|h| h.succeeded)
                .map(|h| h.header("Idempotency-Key"))
                .collect();
            events.iter().all(|id| delivered.contains(id.as_str()))
        })
        .await;
    let hits = webhook.hits();
    assert_well_formed_and_in_order(&hits);
    // The deliveries held at the kill were made again, with the same id.
    let repeated: Vec<_> = by_event(&hits)
        .into_iter()
        .filter(|(_, hits)| hits.len() > 1)
        .collect();
    assert!(!repeated.is_empty(), "nothing was in flight at the kill");
    for (key, hits) in &repeated {
        assert!(events.contains(key));
        assert!(
            hits.iter().all(|h| h.body == hits[0].body),
            "a repeat differs: {hits:?}"
        );
    }
    eventually_messages(&js, "OXBASE_TRIGGERS", 0, Duration::from_secs(10)).await;
    assert_eq!(stream_messages(&js, "OXBASE_TRIGGERS_DEAD").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_triggers_processes_share_the_work_in_order_per_object() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let a = ServiceProcess::start("triggers", &nats.url(), FAST).await;
    let b = ServiceProcess::start("triggers", &nats.url(), FAST).await;
    let webhook = Webhook::start(|_, _| Answer::Success).await;
    register_after_save(&server, &webhook.url()).await;

    // 50 objects, each created and updated 9 times.
    write(&server, 50, 9).await;
    webhook
        .wait_for("500 deliveries", Duration::from_secs(30), |hits| {
            hits.iter().filter(|h| h.succeeded).count() >= 500
        })
        .await;
    let hits = webhook.hits();
    assert_well_formed_and_in_order(&hits);
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let events = event_ids(&js).await;
    assert_eq!(
        by_event(&hits).keys().cloned().collect::<HashSet<_>>(),
        events
    );

    let delivered_a = a.metric("oxbase_triggers_delivered_total").await;
    let delivered_b = b.metric("oxbase_triggers_delivered_total").await;
    assert!(
        delivered_a > 0 && delivered_b > 0,
        "one process did everything: {delivered_a} and {delivered_b}"
    );
    assert!(delivered_a + delivered_b >= 500);

    // One process stops cleanly (SIGTERM), a third starts, the second
    // dies (SIGKILL): the third, alone, routes and delivers what comes
    // next, whichever process had been routing.
    assert!(a.terminate().success());
    let c = ServiceProcess::start("triggers", &nats.url(), FAST).await;
    b.kill();
    let created = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 100}))
        .await;
    let id = created["objectId"].as_str().unwrap().to_owned();
    webhook
        .wait_for(
            "the delivery after the stops",
            Duration::from_secs(40),
            |hits| hits.iter().any(|h| h.object_id() == id && h.succeeded),
        )
        .await;
    assert_eq!(c.metric("oxbase_triggers_routed_total").await, 1);
    assert_eq!(c.metric("oxbase_triggers_delivered_total").await, 1);
}

#[tokio::test]
async fn after_delete_reaches_a_nats_handler_and_webhook_functions_are_proxied() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start_command("all", &dir.path().join("api"), &nats.url(), FAST).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    let mut requests = handler
        .subscribe("oxbase.triggers.afterDelete.Item")
        .await
        .unwrap();
    handler.flush().await.unwrap();
    server
        .master_call(
            reqwest::Method::POST,
            "hooks/triggers",
            json!({"className": "Item", "triggerName": "afterDelete", "nats": true}),
        )
        .await;

    let created = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 3}))
        .await;
    let id = created["objectId"].as_str().unwrap();
    server
        .request(reqwest::Method::DELETE, &format!("classes/Item/{id}"))
        .header("X-Parse-Request-Id", "req-del")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(20), requests.next())
        .await
        .expect("no afterDelete arrived")
        .unwrap();
    let body: Value = serde_json::from_slice(&request.payload).unwrap();
    let headers = request.headers.clone().unwrap();
    assert_eq!(body["triggerName"], json!("afterDelete"));
    assert_eq!(body["object"]["objectId"], json!(id));
    assert_eq!(body["object"]["n"], json!(3));
    assert_eq!(body["requestId"], json!("req-del"));
    assert_eq!(
        headers.get("Idempotency-Key").unwrap().as_str(),
        body["eventId"].as_str().unwrap()
    );
    assert_eq!(
        headers.get("X-Parse-Request-Id").unwrap().as_str(),
        "req-del"
    );
    handler
        .publish(request.reply.unwrap(), r#"{"success":true}"#.into())
        .await
        .unwrap();
    handler.flush().await.unwrap();
    let js = jetstream::new(handler.clone());
    eventually_messages(&js, "OXBASE_TRIGGERS", 0, Duration::from_secs(10)).await;

    // A purge deletes with events but runs no afterDelete, as Parse Server:
    // the next afterDelete is the plain delete made after it, and nothing
    // waits for delivery once that one is answered.
    for n in [4, 5] {
        server
            .call(reqwest::Method::POST, "classes/Item", json!({"n": n}))
            .await;
    }
    server
        .master_call(reqwest::Method::DELETE, "purge/Item", json!({}))
        .await;
    let after = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 6}))
        .await;
    let after_id = after["objectId"].as_str().unwrap();
    server
        .request(reqwest::Method::DELETE, &format!("classes/Item/{after_id}"))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let request = tokio::time::timeout(Duration::from_secs(20), requests.next())
        .await
        .expect("no afterDelete arrived after the purge")
        .unwrap();
    let body: Value = serde_json::from_slice(&request.payload).unwrap();
    assert_eq!(body["object"]["objectId"], json!(after_id), "{body}");
    handler
        .publish(request.reply.unwrap(), r#"{"success":true}"#.into())
        .await
        .unwrap();
    handler.flush().await.unwrap();
    eventually_messages(&js, "OXBASE_TRIGGERS", 0, Duration::from_secs(10)).await;

    // The webhook proxy: a function served by a webhook, and one whose
    // webhook fails.
    let webhook = Webhook::start(|hit, _| {
        if hit.body["functionName"] == json!("broken") {
            Answer::Status(500)
        } else {
            Answer::Success
        }
    })
    .await;
    for name in ["hello", "broken"] {
        server
            .master_call(
                reqwest::Method::POST,
                "hooks/functions",
                json!({"functionName": name, "url": webhook.url()}),
            )
            .await;
    }
    let answered = server
        .call(reqwest::Method::POST, "functions/hello", json!({"a": 1}))
        .await;
    assert_eq!(answered, json!({"result": true}));
    let failed = server
        .try_call(reqwest::Method::POST, "functions/broken", json!({}))
        .await
        .unwrap_err();
    assert!(failed.contains("141"), "{failed}");
    assert!(failed.contains("webhook answered HTTP 500"), "{failed}");
    let hits = webhook.hits();
    assert_eq!(hits[0].body["functionName"], json!("hello"));
    assert_eq!(hits[0].body["params"], json!({"a": 1}));
}

#[tokio::test]
async fn webhooks_serve_find_and_log_in_triggers_and_after_save_sees_the_context() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start_command("all", &dir.path().join("api"), &nats.url(), FAST).await;
    let webhook = Webhook::start(|_, _| Answer::Success).await;
    register_after_save(&server, &webhook.url()).await;
    for (class, trigger) in [("Item", "beforeFind"), ("_User", "beforeLogin")] {
        server
            .master_call(
                reqwest::Method::POST,
                "hooks/triggers",
                json!({"className": class, "triggerName": trigger, "url": webhook.url()}),
            )
            .await;
    }

    // The client's context travels with the write's event to its afterSave.
    server
        .call(
            reqwest::Method::POST,
            "classes/Item",
            json!({"n": 1, "_context": {"source": "import"}}),
        )
        .await;
    server
        .call(
            reqwest::Method::GET,
            "classes/Item",
            json!({"where": {"n": 1}}),
        )
        .await;
    server
        .call(
            reqwest::Method::POST,
            "users",
            json!({"username": "ann", "password": "pw"}),
        )
        .await;
    server
        .call(
            reqwest::Method::POST,
            "login",
            json!({"username": "ann", "password": "pw"}),
        )
        .await;
    let seen = |trigger: &'static str| {
        move |hits: &[Hit]| hits.iter().any(|h| h.body["triggerName"] == json!(trigger))
    };
    for trigger in ["afterSave", "beforeFind", "beforeLogin"] {
        webhook
            .wait_for(trigger, Duration::from_secs(10), seen(trigger))
            .await;
    }
    let hits = webhook.hits();
    let hit = |trigger: &str| {
        hits.iter()
            .find(|h| h.body["triggerName"] == json!(trigger))
            .unwrap()
    };
    assert_eq!(
        hit("afterSave").body["context"],
        json!({"source": "import"})
    );
    let find = &hit("beforeFind").body;
    assert_eq!(
        (find["className"].clone(), find["query"]["where"].clone()),
        (json!("Item"), json!({"n": 1}))
    );
    let login = &hit("beforeLogin").body["object"];
    assert_eq!(login["username"], json!("ann"));
    assert!(login.get("password").is_none() && login.get("_hashed_password").is_none());
}
