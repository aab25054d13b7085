//! The conformance suite on PostgreSQL. Needs a server: set
//! `OXBASE_TEST_POSTGRES_URI` to a URI whose user may create databases
//! (`bash ops/test.sh` installs and starts one). Each test runs in a fresh
//! database, dropped afterwards.

mod conformance;

use std::sync::Arc;

use oxbase_store::postgres::PostgresStore;
use oxbase_test_support::PostgresDatabase;

/// A store on a fresh database, dropped when the `PostgresDatabase` is.
async fn create() -> (conformance::StoreRef, PostgresDatabase) {
    let db = PostgresDatabase::create(
        "oxbase_test",
        "OXBASE_TEST_POSTGRES_URI is not set: run `bash ops/test.sh`, which installs and starts \
         PostgreSQL, or point it at a server whose user may create databases",
    )
    .await;
    let store = PostgresStore::connect(db.uri(), &Default::default())
        .await
        .unwrap();
    (Arc::new(store), db)
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _db) = create().await;
                conformance::$name(store).await;
            }
        )*
    };
}

oxbase_test_support::for_each_conformance_test!(conformance_tests);

/// PostgreSQL's plan is its `EXPLAIN (FORMAT JSON)` rows, as Parse Server
/// answers them: `[{"QUERY PLAN": [{"Plan": {...}}]}]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_the_json_plan() {
    let (store, _db) = create().await;
    let view = conformance::seed(
        &store,
        "Plan",
        vec![serde_json::json!({"objectId": "p1", "rank": 1})],
    )
    .await;
    let mut query = oxbase_store::Query::new("Plan").limit(5);
    query.order = vec![oxbase_store::SortKey::Field {
        path: oxbase_store::FieldPath::new("rank"),
        descending: false,
    }];
    let plan = store.explain(&view, &query).await.unwrap();
    let rows = plan.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{plan}");
    let top = &rows[0]["QUERY PLAN"][0]["Plan"];
    assert_eq!(top["Node Type"], "Limit", "{plan}");
    fn node_types<'a>(node: &'a serde_json::Value, out: &mut Vec<&'a str>) {
        out.extend(node["Node Type"].as_str());
        for child in node["Plans"].as_array().into_iter().flatten() {
            node_types(child, out);
        }
    }
    let mut types = Vec::new();
    node_types(top, &mut types);
    assert!(types.contains(&"Sort"), "{plan}");
    assert!(types.contains(&"Seq Scan"), "{plan}");
}

/// Keyset paging on `objectId` (how a push pages `_Installation`) is served
/// by the primary key's index, on Parse Server's tables as they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn object_id_pages_use_the_primary_key() {
    use oxbase_store::{Condition, FieldPath, Filter, Query, QueryValue, SortKey};
    let (store, db) = create().await;
    let rows = (0..5000)
        .map(|i| serde_json::json!({"objectId": format!("i{i:06}"), "deviceType": "ios"}))
        .collect();
    let view = conformance::seed(&store, "_Installation", rows).await;
    // The planner's statistics, as autovacuum would have gathered them.
    let (client, connection) = tokio_postgres::connect(db.uri(), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute(r#"ANALYZE "_Installation""#)
        .await
        .unwrap();
    let mut page = Query::new("_Installation")
        .filter(Filter::field(
            "objectId",
            Condition::Gt(QueryValue::String("i002000".into())),
        ))
        .limit(100);
    page.order = vec![SortKey::Field {
        path: FieldPath::new("objectId"),
        descending: false,
    }];
    let plan = store.explain(&view, &page).await.unwrap().to_string();
    assert!(
        plan.contains("Index Scan") && plan.contains("_Installation_pkey"),
        "{plan}"
    );
    let found = store.find(&view, &page).await.unwrap();
    assert_eq!(found.len(), 100);
    assert_eq!(found[0]["objectId"], "i002001");
}

/// Processes started together on an empty database (a deployment's first
/// start) all open it: creating the bookkeeping tables is not a race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_opened_together_on_an_empty_database_all_open() {
    let db = PostgresDatabase::create(
        "oxbase_test",
        "OXBASE_TEST_POSTGRES_URI is not set: run `bash ops/test.sh`",
    )
    .await;
    let options = oxbase_store::StoreOptions::default();
    let opening = (0..8).map(|_| PostgresStore::connect(db.uri(), &options));
    for opened in futures_util::future::join_all(opening).await {
        opened.unwrap();
    }
}
