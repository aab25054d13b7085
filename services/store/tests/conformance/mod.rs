//! The store conformance suite: behaviour every backend must share. Each
//! backend's test file calls these checks with a fresh, empty store, one
//! test per name in `oxbase_test_support::for_each_conformance_test!`: a
//! new check goes in that list too.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use oxbase_store::query::{ElementMatch, GeoPoint, RegexSpec, SubQuery, TextSearch};
use oxbase_store::{
    Condition, FieldPath, FieldType, Filter, Object, Query, QueryValue, SchemaView, SortKey, Store,
    StoreError, UpdateOp, WriteBatch, WriteOp, WriteOutcome,
};
use serde_json::{Value, json};

pub type StoreRef = Arc<dyn Store>;

fn obj(value: Value) -> Object {
    value.as_object().expect("an object").clone()
}

fn date(n: u32) -> String {
    format!("2024-01-{n:02}T00:00:00.000Z")
}

fn infer(value: &Value) -> Option<FieldType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => FieldType::Boolean,
        Value::Number(_) => FieldType::Number,
        Value::String(_) => FieldType::String,
        Value::Array(_) => FieldType::Array,
        Value::Object(map) => match map.get("__type").and_then(Value::as_str) {
            Some("Date") => FieldType::Date,
            Some("GeoPoint") => FieldType::GeoPoint,
            Some("Polygon") => FieldType::Polygon,
            Some("File") => FieldType::File,
            Some("Pointer") => FieldType::Pointer {
                target_class: map["className"].as_str()?.to_owned(),
            },
            _ => FieldType::Object,
        },
    })
}

/// Creates objects (with ids `<prefix><n>`), declaring their fields first.
pub async fn seed(store: &StoreRef, class: &str, objects: Vec<Value>) -> SchemaView {
    let mut fields = BTreeMap::new();
    for object in &objects {
        for (key, value) in object.as_object().unwrap() {
            if key == "ACL" {
                continue;
            }
            if let Some(t) = infer(value) {
                fields.insert(key.clone(), t);
            }
        }
    }
    store.ensure_fields(class, &fields).await.unwrap();
    let view = SchemaView::new(store.load_schemas().await.unwrap());
    let ops = objects
        .into_iter()
        .enumerate()
        .map(|(i, value)| {
            let mut object = obj(value);
            object
                .entry("objectId")
                .or_insert_with(|| json!(format!("{class}{i:05}")));
            object.insert("createdAt".into(), json!(date(1 + (i % 28) as u32)));
            object.insert("updatedAt".into(), json!(date(1 + (i % 28) as u32)));
            WriteOp::Create {
                class_name: class.into(),
                object,
                relations: Vec::new(),
            }
        })
        .collect();
    let results = store
        .write(
            &view,
            WriteBatch {
                ops,
                atomic: false,
                events: None,
            },
        )
        .await
        .unwrap();
    for result in results {
        result.unwrap();
    }
    view
}

pub async fn view(store: &StoreRef) -> SchemaView {
    SchemaView::new(store.load_schemas().await.unwrap())
}

async fn ids(store: &StoreRef, view: &SchemaView, query: Query) -> Vec<String> {
    store
        .find(view, &query)
        .await
        .unwrap()
        .into_iter()
        .map(|o| o["objectId"].as_str().unwrap().to_owned())
        .collect()
}

fn q(class: &str, filter: Filter) -> Query {
    Query::new(class).filter(filter)
}

fn f(path: &str, condition: Condition) -> Filter {
    Filter::field(path, condition)
}

fn s(v: &str) -> QueryValue {
    QueryValue::String(v.into())
}

