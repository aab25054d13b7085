//! A jobs process that stops, against a real nats-server (on PATH; `bash
//! ops/test.sh` installs one): the job it runs finishes, and the job it
//! took but had not started (waiting for its queue's rate limit) goes back
//! to the queue at once, not after the ack wait.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures_util::StreamExt;
use oxbase_jobs::{BuiltinJob, JobFailure, JobsConfig, JobsService, Progress};
use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_proto::jobs::{DEFAULT_PRIORITY, JobRun, JobSpec, JobState, PRIORITY_LEVELS};
use oxbase_test_support::NatsServer;
use serde_json::{Value, json};

/// Takes a moment, so a shutdown finds it running.
struct Slow;

#[async_trait::async_trait]
impl BuiltinJob for Slow {
    async fn run(&self, _: JobRun, _: Progress) -> Result<Value, JobFailure> {
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(json!("done"))
    }
}

/// Messages of the default queue handed out and not yet acked (nor handed
/// out again).
async fn held(js: &jetstream::Context) -> usize {
    let stream = js.get_stream("OXBASE_JOBS").await.unwrap();
    let mut held = 0;
    for priority in 0..PRIORITY_LEVELS {
        let consumer: jetstream::consumer::PullConsumer = stream
            .get_consumer(&format!("jobs-default-{priority}"))
            .await
            .unwrap();
        held += consumer.cached_info().num_ack_pending;
    }
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_jobs_process_hands_back_what_it_has_not_started() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let mut config = Config::default();
    // One start a minute: the second job waits, taken, for its turn.
    config.update_section(|jobs: &mut JobsConfig| {
        let queue = jobs.queues.get_mut("default").unwrap();
        queue.rate_limit = 1;
        queue.rate_period_ms = 60_000;
    });
    let service = JobsService::new(&config, client, None)
        .unwrap()
        .builtin("slow", Arc::new(Slow));
    let queue = service.queue();
    let shutdown = Shutdown::new();
    let running = tokio::spawn(service.run(Readiness::new(), shutdown.clone()));
    let spec = || JobSpec {
        name: "slow".into(),
        ..JobSpec::default()
    };
    let first = queue.submit("default", spec(), None).await.unwrap().job.id;
    let deadline = Instant::now() + Duration::from_secs(20);
    while queue.get("default", &first).await.unwrap().state != JobState::Active {
        assert!(Instant::now() < deadline, "the first job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = queue.submit("default", spec(), None).await.unwrap().job.id;
    let deadline = Instant::now() + Duration::from_secs(20);
    while held(&js).await < 2 {
        assert!(Instant::now() < deadline, "the second job was never taken");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the process stops once its running job is done")
        .unwrap()
        .unwrap();
    let first = queue.get("default", &first).await.unwrap();
    assert_eq!(first.state, JobState::Succeeded, "{first:?}");
    // Handed back, the job is handed out again at once: it does not wait
    // for the ack wait (30 s).
    let consumer: jetstream::consumer::PullConsumer = js
        .get_stream("OXBASE_JOBS")
        .await
        .unwrap()
        .get_consumer(&format!("jobs-default-{DEFAULT_PRIORITY}"))
        .await
        .unwrap();
    let mut again = consumer
        .batch()
        .max_messages(1)
        .expires(Duration::from_secs(3))
        .messages()
        .await
        .unwrap();
    let message = again
        .next()
        .await
        .expect("the job the stopped process took comes back at once")
        .unwrap();
    assert!(message.subject.ends_with(&second), "{}", message.subject);
}
