//! Cloud functions and before-hooks served by NATS handlers written in
//! Rust with async-nats, against `oxbase api` and a real nats-server; and
//! handlers that misbehave.

mod common;

use futures_util::StreamExt;
use serde_json::{Value, json};

use common::{Nats, Oxbase, free_port};

/// A REST call, with the master key or as a client: (status, body).
async fn rest(
    server: &Oxbase,
    method: reqwest::Method,
    path: &str,
    body: Value,
    master: bool,
) -> (u16, Value) {
    let mut request = server
        .request(method, path)
        .header("X-Parse-Request-Id", "req-1");
    if master {
        request = request.header("X-Parse-Master-Key", "mk");
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn master(server: &Oxbase, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    rest(server, method, path, body, true).await
}

async fn client(server: &Oxbase, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    rest(server, method, path, body, false).await
}

/// Answers every request on `subject` with `answer(request body)`, once
/// the server routes requests there.
async fn serve(
    nats: &async_nats::Client,
    subject: &str,
    answer: impl Fn(&async_nats::Message) -> Vec<u8> + Send + 'static,
) {
    let mut requests = nats.subscribe(subject.to_owned()).await.unwrap();
    let replier = nats.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let Some(reply) = request.reply.clone() else {
                continue;
            };
            let probe = request
                .headers
                .as_ref()
                .is_some_and(|h| h.get("Probe").is_some());
            let body = if probe { Vec::new() } else { answer(&request) };
            replier.publish(reply, body.into()).await.unwrap();
        }
    });
    wait_routed(nats, subject, true).await;
}

