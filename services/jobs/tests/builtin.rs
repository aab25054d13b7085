//! A built-in job registered in Rust, run by a `JobsService` against a
//! real nats-server (on PATH; `bash ops/test.sh` installs one): it reports
//! progress, answers, and lists itself in the hook registry.

use std::sync::Arc;
use std::time::{Duration, Instant};

use oxbase_hooks::HookRegistry;
use oxbase_jobs::{BuiltinJob, JobFailure, JobsService, Progress};
use oxbase_kit::{Config, Readiness, Shutdown};
use oxbase_proto::jobs::{JobProgress, JobRun, JobSpec, JobState};
use oxbase_test_support::NatsServer;
use serde_json::{Value, json};

/// Adds up `payload.numbers`, reporting progress after each.
struct Sum;

#[async_trait::async_trait]
impl BuiltinJob for Sum {
    async fn run(&self, run: JobRun, progress: Progress) -> Result<Value, JobFailure> {
        let numbers = run.payload["numbers"]
            .as_array()
            .ok_or("payload.numbers must be an array")?;
        let mut total = 0.0;
        for (done, n) in numbers.iter().enumerate() {
            total += n.as_f64().ok_or("numbers only")?;
            progress.report(JobProgress {
                progress: Some(100.0 * (done + 1) as f64 / numbers.len() as f64),
                message: Some(format!("{} of {}", done + 1, numbers.len())),
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(json!(total))
    }
}

#[tokio::test]
async fn a_builtin_job_runs_in_process_reports_progress_and_lists_itself() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let url = nats.url.clone();
    let client = async_nats::connect(&url).await.unwrap();
    let config = Config::default();
    let subjects = oxbase_proto::Subjects::default();
    let registry = HookRegistry::new(async_nats::jetstream::new(client.clone()), &subjects, 1);
    let shutdown = Shutdown::default();
    tokio::spawn(Arc::clone(&registry).run(shutdown.clone()));
    let service = JobsService::new(&config, client.clone(), Some(Arc::clone(&registry)))
        .unwrap()
        .builtin("sum", Arc::new(Sum));
    let queue = service.queue();
    let running = tokio::spawn(service.run(Readiness::new(), shutdown.clone()));

    let good = queue
        .submit(
            "default",
            JobSpec {
                name: "sum".into(),
                payload: json!({"numbers": [1, 2, 3.5]}),
                ..JobSpec::default()
            },
            None,
        )
        .await
        .unwrap();
    let bad = queue
        .submit(
            "default",
            JobSpec {
                name: "sum".into(),
                payload: json!({"numbers": "seven"}),
                max_attempts: Some(1),
                ..JobSpec::default()
            },
            None,
        )
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let (good, bad) = loop {
        let good = queue.get("default", &good.job.id).await.unwrap();
        let bad = queue.get("default", &bad.job.id).await.unwrap();
        if good.state.is_final() && bad.state.is_final() {
            break (good, bad);
        }
        assert!(Instant::now() < deadline, "{good:?} {bad:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(good.state, JobState::Succeeded);
    assert_eq!(good.result, Some(json!(6.5)));
    assert_eq!(good.progress, Some(100.0));
    assert_eq!(good.message.as_deref(), Some("3 of 3"));
    assert_eq!(bad.state, JobState::Dead);
    assert_eq!(bad.errors[0].error, "payload.numbers must be an array");
    let listed = registry.job("sum").expect("the built-in job is listed");
    assert!(listed.nats && listed.url.is_none());

    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the service stops on shutdown")
        .unwrap()
        .unwrap();
}
