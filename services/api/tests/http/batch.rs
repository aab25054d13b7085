use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};

fn op(method: &str, path: &str, body: Value) -> Value {
    json!({"method": method, "path": path, "body": body})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_are_positional() {
    let server = TestServer::start().await;
    let (_, existing) = server.post("classes/Item", json!({"n": 1})).await;
    let id = existing["objectId"].as_str().unwrap();
    let (status, body) = server
        .post(
            "batch",
            json!({"requests": [
                op("POST", "/parse/classes/Item", json!({"n": 2})),
                op("PUT", &format!("/parse/classes/Item/{id}"), json!({"n": {"__op": "Increment", "amount": 5}})),
                op("POST", "/parse/classes/Item", json!({"n": "wrong type"})),
                op("DELETE", "/parse/classes/Item/missing", json!({})),
                op("GET", &format!("/parse/classes/Item/{id}"), json!({})),
                op("GET", "/parse/classes/Item", json!({"where": {"n": 2}})),
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let items = body.as_array().unwrap();
    assert_eq!(items.len(), 6);
    assert!(items[0]["success"]["objectId"].is_string());
    assert_eq!(items[1]["success"]["n"], 6);
    assert_eq!(items[2]["error"]["code"], 111);
    assert_eq!(items[3]["error"]["code"], 101);
    assert_eq!(
        items[4]["success"]["n"], 6,
        "reads run after the batch's writes"
    );
    assert_eq!(items[5]["success"]["results"].as_array().unwrap().len(), 1);
    assert_eq!(server.all("Item").await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_are_all_or_nothing() {
    let server = TestServer::start().await;
    server.post("classes/Acct", json!({"n": 1})).await;
    let requests = json!([
        op("POST", "/parse/classes/Acct", json!({"n": 2})),
        op("PUT", "/parse/classes/Acct/missing", json!({"n": 3})),
    ]);
    let result = server
        .post("batch", json!({"requests": requests, "transaction": true}))
        .await;
    assert_error(&result, 404, 101);
    assert_eq!(server.all("Acct").await.len(), 1);
    let bad = json!([
        op("POST", "/parse/classes/Acct", json!({"n": 2})),
        op("POST", "/parse/classes/Acct", json!({"n": "x"})),
    ]);
    assert_error(
        &server
            .post("batch", json!({"requests": bad, "transaction": true}))
            .await,
        400,
        111,
    );
    assert_eq!(server.all("Acct").await.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_batches_fail_whole() {
    let server = TestServer::start().await;
    let post = |n: i64| op("POST", "/parse/classes/B", json!({"n": n}));
    let too_many: Vec<Value> = (0..51).map(post).collect();
    for body in [
        json!({"requests": {}}),
        json!({"requests": [post(1), op("POST", "/elsewhere/classes/B", json!({}))]}),
        json!({"requests": [post(1), op("GET", "/parse/nowhere", json!({}))]}),
        json!({"requests": [op("POST", "/parse/batch", json!({"requests": []}))]}),
        json!({"requests": [{"method": "POST"}]}),
        json!({"requests": too_many}),
    ] {
        assert_error(&server.post("batch", body).await, 400, 107);
    }
    assert!(server.all("B").await.is_empty(), "nothing was written");
}