fn n(v: i64) -> QueryValue {
    QueryValue::Number(v.into())
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

fn list(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

pub async fn create_read_update_delete(store: StoreRef) {
    let view = seed(
        &store,
        "Item",
        vec![json!({"objectId": "a1", "name": "one", "n": 1, "ACL": {"*": {"read": true}}})],
    )
    .await;
    let found = store
        .find(&view, &q("Item", f("objectId", Condition::Eq(s("a1")))))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["name"], "one");
    assert_eq!(found[0]["ACL"], json!({"*": {"read": true}}));
    assert_eq!(found[0]["createdAt"], date(1));

    let update = WriteOp::Update {
        class_name: "Item".into(),
        object_id: "a1".into(),
        updated_at: date(9),
        changes: vec![
            (FieldPath::new("n"), UpdateOp::Increment(2.into())),
            (FieldPath::new("name"), UpdateOp::Delete),
            (
                FieldPath::new("tags"),
                UpdateOp::AddUnique(vec![json!("x"), json!("x")]),
            ),
        ],
        relations: Vec::new(),
        precondition: Filter::All,
    };
    let out = store.write(&view, WriteBatch::one(update)).await.unwrap();
    let WriteOutcome::Updated { before, after } = out[0].clone().unwrap() else {
        panic!("not an update: {out:?}");
    };
    assert_eq!(before["n"], 1);
    assert_eq!(after["n"], 3);
    assert_eq!(after["tags"], json!(["x"]));
    assert!(after.get("name").is_none());
    assert_eq!(after["updatedAt"], date(9));

    let found = store.find(&view, &Query::new("Item")).await.unwrap();
    assert_eq!(found[0]["n"], 3);
    assert_eq!(found[0]["updatedAt"], date(9));

    let delete = WriteOp::Delete {
        class_name: "Item".into(),
        object_id: "a1".into(),
        precondition: Filter::All,
    };
    let out = store
        .write(&view, WriteBatch::one(delete.clone()))
        .await
        .unwrap();
    assert!(matches!(&out[0], Ok(WriteOutcome::Deleted(before)) if before["n"] == 3));
    let out = store.write(&view, WriteBatch::one(delete)).await.unwrap();
    assert!(matches!(out[0], Err(StoreError::NotFound)));
    assert_eq!(store.count(&view, &Query::new("Item")).await.unwrap(), 0);
}

pub async fn duplicate_ids_are_refused(store: StoreRef) {
    let view = seed(&store, "Dup", vec![json!({"objectId": "same"})]).await;
    let again = WriteOp::Create {
        class_name: "Dup".into(),
        object: obj(json!({"objectId": "same", "createdAt": date(1), "updatedAt": date(1)})),
        relations: Vec::new(),
    };
    let out = store.write(&view, WriteBatch::one(again)).await.unwrap();
    assert!(
        matches!(out[0], Err(StoreError::Duplicate { .. })),
        "{out:?}"
    );
}

pub async fn preconditions_guard_updates_and_deletes(store: StoreRef) {
    let view = seed(
        &store,
        "Guard",
        vec![json!({"objectId": "g1", "owner": "alice"})],
    )
    .await;
    let not_bob = f("owner", Condition::Eq(s("bob")));
    let update = WriteOp::Update {
        class_name: "Guard".into(),
        object_id: "g1".into(),
        updated_at: date(2),
        changes: vec![(FieldPath::new("owner"), UpdateOp::Set(json!("mallory")))],
        relations: Vec::new(),
        precondition: not_bob.clone(),
    };
    let out = store.write(&view, WriteBatch::one(update)).await.unwrap();
    assert!(matches!(out[0], Err(StoreError::NotFound)));
    let delete = WriteOp::Delete {
        class_name: "Guard".into(),
        object_id: "g1".into(),
        precondition: not_bob,
    };
    let out = store.write(&view, WriteBatch::one(delete)).await.unwrap();
    assert!(matches!(out[0], Err(StoreError::NotFound)));
    let found = store.find(&view, &Query::new("Guard")).await.unwrap();
    assert_eq!(found[0]["owner"], "alice");
}

pub async fn atomic_batches_are_all_or_nothing(store: StoreRef) {
    let view = seed(&store, "Atom", vec![json!({"objectId": "x1", "n": 1})]).await;
    let create = |id: &str| WriteOp::Create {
        class_name: "Atom".into(),
        object: obj(json!({"objectId": id, "createdAt": date(1), "updatedAt": date(1)})),
        relations: Vec::new(),
    };
    let bad_increment = WriteOp::Update {
        class_name: "Atom".into(),
        object_id: "missing".into(),
        updated_at: date(2),
        changes: vec![(FieldPath::new("n"), UpdateOp::Increment(1.into()))],
        relations: Vec::new(),
        precondition: Filter::All,
    };
    let err = store
        .write(
            &view,
            WriteBatch {
                ops: vec![create("x2"), bad_increment.clone()],
                atomic: true,
                events: None,
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound));
    assert_eq!(store.count(&view, &Query::new("Atom")).await.unwrap(), 1);

    let out = store
        .write(
            &view,
            WriteBatch {
                ops: vec![create("x3"), bad_increment],
                atomic: false,
                events: None,
            },
        )
        .await
        .unwrap();
    assert!(out[0].is_ok() && out[1].is_err());
    assert_eq!(store.count(&view, &Query::new("Atom")).await.unwrap(), 2);
}

pub async fn schema_changes_merge_and_conflict(store: StoreRef) {
    let mut fields = BTreeMap::new();
    fields.insert("score".to_owned(), FieldType::Number);
    // Many concurrent additions of the same field agree.
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let fields = fields.clone();
        tasks.push(tokio::spawn(async move {
            store.ensure_fields("Race", &fields).await
        }));
    }
    for task in tasks {
        let schema = task.await.unwrap().unwrap();
        assert_eq!(schema.field_type("score"), Some(&FieldType::Number));
    }
    fields.insert("score".to_owned(), FieldType::String);
    let err = store.ensure_fields("Race", &fields).await.unwrap_err();
    assert!(matches!(err, StoreError::SchemaMismatch { .. }), "{err:?}");
    let schemas = store.load_schemas().await.unwrap();
    let race = schemas.iter().find(|s| s.class_name == "Race").unwrap();
    assert_eq!(race.field_type("score"), Some(&FieldType::Number));
    assert_eq!(race.field_type("createdAt"), Some(&FieldType::Date));
}

pub async fn comparison_operators(store: StoreRef) {
    let view = seed(
        &store,
        "Cmp",
        vec![
            json!({"objectId": "c1", "n": 1, "s": "apple", "d": {"__type": "Date", "iso": date(1)}, "b": true}),
            json!({"objectId": "c2", "n": 2, "s": "banana", "d": {"__type": "Date", "iso": date(2)}, "b": false}),
            json!({"objectId": "c3", "n": 3.5, "s": "cherry", "d": {"__type": "Date", "iso": date(3)}}),
            json!({"objectId": "c4"}),
        ],
    )
    .await;
    let find = |filter| ids(&store, &view, q("Cmp", filter));
    assert_eq!(find(f("n", Condition::Eq(n(2)))).await, list(&["c2"]));
    assert_eq!(find(f("n", Condition::Gt(n(1)))).await, list(&["c2", "c3"]));
    assert_eq!(
        find(f("n", Condition::Lte(n(2)))).await,
        list(&["c1", "c2"])
    );
    assert_eq!(
        find(f("n", Condition::Ne(n(2)))).await,
        list(&["c1", "c3", "c4"])
    );
    assert_eq!(
        find(f("s", Condition::Gte(s("banana")))).await,
        list(&["c2", "c3"])
    );
    assert_eq!(
        find(f("d", Condition::Lt(QueryValue::Date(date(3))))).await,
        list(&["c1", "c2"])
    );
    assert_eq!(
        find(f("createdAt", Condition::Gt(QueryValue::Date(date(2))))).await,
        list(&["c3", "c4"])
    );
    assert_eq!(
        find(f("b", Condition::Eq(QueryValue::Bool(true)))).await,
        list(&["c1"])
    );
    assert_eq!(
        find(f("b", Condition::Ne(QueryValue::Bool(true)))).await,
        list(&["c2", "c3", "c4"])
    );
    assert_eq!(
        find(f(
            "s",
            Condition::In(vec![s("apple"), s("cherry"), s("kiwi")])
        ))
        .await,
        list(&["c1", "c3"])
    );
    assert_eq!(
        find(f("s", Condition::Nin(vec![s("apple")]))).await,
        list(&["c2", "c3", "c4"])
    );
    assert_eq!(
        find(f("n", Condition::Exists(true))).await,
        list(&["c1", "c2", "c3"])
    );
    assert_eq!(find(f("n", Condition::Exists(false))).await, list(&["c4"]));
    assert_eq!(
        find(f("n", Condition::Eq(QueryValue::Null))).await,
        list(&["c4"])
    );
    assert_eq!(
        find(f("n", Condition::Ne(QueryValue::Null))).await,
        list(&["c1", "c2", "c3"])
    );
    // A number never equals a string, nor a string a number.
    assert!(find(f("s", Condition::Eq(n(1)))).await.is_empty());
    assert!(find(f("nope", Condition::Gt(n(0)))).await.is_empty());
}

