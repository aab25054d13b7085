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

/// The on-demand indexes that exist in the database at `path`.
fn auto_indexes(path: &std::path::Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(path).unwrap();
    let mut stmt = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%:$%' ORDER BY name")
        .unwrap();
    stmt.query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

/// Queries index what they filter on, but only fields the schema declares
/// and only while the table is small: SQLite builds an index on its one
/// writer thread, and every write waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_index_only_declared_fields_of_small_tables() {
    use oxbase_store::{Condition, Filter, Query, QueryValue};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("index.db");
    let store: conformance::StoreRef =
        Arc::new(SqliteStore::open(&path, SqliteOptions::default()).unwrap());
    let rows = |n: usize| -> Vec<serde_json::Value> {
        (0..n).map(|i| serde_json::json!({"rank": i})).collect()
    };
    conformance::seed(&store, "Small", rows(10)).await;
    let view = conformance::seed(&store, "Large", rows(20_001)).await;
    let on = |class: &str, field: &str| {
        Query::new(class).filter(Filter::field(
            field,
            Condition::Eq(QueryValue::Number(1.into())),
        ))
    };
    for query in [
        on("Small", "rank"),
        on("Small", "ghost"),
        on("Large", "rank"),
    ] {
        store.find(&view, &query).await.unwrap();
    }
    // The indexes are built after the queries, in the writer's order: one
    // more write has waited for them.
    conformance::seed(&store, "After", rows(1)).await;
    assert_eq!(auto_indexes(&path), ["Small:$.rank"]);
}

/// A read that runs past `query_timeout` is interrupted with
/// `QueryTimeout`; the store keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_stop_at_the_query_timeout() {
    use oxbase_store::query::RegexSpec;
    use oxbase_store::{Condition, Filter, Query, StoreError};
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        query_timeout: Some(std::time::Duration::from_millis(1)),
        ..Default::default()
    };
    let store: conformance::StoreRef =
        Arc::new(SqliteStore::open(&dir.path().join("slow.db"), options).unwrap());
    let rows = (0..20_000)
        .map(|i| serde_json::json!({"name": format!("name number {i}")}))
        .collect();
    let view = conformance::seed(&store, "Slow", rows).await;
    let scan = Query::new("Slow").filter(Filter::field(
        "name",
        Condition::Regex(RegexSpec {
            pattern: "9{3}$".into(),
            options: String::new(),
        }),
    ));
    let result = store.find(&view, &scan).await;
    assert!(
        matches!(result, Err(StoreError::QueryTimeout)),
        "{result:?}"
    );
    let one = Query::new("Slow").limit(1);
    assert_eq!(store.find(&view, &one).await.unwrap().len(), 1);
}
