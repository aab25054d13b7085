//! The conformance suite on MongoDB. Needs a server: set
//! `OXBASE_TEST_MONGODB_URI` (e.g. `mongodb://localhost:27017`, or a
//! replica set URI to run batches in transactions). Each test runs in a
//! fresh database, dropped afterwards.
//!
//! The tests that need a server are `#[ignore]`d, so a run without one
//! reports them as ignored rather than passed: no MongoDB server package
//! exists for these machines, and the translation to Parse's documents is
//! unit-tested without one. `bash ops/test.sh` runs them with
//! `--include-ignored` when the variable is set, and prints a SKIPPED line
//! otherwise.

mod conformance;

use std::sync::Arc;

use futures_util::TryStreamExt;
use oxbase_store::mongo::MongoStore;
use oxbase_test_support::{unique_database_name, with_database};

const URI_VARIABLE: &str = "OXBASE_TEST_MONGODB_URI";

/// The server the ignored tests run on: asking for them without one is a
/// failure, not a pass.
fn server_uri() -> String {
    std::env::var(URI_VARIABLE)
        .unwrap_or_else(|_| panic!("set {URI_VARIABLE} to run the MongoDB tests"))
}

struct TestDatabase {
    uri: String,
    name: String,
}

impl TestDatabase {
    /// A store on a new database of the configured server.
    async fn create() -> (conformance::StoreRef, Self) {
        let uri = server_uri();
        let name = unique_database_name("oxbase_test");
        let store = MongoStore::connect(&with_database(&uri, &name), &Default::default())
            .await
            .unwrap_or_else(|err| panic!("cannot connect to {URI_VARIABLE}: {err}"));
        (Arc::new(store), Self { uri, name })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let (uri, name) = (self.uri.clone(), self.name.clone());
        // Drop cannot await; a short-lived runtime on its own thread can.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async {
                if let Ok(client) = mongodb::Client::with_uri_str(&uri).await {
                    let _ = client.database(&name).drop().await;
                }
            });
        })
        .join();
    }
}

#[test]
fn database_names_replace_the_uri_path() {
    assert_eq!(
        with_database("mongodb://h:27017", "db"),
        "mongodb://h:27017/db"
    );
    assert_eq!(
        with_database("mongodb://u:p@h1,h2/parse?replicaSet=rs0", "db"),
        "mongodb://u:p@h1,h2/db?replicaSet=rs0"
    );
    assert_eq!(
        with_database("mongodb+srv://c.example.net/?retryWrites=true", "db"),
        "mongodb+srv://c.example.net/db?retryWrites=true"
    );
}

macro_rules! conformance_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            #[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
            async fn $name() {
                let (store, _db) = TestDatabase::create().await;
                conformance::$name(store).await;
            }
        )*
    };
}

oxbase_test_support::for_each_conformance_test!(conformance_tests);

