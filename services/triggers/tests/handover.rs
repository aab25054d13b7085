//! Deliverers against a real nats-server (on PATH; `bash ops/test.sh`
//! installs one): a deliverer that stops hands its partition over at once.
//! The delivery that becomes due as it finishes its last one goes to the
//! other process's deliverer now, not after the ack wait.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use futures_util::StreamExt;
use oxbase_hooks::HookRegistry;
use oxbase_kit::Shutdown;
use oxbase_proto::{Event, EventKind, HookEntry, ObjectEvent, RequestContext, TriggerName};
use oxbase_test_support::NatsServer;
use oxbase_triggers::{Deliverer, DeliveryWorker, Metrics, Outcome, Settings, WebhookClient};
use serde_json::json;
use tokio::sync::{mpsc, oneshot};

/// Publishes the afterSave delivery of Item/`id`.
async fn publish_delivery(js: &jetstream::Context, settings: &Settings, id: &str) {
    let object = json!({"objectId": id}).as_object().cloned().unwrap();
    let event = Event::new(
        "oxbase://app",
        EventKind::Created,
        ObjectEvent {
            class_name: "Item".into(),
            object,
            original: None,
            context: RequestContext::default(),
        },
    );
    js.publish(
        settings.subjects.delivery(0),
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// A worker of partition 0 on a connection of its own, as another process
/// would have.
async fn worker(url: &str, settings: &Arc<Settings>) -> DeliveryWorker {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    let registry = HookRegistry::new(js.clone(), &settings.subjects, 1);
    let deliverer = Deliverer::new(
        js,
        client,
        registry,
        WebhookClient::new(settings).unwrap(),
        Arc::clone(settings),
        Arc::new(Metrics::default()),
    );
    DeliveryWorker::new(Arc::new(deliverer), 0)
}

/// A NATS afterSave handler on Item: sends each objectId it is handed, with
/// a way to answer it, and answers once told to.
async fn handler(
    client: &async_nats::Client,
    settings: &Settings,
) -> mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)> {
    let mut requests = client
        .subscribe(settings.subjects.trigger(TriggerName::AfterSave, "Item"))
        .await
        .unwrap();
    client.flush().await.unwrap();
    let (calls, received) = mpsc::unbounded_channel();
    let client = client.clone();
    tokio::spawn(async move {
        while let Some(request) = requests.next().await {
            let body: serde_json::Value = serde_json::from_slice(&request.payload).unwrap();
            let id = body["object"]["objectId"].as_str().unwrap().to_owned();
            let (answer, answered) = oneshot::channel();
            let _ = calls.send((id, answer));
            let client = client.clone();
            tokio::spawn(async move {
                let _ = answered.await;
                if let Some(reply) = request.reply {
                    let _ = client
                        .publish(reply, br#"{"success": {}}"#.to_vec().into())
                        .await;
                }
            });
        }
    });
    received
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_deliverer_hands_its_partition_over_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let client = async_nats::connect(&nats.url).await.unwrap();
    let js = jetstream::new(client.clone());
    let settings = Arc::new(Settings {
        partitions: 1,
        ..Settings::default()
    });
    js.create_stream(oxbase_triggers::deliveries_stream(&settings))
        .await
        .unwrap();
    let registry = HookRegistry::new(js.clone(), &settings.subjects, 1);
    registry
        .create(HookEntry {
            function_name: None,
            class_name: Some("Item".into()),
            trigger_name: Some(TriggerName::AfterSave),
            job_name: None,
            url: None,
            nats: true,
            rate_limit: None,
        })
        .await
        .unwrap();
    let mut calls = handler(&client, &settings).await;
    let within = |what: &'static str| {
        move |got: Result<Option<(String, oneshot::Sender<()>)>, _>| {
            got.unwrap_or_else(|_| panic!("{what}")).unwrap()
        }
    };

    // The first process's worker takes o1, and holds it in its handler.
    let mut first = worker(&nats.url, &settings).await;
    let first_stop = Shutdown::new();
    publish_delivery(&js, &settings, "o1").await;
    let stop = first_stop.clone();
    let first_run = tokio::spawn(async move {
        let outcome = first.process_one(&stop).await.unwrap();
        (first, outcome)
    });
    let (id, answer) = within("o1 was never delivered")(
        tokio::time::timeout(Duration::from_secs(10), calls.recv()).await,
    );
    assert_eq!(id, "o1");

    // The second process's worker waits for the partition's next delivery,
    // due once o1 is acked.
    let second = worker(&nats.url, &settings).await;
    let second_stop = Shutdown::new();
    let second_run = tokio::spawn(second.run(second_stop.clone()));
    publish_delivery(&js, &settings, "o2").await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // The first process stops while o1's delivery is in flight: that one
    // finishes, and it takes nothing more.
    first_stop.trigger();
    answer.send(()).unwrap();
    let (mut first, outcome) = first_run.await.unwrap();
    assert_eq!(outcome, Outcome::Delivered { attempts: 1 });
    let next = tokio::time::timeout(Duration::from_secs(5), first.process_one(&first_stop))
        .await
        .expect("a stopped worker returns within its pull's expiry")
        .unwrap();
    assert_eq!(next, Outcome::Stopped, "a stopped worker takes no delivery");

    // o2 goes to the second worker well within the ack wait (at least 10 s).
    let (id, answer) = within("o2 waited for the stopped worker's ack wait")(
        tokio::time::timeout(Duration::from_secs(4), calls.recv()).await,
    );
    assert_eq!(id, "o2");
    answer.send(()).unwrap();
    second_stop.trigger();
    tokio::time::timeout(Duration::from_secs(5), second_run)
        .await
        .expect("the second worker stops")
        .unwrap();
}
