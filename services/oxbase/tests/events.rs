//! The event backbone end to end: `oxbase api` on the embedded store and a
//! real nats-server (from PATH; `bash ops/test.sh` installs one). Writes
//! made over HTTP arrive on JetStream as CloudEvents, in order, and writes
//! made while NATS is down wait in the outbox and arrive once it is back.

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use serde_json::{Value, json};

use common::{Nats, Oxbase, all_events, event_with_id, free_port};

/// The next `n` events from a durable consumer on the events stream.
///
/// Fetches until `n` have arrived, because one fetch may end early while the
/// server is still recovering from a restart. Acks are confirmed by the
/// server (`double_ack`) so that killing nats-server right after a call
/// cannot bring an acknowledged event back.
async fn next_events(js: &jetstream::Context, n: usize) -> Vec<(Value, String)> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out: Vec<(Value, String)> = Vec::new();
    while out.len() < n {
        assert!(
            Instant::now() < deadline,
            "expected {n} events, got {out:?}"
        );
        let Ok(stream) = js.get_stream("OXBASE_EVENTS").await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let consumer: consumer::PullConsumer = stream
            .get_or_create_consumer(
                "test",
                consumer::pull::Config {
                    durable_name: Some("test".into()),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let Ok(mut messages) = consumer
            .fetch()
            .max_messages(n - out.len())
            .expires(Duration::from_secs(2))
            .messages()
            .await
        else {
            continue;
        };
        while let Some(Ok(message)) = messages.next().await {
            message.double_ack().await.unwrap();
            out.push(event_with_id(&message));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_arrive_as_events_even_across_a_nats_outage() {
    let dir = tempfile::tempdir().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats_port = free_port();
    let nats = Nats::start(nats_port, nats_dir.path());
    let server = Oxbase::start(dir.path(), &nats.url(), &[]).await;
    let js = jetstream::new(
        async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
            .await
            .unwrap(),
    );

    let created: Value = server
        .request(reqwest::Method::POST, "classes/Item")
        .header("X-Parse-Request-Id", "req-1")
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["objectId"].as_str().unwrap().to_owned();
    let path = format!("classes/Item/{id}");
    server
        .call(
            reqwest::Method::PUT,
            &path,
            json!({"n": {"__op": "Increment", "amount": 1}}),
        )
        .await;
    server.call(reqwest::Method::DELETE, &path, json!({})).await;

    let events = next_events(&js, 3).await;
    let kinds: Vec<&str> = events
        .iter()
        .map(|(e, _)| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "oxbase.object.created",
            "oxbase.object.updated",
            "oxbase.object.deleted"
        ]
    );
    for (event, msg_id) in &events {
        assert_eq!(
            event["id"].as_str(),
            Some(msg_id.as_str()),
            "Nats-Msg-Id is the event id"
        );
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["source"], "oxbase://app");
        assert_eq!(event["subject"], format!("Item/{id}"));
        assert_eq!(event["data"]["className"], "Item");
        assert_eq!(event["data"]["context"]["master"], false);
    }
    assert_eq!(events[0].0["data"]["object"]["n"], 1);
    assert_eq!(events[0].0["data"]["context"]["requestId"], "req-1");
    assert!(events[1].0["data"]["context"].get("requestId").is_none());
    assert!(events[0].0["data"].get("original").is_none());
    assert_eq!(events[1].0["data"]["original"]["n"], 1);
    assert_eq!(events[1].0["data"]["object"]["n"], 2);
    assert_eq!(events[2].0["data"]["original"]["n"], 2);

    // NATS stops: writes still succeed, and their events wait.
    nats.stop();
    let second = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 0}))
        .await;
    let path = format!("classes/Item/{}", second["objectId"].as_str().unwrap());
    for _ in 0..5 {
        server
            .call(
                reqwest::Method::PUT,
                &path,
                json!({"n": {"__op": "Increment", "amount": 1}}),
            )
            .await;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.backlog().await < 6 {
        assert!(
            Instant::now() < deadline,
            "the backlog metric never showed the waiting events"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // NATS returns: the backlog drains, in order per object.
    let nats = Nats::start(nats_port, nats_dir.path());
    let js = jetstream::new(
        async_nats::connect(format!("nats://127.0.0.1:{nats_port}"))
            .await
            .unwrap(),
    );
    let events = next_events(&js, 6).await;
    let counts: Vec<i64> = events
        .iter()
        .map(|(e, _)| e["data"]["object"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(counts, [0, 1, 2, 3, 4, 5]);
    server.wait_drained(Duration::from_secs(5)).await;
    // The stream itself holds each of the nine events once.
    let stored = all_events(&js).await;
    let ids: std::collections::HashSet<&str> = stored
        .iter()
        .map(|(e, _)| e["id"].as_str().unwrap())
        .collect();
    assert_eq!((stored.len(), ids.len()), (9, 9));
    drop(nats);
}

/// A write whose event the stream can never take is refused with Parse's
/// 116 when oxbase knows the limit; when the servers' limit is lower than
/// oxbase was told, the event is moved aside, counted and reported, and
/// the events after it still flow.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_the_stream_cannot_take_is_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats_conf = nats_dir.path().join("small.conf");
    std::fs::write(&nats_conf, "max_payload: 65536\n").unwrap();
    let nats_port = free_port();
    let nats = Nats::spawn(
        nats_port,
        &nats_dir.path().join("js"),
        &["-c", nats_conf.to_str().unwrap()],
    );
    let server = Oxbase::start(dir.path(), &nats.url(), &[]).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    // Over the configured limit (1 MiB): refused before anything is written.
    let huge = server
        .request(reqwest::Method::POST, "classes/Item")
        .json(&json!({"blob": "x".repeat(1100 * 1024)}))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), 400);
    let body: Value = huge.json().await.unwrap();
    assert_eq!(body["code"], 116, "{body}");

    // Under it, but over this server's 64 KiB: written, then moved aside.
    server
        .call(
            reqwest::Method::POST,
            "classes/Item",
            json!({"blob": "x".repeat(100 * 1024)}),
        )
        .await;
    let small = server
        .call(reqwest::Method::POST, "classes/Item", json!({"n": 1}))
        .await;
    server.wait_drained(Duration::from_secs(20)).await;
    let events = next_events(&js, 1).await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0["data"]["object"]["objectId"], small["objectId"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.metric("oxbase_outbox_dead_letters").await != 1 {
        assert!(Instant::now() < deadline, "the dead letter was not counted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The warning follows the count the relay reads each second.
    loop {
        let ready = server
            .client
            .get(format!("{}/ready", server.base))
            .send()
            .await
            .unwrap();
        assert_eq!(ready.status(), 200, "one bad event does not fail /ready");
        let ready: Value = ready.json().await.unwrap();
        if ready["warnings"]["outbox"]
            .as_str()
            .is_some_and(|w| w.contains("_oxbase_outbox_dead"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "/ready shows no warning: {ready}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Session tokens never reach the stream (nor, so, trigger deliveries or
/// dead letters), and neither do the fields `events.redact` names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_carry_no_session_tokens_nor_redacted_fields() {
    let dir = tempfile::tempdir().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), nats_dir.path());
    let server = Oxbase::start(
        dir.path(),
        &nats.url(),
        &[("OXBASE_EVENTS__REDACT", r#"["Item.secret", "pin"]"#)],
    )
    .await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());

    let user = server
        .call(
            reqwest::Method::POST,
            "users",
            json!({"username": "ann", "password": "pw", "pin": 1234}),
        )
        .await;
    let token = user["sessionToken"].as_str().unwrap().to_owned();
    server
        .call(
            reqwest::Method::POST,
            "classes/Item",
            json!({"secret": "s3cret", "kept": 1}),
        )
        .await;
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let events = all_events(&js).await;
        if events.len() >= 3 {
            break events;
        }
        assert!(Instant::now() < deadline, "only {events:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let classes: Vec<&str> = events
        .iter()
        .map(|(e, _)| e["data"]["className"].as_str().unwrap())
        .collect();
    assert_eq!(classes, ["_User", "_Session", "Item"]);
    for (event, _) in &events {
        let text = event.to_string();
        assert!(!text.contains(&token), "a session token in {text}");
        assert!(!text.contains("s3cret") && !text.contains("1234"), "{text}");
    }
    assert_eq!(
        events[1].0["data"]["object"]["user"]["objectId"],
        user["objectId"]
    );
    assert_eq!(events[2].0["data"]["object"]["kept"], 1);
}
