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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies() {
    let server = TestServer::start_with(|c| {
        c.update_section(|limits: &mut oxbase_objects::Limits| limits.max_body_bytes = 64 * 1024)
    })
    .await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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

/// Randomly composed queries, valid and not, over fields of every type:
/// each gets an answer, never a server error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_queries_never_fail_the_server() {
    use rand::prelude::*;

    let server = TestServer::start().await;
    let gp = json!({"__type": "GeoPoint", "latitude": 10, "longitude": 20});
    let date = json!({"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"});
    let ptr = json!({"__type": "Pointer", "className": "R", "objectId": "x"});
    for i in 0..5 {
        let (status, body) = server
            .post(
                "classes/R",
                json!({"n": i, "s": format!("s{i}"), "d": date, "tags": ["a", i], "p": ptr, "loc": gp,
                       "obj": {"x": i, "y": {"z": "w"}}, "poly": {"__type": "Polygon", "coordinates": [[0,0],[0,1],[1,1]]}}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let fields = [
        "n",
        "s",
        "d",
        "tags",
        "p",
        "loc",
        "obj",
        "obj.x",
        "obj.y.z",
        "poly",
        "missing",
        "objectId",
        "createdAt",
    ];
    let values = [
        json!(1),
        json!(-2.5),
        json!("s1"),
        json!(""),
        json!(true),
        json!(null),
        json!([1, "a"]),
        json!({"x": 1}),
        date.clone(),
        ptr.clone(),
        gp.clone(),
        json!({"$relativeTime": "2 days ago"}),
        json!({"__type": "File", "name": "f"}),
        json!([]),
    ];
    let mut rng = StdRng::seed_from_u64(7);
    fn pick<'a, T>(rng: &mut StdRng, items: &'a [T]) -> &'a T {
        &items[rng.random_range(0..items.len())]
    }
    fn constraint(rng: &mut StdRng, values: &[Value], gp: &Value) -> Value {
        let v = pick(rng, values).clone();
        let list = json!([pick(rng, values).clone(), pick(rng, values).clone()]);
        match rng.random_range(0..22) {
            0 => v,
            1 => json!({"$eq": v}),
            2 => json!({"$ne": v}),
            3 => json!({"$lt": v}),
            4 => json!({"$gte": v, "$lte": pick(rng, values).clone()}),
            5 => json!({"$in": list}),
            6 => json!({"$nin": list}),
            7 => json!({"$exists": rng.random_bool(0.5)}),
            8 => json!({"$all": list}),
            9 => json!({"$all": [{"$regex": "^a"}]}),
            10 => json!({"$containedBy": list}),
            11 => {
                json!({"$regex": pick(rng, &["^s", "1$", "(?i)S", "a|b", "[0-9]+"]), "$options": pick(rng, &["", "i", "m", "ims"])})
            }
            12 => json!({"$nearSphere": gp}),
            13 => json!({"$nearSphere": gp, "$maxDistanceInKilometers": rng.random_range(0..5000)}),
            14 => {
                json!({"$within": {"$box": [{"__type": "GeoPoint", "latitude": 0, "longitude": 0}, gp]}})
            }
            15 => json!({"$geoWithin": {"$centerSphere": [[20, 10], 0.1]}}),
            16 => json!({"$geoWithin": {"$polygon": [[0, 0], [30, 0], [30, 30]]}}),
            17 => json!({"$geoIntersects": {"$point": gp}}),
            18 => {
                json!({"$text": {"$search": {"$term": pick(rng, &["s1", "a b", "\"s 1\"", "-s2"])}}})
            }
            19 => json!({"$inQuery": {"className": "R", "where": {"n": {"$gt": 1}}}}),
            20 => {
                json!({"$select": {"query": {"className": pick(rng, &["R", "Nope"]), "where": {}}, "key": pick(rng, &["s", "n", "p", "d"])}})
            }
            _ => json!({"$dontSelect": {"query": {"className": "R"}, "key": "objectId"}}),
        }
    }
    for round in 0..1500 {
        let mut where_ = serde_json::Map::new();
        for _ in 0..rng.random_range(1..4) {
            let field = *pick(&mut rng, &fields);
            where_.insert(field.to_owned(), constraint(&mut rng, &values, &gp));
        }
        let mut clause = Value::Object(where_);
        if rng.random_bool(0.3) {
            let op = *pick(&mut rng, &["$or", "$and", "$nor"]);
            let mut other = serde_json::Map::new();
            other.insert(
                (*pick(&mut rng, &fields)).to_owned(),
                constraint(&mut rng, &values, &gp),
            );
            clause = json!({op: [clause, Value::Object(other)]});
        }
        let mut params = vec![("where", clause.to_string())];
        if rng.random_bool(0.3) {
            params.push((
                "order",
                pick(
                    &mut rng,
                    &["n", "-d", "s,-n", "$score", "obj.x", "-createdAt", "loc"],
                )
                .to_string(),
            ));
        }
        if rng.random_bool(0.3) {
            params.push((
                "keys",
                pick(&mut rng, &["n", "s,$score", "p.x", "obj.y"]).to_string(),
            ));
        }
        if rng.random_bool(0.2) {
            params.push((
                "include",
                pick(&mut rng, &["p", "*", "p.q", "tags"]).to_string(),
            ));
        }
        if rng.random_bool(0.2) {
            params.push(("count", "1".into()));
        }
        if rng.random_bool(0.3) {
            params.push(("limit", rng.random_range(0..5).to_string()));
            params.push(("skip", rng.random_range(0..3).to_string()));
        }
        let (status, body) = server.query("R", &params).await;
        assert!(
            status < 500,
            "round {round}: {params:?} gave {status} {body}"
        );
        if status == 200 {
            assert!(body["results"].is_array(), "round {round}: {body}");
        }
    }
}

/// Random updates, valid and not: never a server error, and a refused
/// update leaves the object as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_updates_never_fail_the_server_or_half_write() {
    use rand::prelude::*;

    let server = TestServer::start().await;
    let (_, created) = server
        .post(
            "classes/W",
            json!({"n": 1, "s": "x", "tags": ["a"], "obj": {"k": 1}}),
        )
        .await;
    let path = format!("classes/W/{}", created["objectId"].as_str().unwrap());
    let fields = [
        "n",
        "s",
        "tags",
        "obj",
        "obj.k",
        "obj.deep.er",
        "fresh",
        "ACL",
        "$bad",
        "a.$b",
    ];
    let values = [
        json!(2),
        json!("y"),
        json!(null),
        json!([1]),
        json!({"z": 1}),
        json!({"__op": "Increment", "amount": 2}),
        json!({"__op": "Increment", "amount": "x"}),
        json!({"__op": "Add", "objects": [1]}),
        json!({"__op": "AddUnique", "objects": "no"}),
        json!({"__op": "Remove", "objects": ["a"]}),
        json!({"__op": "Delete"}),
        json!({"__op": "Nope"}),
        json!({"*": {"read": true}}),
        json!({"__type": "Date", "iso": "2024-01-01"}),
        json!({"__type": "Pointer", "className": "W", "objectId": "q"}),
    ];
    let mut rng = StdRng::seed_from_u64(11);
    for round in 0..600 {
        let (_, before) = server.get(&path).await;
        let mut body = serde_json::Map::new();
        for _ in 0..rng.random_range(1..4) {
            let field = fields[rng.random_range(0..fields.len())];
            body.insert(
                field.to_owned(),
                values[rng.random_range(0..values.len())].clone(),
            );
        }
        let (status, answer) = server.put(&path, Value::Object(body.clone())).await;
        assert!(
            status < 500,
            "round {round}: {body:?} gave {status} {answer}"
        );
        let (_, after) = server.get(&path).await;
        if status != 200 {
            assert_eq!(
                before, after,
                "round {round}: refused {body:?} ({answer}) changed the object"
            );
        }
    }
}

