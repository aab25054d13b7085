//! A client's write: the bytes as a JSON object body, parsed as a create
//! and as an update, then saved through the object layer (schema
//! inference, ACL checks, operators) to SQLite: as an update of a fresh
//! object with a field of every type, and as a create that the same body
//! then updates again. The class is emptied and dropped after each input,
//! so every input starts from the same store.

#![no_main]

use libfuzzer_sys::fuzz_target;
use oxbase_fuzz::{Harness, OTHER, create};
use oxbase_objects::values::{WriteKind, parse_write};
use oxbase_objects::{Auth, ObjectLayer};
use serde_json::{Map, Value, json};

fuzz_target!(|data: &[u8]| {
    let Ok(Value::Object(body)) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let _ = parse_write(
        &body,
        WriteKind::Create {
            allow_custom_id: true,
        },
    );
    let _ = parse_write(&body, WriteKind::Update { object_id: "base" });
    let harness = Harness::get();
    harness.run(save(harness, body));
});

/// A class of its own, so dropping it leaves the seeded `Fuzz` alone.
const WRITES: &str = "Writes";

async fn save(harness: &'static Harness, body: Map<String, Value>) {
    let layer = &harness.layer;
    let base = json!({
        "s": "text", "n": 5, "f": 2.5, "b": true,
        "arr": ["a", 1, {"k": "v"}],
        "obj": {"x": 1, "inner": {"y": [1, 2]}},
        "when": {"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"},
        "loc": {"__type": "GeoPoint", "latitude": 1.0, "longitude": 2.0},
        "ptr": {"__type": "Pointer", "className": OTHER, "objectId": "o1"},
        "rel": {"__op": "AddRelation", "objects": [
            {"__type": "Pointer", "className": OTHER, "objectId": "o1"}
        ]},
        "ACL": {"*": {"read": true}},
    });
    let base = base.as_object().expect("an object");
    let id = create(layer, WRITES, base)
        .await
        .expect("the base object saves");
    update(layer, &id, &body).await;
    if let Ok(id) = create(layer, WRITES, &body).await {
        update(layer, &id, &body).await;
    }
    let master = Auth::master();
    layer
        .purge(&master, WRITES)
        .await
        .expect("the class empties");
    layer
        .delete_schema(&master, WRITES)
        .await
        .expect("the class drops");
}

async fn update(layer: &ObjectLayer, id: &str, body: &Map<String, Value>) {
    if let Ok(write) = layer
        .prepare_update(&Auth::master(), WRITES, id, body)
        .await
    {
        let _ = layer.commit_one(write).await;
    }
}
