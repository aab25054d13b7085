//! A cron process against a real nats-server (on PATH; `bash ops/test.sh`
//! installs one) that stops while it settles a tick it claimed: it settles
//! it before it stops, rather than leave the claim for another process to
//! take over after a lease.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbase_cron::{CronService, ParseSchedules, ParseSchedulesError, ScheduleBook};
use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_proto::cron::RunOutcome;
use oxbase_test_support::NatsServer;
use serde_json::{Map, Value, json};
use tokio::sync::{Notify, oneshot};

/// One `_JobSchedule` due once, at `at`, whose `_JobStatus` takes as long
/// as the test says.
struct SlowStatus {
    schedule: Map<String, Value>,
    opening: Mutex<Option<oneshot::Sender<()>>>,
    open: Notify,
}

#[async_trait::async_trait]
impl ParseSchedules for SlowStatus {
    async fn load(&self) -> Result<Vec<Map<String, Value>>, ParseSchedulesError> {
        Ok(vec![self.schedule.clone()])
    }

    async fn open_status(&self, _: &str, _: &Value) -> Result<String, ParseSchedulesError> {
        let opening = self.opening.lock().unwrap().take();
        if let Some(opening) = opening {
            let _ = opening.send(());
        }
        self.open.notified().await;
        Ok("status1".into())
    }

    async fn ran(&self, _: &str, _: i64) -> Result<(), ParseSchedulesError> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_cron_process_settles_the_ticks_it_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    let config = Config::default();
    let jetstream = async_nats::jetstream::new(client);
    let queue = oxbase_jobs::JobQueue::new(
        jetstream.clone(),
        Arc::new(oxbase_jobs::Settings::from_config(&config).unwrap()),
    );
    let book = ScheduleBook::new(
        jetstream,
        oxbase_cron::Settings::from_config(&config).unwrap(),
        queue,
    );
    let at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let schedule = json!({
        "objectId": "once",
        "jobName": "report",
        "startAfter": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    let (opening, opened) = oneshot::channel();
    let parse = Arc::new(SlowStatus {
        schedule: schedule.as_object().cloned().unwrap(),
        opening: Mutex::new(Some(opening)),
        open: Notify::new(),
    });
    let service = CronService::new(&config, Arc::clone(&book))
        .unwrap()
        .parse_schedules(Arc::clone(&parse) as Arc<dyn ParseSchedules>);
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run(Readiness::new(), shutdown.clone()));

    tokio::time::timeout(Duration::from_secs(20), opened)
        .await
        .expect("the tick is claimed and its _JobStatus opened")
        .unwrap();
    shutdown.trigger();
    parse.open.notify_one();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the process stops once its tick is settled")
        .unwrap()
        .unwrap();

    let runs = book.runs("_parse_once", 10).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].outcome, RunOutcome::Fired);
    assert!(runs[0].job_id.is_some());
}
