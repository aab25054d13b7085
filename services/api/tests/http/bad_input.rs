//! Malformed requests get Parse's errors, never a 500, and write nothing.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{TestServer, assert_error, read};

async fn raw(server: &TestServer, class: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
    read(
        server
            .request(Method::POST, &format!("classes/{class}"))
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap(),
    )
    .await
}

#[tokio::test]
async fn malformed_bodies() {
    let server = TestServer::start_with(|c| c.limits.max_body_bytes = 64 * 1024).await;
    server.post("classes/Safe", json!({"n": 1, "s": "x"})).await;
    assert_error(&raw(&server, "Safe", "{\"n\": ").await, 400, 107);
    assert_error(&raw(&server, "Safe", "[1, 2]").await, 400, 107);
    assert_error(&raw(&server, "Safe", "\"text\"").await, 400, 107);
    assert_error(
        &raw(&server, "Safe", vec![0xff, 0xfe, 0x00]).await,
        400,
        107,
    );
    let deep = format!("{{\"n\": {}1{}}}", "[".repeat(1000), "]".repeat(1000));
    assert_error(&raw(&server, "Safe", deep).await, 400, 107);
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(1000), "}".repeat(1000));
    assert_error(&raw(&server, "Safe", deep_objects).await, 400, 107);
    let big = json!({"s": "x".repeat(100 * 1024)}).to_string();
    let (status, body) = raw(&server, "Safe", big).await;
    assert_eq!(status, 413, "{body}");
    // Wrong types for known fields, and bad typed values.
    assert_error(
        &server.post("classes/Safe", json!({"n": "1"})).await,
        400,
        111,
    );
    assert_error(
        &server
            .post("classes/Safe", json!({"s": {"__type": "Date", "iso": "x"}}))
            .await,
        400,
        111,
    );
    assert_error(
        &server
            .post("classes/Safe", json!({"p": {"__type": "Pointer"}}))
            .await,
        400,
        111,
    );
    assert_error(
        &server
            .post("classes/Safe", json!({"w": {"__type": "Warp"}}))
            .await,
        400,
        111,
    );
    assert_error(
        &server
            .post(
                "classes/Safe",
                json!({"n": {"__op": "Increment", "amount": "2"}}),
            )
            .await,
        400,
        107,
    );
    assert_eq!(server.all("Safe").await.len(), 1, "nothing was written");
}

#[tokio::test]
async fn bad_names() {
    let server = TestServer::start().await;
    for field in ["$set", "a.b", "_private", "1st", "with space", "a-b", ""] {
        let mut body = serde_json::Map::new();
        body.insert(field.to_owned(), json!(1));
        assert_error(
            &server.post("classes/Names", Value::Object(body)).await,
            400,
            105,
        );
    }
    assert_error(
        &server.post("classes/Names", json!({"o": {"$gt": 1}})).await,
        400,
        121,
    );
    assert_error(
        &server.post("classes/Names", json!({"o": {"a.b": 1}})).await,
        400,
        121,
    );
    for class in [
        "Bad-Name",
        "1Class",
        "Robert'); DROP TABLE x;--",
        "_Private",
        "a%20b",
    ] {
        let result = server
            .post(&format!("classes/{class}"), json!({"a": 1}))
            .await;
        assert_error(&result, 400, 103);
    }
    assert_error(
        &server.put("classes/Names/x", json!({"$inc": 1})).await,
        400,
        105,
    );
    assert!(
        server.get("classes/Names").await.1["results"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

/// Nothing a client sends produces a 500.
#[tokio::test]
async fn garbage_never_produces_a_server_error() {
    let server = TestServer::start().await;
    server.post("classes/G", json!({"n": 1, "tags": ["a"], "at": {"__type": "GeoPoint", "latitude": 1, "longitude": 1}})).await;
    let values = [
        json!(null),
        json!(true),
        json!(-1),
        json!(1e308),
        json!("x"),
        json!([]),
        json!({}),
        json!([{"$gt": 1}]),
        json!({"__type": "Pointer"}),
        json!({"__op": "Batch"}),
        json!({"$in": [{"$in": 1}]}),
        json!({"$nearSphere": 1}),
        json!({"$within": {"$box": []}}),
        json!({"$geoWithin": {"$polygon": [[1, 2]]}}),
        json!({"$text": {"$search": 5}}),
        json!({"$select": {"query": 1}}),
        json!({"$inQuery": {"className": "G", "where": 5}}),
        json!({"$regex": "[", "$options": "x"}),
        json!({"$all": [1, {"$regex": "a"}]}),
        json!({"$lt": {"$relativeTime": "in 10000000000000 years"}}),
        json!({"$exists": "yes"}),
        json!({"$containedBy": 1}),
    ];
    for value in &values {
        for field in ["n", "tags", "at", "missing", "a.b.c"] {
            let mut where_ = serde_json::Map::new();
            where_.insert(field.to_owned(), value.clone());
            let (status, body) = server
                .query("G", &[("where", Value::Object(where_).to_string())])
                .await;
            assert!(status < 500, "where {field}: {value} gave {status} {body}");
        }
        let (status, body) = server.post("classes/G", json!({"n": value})).await;
        assert!(status < 500, "create n: {value} gave {status} {body}");
        let (status, body) = server.post("batch", json!({"requests": value})).await;
        assert!(status < 500, "batch {value} gave {status} {body}");
    }
    for params in [
        vec![("limit", "1e99")],
        vec![("skip", "-5")],
        vec![("order", "")],
        vec![("keys", "")],
        vec![("include", "a..b")],
        vec![("include", "x.y.z.w.v.u.t.s.r.q.p")],
        vec![("count", "{}")],
        vec![("where", "[]")],
        vec![("where", "null")],
        vec![("explain", "true")],
    ] {
        let params: Vec<(&str, String)> =
            params.into_iter().map(|(k, v)| (k, v.to_owned())).collect();
        let (status, body) = server.query("G", &params).await;
        assert!(status < 500, "{params:?} gave {status} {body}");
    }
}