pub async fn arrays_and_nested_objects(store: StoreRef) {
    let view = seed(
        &store,
        "Arr",
        vec![
            json!({"objectId": "a1", "tags": ["red", "blue"], "nums": [1, 2, 3], "meta": {"size": {"w": 10}, "kind": "box"}}),
            json!({"objectId": "a2", "tags": ["green"], "nums": [4], "meta": {"size": {"w": 20}, "kind": "bag"}}),
            json!({"objectId": "a3", "tags": [], "meta": {"kind": "box"}}),
        ],
    )
    .await;
    let find = |filter| ids(&store, &view, q("Arr", filter));
    assert_eq!(
        find(f("tags", Condition::Eq(s("blue")))).await,
        list(&["a1"])
    );
    assert_eq!(
        find(f("tags", Condition::In(vec![s("green"), s("red")]))).await,
        list(&["a1", "a2"])
    );
    assert_eq!(
        find(f("tags", Condition::Nin(vec![s("green")]))).await,
        list(&["a1", "a3"])
    );
    assert_eq!(
        find(f("tags", Condition::Ne(s("red")))).await,
        list(&["a2", "a3"])
    );
    assert_eq!(
        find(f(
            "tags",
            Condition::All(vec![
                ElementMatch::Equals(s("red")),
                ElementMatch::Equals(s("blue"))
            ])
        ))
        .await,
        list(&["a1"])
    );
    let starts_with_b = ElementMatch::Regex(RegexSpec {
        pattern: "^b".into(),
        options: String::new(),
    });
    assert_eq!(
        find(f("tags", Condition::All(vec![starts_with_b]))).await,
        list(&["a1"])
    );
    assert_eq!(
        find(f(
            "nums",
            Condition::ContainedBy(vec![n(1), n(2), n(3), n(4)])
        ))
        .await,
        list(&["a1", "a2"])
    );
    assert_eq!(
        find(f("nums", Condition::ContainedBy(vec![n(4)]))).await,
        list(&["a2"])
    );
    assert_eq!(
        find(f("tags", Condition::ContainedBy(vec![]))).await,
        list(&["a3"])
    );
    assert_eq!(
        find(f("tags", Condition::Eq(QueryValue::Json(json!(["green"]))))).await,
        list(&["a2"])
    );
    assert_eq!(
        find(f("meta.kind", Condition::Eq(s("box")))).await,
        list(&["a1", "a3"])
    );
    assert_eq!(
        find(f("meta.size.w", Condition::Gt(n(15)))).await,
        list(&["a2"])
    );
    assert_eq!(
        find(f("meta.size", Condition::Exists(false))).await,
        list(&["a3"])
    );
    assert_eq!(
        find(f(
            "meta.size",
            Condition::Eq(QueryValue::Json(json!({"w": 10})))
        ))
        .await,
        list(&["a1"])
    );
}

pub async fn regex_and_logic(store: StoreRef) {
    let view = seed(
        &store,
        "Word",
        vec![
            json!({"objectId": "w1", "w": "Hello world", "n": 1}),
            json!({"objectId": "w2", "w": "hello there", "n": 2}),
            json!({"objectId": "w3", "w": "goodbye\nworld", "n": 3}),
        ],
    )
    .await;
    let find = |filter| ids(&store, &view, q("Word", filter));
    let re = |pattern: &str, options: &str| {
        Condition::Regex(RegexSpec {
            pattern: pattern.into(),
            options: options.into(),
        })
    };
    assert_eq!(find(f("w", re("^hello", ""))).await, list(&["w2"]));
    assert_eq!(find(f("w", re("^hello", "i"))).await, list(&["w1", "w2"]));
    assert_eq!(find(f("w", re("^world", "m"))).await, list(&["w3"]));
    assert_eq!(
        find(f("objectId", re("^w[12]$", ""))).await,
        list(&["w1", "w2"])
    );
    let or = Filter::Or(vec![
        f("n", Condition::Eq(n(1))),
        f("n", Condition::Eq(n(3))),
    ]);
    assert_eq!(find(or.clone()).await, list(&["w1", "w3"]));
    assert_eq!(find(Filter::Nor(vec![or.clone()])).await, list(&["w2"]));
    assert_eq!(
        find(Filter::And(vec![or, f("w", re("world$", ""))])).await,
        list(&["w1", "w3"])
    );
    assert!(find(Filter::Nothing).await.is_empty());
    assert!(find(Filter::Or(vec![])).await.is_empty());
}

pub async fn subqueries(store: StoreRef) {
    seed(
        &store,
        "Team",
        vec![
            json!({"objectId": "t1", "city": "Paris", "winning": true}),
            json!({"objectId": "t2", "city": "Rome", "winning": false}),
        ],
    )
    .await;
    let team = |id: &str| json!({"__type": "Pointer", "className": "Team", "objectId": id});
    let view = seed(
        &store,
        "Player",
        vec![
            json!({"objectId": "p1", "team": team("t1"), "hometown": "Paris"}),
            json!({"objectId": "p2", "team": team("t2"), "hometown": "Paris"}),
            json!({"objectId": "p3", "hometown": "Rome"}),
        ],
    )
    .await;
    let winning = SubQuery {
        class_name: "Team".into(),
        filter: f("winning", Condition::Eq(QueryValue::Bool(true))),
    };
    let find = |filter| ids(&store, &view, q("Player", filter));
    assert_eq!(
        find(f("team", Condition::InQuery(Box::new(winning.clone())))).await,
        list(&["p1"])
    );
    assert_eq!(
        find(f("team", Condition::NotInQuery(Box::new(winning.clone())))).await,
        list(&["p2", "p3"])
    );
    let select = |query: SubQuery| Condition::Select {
        query: Box::new(query),
        key: FieldPath::new("city"),
    };
    assert_eq!(
        find(f("hometown", select(winning.clone()))).await,
        list(&["p1", "p2"])
    );
    let losing = SubQuery {
        class_name: "Team".into(),
        filter: f("winning", Condition::Eq(QueryValue::Bool(false))),
    };
    assert_eq!(
        find(f("hometown", select(losing.clone()))).await,
        list(&["p3"])
    );
    assert_eq!(
        find(f(
            "hometown",
            Condition::DontSelect {
                query: Box::new(losing),
                key: FieldPath::new("city")
            }
        ))
        .await,
        list(&["p1", "p2"])
    );
    let missing = SubQuery {
        class_name: "NoSuchClass".into(),
        filter: Filter::All,
    };
    assert!(
        find(f("team", Condition::InQuery(Box::new(missing.clone()))))
            .await
            .is_empty()
    );
    assert_eq!(
        find(f("team", Condition::NotInQuery(Box::new(missing))))
            .await
            .len(),
        3
    );
    assert_eq!(
        find(f(
            "team",
            Condition::Eq(QueryValue::Pointer {
                class_name: "Team".into(),
                object_id: "t2".into()
            })
        ))
        .await,
        list(&["p2"])
    );
}

