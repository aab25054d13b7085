//! The conformance suite on PostgreSQL. Needs a server: set
//! `OXBASE_TEST_POSTGRES_URI` to a URI whose user may create databases
//! (`bash ops/test.sh` installs and starts one). Each test runs in a fresh
//! database, dropped afterwards.

mod conformance;

use std::sync::Arc;

use oxbase_store::postgres::PostgresStore;

struct TestDatabase {
    admin_uri: String,
    name: String,
}

impl TestDatabase {
    async fn create() -> (conformance::StoreRef, Self) {
        let admin_uri = std::env::var("OXBASE_TEST_POSTGRES_URI").expect(
            "OXBASE_TEST_POSTGRES_URI is not set: run `bash ops/test.sh`, which installs and starts \
             PostgreSQL, or point it at a server whose user may create databases",
        );
        let name = format!("oxbase_test_{:016x}", rand::random::<u64>());
        let (client, connection) = tokio_postgres::connect(&admin_uri, tokio_postgres::NoTls)
            .await
            .expect("cannot connect to OXBASE_TEST_POSTGRES_URI");
        tokio::spawn(connection);
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        let uri = with_database(&admin_uri, &name);
        let store = PostgresStore::connect(&uri, &Default::default())
            .await
            .unwrap();
        (Arc::new(store), Self { admin_uri, name })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (uri, name) = (self.admin_uri.clone(), self.name.clone());
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&uri, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
        })
        .join();
    }
}

/// The same server URI with another database name.
fn with_database(uri: &str, name: &str) -> String {
    let (base, query) = uri
        .split_once('?')
        .map(|(b, q)| (b, format!("?{q}")))
        .unwrap_or((uri, String::new()));
    let authority_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let path_start = base[authority_end..]
        .find('/')
        .map(|i| authority_end + i)
        .unwrap_or(base.len());
    format!("{}/{name}{query}", &base[..path_start])
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let (store, _db) = TestDatabase::create().await;
                conformance::$name(store).await;
            }
        )*
    };
}

conformance_tests!(
    create_read_update_delete,
    duplicate_ids_are_refused,
    preconditions_guard_updates_and_deletes,
    atomic_batches_are_all_or_nothing,
    schema_changes_merge_and_conflict,
    comparison_operators,
    arrays_and_nested_objects,
    regex_and_logic,
    subqueries,
    geo_queries,
    text_search,
    order_skip_limit_keys_count,
    hostile_input_is_inert,
    includes_resolve_pointers,
    relations_and_related_to,
    permission_filters,
    unique_fields_of_system_classes,
    schema_operations,
    writes_leave_events_in_the_outbox,
    explain_answers_the_plan,
);

/// PostgreSQL's plan is its `EXPLAIN (FORMAT JSON)` rows, as Parse Server
/// answers them: `[{"QUERY PLAN": [{"Plan": {...}}]}]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explain_is_the_json_plan() {
    let (store, _db) = TestDatabase::create().await;
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
