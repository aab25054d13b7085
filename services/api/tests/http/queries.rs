use serde_json::{Value, json};

use crate::common::{TestServer, assert_error};

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .unwrap_or_else(|| panic!("no results in {body}"))
        .iter()
        .map(|o| o["name"].as_str().unwrap_or_default().to_owned())
        .collect()
}

async fn seed(server: &TestServer) {
    let team = |id: &str| json!({"__type": "Pointer", "className": "Team", "objectId": id});
    for (id, city, winning) in [("red", "Paris", true), ("blue", "Rome", false)] {
        let mut body = json!({"city": city, "winning": winning, "name": id});
        body["objectId"] = json!(id);
        let (status, created) = server
            .json(reqwest::Method::POST, "classes/Team", Some(body))
            .await;
        assert_eq!(status, 201, "{created}");
    }
    for (name, score, tags, team_id, town) in [
        ("ann", 10, json!(["a", "b"]), "red", "Paris"),
        ("bob", 20, json!(["b"]), "blue", "Paris"),
        ("cat", 30, json!([]), "red", "Rome"),
        ("dan", 40, json!(["c"]), "blue", "Oslo"),
    ] {
        let (status, created) = server
            .post(
                "classes/Player",
                json!({"name": name, "score": score, "tags": tags, "team": team(team_id),
                       "hometown": town, "meta": {"level": score / 10}}),
            )
            .await;
        assert_eq!(status, 201, "{created}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn where_order_limit_skip_count() {
    let server = TestServer::start_with(|c| c.allow_custom_object_id = true).await;
    seed(&server).await;
    let q = |w: Value| vec![("where", w.to_string()), ("order", "name".to_owned())];
    let (status, body) = server
        .query("Player", &q(json!({"score": {"$gte": 20, "$lt": 40}})))
        .await;
    assert_eq!(status, 200);
    assert_eq!(ids(&body), ["bob", "cat"]);
    let (_, body) = server.query("Player", &q(json!({"tags": "b"}))).await;
    assert_eq!(ids(&body), ["ann", "bob"]);
    let (_, body) = server
        .query("Player", &q(json!({"meta.level": {"$in": [1, 4]}})))
        .await;
    assert_eq!(ids(&body), ["ann", "dan"]);
    let (_, body) = server
        .query(
            "Player",
            &q(json!({"$or": [{"name": "ann"}, {"score": {"$gt": 35}}]})),
        )
        .await;
    assert_eq!(ids(&body), ["ann", "dan"]);
    let (_, body) = server
        .query(
            "Player",
            &q(json!({"name": {"$regex": "^\\QA\\E", "$options": "i"}})),
        )
        .await;
    assert_eq!(ids(&body), ["ann"]);
    let (_, body) = server
        .query(
            "Player",
            &[
                ("order", "-score".to_owned()),
                ("skip", "1".to_owned()),
                ("limit", "2".to_owned()),
            ],
        )
        .await;
    assert_eq!(ids(&body), ["cat", "bob"]);
    let (_, body) = server
        .query(
            "Player",
            &[
                ("where", json!({"score": {"$gt": 15}}).to_string()),
                ("count", "1".into()),
                ("limit", "0".into()),
            ],
        )
        .await;
    assert_eq!(body, json!({"results": [], "count": 3}));
    let (_, body) = server
        .query(
            "Player",
            &q(json!({"createdAt": {"$lt": {"$relativeTime": "in 1 day"}}})),
        )
        .await;
    assert_eq!(ids(&body).len(), 4);
    let (_, body) = server
        .query(
            "Player",
            &q(json!({"createdAt": {"$gt": {"$relativeTime": "1 day ago"}}, "score": 10})),
        )
        .await;
    assert_eq!(ids(&body), ["ann"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subqueries_and_includes() {
    let server = TestServer::start_with(|c| c.allow_custom_object_id = true).await;
    seed(&server).await;
    let q = |w: Value| vec![("where", w.to_string()), ("order", "name".to_owned())];
    let winning = json!({"className": "Team", "where": {"winning": true}});
    let (_, body) = server
        .query("Player", &q(json!({"team": {"$inQuery": winning}})))
        .await;
    assert_eq!(ids(&body), ["ann", "cat"]);
    let (_, body) = server
        .query("Player", &q(json!({"team": {"$notInQuery": winning}})))
        .await;
    assert_eq!(ids(&body), ["bob", "dan"]);
    let select = json!({"query": {"className": "Team", "where": {"winning": true}}, "key": "city"});
    let (_, body) = server
        .query("Player", &q(json!({"hometown": {"$select": select}})))
        .await;
    assert_eq!(ids(&body), ["ann", "bob"]);
    let (_, body) = server
        .query("Player", &q(json!({"hometown": {"$dontSelect": select}})))
        .await;
    assert_eq!(ids(&body), ["cat", "dan"]);

    let mut params = q(json!({"name": "ann"}));
    params.push(("include", "team".into()));
    params.push(("keys", "name,team.city".into()));
    let (status, body) = server.query("Player", &params).await;
    assert_eq!(status, 200, "{body}");
    let ann = &body["results"][0];
    assert_eq!(ann["team"]["__type"], "Object");
    assert_eq!(ann["team"]["className"], "Team");
    assert_eq!(ann["team"]["city"], "Paris");
    assert!(
        ann["team"].get("winning").is_none(),
        "keys select inside includes: {ann}"
    );
    assert!(ann.get("score").is_none());

    let (_, body) = server
        .query(
            "Player",
            &[
                ("where", json!({"name": "bob"}).to_string()),
                ("include", "*".into()),
            ],
        )
        .await;
    assert_eq!(body["results"][0]["team"]["city"], "Rome");
    let (_, body) = server
        .query(
            "Player",
            &[
                ("where", json!({"name": "bob"}).to_string()),
                ("excludeKeys", "score,tags".into()),
            ],
        )
        .await;
    let bob = &body["results"][0];
    assert!(bob.get("score").is_none() && bob.get("tags").is_none() && bob["hometown"] == "Paris");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_includes_through_arrays() {
    let server = TestServer::start().await;
    let (_, user) = server.post("classes/Author", json!({"name": "zoe"})).await;
    let author = json!({"__type": "Pointer", "className": "Author", "objectId": user["objectId"]});
    let (_, post) = server
        .post("classes/Post", json!({"title": "hi", "author": author}))
        .await;
    let post = json!({"__type": "Pointer", "className": "Post", "objectId": post["objectId"]});
    let missing = json!({"__type": "Pointer", "className": "Post", "objectId": "gone"});
    server
        .post(
            "classes/Comment",
            json!({"posts": [post.clone(), missing.clone()], "post": post, "gone": missing}),
        )
        .await;
    let (status, body) = server
        .query("Comment", &[("include", "post.author,posts".into())])
        .await;
    assert_eq!(status, 200, "{body}");
    let comment = &body["results"][0];
    assert_eq!(comment["post"]["author"]["name"], "zoe");
    assert_eq!(comment["posts"][0]["title"], "hi");
    assert_eq!(
        comment["posts"].as_array().unwrap().len(),
        1,
        "dangling pointers are dropped"
    );
    let (_, body) = server.query("Comment", &[("include", "gone".into())]).await;
    assert!(body["results"][0].get("gone").is_none(), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn geo_and_text() {
    let server = TestServer::start().await;
    let gp = |lat: f64, lng: f64| json!({"__type": "GeoPoint", "latitude": lat, "longitude": lng});
    for (name, lat, lng, text) in [
        ("sf", 37.7749, -122.4194, "fog and coffee"),
        ("la", 34.0522, -118.2437, "sun"),
        ("ny", 40.7128, -74.0060, "coffee coffee"),
    ] {
        server
            .post(
                "classes/City",
                json!({"name": name, "at": gp(lat, lng), "about": text}),
            )
            .await;
    }
    let here = gp(37.3382, -121.8863);
    let (_, body) = server
        .query(
            "City",
            &[(
                "where",
                json!({"at": {"$nearSphere": here, "$maxDistanceInKilometers": 600}}).to_string(),
            )],
        )
        .await;
    assert_eq!(ids(&body), ["sf", "la"]);
    let (_, body) = server
        .query(
            "City",
            &[(
                "where",
                json!({"at": {"$geoWithin": {"$centerSphere": [[-121.8863, 37.3382], 0.02]}}})
                    .to_string(),
            )],
        )
        .await;
    assert_eq!(ids(&body), ["sf"]);
    let (_, body) = server
        .query(
            "City",
            &[
                (
                    "where",
                    json!({"about": {"$text": {"$search": {"$term": "coffee"}}}}).to_string(),
                ),
                ("order", "$score".into()),
                ("keys", "name,$score".into()),
            ],
        )
        .await;
    assert_eq!(ids(&body), ["ny", "sf"]);
    let score = |i: usize| body["results"][i]["score"].as_f64().unwrap();
    assert!(score(0) > score(1) && score(1) > 0.0, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_errors() {
    let server = TestServer::start().await;
    server.post("classes/Q", json!({"a": 1})).await;
    let w = |w: Value| vec![("where", w.to_string())];
    assert_error(
        &server
            .query("Q", &w(json!({"$where": "sleep(1000)"})))
            .await,
        400,
        105,
    );
    assert_error(
        &server.query("Q", &w(json!({"a": {"$exotic": 1}}))).await,
        400,
        102,
    );
    assert_error(
        &server
            .query("Q", &w(json!({"a": {"$regex": "(unclosed"}})))
            .await,
        400,
        102,
    );
    assert_error(&server.query("Q", &[("bogus", "1".into())]).await, 400, 102);
    assert_error(
        &server.query("Q", &[("where", "{not json".into())]).await,
        400,
        107,
    );
    assert_error(
        &server.query("Q", &[("limit", "-1".into())]).await,
        400,
        102,
    );
    assert_error(
        &server.query("Q", &[("order", "bad field".into())]).await,
        400,
        105,
    );
    assert_error(&server.get("classes/Q/x?limit=1").await, 400, 102);
    assert_error(&server.query("Bad-Class", &[]).await, 400, 103);
}
