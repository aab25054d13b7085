use reqwest::Method;
use serde_json::json;

use crate::common::{TestServer, assert_error, read};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_update_delete() {
    let server = TestServer::start().await;
    let response = server
        .request(Method::POST, "classes/GameScore")
        .json(&json!({"score": 1337, "playerName": "Sean Plott", "cheatMode": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (_, created) = read(response).await;
    let id = created["objectId"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 10);
    assert!(id.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(location, server.url(&format!("classes/GameScore/{id}")));
    assert!(created["createdAt"].as_str().unwrap().ends_with('Z'));
    assert!(created.get("updatedAt").is_none());

    let (status, got) = server.get(&format!("classes/GameScore/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(got["score"], 1337);
    assert_eq!(got["playerName"], "Sean Plott");
    assert_eq!(got["createdAt"], created["createdAt"]);
    assert_eq!(got["updatedAt"], created["createdAt"]);

    let (status, updated) = server
        .put(
            &format!("classes/GameScore/{id}"),
            json!({"score": {"__op": "Increment", "amount": 3}, "cheatMode": true, "playerName": null}),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(updated["score"], 1340);
    assert!(updated["updatedAt"].is_string());
    assert!(
        updated.get("cheatMode").is_none(),
        "plain sets are not echoed"
    );

    let (_, got) = server.get(&format!("classes/GameScore/{id}")).await;
    assert_eq!(got["score"], 1340);
    assert_eq!(got["cheatMode"], true);
    assert!(got.get("playerName").is_none());
    assert_eq!(got["updatedAt"], updated["updatedAt"]);

    let (status, body) = server.delete(&format!("classes/GameScore/{id}")).await;
    assert_eq!((status, body), (200, json!({})));
    assert_error(
        &server.get(&format!("classes/GameScore/{id}")).await,
        404,
        101,
    );
    assert_error(
        &server.delete(&format!("classes/GameScore/{id}")).await,
        404,
        101,
    );
    assert_error(
        &server
            .put(&format!("classes/GameScore/{id}"), json!({"a": 1}))
            .await,
        404,
        101,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_values_round_trip() {
    let server = TestServer::start().await;
    let object = json!({
        "date": {"__type": "Date", "iso": "2024-03-04T05:06:07.089Z"},
        "pointer": {"__type": "Pointer", "className": "Team", "objectId": "abc123"},
        "location": {"__type": "GeoPoint", "latitude": 40.5, "longitude": -73.25},
        "area": {"__type": "Polygon", "coordinates": [[0, 0], [0, 1], [1, 1], [0, 0]]},
        "file": {"__type": "File", "name": "a.txt", "url": "http://files/a.txt"},
        "bytes": {"__type": "Bytes", "base64": "aGVsbG8="},
        "nested": {"a": {"b": [1, {"c": {"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"}}]}},
        "list": [1, "two", {"three": 3}],
        "ACL": {"*": {"read": true}}
    });
    let (status, created) = server.post("classes/Thing", object.clone()).await;
    assert_eq!(status, 201, "{created}");
    let (_, got) = server
        .get(&format!(
            "classes/Thing/{}",
            created["objectId"].as_str().unwrap()
        ))
        .await;
    for (key, value) in object.as_object().unwrap() {
        if key != "file" {
            assert_eq!(&got[key], value, "{key}");
        }
    }
    // Files keep their name; their URL is the server's own.
    assert_eq!(
        got["file"],
        json!({"__type": "File", "name": "a.txt", "url": server.url("files/test-app/a.txt")})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn array_operators_and_nested_updates() {
    let server = TestServer::start().await;
    let (_, created) = server
        .post(
            "classes/Bag",
            json!({"items": {"__op": "Add", "objects": [1, 2]}, "profile": {"name": "a"}}),
        )
        .await;
    assert_eq!(
        created["items"],
        json!([1, 2]),
        "create echoes operator results"
    );
    let path = format!("classes/Bag/{}", created["objectId"].as_str().unwrap());
    let (_, r) = server
        .put(
            &path,
            json!({"items": {"__op": "AddUnique", "objects": [2, 3]}}),
        )
        .await;
    assert_eq!(r["items"], json!([1, 2, 3]));
    let (_, r) = server
        .put(&path, json!({"items": {"__op": "Remove", "objects": [1]}}))
        .await;
    assert_eq!(r["items"], json!([2, 3]));
    let (status, _) = server
        .put(
            &path,
            json!({"profile.name": "b", "profile.stats.wins": {"__op": "Increment"}}),
        )
        .await;
    assert_eq!(status, 200);
    let (_, got) = server.get(&path).await;
    assert_eq!(got["profile"], json!({"name": "b", "stats": {"wins": 1}}));
    let (status, _) = server
        .put(&path, json!({"items": {"__op": "Delete"}}))
        .await;
    assert_eq!(status, 200);
    let (_, got) = server.get(&path).await;
    assert!(got.get("items").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_inferred_and_enforced() {
    let server = TestServer::start().await;
    assert_eq!(server.post("classes/Typed", json!({"n": 1})).await.0, 201);
    assert_error(
        &server.post("classes/Typed", json!({"n": "one"})).await,
        400,
        111,
    );
    assert_error(
        &server
            .post(
                "classes/Typed",
                json!({"n": {"__op": "Add", "objects": [1]}}),
            )
            .await,
        400,
        111,
    );
    let geo = |lat: f64| json!({"__type": "GeoPoint", "latitude": lat, "longitude": 0});
    assert_eq!(
        server
            .post("classes/Typed", json!({"here": geo(1.0)}))
            .await
            .0,
        201
    );
    assert_error(
        &server
            .post("classes/Typed", json!({"there": geo(2.0)}))
            .await,
        400,
        111,
    );
    assert_eq!(server.all("Typed").await.len(), 2);

    // Many first writes of the same new field at once agree on its type.
    let mut tasks = Vec::new();
    for i in 0..20 {
        let client = server.client.clone();
        let url = server.url("classes/Race");
        tasks.push(tokio::spawn(async move {
            client
                .post(url)
                .header("X-Parse-Application-Id", crate::common::APP_ID)
                .json(&json!({"field": i}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap(), 201);
    }
    assert_eq!(server.all("Race").await.len(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_class_creation_can_be_refused() {
    let server = TestServer::start_with(|c| c.allow_client_class_creation = false).await;
    assert_error(
        &server.post("classes/Fresh", json!({"a": 1})).await,
        400,
        119,
    );
    assert_error(&server.get("classes/Fresh").await, 400, 119);
    let (status, _) = read(
        server
            .master(Method::POST, "classes/Fresh")
            .json(&json!({"a": 1}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 201);
    // Once the class exists, clients may use it.
    assert_eq!(
        server
            .post("classes/Fresh", json!({"a": 2, "b": true}))
            .await
            .0,
        201
    );
    let (status, found) = server.get("classes/Fresh").await;
    assert_eq!(status, 200);
    assert_eq!(found["results"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_object_ids() {
    let server = TestServer::start().await;
    assert_error(
        &server.post("classes/C", json!({"objectId": "mine"})).await,
        400,
        105,
    );
    let server = TestServer::start_with(|c| c.allow_custom_object_id = true).await;
    let (status, created) = server
        .post("classes/C", json!({"objectId": "mine", "v": 1}))
        .await;
    assert_eq!((status, created["objectId"].as_str()), (201, Some("mine")));
    assert_error(
        &server.post("classes/C", json!({"objectId": "mine"})).await,
        400,
        137,
    );
    assert_error(
        &server.post("classes/C", json!({"objectId": ""})).await,
        400,
        104,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_classes_and_other_routes_say_not_supported_yet() {
    let server = TestServer::start().await;
    assert_error(
        &server
            .post("classes/_Product", json!({"productIdentifier": "x"}))
            .await,
        400,
        108,
    );
    // Without NATS there is no push service to hand a push to.
    let push = server
        .master_json(Method::POST, "push", Some(json!({"where": {}, "data": {}})))
        .await;
    assert_eq!(
        push.1["error"],
        "Push is off on this server (push.enabled = false, or no NATS)."
    );
    assert_error(&push, 400, 108);
    // With hooks off (as without NATS), the error says so.
    let (status, body) = server.post("functions/hello", json!({})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"code": 141, "error": "Cloud functions are turned off on this server (triggers.enabled is false)"})
        )
    );
    let (status, body) = server.get("nothing/here").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = read(
        server
            .client
            .get(server.url("health"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
}