fn point(latitude: f64, longitude: f64) -> GeoPoint {
    GeoPoint {
        latitude,
        longitude,
    }
}

pub async fn geo_queries(store: StoreRef) {
    let gp = |lat: f64, lng: f64| json!({"__type": "GeoPoint", "latitude": lat, "longitude": lng});
    let view = seed(
        &store,
        "Place",
        vec![
            json!({"objectId": "sf", "loc": gp(37.7749, -122.4194)}),
            json!({"objectId": "la", "loc": gp(34.0522, -118.2437)}),
            json!({"objectId": "ny", "loc": gp(40.7128, -74.0060)}),
        ],
    )
    .await;
    let sj = point(37.3382, -121.8863);
    let near = |max: Option<f64>| {
        Query::new("Place").filter(f(
            "loc",
            Condition::NearSphere {
                point: sj,
                max_distance: max,
            },
        ))
    };
    assert_eq!(
        ids(&store, &view, near(None)).await,
        list(&["sf", "la", "ny"])
    );
    assert_eq!(
        ids(&store, &view, near(Some(500.0 / 6371.0))).await,
        list(&["sf", "la"])
    );
    assert_eq!(ids(&store, &view, near(None).limit(1)).await, list(&["sf"]));
    let find = |filter| ids(&store, &view, q("Place", filter));
    assert_eq!(
        sorted(
            find(f(
                "loc",
                Condition::WithinBox {
                    south_west: point(30.0, -125.0),
                    north_east: point(38.0, -115.0)
                }
            ))
            .await
        ),
        list(&["la", "sf"])
    );
    let west = vec![
        point(30.0, -125.0),
        point(45.0, -125.0),
        point(45.0, -100.0),
        point(30.0, -100.0),
    ];
    assert_eq!(
        sorted(find(f("loc", Condition::WithinPolygon(west))).await),
        list(&["la", "sf"])
    );
    assert_eq!(
        find(f(
            "loc",
            Condition::WithinCenterSphere {
                center: sj,
                radius: 100.0 / 6371.0
            }
        ))
        .await,
        list(&["sf"])
    );

    let poly = |coords: Value| json!({"__type": "Polygon", "coordinates": coords});
    let view = seed(
        &store,
        "Zone",
        vec![
            json!({"objectId": "z1", "area": poly(json!([[0, 0], [0, 10], [10, 10], [10, 0]]))}),
            json!({"objectId": "z2", "area": poly(json!([[20, 20], [20, 30], [30, 30], [30, 20]]))}),
        ],
    )
    .await;
    assert_eq!(
        ids(
            &store,
            &view,
            q("Zone", f("area", Condition::GeoIntersects(point(5.0, 5.0))))
        )
        .await,
        list(&["z1"])
    );
}

pub async fn text_search(store: StoreRef) {
    let view = seed(
        &store,
        "Post",
        vec![
            json!({"objectId": "t1", "body": "coffee and tea"}),
            json!({"objectId": "t2", "body": "Coffee, coffee, COFFEE"}),
            json!({"objectId": "t3", "body": "just water"}),
        ],
    )
    .await;
    let search = TextSearch {
        term: "coffee".into(),
        language: None,
        case_sensitive: false,
        diacritic_sensitive: false,
    };
    let plain = q("Post", f("body", Condition::Text(search.clone())));
    assert_eq!(sorted(ids(&store, &view, plain).await), list(&["t1", "t2"]));
    let mut query = q("Post", f("body", Condition::Text(search)));
    query.order = vec![SortKey::TextScore];
    query.keys = Some(vec!["$score".into(), "body".into()]);
    let found = store.find(&view, &query).await.unwrap();
    let found_ids: Vec<_> = found
        .iter()
        .map(|o| o["objectId"].as_str().unwrap())
        .collect();
    assert_eq!(found_ids, ["t2", "t1"]);
    // Backends rank differently; the better match must score higher.
    let score = |i: usize| found[i]["score"].as_f64().unwrap();
    assert!(score(0) > score(1) && score(1) > 0.0, "{found:?}");
}

pub async fn order_skip_limit_keys_count(store: StoreRef) {
    let view = seed(
        &store,
        "Page",
        (0..10)
            .map(|i| json!({"objectId": format!("p{i}"), "rank": i % 3, "i": i, "extra": "x"}))
            .collect(),
    )
    .await;
    let mut query = Query::new("Page");
    query.order = vec![
        SortKey::Field {
            path: FieldPath::new("rank"),
            descending: true,
        },
        SortKey::Field {
            path: FieldPath::new("i"),
            descending: false,
        },
    ];
    query.skip = 2;
    query.limit = Some(3);
    assert_eq!(
        ids(&store, &view, query.clone()).await,
        list(&["p8", "p1", "p4"])
    );
    query.keys = Some(vec!["rank".into()]);
    let found = store.find(&view, &query).await.unwrap();
    let mut keys: Vec<&str> = found[0].keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["createdAt", "objectId", "rank", "updatedAt"]);
    query.skip = 0;
    query.limit = None;
    query.order = vec![SortKey::Field {
        path: FieldPath::new("createdAt"),
        descending: true,
    }];
    assert_eq!(ids(&store, &view, query.clone()).await[0], "p9");
    let filter = f("rank", Condition::Eq(n(1)));
    assert_eq!(
        store
            .count(&view, &q("Page", filter.clone()).limit(1))
            .await
            .unwrap(),
        3
    );
    assert!(
        store
            .find(&view, &q("Page", filter).limit(0))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.count(&view, &Query::new("Missing")).await.unwrap(), 0);
    assert!(
        store
            .find(&view, &Query::new("Missing"))
            .await
            .unwrap()
            .is_empty()
    );
}

