//! What the fuzz targets share: per process, one object layer over a
//! SQLite store in a scratch directory, seeded with a few objects of every
//! Parse type, and one runtime to drive it.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use oxbase_kit::Config;
use oxbase_objects::{Auth, Limits, ObjectLayer, WriteReply};
use oxbase_store::sqlite::{SqliteOptions, SqliteStore};
use oxbase_store::{Object, Query};
use serde_json::{Map, Value, json};

/// The class the seeded objects live in and the targets read and write.
pub const CLASS: &str = "Fuzz";
/// The class `Fuzz`'s pointers and relations point to.
pub const OTHER: &str = "Other";

pub struct Harness {
    runtime: tokio::runtime::Runtime,
    pub layer: Arc<ObjectLayer>,
    pub limits: Limits,
    /// The seeded objects of `Fuzz` as the store answers them, each with
    /// the `Relation` placeholder LiveQuery adds from the schema.
    pub samples: Vec<Object>,
}

impl Harness {
    /// The process's harness, started on first use.
    pub fn get() -> &'static Harness {
        static HARNESS: OnceLock<Harness> = OnceLock::new();
        HARNESS.get_or_init(Harness::start)
    }

    /// Runs `task` on the runtime's worker thread rather than the fuzzer's
    /// main thread: its stack is tokio's default, as the server's request
    /// handlers have, so recursion that would overflow there overflows here.
    pub fn run<F>(&self, task: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let handle = self.runtime.spawn(task);
        if let Err(err) = self.runtime.block_on(handle)
            && err.is_panic()
        {
            std::panic::resume_unwind(err.into_panic());
        }
    }

    fn start() -> Self {
        let dir = scratch_dir();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let limits = Limits::default();
        let config = Config {
            data_dir: dir.clone(),
            allow_custom_object_id: true,
            ..Config::default()
        };
        // Durability is of no use here, and a synchronous commit per write
        // would bound the update target's speed.
        let options = SqliteOptions {
            readers: 1,
            synchronous: "OFF",
            query_timeout: Some(Duration::from_millis(limits.query_timeout_ms)),
        };
        let store = SqliteStore::open(&dir.join("fuzz.db"), options).expect("the store opens");
        let layer = runtime
            .block_on(ObjectLayer::from_config(&config, Arc::new(store), None))
            .expect("the object layer opens");
        runtime.block_on(seed(&layer));
        let mut samples = runtime
            .block_on(layer.find_raw(&Query::new(CLASS)))
            .expect("the seeded objects read back");
        for sample in &mut samples {
            sample.insert(
                "rel".into(),
                json!({"__type": "Relation", "className": OTHER}),
            );
        }
        Harness {
            runtime,
            layer,
            limits,
            samples,
        }
    }
}

/// Creates an object with the master key, as a client's save does; the
/// create's error, when the layer refuses it.
pub async fn create(
    layer: &ObjectLayer,
    class_name: &str,
    body: &Map<String, Value>,
) -> Result<String, oxbase_objects::ParseError> {
    let write = layer
        .prepare_create(&Auth::master(), class_name, body)
        .await?;
    match layer.commit_one(write).await? {
        WriteReply::Created { object_id, .. } => Ok(object_id),
        other => panic!("a create answered {other:?}"),
    }
}

async fn seed(layer: &ObjectLayer) {
    for id in ["o1", "o2"] {
        let body = json!({"objectId": id, "name": id, "n": 1});
        create(layer, OTHER, as_map(&body)).await.expect("seeded");
    }
    let objects = [
        json!({
            "name": "alpha", "n": 1, "f": 1.5, "flag": true,
            "tags": ["a", "b", "c"],
            "nums": [1, 2, 3],
            "obj": {"x": 1, "y": {"z": "deep"}, "list": [{"k": 1}]},
            "when": {"__type": "Date", "iso": "2024-01-01T00:00:00.000Z"},
            "loc": {"__type": "GeoPoint", "latitude": 10.0, "longitude": 20.0},
            "area": {"__type": "Polygon", "coordinates": [[0, 0], [0, 1], [1, 1], [1, 0]]},
            "ptr": {"__type": "Pointer", "className": OTHER, "objectId": "o1"},
            "ptrs": [{"__type": "Pointer", "className": OTHER, "objectId": "o2"}],
            "raw": {"__type": "Bytes", "base64": "AAEC"},
            "file": {"__type": "File", "name": "a.txt", "url": "http://files.invalid/a.txt"},
            "rel": {"__op": "AddRelation", "objects": [
                {"__type": "Pointer", "className": OTHER, "objectId": "o1"}
            ]},
            "ACL": {"*": {"read": true}, "u1": {"write": true}},
        }),
        json!({
            "name": "Beta élan 🦀", "n": -7, "f": 1e300, "flag": false,
            "tags": [], "nums": [0.5],
            "obj": {"x": "one"},
            "when": {"__type": "Date", "iso": "1970-01-01T00:00:00.000Z"},
            "loc": {"__type": "GeoPoint", "latitude": -89.9, "longitude": 179.9},
            "ptr": {"__type": "Pointer", "className": OTHER, "objectId": "o2"},
            "ACL": {"role:admin": {"read": true, "write": true}},
        }),
        json!({"name": "", "n": 0}),
    ];
    for body in &objects {
        create(layer, CLASS, as_map(body)).await.expect("seeded");
    }
}

fn as_map(value: &Value) -> &Map<String, Value> {
    value.as_object().expect("an object")
}

/// A directory of this process's own, on a RAM disk where there is one.
/// Directories that dead processes left behind are removed first: a
/// fuzzer exits without running destructors.
fn scratch_dir() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() {
        shm.to_owned()
    } else {
        std::env::temp_dir()
    };
    remove_stale(&base);
    let dir = base.join(format!("oxbase-fuzz-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn remove_stale(base: &Path) {
    // Without /proc, no process can be told dead.
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("oxbase-fuzz-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