/// What lands in MongoDB is what Parse Server writes and reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
async fn documents_are_in_parse_layout() {
    let (store, db) = TestDatabase::create().await;
    let view = conformance::seed(
        &store,
        "Post",
        vec![serde_json::json!({
            "objectId": "p1",
            "title": "hi",
            "author": {"__type": "Pointer", "className": "_User", "objectId": "u1"},
            "ACL": {"u1": {"read": true, "write": true}},
        })],
    )
    .await;
    assert_eq!(
        view.get("Post").unwrap().field_type("author"),
        Some(&oxbase_store::FieldType::Pointer {
            target_class: "_User".into()
        })
    );
    let client = mongodb::Client::with_uri_str(with_database(&db.uri, &db.name))
        .await
        .unwrap();
    let database = client.database(&db.name);
    let stored = database
        .collection::<mongodb::bson::Document>("Post")
        .find_one(mongodb::bson::doc! {"_id": "p1"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("_p_author").unwrap(), "_User$u1");
    assert!(stored.get_datetime("_created_at").is_ok());
    assert_eq!(
        stored.get_document("_acl").unwrap(),
        &mongodb::bson::doc! {"u1": {"w": true, "r": true}}
    );
    let schema = database
        .collection::<mongodb::bson::Document>("_SCHEMA")
        .find_one(mongodb::bson::doc! {"_id": "Post"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(schema.get_str("author").unwrap(), "*_User");
    assert_eq!(schema.get_str("createdAt").unwrap(), "date");
    assert!(!schema.contains_key("ACL"));
}

/// Batches run in transactions exactly when the server has them: on a
/// replica set member or a mongos, not on a standalone server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
async fn transactions_follow_the_server_kind() {
    let uri = server_uri();
    let store = MongoStore::connect(&uri, &Default::default())
        .await
        .unwrap();
    let client = mongodb::Client::with_uri_str(&uri).await.unwrap();
    let hello = client
        .database("admin")
        .run_command(mongodb::bson::doc! {"hello": 1})
        .await
        .unwrap();
    let clustered = hello.contains_key("setName") || hello.get_str("msg") == Ok("isdbgrid");
    assert_eq!(store.uses_transactions(), clustered);
    println!("transactions: {clustered}");
}

/// Updates keep the layout: `_p_` pointers, `$set` of all three ACL keys,
/// join rows with driver ObjectIds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
async fn updates_and_relations_are_in_parse_layout() {
    use mongodb::bson::{Bson, doc};
    use oxbase_store::{FieldPath, Filter, UpdateOp, WriteBatch, WriteOp};
    use serde_json::json;

    let (store, db) = TestDatabase::create().await;
    let mut fields = std::collections::BTreeMap::new();
    fields.insert(
        "fans".to_owned(),
        oxbase_store::FieldType::Relation {
            target_class: "_User".into(),
        },
    );
    store.ensure_fields("Band", &fields).await.unwrap();
    let view = conformance::seed(
        &store,
        "Band",
        vec![json!({"objectId": "b1", "name": "x", "leader": {"__type": "Pointer", "className": "_User", "objectId": "u1"}})],
    )
    .await;
    let update = WriteOp::Update {
        class_name: "Band".into(),
        object_id: "b1".into(),
        updated_at: "2024-02-01T00:00:00.000Z".into(),
        changes: vec![
            (
                FieldPath::new("ACL"),
                UpdateOp::Set(json!({"u2": {"read": true, "write": true}, "*": {"read": true}})),
            ),
            (
                FieldPath::new("leader"),
                UpdateOp::Set(json!({"__type": "Pointer", "className": "_User", "objectId": "u2"})),
            ),
            (FieldPath::new("name"), UpdateOp::Delete),
        ],
        relations: vec![oxbase_store::RelationChange {
            key: "fans".into(),
            add: vec!["u1".into(), "u2".into()],
            remove: vec![],
        }],
        precondition: Filter::All,
    };
    let out = store.write(&view, WriteBatch::one(update)).await.unwrap();
    let oxbase_store::WriteOutcome::Updated { before, after } = out[0].clone().unwrap() else {
        panic!("{out:?}");
    };
    assert_eq!(before["name"], "x");
    assert_eq!(after["leader"]["objectId"], "u2");

    let client = mongodb::Client::with_uri_str(&db.uri).await.unwrap();
    let database = client.database(&db.name);
    let stored = database
        .collection::<mongodb::bson::Document>("Band")
        .find_one(doc! {"_id": "b1"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_str("_p_leader").unwrap(), "_User$u2");
    assert!(!stored.contains_key("name"));
    assert_eq!(
        stored.get_array("_rperm").unwrap(),
        &vec![Bson::from("u2"), Bson::from("*")]
    );
    assert_eq!(
        stored.get_document("_acl").unwrap(),
        &doc! {"u2": {"w": true, "r": true}, "*": {"r": true}}
    );
    let joins: Vec<mongodb::bson::Document> = database
        .collection::<mongodb::bson::Document>("_Join:fans:Band")
        .find(doc! {})
        .await
        .unwrap()
        .try_collect()
        .await
        .unwrap();
    assert_eq!(joins.len(), 2);
    assert!(
        joins
            .iter()
            .all(|row| row.get_object_id("_id").is_ok() && row.get_str("owningId") == Ok("b1"))
    );
}

/// A document as Parse Server writes it (nulls, `_acl`, a legacy
/// `_expiresAt`-style spelling aside) reads back as Parse returns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
async fn reads_documents_parse_wrote() {
    use mongodb::bson::doc;
    use oxbase_store::{Condition, Filter, Query, QueryValue};
    use serde_json::json;

    let (store, db) = TestDatabase::create().await;
    let client = mongodb::Client::with_uri_str(&db.uri).await.unwrap();
    let database = client.database(&db.name);
    database
        .collection::<mongodb::bson::Document>("_SCHEMA")
        .insert_one(doc! {
            "_id": "Post", "objectId": "string", "updatedAt": "date", "createdAt": "date",
            "title": "string", "author": "*_User", "loc": "geopoint", "pic": "file",
        })
        .await
        .unwrap();
    let at = mongodb::bson::DateTime::from_millis(1_714_557_600_123);
    database
        .collection::<mongodb::bson::Document>("Post")
        .insert_one(doc! {
            "_id": "xWMyZ4YEGZ", "title": "hi", "_p_author": "_User$k8Jd0aZ1q2",
            "loc": [2.35, 48.85], "pic": "a1b2c3_photo.png", "gone": null,
            "_rperm": ["*", "k8Jd0aZ1q2"], "_wperm": ["k8Jd0aZ1q2"],
            "_acl": {"k8Jd0aZ1q2": {"w": true, "r": true}, "*": {"r": true}},
            "_created_at": at, "_updated_at": at,
        })
        .await
        .unwrap();
    let view = conformance::view(&store).await;
    let author = QueryValue::Pointer {
        class_name: "_User".into(),
        object_id: "k8Jd0aZ1q2".into(),
    };
    let found = store
        .find(
            &view,
            &Query::new("Post").filter(Filter::field("author", Condition::Eq(author))),
        )
        .await
        .unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(
        serde_json::Value::Object(found[0].clone()),
        json!({
            "objectId": "xWMyZ4YEGZ", "title": "hi",
            "author": {"__type": "Pointer", "className": "_User", "objectId": "k8Jd0aZ1q2"},
            "loc": {"__type": "GeoPoint", "latitude": 48.85, "longitude": 2.35},
            "pic": {"__type": "File", "name": "a1b2c3_photo.png"},
            "ACL": {"*": {"read": true}, "k8Jd0aZ1q2": {"read": true, "write": true}},
            "createdAt": "2024-05-01T10:00:00.123Z", "updatedAt": "2024-05-01T10:00:00.123Z",
        })
    );
    // A stored null is an absent field.
    let absent = Query::new("Post").filter(Filter::field("gone", Condition::Exists(false)));
    assert_eq!(store.count(&view, &absent).await.unwrap(), 1);
}

/// On a replica set, `_SCHEMA` changes made by anyone (here: a raw insert,
/// as Parse Server would make) reach the store's change counter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a MongoDB server: set OXBASE_TEST_MONGODB_URI"]
async fn schema_changes_are_watched_on_replica_sets() {
    let (store, db) = TestDatabase::create().await;
    let Some(mut changes) = store.schema_changes() else {
        println!("no change streams on a standalone server");
        return;
    };
    let wait = std::time::Duration::from_secs(10);
    // The first count marks the stream as open.
    tokio::time::timeout(wait, changes.wait_for(|n| *n > 0))
        .await
        .expect("the change stream opens")
        .unwrap();
    let seen = *changes.borrow_and_update();
    let client = mongodb::Client::with_uri_str(&db.uri).await.unwrap();
    client
        .database(&db.name)
        .collection::<mongodb::bson::Document>("_SCHEMA")
        .insert_one(mongodb::bson::doc! {"_id": "FromParse", "objectId": "string"})
        .await
        .unwrap();
    tokio::time::timeout(wait, changes.wait_for(|n| *n > seen))
        .await
        .expect("the change is seen")
        .unwrap();
}
