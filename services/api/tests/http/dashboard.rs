//! The routes Parse Dashboard calls beyond the object API, and the options
//! of finds it uses (`explain`, `redirectClassNameForKey`).

use oxbase_kit::Secret;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read};

/// Parse Server's answer to a master-key route without the master key.
#[track_caller]
fn assert_master_only(result: (u16, Value)) {
    assert_eq!(result, (403, json!({"error": "Permission denied"})));
}

#[tokio::test]
async fn server_info_tells_the_dashboard_what_this_server_does() {
    let server = TestServer::start().await;
    assert_master_only(server.get("serverInfo").await);
    let (status, info) = server.master_json(Method::GET, "serverInfo", None).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(info["parseServerVersion"], "9.10.0");
    let features = &info["features"];
    assert_eq!(features["schemas"]["clearAllDataFromClass"], true);
    assert_eq!(features["schemas"]["exportClass"], false);
    assert_eq!(features["logs"]["level"], true);
    assert_eq!(features["push"]["pushAudiences"], true);
    // This server runs without jobs and push: the Dashboard must not offer them.
    assert_eq!(features["cloudCode"]["jobs"], false);
    assert_eq!(features["push"]["immediatePush"], false);
    assert_eq!(features["push"]["localization"], false);
}

#[tokio::test]
async fn purge_deletes_every_object_and_keeps_the_schema() {
    let server = TestServer::start().await;
    for i in 0..1203 {
        if i % 50 == 0 {
            // Batches keep the setup quick.
            let requests: Vec<Value> = (i..(i + 50).min(1203))
                .map(|n| json!({"method": "POST", "path": "/parse/classes/Purged", "body": {"n": n}}))
                .collect();
            let (status, body) = server
                .master_json(Method::POST, "batch", Some(json!({ "requests": requests })))
                .await;
            assert_eq!(status, 200, "{body}");
        }
    }
    let (_, kept) = server.post("classes/Kept", json!({"n": 1})).await;
    assert!(kept["objectId"].is_string());

    assert_master_only(server.delete("purge/Purged").await);
    let (status, body) = server
        .master_json(Method::DELETE, "purge/Purged", None)
        .await;
    assert_eq!((status, body), (200, json!({})));
    let (_, count) = read(
        server
            .master(Method::GET, "classes/Purged")
            .query(&[("count", "1"), ("limit", "0")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(count["count"], 0);
    let (status, schema) = server
        .master_json(Method::GET, "schemas/Purged", None)
        .await;
    assert_eq!(status, 200, "{schema}");
    assert_eq!(schema["fields"]["n"]["type"], "Number");
    assert_eq!(server.all("Kept").await.len(), 1);

    // A class that does not exist purges to nothing, as in Parse Server.
    let (status, body) = server
        .master_json(Method::DELETE, "purge/NeverMade", None)
        .await;
    assert_eq!((status, body), (200, json!({})));
}

#[tokio::test]
async fn a_read_only_master_key_cannot_purge() {
    let server =
        TestServer::start_with(|c| c.read_only_master_key = Some(Secret::new("ro-key"))).await;
    server.post("classes/Safe", json!({"n": 1})).await;
    let result = read(
        server
            .request(Method::DELETE, "purge/Safe")
            .header("X-Parse-Master-Key", "ro-key")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_error(&result, 400, 119);
    assert_eq!(server.all("Safe").await.len(), 1);
}

#[tokio::test]
async fn push_audiences_store_their_query_as_parse_does() {
    let server = TestServer::start().await;
    assert_master_only(server.get("push_audiences").await);
    let query = json!({"deviceType": {"$in": ["ios"]}, "channels": "news"});
    let (status, created) = server
        .master_json(
            Method::POST,
            "push_audiences",
            Some(json!({"name": "iOS news", "query": query.to_string()})),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["objectId"].as_str().unwrap().to_owned();

    // Stored as a JSON string in `_Audience`, answered as an object.
    let (_, stored) = server
        .master_json(Method::GET, &format!("classes/_Audience/{id}"), None)
        .await;
    assert_eq!(stored["query"], query.to_string());
    let (_, listed) = server
        .master_json(Method::GET, "push_audiences", None)
        .await;
    assert_eq!(listed["results"][0]["query"], query);
    assert_eq!(listed["results"][0]["name"], "iOS news");
    let (_, one) = server
        .master_json(Method::GET, &format!("push_audiences/{id}"), None)
        .await;
    assert_eq!(one["query"], query);

    let (status, _) = server
        .master_json(
            Method::PUT,
            &format!("push_audiences/{id}"),
            Some(json!({"name": "iOS"})),
        )
        .await;
    assert_eq!(status, 200);
    let (_, one) = server
        .master_json(Method::GET, &format!("push_audiences/{id}"), None)
        .await;
    assert_eq!(one["name"], "iOS");
    let (status, _) = server
        .master_json(Method::DELETE, &format!("push_audiences/{id}"), None)
        .await;
    assert_eq!(status, 200);
    let (_, listed) = server
        .master_json(Method::GET, "push_audiences", None)
        .await;
    assert_eq!(listed["results"], json!([]));
    // Only the master key reaches the class itself.
    assert_error(&server.get("classes/_Audience").await, 400, 119);
}

#[tokio::test]
async fn scriptlog_answers_recent_lines_newest_first() {
    let server = TestServer::start().await;
    assert_master_only(server.get("scriptlog").await);
    // Each purge logs a line at info.
    for class in ["Logged", "AlsoLogged"] {
        server
            .post(&format!("classes/{class}"), json!({"n": 1}))
            .await;
        server
            .master_json(Method::DELETE, &format!("purge/{class}"), None)
            .await;
    }
    let (status, lines) = server
        .master_json(Method::GET, "scriptlog?size=500", None)
        .await;
    assert_eq!(status, 200, "{lines}");
    let lines = lines.as_array().unwrap();
    let purge = lines
        .iter()
        .find(|l| l["message"].as_str().unwrap().contains("class=Logged"))
        .expect("the purge's log line");
    assert_eq!(purge["level"], "info");
    let stamps: Vec<&str> = lines
        .iter()
        .map(|l| l["timestamp"].as_str().unwrap())
        .collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]), "{stamps:?}");

    let (_, ascending) = server
        .master_json(Method::GET, "scriptlog?size=2&order=asc", None)
        .await;
    let ascending = ascending.as_array().unwrap();
    assert_eq!(ascending.len(), 2);
    assert!(ascending[0]["timestamp"].as_str() <= ascending[1]["timestamp"].as_str());
    let (_, errors) = server
        .master_json(Method::GET, "scriptlog?level=error&size=500", None)
        .await;
    assert!(
        errors
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["level"] == "error"),
        "{errors}"
    );
}

#[tokio::test]
async fn explain_answers_the_store_plan_for_the_master_key() {
    let server = TestServer::start().await;
    server.post("classes/Planned", json!({"n": 1})).await;
    let params = [
        ("explain", "true".to_owned()),
        ("where", json!({"n": {"$gt": 0}}).to_string()),
    ];
    assert_error(&server.query("Planned", &params).await, 400, 102);
    let response = server
        .master(Method::GET, "classes/Planned")
        .query(&params)
        .send()
        .await
        .unwrap();
    let (status, body) = read(response).await;
    assert_eq!(status, 200, "{body}");
    let plan = body["results"].as_array().expect("a plan");
    assert!(!plan.is_empty(), "{body}");
    assert!(
        plan.iter().all(|row| row.get("n").is_none()),
        "no objects: {body}"
    );
}

#[tokio::test]
async fn redirect_class_name_for_key_reads_the_relation_target() {
    let server = TestServer::start().await;
    let (_, book) = server.post("classes/Book", json!({"title": "Dune"})).await;
    let (_, other) = server.post("classes/Book", json!({"title": "Emma"})).await;
    let (_, shelf) = server
        .post(
            "classes/Shelf",
            json!({"books": {"__op": "AddRelation", "objects": [
                {"__type": "Pointer", "className": "Book", "objectId": book["objectId"]}
            ]}}),
        )
        .await;
    let related = json!({"$relatedTo": {
        "object": {"__type": "Pointer", "className": "Shelf", "objectId": shelf["objectId"]},
        "key": "books"
    }});
    let (status, body) = server
        .query(
            "Shelf",
            &[
                ("redirectClassNameForKey", "books".to_owned()),
                ("where", related.to_string()),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let results = body["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{body}");
    assert_eq!(results[0]["title"], "Dune");
    assert_eq!(results[0]["className"], "Book");
    assert_ne!(results[0]["objectId"], other["objectId"]);

    // A key that is no relation leaves the class as it is.
    let (status, body) = server
        .query(
            "Shelf",
            &[("redirectClassNameForKey", "nothing".to_owned())],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["className"], "Shelf");
}

#[tokio::test]
async fn aggregate_groups_counts_and_distinct_values_for_the_master_key() {
    let server = TestServer::start().await;
    for (team, score, tags) in [
        ("red", 10, json!(["x", "y"])),
        ("red", 20, json!(["y"])),
        ("blue", 5, json!([])),
    ] {
        server
            .post(
                "classes/Score",
                json!({"team": team, "score": score, "tags": tags}),
            )
            .await;
    }
    let aggregate = |params: Vec<(&'static str, Value)>| {
        let request = server.master(Method::GET, "aggregate/Score").query(
            &params
                .iter()
                .map(|(k, v)| (*k, v.to_string()))
                .collect::<Vec<_>>(),
        );
        async move { read(request.send().await.unwrap()).await }
    };

    let (status, body) = aggregate(vec![(
        "pipeline",
        json!([
            {"$group": {"_id": "$team", "total": {"$sum": "$score"}, "n": {"$sum": 1}}},
            {"$sort": {"total": -1}},
        ]),
    )])
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"],
        json!([
            {"objectId": "red", "total": 30, "n": 2},
            {"objectId": "blue", "total": 5, "n": 1},
        ])
    );
    let (_, body) = aggregate(vec![(
        "pipeline",
        json!([{"$match": {"score": {"$gt": 6}}}, {"$unwind": "$tags"}, {"$count": "n"}]),
    )])
    .await;
    assert_eq!(body["results"], json!([{"n": 3}]));
    let (_, body) = aggregate(vec![
        ("distinct", json!("team")),
        ("where", json!({"score": {"$lt": 15}})),
    ])
    .await;
    assert_eq!(body["results"], json!(["blue", "red"]));

    // A stage Parse does not know is 102; a class that does not exist has
    // no results; only the master key may aggregate.
    let (status, body) = aggregate(vec![("pipeline", json!([{"$lookup": {}}]))]).await;
    assert_eq!((status, body["code"].clone()), (400, json!(102)), "{body}");
    let (status, body) = read(
        server
            .master(Method::GET, "aggregate/Nothing")
            .query(&[("distinct", "team")])
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((status, body), (200, json!({"results": []})));
    assert_master_only(server.get("aggregate/Score?distinct=team").await);
}
