//! A batch delivered again after its count failed is counted once: a push
//! service against a real nats-server (on PATH; `bash ops/test.sh`
//! installs one), a real store (SQLite, or PostgreSQL with
//! `OXBASE_TEST_BACKEND=postgres`) and the local FCM fake. The store is
//! wrapped so that recording one batch fails once, either before it is
//! applied or after (its answer lost, as when the process dies there).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_objects::{Auth, FindOptions, ObjectLayer};
use oxbase_proto::push::{PushDevice, PushRequest};
use oxbase_push::{
    FcmConfig, PushConfig, PushQueue, PushService, PushStore, PushStoreError, Settings,
};
use oxbase_push_fakes::{FakeFcm, Options};
use oxbase_test_support::NatsServer;
use oxbase_test_support::PostgresDatabase;
use serde_json::{Map, Value, json};

/// Three full batches: the one whose recording fails has `BATCH_SIZE`
/// devices.
const DEVICES: usize = 12;
const BATCH_SIZE: usize = 4;

/// Where the injected failure falls.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Failure {
    /// The batch's counts are refused: nothing of them is applied.
    Refused,
    /// The counts are applied, then their answer is lost.
    Lost,
}

/// The object layer, with the first recording of a batch's counts failing
/// as `failure` says.
struct FailOnce {
    objects: Arc<ObjectLayer>,
    failure: Failure,
    failed: AtomicUsize,
}