/// Hostile names and values are data, never SQL or query syntax.
pub async fn hostile_input_is_inert(store: StoreRef) {
    let class = "Robert\"; DROP TABLE \"_SCHEMA\"; --";
    let view = seed(
        &store,
        class,
        vec![json!({"objectId": "r1", "v": "x'); DROP TABLE x; --"})],
    )
    .await;
    assert_eq!(
        ids(
            &store,
            &view,
            q(class, f("v", Condition::Eq(s("x'); DROP TABLE x; --"))))
        )
        .await,
        list(&["r1"])
    );
    let weird = FieldPath {
        field: "v".into(),
        nested: vec!["a' OR 1=1 --".into()],
    };
    let found = store
        .find(
            &view,
            &q(class, Filter::Field(weird, Condition::Exists(true))),
        )
        .await
        .unwrap();
    assert!(found.is_empty());
    let quoted = FieldPath {
        field: "v".into(),
        nested: vec!["a\"b".into()],
    };
    // A quote in a path is refused or matches nothing, never syntax.
    match store
        .find(
            &view,
            &q(class, Filter::Field(quoted, Condition::Exists(true))),
        )
        .await
    {
        Ok(found) => assert!(found.is_empty()),
        Err(err) => assert!(matches!(err, StoreError::InvalidQuery(_)), "{err:?}"),
    }
    let long = "y".repeat(1 << 20);
    assert!(
        ids(&store, &view, q(class, f("v", Condition::Eq(s(&long)))))
            .await
            .is_empty()
    );
    // The schema table survived and still lists the class.
    let schemas = store.load_schemas().await.unwrap();
    assert!(schemas.iter().any(|s| s.class_name == class));
}

pub async fn includes_resolve_pointers(store: StoreRef) {
    seed(
        &store,
        "Author",
        vec![json!({"objectId": "u1", "name": "ann"})],
    )
    .await;
    let author = json!({"__type": "Pointer", "className": "Author", "objectId": "u1"});
    let gone = json!({"__type": "Pointer", "className": "Author", "objectId": "nobody"});
    let view = seed(
        &store,
        "Book",
        vec![json!({"objectId": "b1", "by": author, "also": [author, gone], "lost": gone})],
    )
    .await;
    let mut books = store.find(&view, &Query::new("Book")).await.unwrap();
    let paths = [
        vec!["by".to_owned()],
        vec!["also".to_owned()],
        vec!["lost".to_owned()],
    ];
    oxbase_store::include::resolve(store.as_ref(), &view, &mut books, &paths, &|_: &str| {
        oxbase_store::Filter::All
    })
    .await
    .unwrap();
    assert_eq!(books[0]["by"]["name"], "ann");
    assert_eq!(books[0]["by"]["__type"], "Object");
    assert_eq!(books[0]["also"].as_array().unwrap().len(), 1);
    assert!(books[0].get("lost").is_none());
}

fn relation(key: &str, add: &[&str], remove: &[&str]) -> oxbase_store::RelationChange {
    oxbase_store::RelationChange {
        key: key.into(),
        add: add.iter().map(|s| s.to_string()).collect(),
        remove: remove.iter().map(|s| s.to_string()).collect(),
    }
}

pub async fn relations_and_related_to(store: StoreRef) {
    seed(
        &store,
        "Fan",
        vec![
            json!({"objectId": "f1"}),
            json!({"objectId": "f2"}),
            json!({"objectId": "f3"}),
        ],
    )
    .await;
    let mut fields = BTreeMap::new();
    fields.insert(
        "likes".to_owned(),
        FieldType::Relation {
            target_class: "Fan".into(),
        },
    );
    store.ensure_fields("Song", &fields).await.unwrap();
    let view = view(&store).await;
    let create = |id: &str, fans: &[&str]| WriteOp::Create {
        class_name: "Song".into(),
        object: obj(json!({"objectId": id, "createdAt": date(1), "updatedAt": date(1)})),
        relations: vec![relation("likes", fans, &[])],
    };
    let out = store
        .write(
            &view,
            WriteBatch {
                ops: vec![create("s1", &["f1", "f2"]), create("s2", &["f2"])],
                atomic: false,
                events: None,
            },
        )
        .await
        .unwrap();
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    let update = WriteOp::Update {
        class_name: "Song".into(),
        object_id: "s2".into(),
        updated_at: date(2),
        changes: vec![],
        relations: vec![relation("likes", &["f3", "f3"], &["f2"])],
        precondition: Filter::All,
    };
    store.write(&view, WriteBatch::one(update)).await.unwrap()[0]
        .clone()
        .unwrap();

    let related = |owner: &str| {
        Query::new("Fan").filter(Filter::RelatedTo {
            owner_class: "Song".into(),
            owner_id: owner.into(),
            key: "likes".into(),
        })
    };
    assert_eq!(
        sorted(ids(&store, &view, related("s1")).await),
        list(&["f1", "f2"])
    );
    assert_eq!(ids(&store, &view, related("s2")).await, list(&["f3"]));
    let fan = |id: &str| QueryValue::Pointer {
        class_name: "Fan".into(),
        object_id: id.into(),
    };
    let songs = |condition| ids(&store, &view, q("Song", f("likes", condition)));
    assert_eq!(songs(Condition::Eq(fan("f1"))).await, list(&["s1"]));
    assert_eq!(
        sorted(songs(Condition::In(vec![fan("f1"), fan("f3")])).await),
        list(&["s1", "s2"])
    );
    assert_eq!(songs(Condition::Ne(fan("f1"))).await, list(&["s2"]));
    let no_relation = Query::new("Fan").filter(Filter::RelatedTo {
        owner_class: "Song".into(),
        owner_id: "s1".into(),
        key: "nope".into(),
    });
    assert!(ids(&store, &view, no_relation).await.is_empty());
}

pub async fn permission_filters(store: StoreRef) {
    let view = seed(
        &store,
        "Secret",
        vec![
            json!({"objectId": "public"}),
            json!({"objectId": "everyone", "ACL": {"*": {"read": true}}}),
            json!({"objectId": "alice", "ACL": {"u_alice": {"read": true, "write": true}}}),
            json!({"objectId": "admins", "ACL": {"role:Admin": {"read": true}, "u_bob": {"write": true}}}),
            json!({"objectId": "nobody", "ACL": {}}),
        ],
    )
    .await;
    let readable = |principals: &[&str], write: bool| {
        let filter = Filter::Permission {
            write,
            principals: principals.iter().map(|s| s.to_string()).collect(),
        };
        let store = store.clone();
        let view = view.clone();
        async move { sorted(ids(&store, &view, q("Secret", filter)).await) }
    };
    assert_eq!(readable(&["*"], false).await, list(&["everyone", "public"]));
    assert_eq!(
        readable(&["*", "u_alice"], false).await,
        list(&["alice", "everyone", "public"])
    );
    assert_eq!(
        readable(&["*", "u_bob", "role:Admin"], false).await,
        list(&["admins", "everyone", "public"])
    );
    assert_eq!(
        readable(&["*", "u_bob"], true).await,
        list(&["admins", "public"])
    );
    assert_eq!(readable(&[], false).await, list(&["public"]));
    // The ACL reads back as written.
    let found = store
        .find(
            &view,
            &q("Secret", f("objectId", Condition::Eq(s("admins")))),
        )
        .await
        .unwrap();
    assert_eq!(
        found[0]["ACL"],
        json!({"role:Admin": {"read": true}, "u_bob": {"write": true}})
    );
    let found = store
        .find(
            &view,
            &q("Secret", f("objectId", Condition::Eq(s("public")))),
        )
        .await
        .unwrap();
    assert!(found[0].get("ACL").is_none());
}

