//! The conformance suite on the embedded SQLite backend.

mod conformance;

use std::sync::Arc;

use oxbase_store::sqlite::{SqliteOptions, SqliteStore};

/// A store on a fresh file; the directory lives as long as the test.
fn store() -> (conformance::StoreRef, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("test.db"), SqliteOptions::default()).unwrap();
    (Arc::new(store), dir)
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _dir) = store();
                conformance::$name(store).await;
            }
        )*
    };
}

oxbase_test_support::for_each_conformance_test!(conformance_tests);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("reopen.db");
    {
        let store: conformance::StoreRef =
            Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
        conformance::seed(
            &store,
            "Keep",
            vec![serde_json::json!({"objectId": "k1", "v": 1})],
        )
        .await;
    }
    let store: conformance::StoreRef =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let view = conformance::view(&store).await;
    let found = store
        .find(&view, &oxbase_store::Query::new("Keep"))
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["v"], 1);
}

/// SQLite's plan is its `EXPLAIN QUERY PLAN` rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_the_query_plan() {
    let (store, _dir) = store();
    let view = conformance::seed(
        &store,
        "Plan",
        vec![serde_json::json!({"objectId": "p1", "rank": 1})],
    )
    .await;
    let query = oxbase_store::Query::new("Plan").filter(oxbase_store::Filter::field(
        "objectId",
        oxbase_store::Condition::Eq(oxbase_store::QueryValue::String("p1".into())),
    ));
    let plan = store.explain(&view, &query).await.unwrap();
    let rows = plan.as_array().unwrap();
    assert!(!rows.is_empty());
    for row in rows {
        let mut keys: Vec<&str> = row
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["detail", "id", "parent"], "{plan}");
    }
    // The objectId is the key: a search, not a scan.
    assert!(
        rows.iter()
            .any(|row| row["detail"].as_str().unwrap().starts_with("SEARCH")),
        "{plan}"
    );
}