impl FailOnce {
    /// Whether this recording is the one that fails.
    fn fails_now(&self) -> bool {
        self.failed
            .compare_exchange(0, 1, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

#[async_trait::async_trait]
impl PushStore for FailOnce {
    async fn audience(
        &self,
        query: &Map<String, Value>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<PushDevice>, PushStoreError> {
        self.objects.audience(query, after, limit).await
    }

    async fn status(&self, id: &str) -> Result<Option<Map<String, Value>>, PushStoreError> {
        self.objects.status(id).await
    }

    async fn update_status(
        &self,
        id: &str,
        changes: Map<String, Value>,
    ) -> Result<Map<String, Value>, PushStoreError> {
        self.objects.update_status(id, changes).await
    }

    async fn badges(&self, ids: &[String]) -> Result<HashMap<String, i64>, PushStoreError> {
        self.objects.badges(ids).await
    }

    async fn record_batch(
        &self,
        id: &str,
        page: u64,
        changes: Map<String, Value>,
        badged: &[String],
    ) -> Result<Map<String, Value>, PushStoreError> {
        if !self.fails_now() {
            return self.objects.record_batch(id, page, changes, badged).await;
        }
        if self.failure == Failure::Lost {
            self.objects.record_batch(id, page, changes, badged).await?;
        }
        Err("injected: recording the batch failed".into())
    }

    async fn forget_tokens(&self, ids: &[String]) -> Result<(), PushStoreError> {
        self.objects.forget_tokens(ids).await
    }
}

struct Setup {
    _dir: tempfile::TempDir,
    _nats: NatsServer,
    _database: Option<PostgresDatabase>,
    objects: Arc<ObjectLayer>,
    store: Arc<FailOnce>,
    fcm: Arc<FakeFcm>,
    jetstream: jetstream::Context,
    settings: Arc<Settings>,
    queue: PushQueue,
    shutdown: Shutdown,
}

async fn setup(failure: Failure) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(&dir.path().join("nats"));
    let url = nats.url.clone();
    let mut config = Config {
        data_dir: dir.path().to_owned(),
        ..Config::default()
    };
    let database = match std::env::var("OXBASE_TEST_BACKEND").as_deref() {
        Ok("postgres") => {
            let database = PostgresDatabase::create(
                "oxbase_push",
                "OXBASE_TEST_BACKEND=postgres needs OXBASE_TEST_POSTGRES_URI: \
                 `source ops/postgres.sh` sets it",
            )
            .await;
            config.database_uri = Some(database.uri().to_owned());
            Some(database)
        }
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("unknown OXBASE_TEST_BACKEND {other:?}"),
    };
    let fcm = FakeFcm::start(Options::default()).await;
    let account = dir.path().join("service-account.json");
    std::fs::write(&account, fcm.service_account().to_string()).unwrap();
    config.set_section(&PushConfig {
        batch_size: BATCH_SIZE,
        fcm: FcmConfig {
            service_account: Some(account),
            endpoint: fcm.base.clone(),
        },
        ..PushConfig::default()
    });
    let store = oxbase_store::open(&config.database_uri(), &Default::default())
        .await
        .unwrap();
    let objects = ObjectLayer::from_config(&config, store, None)
        .await
        .unwrap();
    let store = Arc::new(FailOnce {
        objects: Arc::clone(&objects),
        failure,
        failed: AtomicUsize::new(0),
    });
    let client = async_nats::connect(&url).await.unwrap();
    let settings = Settings::from_config(&config).unwrap();
    let service = PushService::new(&config, client.clone(), store.clone()).unwrap();
    let shutdown = Shutdown::default();
    tokio::spawn(service.run(Readiness::new(), shutdown.clone()));
    let jetstream = jetstream::new(client);
    Setup {
        _dir: dir,
        _nats: nats,
        _database: database,
        queue: PushQueue::new(jetstream.clone(), Arc::clone(&settings)),
        objects,
        store,
        fcm,
        jetstream,
        settings,
        shutdown,
    }
}

impl Setup {
    async fn create(&self, class: &str, body: Value) -> String {
        let Value::Object(body) = body else {
            unreachable!()
        };
        let write = self
            .objects
            .prepare_create(&Auth::master(), class, &body)
            .await
            .unwrap();
        let id = write.object_id().unwrap().to_owned();
        self.objects.commit_one(write).await.unwrap();
        id
    }

    async fn get(&self, class: &str, id: &str) -> Map<String, Value> {
        let options = FindOptions::for_get(&Map::new(), self.objects.limits()).unwrap();
        self.objects
            .get(&Auth::master(), class, id, &options)
            .await
            .unwrap()
    }

    /// Whether every request and batch was acknowledged: the stream keeps
    /// each message until then (work-queue retention).
    async fn drained(&self) -> bool {
        match self.jetstream.get_stream(self.settings.stream_name()).await {
            Ok(mut stream) => stream
                .info()
                .await
                .is_ok_and(|info| info.state.messages == 0),
            Err(_) => false,
        }
    }

    /// The status once the push succeeded and every message of it was
    /// acknowledged.
    async fn settled(&self, id: &str) -> Map<String, Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let status = self.get("_PushStatus", id).await;
            if status["status"] == "succeeded" && self.drained().await {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "the push never settled: {}",
                Value::Object(status)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn a_batch_counted_again_is_counted_once(failure: Failure) {
    let setup = setup(failure).await;
    let mut installations = Vec::new();
    for n in 0..DEVICES {
        let body = json!({"deviceType": "android", "installationId": format!("i-{n}"),
                          "deviceToken": format!("t-{n}"), "channels": ["news"]});
        installations.push(setup.create("_Installation", body).await);
    }
    let status_id = setup
        .create(
            "_PushStatus",
            json!({"status": "pending", "numSent": 0, "numFailed": 0, "source": "rest",
                   "sentPerType": {}, "failedPerType": {}, "ACL": {}}),
        )
        .await;
    let Value::Object(data) = json!({"alert": "hello", "badge": "Increment"}) else {
        unreachable!()
    };
    let Value::Object(query) = json!({"channels": {"$in": ["news"]}}) else {
        unreachable!()
    };
    let request = PushRequest {
        status_id: status_id.clone(),
        query,
        data,
        expires_at: None,
        apns: Default::default(),
    };
    setup.queue.submit(&request, None).await.unwrap();

    let status = setup.settled(&status_id).await;
    setup.shutdown.trigger();
    assert_eq!(setup.store.failed.load(Ordering::SeqCst), 1, "no failure");
    let status = Value::Object(status);
    assert_eq!(status["count"], DEVICES, "{status}");
    assert_eq!(status["numSent"], DEVICES, "{status}");
    assert_eq!(status["numFailed"], 0, "{status}");
    assert_eq!(
        status["sentPerType"],
        json!({"android": DEVICES}),
        "{status}"
    );
    for id in &installations {
        let installation = setup.get("_Installation", id).await;
        assert_eq!(installation["badge"], 1, "{id}: {installation:?}");
    }
    // The list of counted batches went with the push's end.
    assert!(status.get("countedBatches").is_none(), "{status}");
    // Every device was reached, with the badge it has. A batch refused is
    // sent again; one counted is not.
    let delivered = setup.fcm.received.delivered.lock().unwrap().clone();
    assert_eq!(delivered.len(), DEVICES);
    let mut twice = 0;
    for messages in delivered.values() {
        for message in messages {
            let data: Value =
                serde_json::from_str(message["data"]["data"].as_str().unwrap()).unwrap();
            assert_eq!(data["badge"], 1, "{message}");
        }
        twice += usize::from(messages.len() == 2);
    }
    let expected = match failure {
        Failure::Refused => BATCH_SIZE,
        Failure::Lost => 0,
    };
    assert_eq!(twice, expected, "devices sent twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_counts_were_refused_is_counted_once() {
    a_batch_counted_again_is_counted_once(Failure::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_whose_counts_were_lost_is_counted_once() {
    a_batch_counted_again_is_counted_once(Failure::Lost).await;
}

/// Two processes that both hold one batch (the first stalled past
/// `ack_wait`) cannot both count it: the second record is refused, and
/// the counts and badges stay as the first left them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_is_recorded_once_even_by_two_holders() {
    let setup = setup(Failure::Refused).await;
    setup.shutdown.trigger();
    let status = setup
        .create("_PushStatus", json!({"status": "running", "numSent": 0}))
        .await;
    let device = setup
        .create(
            "_Installation",
            json!({"deviceType": "android", "deviceToken": "t1", "installationId": "i1"}),
        )
        .await;
    let changes = || {
        Map::from_iter([(
            "numSent".to_owned(),
            json!({"__op": "Increment", "amount": 1}),
        )])
    };
    let badged = [device.clone()];
    let objects: &dyn PushStore = setup.objects.as_ref();
    objects
        .record_batch(&status, 3, changes(), &badged)
        .await
        .unwrap();
    assert!(
        objects
            .record_batch(&status, 3, changes(), &badged)
            .await
            .is_err(),
        "the second holder's record is refused"
    );
    objects
        .record_batch(&status, 4, changes(), &badged)
        .await
        .unwrap();
    assert_eq!(setup.get("_PushStatus", &status).await["numSent"], 2);
    assert_eq!(setup.get("_Installation", &device).await["badge"], 2);
}
