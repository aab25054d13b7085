//! The router against a real nats-server (on PATH; `bash ops/test.sh`
//! installs one): a router that dies holding events it had not acked, and
//! the router that takes over is handed newer events first. The deliveries
//! must still come out in the events' order.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer, stream};
use oxbase_hooks::HookRegistry;
use oxbase_kit::Shutdown;
use oxbase_proto::{Event, EventKind, HookEntry, ObjectEvent, RequestContext, TriggerName};
use oxbase_test_support::NatsServer;
use oxbase_triggers::{EventRouter, Metrics, ROUTER_CONSUMER, Routed, Settings};
use serde_json::json;

/// Publishes the update of Item/o1 that sets `n`.
async fn publish_event(js: &jetstream::Context, n: i64) {
    let object = json!({"objectId": "o1", "n": n})
        .as_object()
        .cloned()
        .unwrap();
    let event = Event::new(
        "oxbase://app",
        EventKind::Updated,
        ObjectEvent {
            class_name: "Item".into(),
            object,
            original: None,
            context: RequestContext::default(),
        },
    );
    js.publish(
        "oxbase.events.Item.updated",
        serde_json::to_vec(&event).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
}

/// A router on a connection of its own, with an afterSave hook on Item.
async fn router(url: &str) -> (EventRouter, async_nats::Client) {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client.clone());
    let settings = Settings {
        partitions: 1,
        ..Settings::default()
    };
    let registry = HookRegistry::new(js.clone(), &settings.subjects, 1);
    let entry = HookEntry {
        function_name: None,
        class_name: Some("Item".into()),
        trigger_name: Some(TriggerName::AfterSave),
        job_name: None,
        url: None,
        nats: true,
        rate_limit: None,
    };
    if registry.create(entry.clone()).await.is_err() {
        registry.update(entry).await.unwrap();
    }
    let router = EventRouter::new(
        js,
        registry,
        Arc::new(settings),
        Arc::new(Metrics::default()),
    );
    (router, client)
}

async fn pending(js: &jetstream::Context) -> usize {
    let stream = js.get_stream("OXBASE_EVENTS").await.unwrap();
    let consumer: consumer::PullConsumer = stream.get_consumer(ROUTER_CONSUMER).await.unwrap();
    consumer.get_info().await.unwrap().num_ack_pending
}

#[tokio::test]
async fn a_takeover_keeps_the_events_order() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let url = nats.url.clone();
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client);
    js.create_stream(stream::Config {
        name: "OXBASE_EVENTS".into(),
        subjects: vec!["oxbase.events.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let settings = Settings {
        partitions: 1,
        ..Settings::default()
    };
    js.create_stream(oxbase_triggers::deliveries_stream(&settings))
        .await
        .unwrap();
    let shutdown = Shutdown::new();

    // The first router routes 1..=5, is handed 6..=10, and dies before it
    // routes them.
    let (mut first, first_client) = router(&url).await;
    first.connect().await.unwrap();
    for n in 1..=5 {
        publish_event(&js, n).await;
    }
    let mut routed = 0;
    while routed < 5 {
        match first.process_one(&shutdown).await.unwrap() {
            Routed::Batch { routed: r, .. } => routed += r,
            Routed::Stopped => unreachable!(),
        }
    }
    for n in 6..=10 {
        publish_event(&js, n).await;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while pending(&js).await < 5 {
        assert!(
            Instant::now() < deadline,
            "the first router was never handed 6..=10"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first);
    first_client.drain().await.unwrap();

    // Newer events arrive before the held ones come back.
    for n in 11..=15 {
        publish_event(&js, n).await;
    }
    let (second, _second_client) = router(&url).await;
    let stop = shutdown.clone();
    let running = tokio::spawn(second.run(stop));

    let deliveries = js.get_stream("OXBASE_TRIGGERS").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let have = deliveries.get_info().await.unwrap().state.messages;
        if have == 15 {
            break;
        }
        assert!(Instant::now() < deadline, "{have} of 15 deliveries queued");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    shutdown.trigger();
    running.await.unwrap();

    let mut order = Vec::new();
    for sequence in 1..=15 {
        let message = deliveries.get_raw_message(sequence).await.unwrap();
        let event: Event = serde_json::from_slice(&message.payload).unwrap();
        order.push(event.data.object["n"].as_i64().unwrap());
    }
    assert_eq!(order, (1..=15).collect::<Vec<_>>());
}
