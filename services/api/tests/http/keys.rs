use oxbase_kit::Secret;
use reqwest::Method;
use serde_json::json;

use crate::common::{APP_ID, MASTER_KEY, TestServer, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_id_is_required() {
    let server = TestServer::start().await;
    let (status, body) = read(
        server
            .client
            .get(server.url("classes/A"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (403, json!({"error": "unauthorized"})));
    let (status, _) = read(
        server
            .client
            .get(server.url("classes/A"))
            .header("X-Parse-Application-Id", "someone-else")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configured_client_keys_are_checked() {
    let server = TestServer::start_with(|c| {
        c.rest_api_key = Some(Secret::new("rest"));
        c.javascript_key = Some(Secret::new("js"));
    })
    .await;
    assert_eq!(server.get("classes/A").await.0, 403);
    for (header, value, status) in [
        ("X-Parse-REST-API-Key", "rest", 200),
        ("X-Parse-Javascript-Key", "js", 200),
        ("X-Parse-REST-API-Key", "wrong", 403),
        ("X-Parse-Client-Key", "rest", 403),
        ("X-Parse-Master-Key", MASTER_KEY, 200),
        ("X-Parse-Master-Key", "guess", 403),
    ] {
        let response = server
            .request(Method::GET, "classes/A")
            .header(header, value)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{header}: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_js_sdk_tunnel_works() {
    let server = TestServer::start_with(|c| c.javascript_key = Some(Secret::new("js"))).await;
    let tunnel = |body: serde_json::Value| {
        server
            .client
            .post(server.url("classes/Tunnel"))
            .header("Content-Type", "text/plain")
            .body(body.to_string())
    };
    let created = tunnel(
        json!({"_ApplicationId": APP_ID, "_JavaScriptKey": "js", "_ClientVersion": "js8.6.2",
                                "_InstallationId": "i-1", "v": 1}),
    );
    let (status, body) = read(created.send().await.unwrap()).await;
    assert_eq!(status, 201, "{body}");
    let found = tunnel(
        json!({"_method": "GET", "_ApplicationId": APP_ID, "_JavaScriptKey": "js",
                              "where": {"v": 1}, "limit": 5}),
    );
    let (status, body) = read(found.send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    assert!(results[0].get("_InstallationId").is_none() && results[0]["v"] == 1);
    let (status, _) = read(
        tunnel(json!({"_ApplicationId": APP_ID, "v": 2}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        status, 403,
        "the JavaScript key is configured, so it is required"
    );
}

/// Parse's maintenance key: past ACLs like the master key, sees and sets
/// the internal fields (so users move with their password hashes and
/// dates), opens no master-key-only route, and only from its addresses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_maintenance_key_reaches_internal_fields_only() {
    let server = TestServer::start_with(|c| c.maintenance_key = Some(Secret::new("mtk"))).await;
    let as_maintenance = |method: Method, path: &str, body: Option<serde_json::Value>| {
        let mut request = server
            .request(method, path)
            .header("X-Parse-Maintenance-Key", "mtk");
        if let Some(body) = body {
            request = request.json(&body);
        }
        async move { read(request.send().await.unwrap()).await }
    };

    let (status, alice) = server
        .post(
            "users",
            json!({"username": "alice", "password": "secret-1"}),
        )
        .await;
    assert_eq!(status, 201, "{alice}");
    let alice_id = alice["objectId"].as_str().unwrap();

    // Reads show the hash, as Parse shows it, and nothing hides objects.
    let (status, read_alice) =
        as_maintenance(Method::GET, &format!("users/{alice_id}"), None).await;
    assert_eq!(status, 200, "{read_alice}");
    let hash = read_alice["password"].as_str().unwrap().to_owned();
    assert!(hash.starts_with("$2"), "{hash}");
    let (status, hidden) = server
        .master_json(
            Method::POST,
            "classes/Secret",
            Some(json!({"ACL": {}, "note": "x"})),
        )
        .await;
    assert_eq!(status, 201, "{hidden}");
    let (status, found) = as_maintenance(Method::GET, "classes/Secret", None).await;
    assert_eq!(
        (status, found["results"].as_array().unwrap().len()),
        (200, 1)
    );
    assert_eq!(server.get("classes/Secret").await.1["results"], json!([]));

    // A user moved with their dates and lockout count, then their hash
    // (a new user needs a password, as in Parse).
    let created = "2020-01-02T03:04:05.006Z";
    let (status, bob) = as_maintenance(
        Method::POST,
        "users",
        Some(json!({
            "username": "bob",
            "password": "temporary",
            "_failed_login_count": 2,
            "createdAt": {"__type": "Date", "iso": created},
        })),
    )
    .await;
    assert_eq!(status, 201, "{bob}");
    let bob_id = bob["objectId"].as_str().unwrap();
    let (status, body) = as_maintenance(
        Method::PUT,
        &format!("users/{bob_id}"),
        Some(json!({"_hashed_password": hash})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(bob["createdAt"], created);
    let (_, read_bob) = as_maintenance(Method::GET, &format!("users/{bob_id}"), None).await;
    assert_eq!(read_bob["createdAt"], created);
    assert_eq!(read_bob["_failed_login_count"], 2);
    let (_, as_master) = server
        .master_json(Method::GET, &format!("users/{bob_id}"), None)
        .await;
    assert!(
        as_master.get("_failed_login_count").is_none(),
        "{as_master}"
    );
    assert!(as_master.get("password").is_none(), "{as_master}");
    let (status, login) = server
        .post("login", json!({"username": "bob", "password": "secret-1"}))
        .await;
    assert_eq!(status, 200, "{login}");

    // Updates too; no other key may name an internal field.
    let (status, body) = as_maintenance(
        Method::PUT,
        &format!("users/{bob_id}"),
        Some(json!({"_failed_login_count": {"__op": "Delete"}})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, read_bob) = as_maintenance(Method::GET, &format!("users/{bob_id}"), None).await;
    assert!(read_bob.get("_failed_login_count").is_none(), "{read_bob}");
    let refused = server
        .master_json(
            Method::PUT,
            &format!("users/{bob_id}"),
            Some(json!({"_failed_login_count": 9})),
        )
        .await;
    crate::common::assert_error(&refused, 400, 105);
    let backwards = as_maintenance(
        Method::POST,
        "classes/Moved",
        Some(json!({
            "createdAt": {"__type": "Date", "iso": created},
            "updatedAt": {"__type": "Date", "iso": "2019-01-01T00:00:00.000Z"},
        })),
    )
    .await;
    crate::common::assert_error(&backwards, 400, 142);

    // No master-key-only route opens to it.
    let (status, body) = as_maintenance(Method::GET, "schemas", None).await;
    assert_eq!((status, body), (403, json!({"error": "Permission denied"})));

    // From an address it is not allowed from, it is refused outright.
    let remote = TestServer::start_with(|c| {
        c.maintenance_key = Some(Secret::new("mtk"));
        c.maintenance_key_ips = vec!["10.0.0.1".into()];
    })
    .await;
    let (status, body) = read(
        remote
            .request(Method::GET, "classes/Secret")
            .header("X-Parse-Maintenance-Key", "mtk")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (403, json!({"error": "unauthorized"})));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_only_master_key_cannot_change_hooks() {
    let server = TestServer::start_with(|c| c.read_only_master_key = Some(Secret::new("ro"))).await;
    let hook = json!({"functionName": "f", "url": "https://example.com/f"});
    let cases = [
        (Method::POST, "hooks/functions", hook.clone(), "create"),
        (Method::PUT, "hooks/functions/f", hook, "update"),
        (
            Method::PUT,
            "hooks/functions/f",
            json!({"__op": "Delete"}),
            "delete",
        ),
        (Method::DELETE, "hooks/functions/f", json!({}), "delete"),
    ];
    for (method, path, body, action) in cases {
        let (status, reply) = read(
            server
                .request(method.clone(), path)
                .header("X-Parse-Master-Key", "ro")
                .json(&body)
                .send()
                .await
                .unwrap(),
        )
        .await;
        assert_eq!(
            (status, reply["code"].clone()),
            (400, json!(119)),
            "{method} {path}"
        );
        assert_eq!(
            reply["error"],
            format!("read-only masterKey isn't allowed to perform the {action} operation.")
        );
    }
    // Reading is allowed: this server has hooks off, which it says instead.
    let (_, reply) = read(
        server
            .request(Method::GET, "hooks/functions")
            .header("X-Parse-Master-Key", "ro")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(reply["code"], json!(141));
}
