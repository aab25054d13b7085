//! `_Installation` and `/installations`: a device saves its own
//! installation, only the master key lists or deletes them, and Parse's
//! rules keep one installation per device and token.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read};

const TOKEN: &str = "ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789ABCDEF0123456789";

/// A request as a device with the given installation id would send it.
async fn device(
    server: &TestServer,
    method: Method,
    path: &str,
    installation: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.request(method, path);
    if let Some(id) = installation {
        request = request.header("X-Parse-Installation-Id", id);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn master(server: &TestServer, method: Method, path: &str, body: Value) -> (u16, Value) {
    server.master_json(method, path, Some(body)).await
}

/// Every installation, by master key, as (installationId, deviceToken).
async fn devices(server: &TestServer) -> Vec<(Value, Value)> {
    let mut all: Vec<(Value, Value)> = server
        .all("_Installation")
        .await
        .into_iter()
        .map(|o| (o["installationId"].clone(), o["deviceToken"].clone()))
        .collect();
    all.sort_by_key(|pair| pair.0.to_string());
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_writes_its_installation_and_only_the_master_key_lists_or_deletes() {
    let server = TestServer::start().await;
    let created = device(
        &server,
        Method::POST,
        "installations",
        None,
        Some(
            json!({"deviceType": "ios", "deviceToken": TOKEN, "installationId": "DEVICE-1",
                    "channels": ["news"], "timeZone": "Europe/Paris"}),
        ),
    )
    .await;
    assert_eq!(created.0, 201, "{}", created.1);
    let id = created.1["objectId"].as_str().unwrap().to_owned();

    let (status, got) = server.get(&format!("installations/{id}")).await;
    assert_eq!(status, 200, "{got}");
    assert_eq!(got["installationId"], "device-1");
    assert_eq!(got["deviceToken"], TOKEN.to_lowercase());
    assert_eq!(got["channels"], json!(["news"]));

    for path in ["installations", "classes/_Installation"] {
        let (status, body) = server.get(path).await;
        assert_eq!(
            (status, body),
            (
                400,
                json!({"code": 119, "error": "Clients aren't allowed to perform the find operation on the installation collection."})
            )
        );
    }
    let subquery = json!({"owner": {"$inQuery": {"className": "_Installation", "where": {}}}});
    assert_error(
        &server
            .query("Pet", &[("where", subquery.to_string())])
            .await,
        400,
        119,
    );
    assert_eq!(server.all("_Installation").await.len(), 1);

    let (status, body) = server
        .put(
            &format!("installations/{id}"),
            json!({"channels": ["news", "sport"], "badge": 3}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["updatedAt"].is_string());
    for (change, message) in [
        (
            json!({"deviceType": "android"}),
            "deviceType may not be changed in this operation",
        ),
        (
            json!({"installationId": "someone-else"}),
            "installationId may not be changed in this operation",
        ),
    ] {
        let (status, body) = server.put(&format!("installations/{id}"), change).await;
        assert_eq!((status, &body["code"]), (400, &json!(136)), "{body}");
        assert_eq!(body["error"], message);
    }
    let (status, body) = server
        .put(
            &format!("installations/{id}"),
            json!({"deviceToken": {"__op": "Delete"}}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        devices(&server).await,
        vec![(json!("device-1"), Value::Null)]
    );
    assert_error(
        &server
            .put("installations/nothere", json!({"deviceType": "ios"}))
            .await,
        404,
        101,
    );
    assert_error(
        &server.delete(&format!("installations/{id}")).await,
        400,
        119,
    );
    let (status, _) = master(
        &server,
        Method::DELETE,
        &format!("installations/{id}"),
        json!({}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(devices(&server).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn saving_again_lands_on_the_devices_installation() {
    let server = TestServer::start().await;
    let first = server
        .post(
            "installations",
            json!({"deviceType": "android", "installationId": "dev-1", "deviceToken": "t1"}),
        )
        .await;
    assert_eq!(first.0, 201, "{}", first.1);
    // The same device again: an update of its installation, answered 200.
    let (status, body) = server
        .post(
            "classes/_Installation",
            json!({"deviceType": "android", "installationId": "DEV-1", "deviceToken": "t2"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body["updatedAt"].is_string() && body.get("objectId").is_none());
    // Known by its header alone.
    let (status, body) = device(
        &server,
        Method::POST,
        "installations",
        Some("DEV-1"),
        Some(json!({"deviceType": "android", "appName": "Notes"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let all = server.all("_Installation").await;
    assert_eq!(all.len(), 1, "{all:?}");
    assert_eq!(all[0]["objectId"], first.1["objectId"]);
    assert_eq!(all[0]["deviceToken"], "t2");
    assert_eq!(all[0]["appName"], "Notes");

    // In a batch too.
    let (status, body) = server
        .post(
            "batch",
            json!({"requests": [{"method": "POST", "path": "/parse/classes/_Installation",
                   "body": {"deviceType": "android", "installationId": "dev-1", "badge": 2}}]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body[0]["success"]["updatedAt"].is_string(), "{body}");
    assert_eq!(server.all("_Installation").await[0]["badge"], 2);

    let refused = [
        (
            json!({"deviceType": "ios"}),
            135,
            "at least one ID field (deviceToken, installationId) must be specified in this operation",
        ),
        (
            json!({"installationId": "dev-2"}),
            135,
            "deviceType must be specified in this operation",
        ),
        (
            json!({"deviceType": "ios", "installationId": 7}),
            111,
            "installationId must be a string",
        ),
    ];
    for (body, code, message) in refused {
        let (status, answer) = server.post("installations", body).await;
        assert_eq!(
            (status, answer),
            (400, json!({"code": code, "error": message}))
        );
    }
    assert_eq!(server.all("_Installation").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_belongs_to_the_installation_that_saved_it_last() {
    let server = TestServer::start().await;
    let post = |body: Value| {
        let server = &server;
        async move {
            let (status, body) = server.post("installations", body).await;
            assert!(status == 200 || status == 201, "{status} {body}");
            body
        }
    };
    post(json!({"deviceType": "ios", "installationId": "a", "deviceToken": "T"})).await;
    // Reinstalled: a new installationId with the same token; the old
    // installation goes once the new one is saved.
    post(json!({"deviceType": "ios", "installationId": "b", "deviceToken": "T"})).await;
    assert_eq!(devices(&server).await, vec![(json!("b"), json!("T"))]);

    // Another app's installation with the token stays.
    post(json!({"deviceType": "ios", "installationId": "c", "deviceToken": "U", "appIdentifier": "one"})).await;
    post(json!({"deviceType": "ios", "installationId": "d", "deviceToken": "U", "appIdentifier": "two"})).await;
    assert_eq!(devices(&server).await.len(), 3);

    // A token imported without an installationId is completed by the
    // device that reports it.
    let (status, imported) = master(
        &server,
        Method::POST,
        "installations",
        json!({"deviceType": "ios", "deviceToken": "V"}),
    )
    .await;
    assert_eq!(status, 201, "{imported}");
    let (status, body) = server
        .post(
            "installations",
            json!({"deviceType": "ios", "installationId": "e", "deviceToken": "V"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let all = server.all("_Installation").await;
    let holders: Vec<&Value> = all.iter().filter(|o| o["deviceToken"] == "V").collect();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0]["objectId"], imported["objectId"]);
    assert_eq!(holders[0]["installationId"], "e");

    // A token held by another device, sent without an installationId in
    // the body: Parse cannot tell which to keep.
    let (status, body) = device(
        &server,
        Method::POST,
        "installations",
        Some("z"),
        Some(json!({"deviceType": "ios", "deviceToken": "V"})),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 132, "error": "Must specify installationId when deviceToken matches multiple Installation objects"})
        )
    );
}