pub async fn unique_fields_of_system_classes(store: StoreRef) {
    let mut fields = BTreeMap::new();
    fields.insert("username".to_owned(), FieldType::String);
    store.ensure_fields("_User", &fields).await.unwrap();
    let view = view(&store).await;
    let user = |id: &str, name: &str, email: Value| WriteOp::Create {
        class_name: "_User".into(),
        object: obj(
            json!({"objectId": id, "username": name, "email": email, "_hashed_password": "$2b$10$x",
                           "createdAt": date(1), "updatedAt": date(1)}),
        ),
        relations: vec![],
    };
    let out = store
        .write(
            &view,
            WriteBatch {
                ops: vec![
                    user("u1", "ann", json!("ann@x.io")),
                    user("u2", "ann", json!("other@x.io")),
                    user("u3", "bob", json!("ann@x.io")),
                    user("u4", "cat", Value::Null),
                    user("u5", "dan", Value::Null),
                ],
                atomic: false,
                events: None,
            },
        )
        .await
        .unwrap();
    assert!(out[0].is_ok(), "{out:?}");
    assert!(
        matches!(&out[1], Err(StoreError::Duplicate { field: Some(f) }) if f == "username"),
        "{out:?}"
    );
    assert!(
        matches!(&out[2], Err(StoreError::Duplicate { field: Some(f) }) if f == "email"),
        "{out:?}"
    );
    assert!(
        out[3].is_ok() && out[4].is_ok(),
        "missing emails do not collide: {out:?}"
    );
    // Internal fields are stored and read back.
    let found = store
        .find(&view, &q("_User", f("username", Condition::Eq(s("ann")))))
        .await
        .unwrap();
    assert_eq!(found[0]["_hashed_password"], "$2b$10$x");
}

pub async fn auth_data_ids_are_unique_once_indexed(store: StoreRef) {
    store
        .ensure_fields("_User", &BTreeMap::new())
        .await
        .unwrap();
    let view = view(&store).await;
    let user = |id: &str, auth_data: Value| WriteOp::Create {
        class_name: "_User".into(),
        object: obj(
            json!({"objectId": id, "username": id, "authData": auth_data,
                           "createdAt": date(1), "updatedAt": date(1)}),
        ),
        relations: vec![],
    };
    let write = |ops| {
        let (store, view) = (&store, &view);
        async move {
            store
                .write(
                    view,
                    WriteBatch {
                        ops,
                        atomic: false,
                        events: None,
                    },
                )
                .await
                .unwrap()
        }
    };
    // Data from before the index: distinct ids, and users without one.
    let out = write(vec![
        user("u1", json!({"acme": {"id": "1", "token": "a"}})),
        user("u2", json!({"other": {"id": "1"}})),
    ])
    .await;
    assert!(out.iter().all(Result::is_ok), "{out:?}");
    assert!(store.ensure_auth_data_uniqueness("a'b").await.is_err());
    store.ensure_auth_data_uniqueness("acme").await.unwrap();
    // Creating it again keeps it.
    store.ensure_auth_data_uniqueness("acme").await.unwrap();
    let out = write(vec![
        user("u3", json!({"acme": {"id": "1", "token": "b"}})),
        user("u4", json!({"acme": {"id": "2"}})),
        user("u5", json!({"other": {"id": "1"}})),
        user("u6", json!({"acme": {"token": "no id"}})),
        user("u7", json!({"acme": {"token": "no id either"}})),
    ])
    .await;
    assert!(
        matches!(&out[0], Err(StoreError::Duplicate { field: Some(f) }) if f == "_auth_data_acme"),
        "{out:?}"
    );
    assert!(out[1..].iter().all(Result::is_ok), "{out:?}");
    // Duplicates already stored keep the index from being built.
    store
        .ensure_auth_data_uniqueness("other")
        .await
        .unwrap_err();
}

pub async fn schema_operations(store: StoreRef) {
    let mut schema = oxbase_store::ClassSchema::new("Shape");
    schema
        .fields
        .insert("sides".into(), FieldType::Number.into());
    schema.fields.insert("tags".into(), FieldType::Array.into());
    schema.fields.insert(
        "owners".into(),
        FieldType::Relation {
            target_class: "_User".into(),
        }
        .into(),
    );
    let created = store.create_class(&schema).await.unwrap();
    assert_eq!(created.field_type("sides"), Some(&FieldType::Number));
    assert!(matches!(
        store.create_class(&schema).await,
        Err(StoreError::ClassExists(_))
    ));

    seed(
        &store,
        "Shape",
        vec![json!({"objectId": "sq", "sides": 4, "tags": ["a"]})],
    )
    .await;
    let mut change = oxbase_store::SchemaChange::default();
    change.delete_fields.push("tags".into());
    change
        .add_fields
        .insert("color".into(), FieldType::String.into());
    change.class_level_permissions = Some(json!({"find": {"*": true}, "get": {}}));
    change
        .add_indexes
        .insert("by_sides".into(), json!({"sides": 1}));
    let updated = store.update_class("Shape", &change).await.unwrap();
    assert!(updated.field_type("tags").is_none());
    assert_eq!(updated.field_type("color"), Some(&FieldType::String));
    assert_eq!(updated.class_level_permissions["get"], json!({}));
    assert!(updated.indexes.contains_key("by_sides"));
    let reloaded = view_of(&store, "Shape").await;
    assert_eq!(reloaded, updated, "the change is stored");
    let view = self::view(&store).await;
    let found = store.find(&view, &Query::new("Shape")).await.unwrap();
    assert!(
        found[0].get("tags").is_none(),
        "deleting a field deletes its values"
    );
    assert_eq!(found[0]["sides"], 4);

    let mut bad = oxbase_store::SchemaChange::default();
    bad.add_fields
        .insert("sides".into(), FieldType::String.into());
    assert!(matches!(
        store.update_class("Shape", &bad).await,
        Err(StoreError::InvalidSchema(_))
    ));
    let mut bad = oxbase_store::SchemaChange::default();
    bad.delete_fields.push("nothing".into());
    assert!(matches!(
        store.update_class("Shape", &bad).await,
        Err(StoreError::InvalidSchema(_))
    ));
    assert!(matches!(
        store.update_class("Nope", &change).await,
        Err(StoreError::ClassMissing(_))
    ));

    assert!(matches!(
        store.delete_class("Shape").await,
        Err(StoreError::ClassNotEmpty(_))
    ));
    let delete = WriteOp::Delete {
        class_name: "Shape".into(),
        object_id: "sq".into(),
        precondition: Filter::All,
    };
    store.write(&view, WriteBatch::one(delete)).await.unwrap()[0]
        .clone()
        .unwrap();
    store.delete_class("Shape").await.unwrap();
    assert!(
        store
            .load_schemas()
            .await
            .unwrap()
            .iter()
            .all(|s| s.class_name != "Shape")
    );
    // The class can be made again from scratch.
    store
        .create_class(&oxbase_store::ClassSchema::new("Shape"))
        .await
        .unwrap();
    let fresh = self::view(&store).await;
    assert_eq!(store.count(&fresh, &Query::new("Shape")).await.unwrap(), 0);
}

