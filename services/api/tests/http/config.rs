//! `/config`: Parse Config parameters in `_GlobalConfig`, with
//! master-key-only parameters hidden from clients.

use oxbase_kit::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{APP_ID, TestServer, read};

async fn master_json(
    server: &TestServer,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut request = server.master(method, path);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await.unwrap()).await
}

async fn put_config(server: &TestServer, body: Value) -> (u16, Value) {
    master_json(server, Method::PUT, "config", Some(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_is_saved_merged_and_filtered() {
    let server = TestServer::start().await;
    assert_eq!(server.get("config").await, (200, json!({"params": {}})));

    let date = json!({"__type": "Date", "iso": "2024-05-01T10:00:00.000Z"});
    let geo = json!({"__type": "GeoPoint", "latitude": 40.5, "longitude": -73.25});
    let file = json!({"__type": "File", "name": "abc_logo.png"});
    let saved = put_config(
        &server,
        json!({
            "params": {
                "welcome": "hello", "limit": 5, "on": true, "list": [1, "two"],
                "nested": {"a": {"b": null}}, "date": date, "geo": geo, "file": file,
                "secret": "s3cr3t"
            },
            "masterKeyOnly": {"secret": true, "notAParam": true}
        }),
    )
    .await;
    assert_eq!(saved, (200, json!({"result": true})));

    let public_params = json!({
        "welcome": "hello", "limit": 5, "on": true, "list": [1, "two"],
        "nested": {"a": {"b": null}}, "date": date, "geo": geo, "file": file
    });
    let flags_of = |keys: &Value, secret: Option<bool>| {
        let mut flags: serde_json::Map<String, Value> = keys
            .as_object()
            .unwrap()
            .keys()
            .map(|k| (k.clone(), json!(false)))
            .collect();
        if let Some(secret) = secret {
            flags.insert("secret".into(), json!(secret));
        }
        Value::Object(flags)
    };
    // Clients see what is not master-key-only, as Parse Server answers.
    assert_eq!(
        server.get("config").await,
        (
            200,
            json!({"params": public_params, "masterKeyOnly": flags_of(&public_params, None)})
        )
    );
    let mut all_params = public_params.clone();
    all_params["secret"] = json!("s3cr3t");
    let everything = json!({
        "params": all_params,
        "masterKeyOnly": flags_of(&public_params, Some(true))
    });
    assert_eq!(
        master_json(&server, Method::GET, "config", None).await,
        (200, everything)
    );

    // Updates merge: untouched parameters (and their flags) stay, deleted
    // ones go, and a parameter saved without a flag loses it.
    let saved = put_config(
        &server,
        json!({"params": {"limit": 6, "welcome": {"__op": "Delete"}, "added": "new"}}),
    )
    .await;
    assert_eq!(saved, (200, json!({"result": true})));
    let (_, config) = master_json(&server, Method::GET, "config", None).await;
    assert_eq!(config["params"]["limit"], 6);
    assert_eq!(config["params"]["added"], "new");
    assert!(config["params"].get("welcome").is_none(), "{config}");
    assert_eq!(config["params"]["secret"], "s3cr3t");
    assert_eq!(config["masterKeyOnly"]["secret"], true);
    assert_eq!(config["masterKeyOnly"]["welcome"], false);
    assert_eq!(config["params"]["date"], date);
    let (_, public) = server.get("config").await;
    assert!(public["params"].get("secret").is_none(), "{public}");
    assert_eq!(public["params"]["added"], "new");

    put_config(&server, json!({"params": {"secret": "plain now"}})).await;
    let (_, public) = server.get("config").await;
    assert_eq!(public["params"]["secret"], "plain now");
    assert_eq!(public["masterKeyOnly"]["secret"], false);

    // Kept in _GlobalConfig, whose two fields are Objects, as in Parse.
    let (status, schema) = master_json(&server, Method::GET, "schemas/_GlobalConfig", None).await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["fields"]["params"], json!({"type": "Object"}));
    assert_eq!(schema["fields"]["masterKeyOnly"], json!({"type": "Object"}));

    // The JS SDK's tunnel reads it too.
    let (status, tunnelled) = read(
        server
            .client
            .post(server.url("config"))
            .header("Content-Type", "text/plain")
            .body(json!({"_method": "GET", "_ApplicationId": APP_ID}).to_string())
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200, "{tunnelled}");
    assert_eq!(tunnelled["params"]["secret"], "plain now");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_are_refused() {
    let server = TestServer::start_with(|c| {
        c.read_only_master_key = Some(Secret::new("read-only"));
    })
    .await;
    put_config(
        &server,
        json!({"params": {"hidden": 1}, "masterKeyOnly": {"hidden": true}}),
    )
    .await;

    let (status, body) = server.put("config", json!({"params": {"a": 1}})).await;
    assert_eq!((status, body), (403, json!({"error": "Permission denied"})));
    let read_only = |method: Method| {
        server
            .request(method, "config")
            .header("X-Parse-Master-Key", "read-only")
    };
    let refused = read(
        read_only(Method::PUT)
            .json(&json!({"params": {"a": 1}}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        refused,
        (
            400,
            json!({"code": 119, "error": "read-only masterKey isn't allowed to update the config."})
        )
    );
    // It reads like the master key.
    let (status, config) = read(read_only(Method::GET).send().await.unwrap()).await;
    assert_eq!(status, 200);
    assert_eq!(config["params"], json!({"hidden": 1}));

    for (body, code) in [
        (json!({"params": "text"}), 107),
        (json!({"params": [1, 2]}), 107),
        (json!({"params": {"a": 1}, "masterKeyOnly": "yes"}), 107),
        (
            json!({"params": {"a": 1}, "masterKeyOnly": {"a": "yes"}}),
            107,
        ),
        (json!({"params": {"a.b": 1}}), 105),
        (json!({"params": {"$where": 1}}), 105),
        (json!({"params": {"a": {"__proto__": {"x": 1}}}}), 105),
        (
            json!({"params": {"a": {"__op": "Increment", "amount": 1}}}),
            108,
        ),
    ] {
        let (status, answer) = put_config(&server, body.clone()).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["code"], code, "{body}: {answer}");
    }
    // Nothing refused was stored.
    let (_, config) = master_json(&server, Method::GET, "config", None).await;
    assert_eq!(config["params"], json!({"hidden": 1}));

    // An empty update changes nothing and succeeds, as in Parse Server.
    assert_eq!(
        put_config(&server, json!({})).await,
        (200, json!({"result": true}))
    );
    let (status, _) = master_json(&server, Method::DELETE, "config", None).await;
    assert_eq!(status, 404);
}