/// Waits until the server has the subscription on `subject`: a flush only
/// sends it, so a request from another connection could still find no
/// responder. `answers`: whether the subscriber replies to probes.
async fn wait_routed(nats: &async_nats::Client, subject: &str, answers: bool) {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Probe", "1");
    for _ in 0..100 {
        let request = async_nats::Request::new()
            .headers(headers.clone())
            .timeout(Some(std::time::Duration::from_millis(200)));
        match nats.send_request(subject.to_owned(), request).await {
            Ok(_) => return,
            Err(err) if !answers && err.kind() == async_nats::RequestErrorKind::TimedOut => return,
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
    panic!("the subscription on {subject} never became routable");
}

fn json_of(message: &async_nats::Message) -> Value {
    serde_json::from_slice(&message.payload).unwrap()
}

#[tokio::test]
async fn nats_handlers_serve_a_function_and_a_before_save() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();

    // A function needs no registration: its subject is its name.
    serve(&handler, "oxbase.functions.double", |request| {
        let body = json_of(request);
        let request_id = request
            .headers
            .as_ref()
            .and_then(|h| h.get("X-Parse-Request-Id"))
            .map(|v| v.to_string());
        let n = body["params"]["n"].as_i64().unwrap_or_default();
        serde_json::to_vec(&json!({"success": {
            "value": n * 2,
            "functionName": body["functionName"],
            "master": body["master"],
            "requestId": request_id,
        }}))
        .unwrap()
    })
    .await;
    let (status, body) = client(
        &server,
        reqwest::Method::POST,
        "functions/double",
        json!({"n": 21}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"result": {"value": 42, "functionName": "double", "master": false, "requestId": "req-1"}})
    );

    // A beforeSave served over NATS is registered with `nats: true`.
    let (status, body) = master(
        &server,
        reqwest::Method::POST,
        "hooks/triggers",
        json!({"className": "Order", "triggerName": "beforeSave", "nats": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({"className": "Order", "triggerName": "beforeSave", "nats": true})
    );
    serve(&handler, "oxbase.triggers.beforeSave.Order", |request| {
        let body = json_of(request);
        let mut object = body["object"].clone();
        let reply = if object["total"].as_i64().unwrap_or_default() > 100 {
            json!({"error": "too big"})
        } else if object["total"] == json!(13) {
            json!({"error": {"code": 137, "message": "unlucky"}})
        } else {
            object["checked"] = json!(true);
            // Fixed fields cannot be changed by a hook.
            object["objectId"] = json!("hacked0001");
            object["createdAt"] = json!("1999-01-01T00:00:00.000Z");
            json!({"success": object})
        };
        serde_json::to_vec(&reply).unwrap()
    })
    .await;

    let (status, created) = client(
        &server,
        reqwest::Method::POST,
        "classes/Order",
        json!({"total": 5}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["checked"], json!(true), "{created}");
    let id = created["objectId"].as_str().unwrap();
    assert_ne!(id, "hacked0001");
    let (_, stored) = client(
        &server,
        reqwest::Method::GET,
        &format!("classes/Order/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (stored["total"].clone(), stored["checked"].clone()),
        (json!(5), json!(true))
    );
    assert_eq!(stored["createdAt"], created["createdAt"]);

    let (status, refused) = client(
        &server,
        reqwest::Method::POST,
        "classes/Order",
        json!({"total": 500}),
    )
    .await;
    assert_eq!(
        (status, refused),
        (400, json!({"code": 142, "error": "too big"}))
    );
    let (status, refused) = client(
        &server,
        reqwest::Method::PUT,
        &format!("classes/Order/{id}"),
        json!({"total": 13}),
    )
    .await;
    assert_eq!(
        (status, refused),
        (400, json!({"code": 137, "error": "unlucky"}))
    );
    let (_, found) = client(
        &server,
        reqwest::Method::GET,
        "classes/Order",
        json!({"count": 1, "limit": 0}),
    )
    .await;
    assert_eq!(found["count"], json!(1), "refused writes stored nothing");
    let (_, stored) = client(
        &server,
        reqwest::Method::GET,
        &format!("classes/Order/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(stored["total"], json!(5));
}

#[tokio::test]
async fn installations_have_triggers_like_any_class() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();

    for trigger in ["beforeSave", "beforeDelete"] {
        let (status, body) = master(
            &server,
            reqwest::Method::POST,
            "hooks/triggers",
            json!({"className": "_Installation", "triggerName": trigger, "nats": true}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    serve(
        &handler,
        "oxbase.triggers.beforeSave._Installation",
        |request| {
            let body = json_of(request);
            let mut object = body["object"].clone();
            let reply = if object["deviceType"] == json!("windows") {
                json!({"error": "not this platform"})
            } else {
                object["channels"] = json!(["welcome"]);
                json!({"success": object})
            };
            serde_json::to_vec(&reply).unwrap()
        },
    )
    .await;
    serve(
        &handler,
        "oxbase.triggers.beforeDelete._Installation",
        |_| serde_json::to_vec(&json!({"error": "installations stay"})).unwrap(),
    )
    .await;

    let (status, created) = client(
        &server,
        reqwest::Method::POST,
        "installations",
        json!({"installationId": "3f2a9c1e-0000-4000-8000-000000000001", "deviceType": "android"}),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    assert_eq!(created["channels"], json!(["welcome"]), "{created}");
    let id = created["objectId"].as_str().unwrap().to_owned();
    let (_, stored) = master(
        &server,
        reqwest::Method::GET,
        &format!("installations/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(stored["channels"], json!(["welcome"]), "{stored}");

    let (status, refused) = client(
        &server,
        reqwest::Method::POST,
        "installations",
        json!({"installationId": "3f2a9c1e-0000-4000-8000-000000000002", "deviceType": "windows"}),
    )
    .await;
    assert_eq!(
        (status, refused),
        (400, json!({"code": 142, "error": "not this platform"}))
    );
    let (status, refused) = master(
        &server,
        reqwest::Method::DELETE,
        &format!("installations/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, refused),
        (400, json!({"code": 142, "error": "installations stay"}))
    );
    let (_, found) = master(
        &server,
        reqwest::Method::GET,
        "installations",
        json!({"count": 1, "limit": 0}),
    )
    .await;
    assert_eq!(found["count"], json!(1), "{found}");
}

#[tokio::test]
async fn misbehaving_handlers_get_clear_errors_and_the_api_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(
        &dir.path().join("api"),
        &nats.url(),
        &[
            ("OXBASE_TRIGGERS__TIMEOUT_MS", "500"),
            ("OXBASE_TRIGGERS__MAX_REPLY_BYTES", "1000"),
        ],
    )
    .await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    serve(&handler, "oxbase.functions.garbage", |_| {
        b"<html>oops</html>".to_vec()
    })
    .await;
    serve(&handler, "oxbase.functions.huge", |_| {
        serde_json::to_vec(&json!({"success": "x".repeat(5000)})).unwrap()
    })
    .await;
    // Subscribed, so the request is not refused at once, but never answers.
    let _silent = handler.subscribe("oxbase.functions.silent").await.unwrap();
    wait_routed(&handler, "oxbase.functions.silent", false).await;

    let cases = [
        (
            "garbage",
            "The function garbage failed: the answer is not JSON",
        ),
        (
            "huge",
            "The function huge failed: the answer is 5014 bytes, more than the limit of 1000",
        ),
        ("silent", "The function silent did not answer within 500 ms"),
        ("nobody", "Invalid function: \"nobody\""),
        ("bad.name", "Invalid function: \"bad.name\""),
    ];
    for (name, message) in cases {
        let (status, body) = client(
            &server,
            reqwest::Method::POST,
            &format!("functions/{name}"),
            json!({}),
        )
        .await;
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["code"], json!(141), "{name}: {body}");
        let text = body["error"].as_str().unwrap();
        assert!(text.starts_with(message), "{name}: {text}");
    }

    // A registered NATS trigger with no handler refuses the write clearly.
    master(
        &server,
        reqwest::Method::POST,
        "hooks/triggers",
        json!({"className": "Lonely", "triggerName": "beforeSave", "nats": true}),
    )
    .await;
    let (status, body) = client(
        &server,
        reqwest::Method::POST,
        "classes/Lonely",
        json!({"a": 1}),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 141, "error": "The beforeSave hook of Lonely has no handler listening"})
        )
    );

    // Webhook URLs must be http(s).
    for url in [
        "file:///etc/passwd",
        "ftp://example.com/x",
        "http://",
        "not a url",
    ] {
        let (status, body) = master(
            &server,
            reqwest::Method::POST,
            "hooks/functions",
            json!({"functionName": "f", "url": url}),
        )
        .await;
        assert_eq!(
            (status, body["code"].clone()),
            (400, json!(143)),
            "{url}: {body}"
        );
    }
    // A webhook function with no triggers service to call it.
    master(
        &server,
        reqwest::Method::POST,
        "hooks/functions",
        json!({"functionName": "web", "url": "http://127.0.0.1:9/never"}),
    )
    .await;
    let (status, body) = client(&server, reqwest::Method::POST, "functions/web", json!({})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 141, "error": "The function web cannot reach its webhook: no triggers service is running"})
        )
    );

    // Still up, and writes to classes without hooks go through.
    let (status, _) = client(
        &server,
        reqwest::Method::POST,
        "classes/Plain",
        json!({"a": 1}),
    )
    .await;
    assert_eq!(status, 201);
}

#[tokio::test]
async fn every_api_process_sees_a_registry_change_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let a = Oxbase::start(&dir.path().join("a"), &nats.url(), &[]).await;
    let b = Oxbase::start(&dir.path().join("b"), &nats.url(), &[]).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    serve(&handler, "oxbase.triggers.beforeSave.Shared", |_| {
        br#"{"error": "closed"}"#.to_vec()
    })
    .await;

    let (status, _) = client(&b, reqwest::Method::POST, "classes/Shared", json!({"a": 1})).await;
    assert_eq!(status, 201, "no hook yet");
    let (status, _) = master(
        &a,
        reqwest::Method::POST,
        "hooks/triggers",
        json!({"className": "Shared", "triggerName": "beforeSave", "nats": true}),
    )
    .await;
    assert_eq!(status, 200);
    // Registered through A, enforced by B once B's mirror has the change.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, body) =
            client(&b, reqwest::Method::POST, "classes/Shared", json!({"a": 2})).await;
        if status == 400 {
            assert_eq!(body, json!({"code": 142, "error": "closed"}));
            break;
        }
        assert!(std::time::Instant::now() < deadline, "B never saw the hook");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, listed) = master(&b, reqwest::Method::GET, "hooks/triggers", Value::Null).await;
    assert_eq!(
        listed,
        json!([{"className": "Shared", "triggerName": "beforeSave", "nats": true}])
    );

    // Removed through B, gone on A.
    let (status, body) = master(
        &b,
        reqwest::Method::PUT,
        "hooks/triggers/Shared/beforeSave",
        json!({"__op": "Delete"}),
    )
    .await;
    assert_eq!((status, body), (200, json!({})));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let (status, _) =
            client(&a, reqwest::Method::POST, "classes/Shared", json!({"a": 3})).await;
        if status == 201 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "A never saw the removal"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (status, body) = master(
        &a,
        reqwest::Method::GET,
        "hooks/triggers/Shared/beforeSave",
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 143, "error": "class Shared does not exist"})
        )
    );
}