async fn view_of(store: &StoreRef, class: &str) -> oxbase_store::ClassSchema {
    store
        .load_schemas()
        .await
        .unwrap()
        .into_iter()
        .find(|s| s.class_name == class)
        .unwrap()
}

/// Every committed write leaves exactly one event, with the object after
/// and (for updates and deletes) before it; failed writes leave none; one
/// relay holds the lease at a time, and sent events stop being pending.
/// The write's trace context travels in its event.
pub async fn writes_leave_events_in_the_outbox(store: StoreRef) {
    const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let view = seed(&store, "Ev", vec![json!({"objectId": "e0", "n": 0})]).await;
    let context = oxbase_store::EventContext {
        source: "oxbase://test".into(),
        prefix: "ox".into(),
        user_id: Some("u1".into()),
        installation_id: None,
        master: false,
        request_id: None,
        purge: false,
        cloud_context: serde_json::Map::new(),
        traceparent: Some(TRACEPARENT.into()),
        policy: Default::default(),
    };
    let batch = |ops: Vec<WriteOp>, atomic: bool| WriteBatch {
        ops,
        atomic,
        events: Some(context.clone()),
    };
    let create = WriteOp::Create {
        class_name: "Ev".into(),
        object: obj(json!({"objectId": "e1", "n": 1, "createdAt": date(1), "updatedAt": date(1)})),
        relations: vec![],
    };
    let update = WriteOp::Update {
        class_name: "Ev".into(),
        object_id: "e1".into(),
        updated_at: date(2),
        changes: vec![(FieldPath::new("n"), UpdateOp::Increment(5.into()))],
        relations: vec![],
        precondition: Filter::All,
    };
    let missing = WriteOp::Update {
        class_name: "Ev".into(),
        object_id: "nope".into(),
        updated_at: date(2),
        changes: vec![(FieldPath::new("n"), UpdateOp::Set(json!(1)))],
        relations: vec![],
        precondition: Filter::All,
    };
    let delete = WriteOp::Delete {
        class_name: "Ev".into(),
        object_id: "e0".into(),
        precondition: Filter::All,
    };
    let out = store
        .write(
            &view,
            batch(vec![create, update, missing.clone(), delete], false),
        )
        .await
        .unwrap();
    assert!(
        out[0].is_ok() && out[1].is_ok() && out[2].is_err() && out[3].is_ok(),
        "{out:?}"
    );
    // A failed atomic batch leaves nothing behind.
    let dup = WriteOp::Create {
        class_name: "Ev".into(),
        object: obj(json!({"objectId": "e9", "createdAt": date(1), "updatedAt": date(1)})),
        relations: vec![],
    };
    assert!(
        store
            .write(&view, batch(vec![dup, missing], true))
            .await
            .is_err()
    );
    // Writes without a context make no events.
    store
        .write(
            &view,
            WriteBatch::one(WriteOp::Delete {
                class_name: "Ev".into(),
                object_id: "e1".into(),
                precondition: Filter::All,
            }),
        )
        .await
        .unwrap()[0]
        .clone()
        .unwrap();

    assert_eq!(store.outbox_backlog().await.unwrap(), 3);
    let lease = std::time::Duration::from_secs(30);
    let events = store
        .outbox_claim("relay-a", lease, 100)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .outbox_claim("relay-b", lease, 100)
            .await
            .unwrap()
            .is_none(),
        "a second relay waits for the lease"
    );
    let subjects: Vec<&str> = events.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(
        subjects,
        [
            "ox.events.Ev.created",
            "ox.events.Ev.updated",
            "ox.events.Ev.deleted"
        ]
    );
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let payloads: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str(&e.payload).unwrap())
        .collect();
    for (event, payload) in events.iter().zip(&payloads) {
        assert_eq!(payload["id"], event.event_id.as_str());
        assert_eq!(payload["specversion"], "1.0");
        assert_eq!(payload["source"], "oxbase://test");
        assert_eq!(payload["data"]["className"], "Ev");
        assert_eq!(payload["data"]["context"]["userId"], "u1");
        assert_eq!(payload["traceparent"], TRACEPARENT);
    }
    assert_eq!(payloads[0]["type"], "oxbase.object.created");
    assert_eq!(payloads[0]["data"]["object"]["n"], 1);
    assert!(payloads[0]["data"].get("original").is_none());
    assert_eq!(payloads[1]["type"], "oxbase.object.updated");
    assert_eq!(payloads[1]["data"]["original"]["n"], 1);
    assert_eq!(payloads[1]["data"]["object"]["n"], 6);
    assert_eq!(payloads[2]["type"], "oxbase.object.deleted");
    assert_eq!(payloads[2]["data"]["original"]["objectId"], "e0");
    let mut ids: Vec<&str> = events.iter().map(|e| e.event_id.as_str()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    store
        .outbox_sent(&[events[0].seq, events[1].seq])
        .await
        .unwrap();
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
    let rest = store
        .outbox_claim("relay-a", lease, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].seq, events[2].seq);
    // An expired lease passes to another relay.
    store
        .outbox_claim("relay-a", std::time::Duration::ZERO, 1)
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    assert!(
        store
            .outbox_claim("relay-b", lease, 1)
            .await
            .unwrap()
            .is_some()
    );
    // A relay that stops hands the lease over at once; another's release
    // leaves it where it is.
    store.outbox_release("relay-a").await.unwrap();
    assert!(
        store
            .outbox_claim("relay-a", lease, 1)
            .await
            .unwrap()
            .is_none(),
        "only the holder releases the lease"
    );
    store.outbox_release("relay-b").await.unwrap();
    assert!(
        store
            .outbox_claim("relay-a", lease, 1)
            .await
            .unwrap()
            .is_some(),
        "a released lease is taken at once"
    );
    store.outbox_release("relay-a").await.unwrap();
    assert_eq!(
        store.outbox_prune(std::time::Duration::ZERO).await.unwrap(),
        2
    );

    // A lone create (a backend's one-statement path) leaves its event too,
    // and one that fails leaves none.
    let lone = || WriteOp::Create {
        class_name: "Ev".into(),
        object: obj(json!({"objectId": "e5", "n": 5, "createdAt": date(3), "updatedAt": date(3)})),
        relations: vec![],
    };
    store
        .write(&view, batch(vec![lone()], false))
        .await
        .unwrap()[0]
        .clone()
        .unwrap();
    let failed = store
        .write(&view, batch(vec![lone()], false))
        .await
        .unwrap();
    assert!(failed[0].is_err(), "a duplicate objectId");
    let pending = store
        .outbox_claim("relay-b", lease, 100)
        .await
        .unwrap()
        .unwrap();
    let last: Value = serde_json::from_str(&pending.last().unwrap().payload).unwrap();
    assert_eq!(
        pending.len(),
        2,
        "the earlier pending delete and the lone create"
    );
    assert_eq!(last["type"], "oxbase.object.created");
    assert_eq!(last["data"]["object"]["n"], 5);
}

