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
