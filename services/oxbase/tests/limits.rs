//! Rate limits and idempotency (`[rate_limit]`, `[idempotency]`) against
//! real `oxbase api` processes and a real nats-server: Parse Server's
//! bodies and statuses, and counts and request ids shared by processes.
//!
//! Every request here comes from 127.0.0.1, which Parse's rules skip
//! unless `includeInternalRequests` is set, so the rules set it.

mod common;

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use reqwest::Method;
use serde_json::{Value, json};

use common::{Nats, Oxbase, free_port};

/// A REST call with extra headers: (status, body).
async fn call(
    server: &Oxbase,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, Value) {
    let mut request = server.request(method, path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn get(server: &Oxbase, path: &str, headers: &[(&str, &str)]) -> u16 {
    call(server, Method::GET, path, headers, Value::Null)
        .await
        .0
}

/// A rule that counts this test's own requests.
fn rule(path: &str, count: u64, window_ms: u64, extra: Value) -> Value {
    let mut rule = json!({
        "requestPath": path,
        "requestCount": count,
        "requestTimeWindow": window_ms,
        "includeInternalRequests": true,
    });
    rule.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    rule
}

async fn sign_up(server: &Oxbase, name: &str) -> String {
    let (status, body) = call(
        server,
        Method::POST,
        "users",
        &[],
        json!({"username": name, "password": "pw"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    body["sessionToken"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_follow_parse() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let minute = 60_000;
    let rules = json!([
        rule("/classes/Limited", 2, minute, json!({"requestMethods": ["POST"], "errorResponseMessage": "Slow down."})),
        rule("/classes/Short", 1, 1500, json!({})),
        rule("/classes/ByUser", 1, minute, json!({"zone": "user"})),
        rule("/classes/ByIp", 1, minute, json!({"zone": "ip"})),
        rule("/classes/Batched", 2, minute, json!({})),
        rule("/classes/Guessed", 2, minute, json!({})),
        // Without includeInternalRequests: 127.0.0.1 is not counted.
        {"requestPath": "/classes/Internal", "requestCount": 0, "requestTimeWindow": minute},
    ]);
    let server = Oxbase::start(
        &dir.path().join("api"),
        &nats.url(),
        &[("OXBASE_RATE_LIMIT__RULES", &rules.to_string())],
    )
    .await;

    // The count, with express-rate-limit's headers as Parse sends them,
    // then Parse's refusal; other methods are not counted.
    for left in ["1", "0"] {
        let response = server
            .request(Method::POST, "classes/Limited")
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 201);
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(header("x-ratelimit-limit"), "2");
        assert_eq!(header("x-ratelimit-remaining"), left);
        let reset: u64 = header("x-ratelimit-reset").parse().unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        assert!((now..=now + 61).contains(&reset), "{reset} vs {now}");
    }
    let response = server
        .request(Method::POST, "classes/Limited")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, json!({"code": 100, "error": "Slow down."}));
    assert_eq!(get(&server, "classes/Limited", &[]).await, 200);
    // The master key is not counted.
    let master = [("X-Parse-Master-Key", "mk")];
    let (status, _) = call(&server, Method::POST, "classes/Limited", &master, json!({})).await;
    assert_eq!(status, 201);
    assert_eq!(
        server
            .master_call(Method::GET, "classes/Limited", Value::Null)
            .await["results"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // A window of our own: refused within it, served after it.
    assert_eq!(get(&server, "classes/Short", &[]).await, 200);
    let (status, body) = call(&server, Method::GET, "classes/Short", &[], Value::Null).await;
    assert_eq!(
        (status, body),
        (429, json!({"code": 100, "error": "Too many requests."}))
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    assert_eq!(get(&server, "classes/Short", &[]).await, 200);

    // Zones: each user has a count; without a session, the address has.
    let alice = sign_up(&server, "alice").await;
    let bob = sign_up(&server, "bob").await;
    let as_alice = [("X-Parse-Session-Token", alice.as_str())];
    let as_bob = [("X-Parse-Session-Token", bob.as_str())];
    assert_eq!(get(&server, "classes/ByUser", &as_alice).await, 200);
    assert_eq!(get(&server, "classes/ByUser", &as_alice).await, 429);
    assert_eq!(get(&server, "classes/ByUser", &as_bob).await, 200);
    assert_eq!(get(&server, "classes/ByUser", &[]).await, 200);
    assert_eq!(get(&server, "classes/ByUser", &[]).await, 429);
    assert_eq!(get(&server, "classes/ByIp", &as_alice).await, 200);
    assert_eq!(
        get(&server, "classes/ByIp", &as_bob).await,
        429,
        "one address"
    );

    // A bad session token is counted before it is refused, so tokens
    // cannot be guessed past the limit.
    let guess = [("X-Parse-Session-Token", "r:guessed")];
    for _ in 0..2 {
        let (status, body) =
            call(&server, Method::GET, "classes/Guessed", &guess, Value::Null).await;
        assert_eq!((status, body["code"].clone()), (400, json!(209)), "{body}");
    }
    assert_eq!(get(&server, "classes/Guessed", &guess).await, 429);

    // Each batch item counts; one over the limit fails the batch before
    // any of it runs, with 400 and the rule's body, as in Parse.
    let item = json!({"method": "POST", "path": "/parse/classes/Batched", "body": {}});
    let batch = |items: usize| json!({"requests": vec![item.clone(); items]});
    let (status, body) = call(&server, Method::POST, "batch", &[], batch(3)).await;
    assert_eq!(
        (status, body),
        (400, json!({"code": 100, "error": "Too many requests."}))
    );
    let created = server
        .master_call(Method::GET, "classes/Batched", Value::Null)
        .await;
    assert_eq!(created["results"], json!([]));

    // Parse's default: requests from 127.0.0.1 are not counted.
    assert_eq!(get(&server, "classes/Internal", &[]).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_share_one_count_through_nats() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let rules = json!([
        rule("/classes/Shared", 3, 60_000, json!({})),
        rule("/classes/Raced", 10, 60_000, json!({"zone": "global"})),
    ]);
    let env = [
        ("OXBASE_RATE_LIMIT__STORE", "nats"),
        ("OXBASE_RATE_LIMIT__RULES", &rules.to_string()),
    ];
    let a = Oxbase::start(&dir.path().join("a"), &nats.url(), &env).await;
    let b = Oxbase::start(&dir.path().join("b"), &nats.url(), &env).await;

    let mut statuses = Vec::new();
    for server in [&a, &b, &a, &b, &a] {
        statuses.push(get(server, "classes/Shared", &[]).await);
    }
    assert_eq!(statuses, [200, 200, 200, 429, 429]);

    // Concurrent requests on both: no count is lost, none is doubled.
    let requests = (0..30).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        get(server, "classes/Raced", &[])
    });
    let statuses = futures_util::future::join_all(requests).await;
    let served = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((served, refused), (10, 20), "{statuses:?}");

    // NATS gone: requests go through uncounted rather than fail.
    drop(nats);
    let deadline = Instant::now() + Duration::from_secs(10);
    while get(&a, "classes/Shared", &[]).await != 200 {
        assert!(Instant::now() < deadline, "a rate limit held without NATS");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_id_runs_once_across_processes() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let env = [
        ("OXBASE_IDEMPOTENCY__PATHS", "classes/Idem.*,functions/.*"),
        ("OXBASE_IDEMPOTENCY__TTL_SECS", "2"),
    ];
    // One store, so that both see the objects.
    let data = dir.path().join("api");
    let a = Oxbase::start(&data, &nats.url(), &env).await;
    let b = Oxbase::start(&data, &nats.url(), &env).await;
    let first = [("X-Parse-Request-Id", "request-1")];

    let (status, body) = call(&a, Method::POST, "classes/Idem", &first, json!({"n": 1})).await;
    assert_eq!(status, 201, "{body}");
    for server in [&a, &b] {
        let (status, body) = call(
            server,
            Method::POST,
            "classes/Idem",
            &first,
            json!({"n": 2}),
        )
        .await;
        assert_eq!(
            (status, body),
            (400, json!({"code": 159, "error": "Duplicate request"}))
        );
    }
    let objects = a
        .master_call(Method::GET, "classes/Idem", Value::Null)
        .await;
    assert_eq!(objects["results"].as_array().unwrap().len(), 1);

    // Reads, and paths the option does not name, are not deduplicated.
    let other = [("X-Parse-Request-Id", "request-2")];
    for _ in 0..2 {
        let (status, _) = call(&a, Method::POST, "classes/Other", &other, json!({})).await;
        assert_eq!(status, 201);
        assert_eq!(get(&a, "classes/Idem", &other).await, 200);
    }

    // A request that failed is still a duplicate when retried, as in Parse.
    let failing = [("X-Parse-Request-Id", "request-3")];
    let (status, body) = call(
        &a,
        Method::POST,
        "classes/Idem",
        &failing,
        json!({"ACL": 5}),
    )
    .await;
    assert_eq!(status, 400);
    assert_ne!(body["code"], 159);
    let (_, body) = call(&b, Method::POST, "classes/Idem", &failing, json!({})).await;
    assert_eq!(body["code"], 159);

    // Past the TTL, the id is forgotten.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, body) = call(&b, Method::POST, "classes/Idem", &first, json!({"n": 3})).await;
        if status == 201 {
            break;
        }
        assert_eq!(body["code"], 159);
        assert!(Instant::now() < deadline, "the request id never expired");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // NATS gone: a covered request is refused, not risked twice.
    drop(nats);
    let fresh = [("X-Parse-Request-Id", "request-4")];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = call(&a, Method::POST, "classes/Idem", &fresh, json!({})).await;
        if status == 500 {
            assert_eq!(body["code"], 1);
            break;
        }
        // Until the client notices the connection is gone, the id may
        // still be recorded: then the retry is a duplicate.
        assert!(status == 201 || body["code"] == 159, "{status} {body}");
        assert!(
            Instant::now() < deadline,
            "a request went through unchecked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Other requests are served.
    let (status, _) = call(&a, Method::POST, "classes/Other", &fresh, json!({})).await;
    assert_eq!(status, 201);
}

/// Answers every request on `subject` with `reply`.
async fn serve(nats: &async_nats::Client, subject: &str, reply: &'static str) {
    let mut requests = nats.subscribe(subject.to_owned()).await.unwrap();
    let replier = nats.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            if let Some(to) = request.reply {
                replier.publish(to, reply.into()).await.unwrap();
            }
        }
    });
    nats.flush().await.unwrap();
}

/// A Cloud Code validator's `rateLimit` travels in the hook's registry
/// entry and is counted by the API, as Parse Server counts it: on the
/// hook's route and methods, before the hook runs, once across processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_rate_limits_are_counted_by_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let env = [("OXBASE_RATE_LIMIT__STORE", "nats")];
    let a = Oxbase::start(&dir.path().join("a"), &nats.url(), &env).await;
    let b = Oxbase::start(&dir.path().join("b"), &nats.url(), &env).await;

    let handler = async_nats::connect(nats.url()).await.unwrap();
    serve(&handler, "oxbase.functions.cheer", r#"{"success": "go"}"#).await;
    serve(
        &handler,
        "oxbase.triggers.beforeSave.Vote",
        r#"{"success": true}"#,
    )
    .await;
    let kv = async_nats::jetstream::new(handler.clone())
        .get_key_value("OXBASE_HOOKS")
        .await
        .unwrap();
    let limit = |count: u64| {
        json!({
            "requestTimeWindow": 60_000,
            "requestCount": count,
            "errorResponseMessage": "Too many cheers",
            "includeInternalRequests": true,
        })
    };
    let entries = [
        (
            "function.cheer",
            json!({"functionName": "cheer", "nats": true, "rateLimit": limit(2)}),
        ),
        (
            "trigger.Vote.beforeSave",
            json!({"className": "Vote", "triggerName": "beforeSave", "nats": true, "rateLimit": limit(1)}),
        ),
    ];
    for (key, entry) in entries {
        kv.put(key, entry.to_string().into()).await.unwrap();
    }

    // Both processes count one limit, once their registries have the hooks.
    for server in [&a, &b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            // 143 until this process's registry has the entry.
            let (_, listed) = server
                .master_request(Method::GET, "hooks/triggers/Vote/beforeSave", Value::Null)
                .await;
            if listed.get("rateLimit").is_some() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the hooks never reached a process"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let cheer = |server| call(server, Method::POST, "functions/cheer", &[], json!({}));
    for server in [&b, &a] {
        assert_eq!(cheer(server).await, (200, json!({"result": "go"})));
    }
    for server in [&a, &b] {
        let (status, body) = cheer(server).await;
        assert_eq!(
            (status, body),
            (429, json!({"code": 100, "error": "Too many cheers"}))
        );
    }
    let master = [("X-Parse-Master-Key", "mk")];
    let (status, _) = call(&a, Method::POST, "functions/cheer", &master, json!({})).await;
    assert_eq!(status, 200, "the master key is not counted");

    // A beforeSave's limit counts saves, not reads.
    let (status, body) = call(&a, Method::POST, "classes/Vote", &[], json!({"up": true})).await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(get(&a, "classes/Vote", &[]).await, 200);
    assert_eq!(get(&b, "classes/Vote", &[]).await, 200);
    let (status, body) = call(&b, Method::POST, "classes/Vote", &[], json!({"up": false})).await;
    assert_eq!(
        (status, body),
        (429, json!({"code": 100, "error": "Too many cheers"}))
    );
}

/// A request is answered within `request_timeout_ms` (124), and past
/// `max_concurrent_requests` in flight, another is refused at once with 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_time_out_and_excess_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(
        &dir.path().join("api"),
        &nats.url(),
        &[
            ("OXBASE_LIMITS__REQUEST_TIMEOUT_MS", "1000"),
            ("OXBASE_LIMITS__MAX_CONCURRENT_REQUESTS", "1"),
            ("OXBASE_TRIGGERS__TIMEOUT_MS", "5000"),
        ],
    )
    .await;
    // A cloud function that answers after 3 s.
    let handler = async_nats::connect(nats.url()).await.unwrap();
    let mut requests = handler.subscribe("oxbase.functions.slow").await.unwrap();
    handler.flush().await.unwrap();
    let replier = handler.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let replier = replier.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(3)).await;
                if let Some(reply) = request.reply {
                    let _ = replier.publish(reply, r#"{"success": 1}"#.into()).await;
                }
            });
        }
    });

    let slow = {
        let request = server
            .request(Method::POST, "functions/slow")
            .json(&json!({}));
        tokio::spawn(async move {
            let response = request.send().await.unwrap();
            (
                response.status().as_u16(),
                response.json::<Value>().await.unwrap(),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, body) = call(&server, Method::GET, "classes/Item", &[], Value::Null).await;
    assert_eq!((status, body["code"].clone()), (503, json!(1)), "{body}");

    let started = Instant::now();
    let (status, body) = slow.await.unwrap();
    assert_eq!((status, body["code"].clone()), (400, json!(124)), "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "answered by the timeout, not the function"
    );

    // The slot is free again.
    let (status, body) = call(&server, Method::GET, "classes/Item", &[], Value::Null).await;
    assert_eq!(status, 200, "{body}");
}