/// Events leave out session tokens and the redacted fields; a write whose
/// event the stream could not take fails and leaves nothing; an event moved
/// aside is counted and passed over.
pub async fn events_follow_the_policy(store: StoreRef) {
    seed(
        &store,
        "Big",
        vec![json!({"objectId": "b0", "secret": "s", "pin": 0, "kept": 0, "blob": "b"})],
    )
    .await;
    let view = seed(
        &store,
        "_Session",
        vec![json!({"objectId": "s0", "sessionToken": "r:0", "pin": 0})],
    )
    .await;
    let policy = oxbase_store::EventPolicy::new(32 * 1024, &["Big.secret".into(), "pin".into()]);
    let context = oxbase_store::EventContext {
        source: "oxbase://test".into(),
        prefix: "ox".into(),
        policy: std::sync::Arc::new(policy),
        ..Default::default()
    };
    let create = |class: &str, object: Value| WriteBatch {
        ops: vec![WriteOp::Create {
            class_name: class.into(),
            object: obj(object),
            relations: vec![],
        }],
        atomic: false,
        events: Some(context.clone()),
    };
    let stamp = |mut object: Value| {
        object["createdAt"] = date(1).into();
        object["updatedAt"] = date(1).into();
        object
    };
    for (class, object) in [
        (
            "_Session",
            json!({"objectId": "s1", "sessionToken": "r:secret", "pin": 1}),
        ),
        (
            "Big",
            json!({"objectId": "b1", "secret": "x", "pin": 2, "kept": 3}),
        ),
    ] {
        store
            .write(&view, create(class, stamp(object)))
            .await
            .unwrap()[0]
            .clone()
            .unwrap();
    }
    let too_big = stamp(json!({"objectId": "b2", "blob": "x".repeat(40 * 1024)}));
    let refused = store.write(&view, create("Big", too_big)).await.unwrap();
    assert!(
        matches!(refused[0], Err(StoreError::EventTooLarge { .. })),
        "{refused:?}"
    );
    let id = |id: &str| Filter::field("objectId", Condition::Eq(QueryValue::String(id.into())));
    let left = store
        .find(&view, &Query::new("Big").filter(id("b2")))
        .await
        .unwrap();
    assert!(left.is_empty(), "the refused write left {left:?}");

    let lease = std::time::Duration::from_secs(30);
    let events = store
        .outbox_claim("relay", lease, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.len(), 2);
    let objects: Vec<Value> = events
        .iter()
        .map(|e| serde_json::from_str::<Value>(&e.payload).unwrap()["data"]["object"].clone())
        .collect();
    assert_eq!(
        objects[0],
        json!({"objectId": "s1", "createdAt": date(1), "updatedAt": date(1)})
    );
    assert_eq!(
        objects[1],
        json!({"objectId": "b1", "kept": 3, "createdAt": date(1), "updatedAt": date(1)})
    );

    assert_eq!(store.outbox_dead_letters().await.unwrap(), 0);
    store
        .outbox_dead_letter(events[0].seq, "too large")
        .await
        .unwrap();
    assert_eq!(store.outbox_dead_letters().await.unwrap(), 1);
    assert_eq!(store.outbox_backlog().await.unwrap(), 1);
    let rest = store
        .outbox_claim("relay", lease, 100)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].seq, events[1].seq);
}

/// Whether a plan says something: a non-empty list of rows or document.
fn is_plan(plan: &Value) -> bool {
    match plan {
        Value::Array(rows) => !rows.is_empty(),
        Value::Object(fields) => !fields.is_empty(),
        _ => false,
    }
}

/// `explain` answers the backend's plan for the find a query would run.
pub async fn explain_answers_the_plan(store: StoreRef) {
    let view = seed(
        &store,
        "Plan",
        (0..20)
            .map(
                |i| json!({"objectId": format!("x{i:02}"), "rank": i % 4, "name": format!("n{i}")}),
            )
            .collect(),
    )
    .await;
    let simple = store.explain(&view, &Query::new("Plan")).await.unwrap();
    assert!(is_plan(&simple), "a plan for a plain find: {simple}");

    let mut filtered = q(
        "Plan",
        Filter::And(vec![
            f("rank", Condition::Gte(n(2))),
            f("name", Condition::Ne(s("n3"))),
            Filter::Permission {
                write: false,
                principals: vec!["*".into(), "u1".into()],
            },
        ]),
    )
    .limit(3);
    filtered.skip = 1;
    filtered.order = vec![SortKey::Field {
        path: FieldPath::new("name"),
        descending: true,
    }];
    filtered.keys = Some(vec!["rank".into()]);
    let plan = store.explain(&view, &filtered).await.unwrap();
    assert!(is_plan(&plan), "a plan for a filtered find: {plan}");
    assert_ne!(
        plan, simple,
        "the filtered find is planned, not the plain one"
    );
    // Explaining reads nothing and changes nothing.
    assert_eq!(
        ids(&store, &view, filtered).await,
        list(&["x06", "x02", "x19"])
    );
    assert_eq!(
        store.explain(&view, &Query::new("Missing")).await.unwrap(),
        json!([]),
        "a class that does not exist has no plan"
    );
}