/// Registers NATS-served triggers with `/hooks`.
async fn register(server: &Oxbase, triggers: &[(&str, &str)]) {
    for (class, trigger) in triggers {
        let (status, body) = master(
            server,
            reqwest::Method::POST,
            "hooks/triggers",
            json!({"className": class, "triggerName": trigger, "nats": true}),
        )
        .await;
        assert_eq!(status, 200, "{class} {trigger}: {body}");
    }
}

/// A call with a session token or a cloud context: (status, body).
async fn call_as(
    server: &Oxbase,
    method: reqwest::Method,
    path: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let mut request = server.request(method, path);
    if let Some(token) = session {
        request = request.header("X-Parse-Session-Token", token);
    }
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn find_login_and_file_triggers_and_the_cloud_context_reach_nats_handlers() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    register(
        &server,
        &[
            ("Post", "beforeFind"),
            ("Post", "afterFind"),
            ("Note", "beforeSave"),
            ("_User", "beforeLogin"),
            ("_User", "afterLogin"),
            ("_Session", "afterLogout"),
            ("@File", "beforeSaveFile"),
            ("@File", "afterSaveFile"),
            ("_File", "beforeDeleteFile"),
        ],
    )
    .await;
    let (status, refused) = master(
        &server,
        reqwest::Method::POST,
        "hooks/triggers",
        json!({"className": "Post", "triggerName": "beforeLogin", "nats": true}),
    )
    .await;
    assert_eq!((status, refused["code"].clone()), (400, json!(143)));

    // What the after-triggers were sent, in order.
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let record = |seen: tokio::sync::mpsc::UnboundedSender<Value>| {
        move |request: &async_nats::Message| {
            seen.send(json_of(request)).unwrap();
            serde_json::to_vec(&json!({"success": true})).unwrap()
        }
    };
    // Clients never see hidden posts, and nobody sees a post's secret.
    serve(&handler, "oxbase.triggers.beforeFind.Post", |request| {
        let body = json_of(request);
        let reply = if body["master"] == json!(true) {
            json!({"success": true})
        } else {
            let mut query = body["query"].clone();
            query["where"] = json!({"$and": [body["query"]["where"], {"hidden": {"$ne": true}}]});
            json!({"success": {"query": query}})
        };
        serde_json::to_vec(&reply).unwrap()
    })
    .await;
    serve(&handler, "oxbase.triggers.afterFind.Post", |request| {
        let body = json_of(request);
        let objects: Vec<Value> = body["objects"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                let mut o = o.clone();
                o.as_object_mut().unwrap().remove("secret");
                o
            })
            .collect();
        serde_json::to_vec(&json!({"success": objects})).unwrap()
    })
    .await;
    serve(&handler, "oxbase.triggers.beforeSave.Note", |request| {
        let body = json_of(request);
        let mut object = body["object"].clone();
        object["from"] = body["context"]["from"].clone();
        serde_json::to_vec(&json!({"success": object, "context": {"seen": true}})).unwrap()
    })
    .await;
    serve(&handler, "oxbase.triggers.beforeLogin._User", |request| {
        let body = json_of(request);
        let reply = if body["object"]["username"] == json!("banned") {
            json!({"error": {"code": 101, "message": "banned"}})
        } else {
            json!({"success": true})
        };
        serde_json::to_vec(&reply).unwrap()
    })
    .await;
    serve(
        &handler,
        "oxbase.triggers.afterLogin._User",
        record(seen_tx.clone()),
    )
    .await;
    serve(
        &handler,
        "oxbase.triggers.afterLogout._Session",
        record(seen_tx.clone()),
    )
    .await;
    serve(
        &handler,
        "oxbase.triggers.beforeSaveFile._File",
        |request| {
            let body = json_of(request);
            assert_eq!(body["file"]["base64"], json!("aGk="), "{body}");
            let reply = json!({"success": {"file": {"name": "renamed.txt", "base64": "SEVMTE8="}}});
            serde_json::to_vec(&reply).unwrap()
        },
    )
    .await;
    serve(
        &handler,
        "oxbase.triggers.afterSaveFile._File",
        record(seen_tx.clone()),
    )
    .await;
    serve(&handler, "oxbase.triggers.beforeDeleteFile._File", |_| {
        serde_json::to_vec(&json!({"error": {"code": 153, "message": "files stay"}})).unwrap()
    })
    .await;

    // beforeFind and afterFind, on queries and gets.
    let mut ids = Vec::new();
    for post in [
        json!({"title": "shown", "secret": "s1"}),
        json!({"title": "hidden", "hidden": true}),
    ] {
        let (status, created) = master(&server, reqwest::Method::POST, "classes/Post", post).await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["objectId"].as_str().unwrap().to_owned());
    }
    let (_, found) = client(&server, reqwest::Method::GET, "classes/Post", Value::Null).await;
    let results = found["results"]
        .as_array()
        .unwrap_or_else(|| panic!("{found}"));
    assert_eq!(results.len(), 1, "{found}");
    assert_eq!(results[0]["title"], json!("shown"));
    assert!(results[0].get("secret").is_none(), "{found}");
    let (_, all) = master(&server, reqwest::Method::GET, "classes/Post", Value::Null).await;
    assert_eq!(all["results"].as_array().unwrap().len(), 2, "{all}");
    let path = |id: &str| format!("classes/Post/{id}");
    let (_, shown) = client(&server, reqwest::Method::GET, &path(&ids[0]), Value::Null).await;
    assert_eq!(
        (shown["title"].clone(), shown.get("secret")),
        (json!("shown"), None)
    );
    let (status, hidden) = client(&server, reqwest::Method::GET, &path(&ids[1]), Value::Null).await;
    assert_eq!(
        (status, hidden["code"].clone()),
        (404, json!(101)),
        "{hidden}"
    );

    // The client's context reaches beforeSave.
    let (status, note) = client(
        &server,
        reqwest::Method::POST,
        "classes/Note",
        json!({"text": "hi", "_context": {"from": "sdk"}}),
    )
    .await;
    assert_eq!(
        (status, note["from"].clone()),
        (201, json!("sdk")),
        "{note}"
    );

    // beforeLogin refuses; afterLogin and afterLogout see the user and the
    // ended session.
    for name in ["ann", "banned"] {
        let (status, body) = client(
            &server,
            reqwest::Method::POST,
            "users",
            json!({"username": name, "password": "pw"}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
    }
    let login = |name: &str| json!({"username": name, "password": "pw"});
    let (status, refused) = client(&server, reqwest::Method::POST, "login", login("banned")).await;
    assert_eq!(
        (status, refused),
        (404, json!({"code": 101, "error": "banned"}))
    );
    let (status, user) = client(&server, reqwest::Method::POST, "login", login("ann")).await;
    assert_eq!(status, 200, "{user}");
    let token = user["sessionToken"].as_str().unwrap();
    let after_login = seen.recv().await.unwrap();
    assert_eq!(after_login["triggerName"], json!("afterLogin"));
    assert_eq!(after_login["object"]["username"], json!("ann"));
    assert_eq!(after_login["user"]["sessionToken"], json!(token));
    let (status, _) = call_as(
        &server,
        reqwest::Method::POST,
        "logout",
        Some(token),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let after_logout = seen.recv().await.unwrap();
    assert_eq!(after_logout["object"]["className"], json!("_Session"));
    assert_eq!(after_logout["object"]["sessionToken"], json!(token));

    // beforeSaveFile renames and rewrites the file; beforeDeleteFile keeps it.
    let uploaded: Value = server
        .request(reqwest::Method::POST, "files/hello.txt")
        .header("X-Parse-Master-Key", "mk")
        .header("Content-Type", "text/plain")
        .body("hi")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = uploaded["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{uploaded}"))
        .to_owned();
    assert!(name.ends_with("renamed.txt"), "{uploaded}");
    let after_save = seen.recv().await.unwrap();
    assert_eq!(after_save["file"]["name"], json!(name));
    assert_eq!(after_save["fileSize"], json!(5));
    let bytes = reqwest::get(uploaded["url"].as_str().unwrap())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(bytes, "HELLO");
    let (status, kept) = master(
        &server,
        reqwest::Method::DELETE,
        &format!("files/{name}"),
        Value::Null,
    )
    .await;
    assert_eq!(
        (status, kept),
        (400, json!({"code": 153, "error": "files stay"}))
    );
}

/// The SMTP sink of the email tests (ops/smtp-sink.py, on aiosmtpd, which
/// `bash ops/test.sh` installs into .oxbase/tools): each mail lands in
/// its directory as `<n>.eml`.
struct MailSink {
    port: u16,
    dir: tempfile::TempDir,
    seen: usize,
    child: std::process::Child,
}

impl Drop for MailSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl MailSink {
    fn start() -> Self {
        use std::io::BufRead;
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut child = std::process::Command::new("python3")
            .arg(root.join("ops/smtp-sink.py"))
            .arg(port.to_string())
            .arg(dir.path())
            .env("PYTHONPATH", root.join(".oxbase/tools"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs ops/smtp-sink.py");
        let mut ready = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(
            ready.trim(),
            "ready",
            "the SMTP sink did not start: run `bash ops/test.sh`, which installs aiosmtpd into .oxbase/tools"
        );
        MailSink {
            port,
            dir,
            seen: 0,
            child,
        }
    }

    /// The token of the next mail's link (`...?token=<token>`).
    async fn next_token(&mut self) -> String {
        let path = self.dir.path().join(format!("{}.eml", self.seen + 1));
        for _ in 0..200 {
            if let Ok(mail) = std::fs::read_to_string(&path) {
                self.seen += 1;
                let mail = mail
                    .replace("=\r\n", "")
                    .replace("=\n", "")
                    .replace("=3D", "=");
                let start = mail.find("token=").expect("a link with a token") + "token=".len();
                return mail[start..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .collect();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no mail arrived at the SMTP sink");
    }

    async fn assert_no_mail(&self) {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let next = self.dir.path().join(format!("{}.eml", self.seen + 1));
        assert!(!next.exists(), "unexpected mail");
    }
}

#[tokio::test]
async fn email_verification_and_reset_requests_run_the_user_hooks() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let mut sink = MailSink::start();
    let smtp_port = sink.port.to_string();
    let env = [
        ("OXBASE_PUBLIC_SERVER_URL", "http://127.0.0.1:1/parse"),
        ("OXBASE_EMAIL__SMTP_HOST", "127.0.0.1"),
        ("OXBASE_EMAIL__SMTP_PORT", smtp_port.as_str()),
        ("OXBASE_EMAIL__TLS", "none"),
        ("OXBASE_EMAIL__FROM", "App <no-reply@example.com>"),
        ("OXBASE_EMAIL__APP_NAME", "App"),
        ("OXBASE_EMAIL__VERIFY_USER_EMAILS", "true"),
        ("OXBASE_TRIGGERS__RETRY_INITIAL_MS", "100"),
    ];
    let server = Oxbase::start_command("all", &dir.path().join("api"), &nats.url(), &env).await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    register(
        &server,
        &[
            ("_User", "beforeSave"),
            ("_User", "afterSave"),
            ("_User", "beforePasswordResetRequest"),
        ],
    )
    .await;
    let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let before_tx = seen_tx.clone();
    // beforeSave refuses verifying `blocked`, and marks whom it verified.
    serve(
        &handler,
        "oxbase.triggers.beforeSave._User",
        move |request| {
            let body = json_of(request);
            let object = &body["object"];
            let verifying = object["emailVerified"] == json!(true);
            if verifying {
                before_tx.send(body.clone()).unwrap();
            }
            let reply = match (verifying, object["username"].as_str()) {
                (true, Some("blocked")) => json!({"error": {"code": 142, "message": "not yet"}}),
                (true, _) => {
                    let mut object = object.clone();
                    object["verifiedBy"] = json!("hook");
                    json!({"success": object})
                }
                _ => json!({"success": true}),
            };
            serde_json::to_vec(&reply).unwrap()
        },
    )
    .await;
    let after_tx = seen_tx.clone();
    serve(
        &handler,
        "oxbase.triggers.afterSave._User",
        move |request| {
            let body = json_of(request);
            if body["object"]["emailVerified"] == json!(true) {
                after_tx.send(body).unwrap();
            }
            serde_json::to_vec(&json!({"success": true})).unwrap()
        },
    )
    .await;
    let reset_tx = seen_tx.clone();
    serve(
        &handler,
        "oxbase.triggers.beforePasswordResetRequest._User",
        move |request| {
            let body = json_of(request);
            let reply = if body["object"]["email"] == json!("locked@example.com") {
                json!({"error": {"code": 205, "message": "This account cannot reset its password."}})
            } else {
                json!({"success": true})
            };
            reset_tx.send(body).unwrap();
            serde_json::to_vec(&reply).unwrap()
        },
    )
    .await;

    let mut sign_up = async |name: &str, email: &str| {
        let (status, body) = client(
            &server,
            reqwest::Method::POST,
            "users",
            json!({"username": name, "password": "pw", "email": email}),
        )
        .await;
        assert_eq!(status, 201, "{body}");
        (
            body["objectId"].as_str().unwrap().to_owned(),
            sink.next_token().await,
        )
    };
    let (ann, ann_token) = sign_up("ann", "ann@example.com").await;
    let (blocked, blocked_token) = sign_up("blocked", "blocked@example.com").await;
    sign_up("locked", "locked@example.com").await;
    let user = async |id: &str| {
        master(
            &server,
            reqwest::Method::GET,
            &format!("users/{id}"),
            Value::Null,
        )
        .await
        .1
    };
    let open = async |token: &str| {
        let page = reqwest::get(format!(
            "{}/parse/apps/app/verify_email?token={token}",
            server.base
        ))
        .await
        .unwrap();
        page.url().path().to_owned() + &page.text().await.unwrap()
    };

    // Verifying is a normal update: beforeSave sees it (as Parse's
    // maintenance key, not the master key) and may refuse it...
    let refused = open(&blocked_token).await;
    assert!(refused.contains("invalid"), "{refused}");
    let shown = seen.recv().await.unwrap();
    assert_eq!(shown["triggerName"], json!("beforeSave"));
    assert_eq!(shown["object"]["username"], json!("blocked"));
    assert_eq!(user(&blocked).await["emailVerified"], json!(false));

    // ...or change it; and its event runs afterSave.
    let verified = open(&ann_token).await;
    assert!(verified.contains("Your email is verified"), "{verified}");
    let shown = seen.recv().await.unwrap();
    assert_eq!(
        (
            shown["triggerName"].clone(),
            shown["master"].clone(),
            shown["original"]["emailVerified"].clone(),
            shown["object"].get("_email_verify_token"),
        ),
        (json!("beforeSave"), json!(false), json!(false), None),
        "{shown}"
    );
    let stored = user(&ann).await;
    assert_eq!(
        (
            stored["emailVerified"].clone(),
            stored["verifiedBy"].clone()
        ),
        (json!(true), json!("hook")),
        "{stored}"
    );
    let after = tokio::time::timeout(std::time::Duration::from_secs(20), seen.recv())
        .await
        .expect("afterSave of the verification")
        .unwrap();
    assert_eq!(after["triggerName"], json!("afterSave"));
    assert_eq!(after["object"]["objectId"], json!(ann));
    // The spent link verifies nothing twice.
    assert!(open(&ann_token).await.contains("invalid"));

    // beforePasswordResetRequest sees the user the request names before
    // the mail, and its error refuses the request: nothing is mailed.
    let reset = async |email: &str| {
        client(
            &server,
            reqwest::Method::POST,
            "requestPasswordReset",
            json!({"email": email}),
        )
        .await
    };
    assert_eq!(
        reset("locked@example.com").await,
        (
            400,
            json!({"code": 205, "error": "This account cannot reset its password."})
        )
    );
    let shown = seen.recv().await.unwrap();
    assert_eq!(
        (
            shown["triggerName"].clone(),
            shown["object"]["className"].clone(),
            shown["object"]["username"].clone(),
            shown["master"].clone(),
        ),
        (
            json!("beforePasswordResetRequest"),
            json!("_User"),
            json!("locked"),
            json!(false)
        )
    );
    assert!(shown["object"].get("_hashed_password").is_none(), "{shown}");
    sink.assert_no_mail().await;
    assert_eq!(reset("ann@example.com").await, (200, json!({})));
    assert_eq!(
        seen.recv().await.unwrap()["object"]["username"],
        json!("ann")
    );
    assert!(!sink.next_token().await.is_empty());
    // No user, no trigger: the answer stays Parse's quiet `{}`.
    assert_eq!(reset("nobody@example.com").await, (200, json!({})));
    sink.assert_no_mail().await;
    assert!(seen.try_recv().is_err());
}

/// With NATS down since the process started, which hooks exist is unknown:
/// a write that could have a beforeSave is refused with 503 (which the
/// Parse SDKs retry) rather than saved unchecked; once the registry loads,
/// the same write goes through its hook.
#[tokio::test]
async fn writes_wait_for_the_hook_registry() {
    let dir = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let nats = Nats::start(nats_port, &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("api"), &nats.url(), &[]).await;
    let (status, body) = master(
        &server,
        reqwest::Method::POST,
        "hooks/triggers",
        json!({"className": "Order", "triggerName": "beforeSave", "nats": true}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    drop(server);
    nats.stop();

    let server = Oxbase::spawn(
        &dir.path().join("api"),
        &format!("nats://127.0.0.1:{nats_port}"),
        &[],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while reqwest::get(format!("{}/health", server.base))
        .await
        .is_err()
    {
        assert!(std::time::Instant::now() < deadline, "oxbase never served");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let (status, body) = client(
        &server,
        reqwest::Method::POST,
        "classes/Order",
        json!({"n": 1}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["code"], 1, "{body}");
    let (status, body) = client(&server, reqwest::Method::GET, "classes/Order", Value::Null).await;
    assert_eq!(status, 503, "a beforeFind may exist too: {body}");

    let nats = Nats::start(nats_port, &dir.path().join("nats"));
    server.wait_ready().await;
    let handler = async_nats::connect(nats.url()).await.unwrap();
    serve(&handler, "oxbase.triggers.beforeSave.Order", |request| {
        let mut object = json_of(request)["object"].clone();
        object["checked"] = json!(true);
        serde_json::to_vec(&json!({"success": object})).unwrap()
    })
    .await;
    let (status, body) = client(
        &server,
        reqwest::Method::POST,
        "classes/Order",
        json!({"n": 1}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let id = body["objectId"].as_str().unwrap();
    let (_, stored) = master(
        &server,
        reqwest::Method::GET,
        &format!("classes/Order/{id}"),
        Value::Null,
    )
    .await;
    assert_eq!(stored["checked"], true, "{stored}");
}