/// Queries stay within the cost limits: `limit` is lowered to `max_limit`,
/// and a deep `skip`, too many `include` paths or a huge `$in` are refused
/// with 102 before the store runs anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_cost_limits() {
    let server = TestServer::start_with(|c| {
        c.update_section(|limits: &mut oxbase_objects::Limits| {
            limits.max_limit = 3;
            limits.max_skip = 10;
            limits.max_include_paths = 2;
            limits.max_in_values = 5;
        })
    })
    .await;
    for n in 0..5 {
        server.post("classes/Cost", json!({"n": n})).await;
    }
    let (status, body) = server.query("Cost", &[("limit", "100".into())]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"].as_array().unwrap().len(), 3);
    assert_error(
        &server.query("Cost", &[("skip", "11".into())]).await,
        400,
        102,
    );
    let (status, _) = server.query("Cost", &[("skip", "10".into())]).await;
    assert_eq!(status, 200);
    assert_error(
        &server.query("Cost", &[("include", "a,b,c".into())]).await,
        400,
        102,
    );
    for op in ["$in", "$nin", "$all", "$containedBy"] {
        let where_ = json!({"n": {op: [1, 2, 3, 4, 5, 6]}}).to_string();
        assert_error(&server.query("Cost", &[("where", where_)]).await, 400, 102);
    }
    let where_ = json!({"n": {"$in": [1, 2, 3, 4, 5]}}).to_string();
    let (status, body) = server.query("Cost", &[("where", where_)]).await;
    assert_eq!(status, 200, "{body}");
}
