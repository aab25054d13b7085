//! Crash safety of the outbox: creates and updates run while `oxbase api`
//! is killed with SIGKILL at random moments and restarted, again and again.
//! Afterwards every write the client saw acknowledged is in the store with
//! its event in the stream, no event exists for a write that did not
//! commit, and no event id appears twice.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use serde_json::{Value, json};

use common::{Nats, Oxbase, all_events, free_port};

const KILLS: usize = 12;
const WRITERS: usize = 4;

/// What one writer saw acknowledged.
#[derive(Default)]
struct Acked {
    created: Vec<String>,
    /// (objectId, n) of each acknowledged update.
    updated: Vec<(String, i64)>,
}

/// Creates an object, then sets `n` to increasing values on the objects it
/// made, until a request fails (the process died under it). A write whose
/// request failed may or may not have committed, so it counts as neither.
async fn write_until_killed(server: &Oxbase, own: &mut Vec<(String, i64)>, acked: &Mutex<Acked>) {
    let mut step = 0usize;
    loop {
        step += 1;
        if own.is_empty() || step.is_multiple_of(4) {
            let Ok(created) = server
                .try_call(reqwest::Method::POST, "classes/Item", json!({"n": 0}))
                .await
            else {
                return;
            };
            let id = created["objectId"].as_str().unwrap().to_owned();
            acked.lock().unwrap().created.push(id.clone());
            own.push((id, 0));
        } else {
            let slot = step % own.len();
            let (id, n) = &mut own[slot];
            *n += 1;
            let path = format!("classes/Item/{id}");
            if server
                .try_call(reqwest::Method::PUT, &path, json!({"n": *n}))
                .await
                .is_err()
            {
                return;
            }
            acked.lock().unwrap().updated.push((id.clone(), *n));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_have_exactly_one_event_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let nats_dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), nats_dir.path());
    let acked = Arc::new(Mutex::new(Acked::default()));
    let mut own: Vec<Vec<(String, i64)>> = vec![Vec::new(); WRITERS];

    for round in 0..KILLS {
        let server = Arc::new(Oxbase::start(dir.path(), &nats.url(), &[]).await);
        let writers: Vec<_> = own
            .drain(..)
            .map(|mut mine| {
                let server = Arc::clone(&server);
                let acked = Arc::clone(&acked);
                tokio::spawn(async move {
                    write_until_killed(&server, &mut mine, &acked).await;
                    mine
                })
            })
            .collect();
        // Somewhere between 50 and 650 ms of writes, varied by round so
        // the kill lands at different points of the write and relay paths.
        let pause = 50 + (round * 7919 + 104_729) % 600;
        tokio::time::sleep(Duration::from_millis(pause as u64)).await;
        server.kill();
        for writer in writers {
            own.push(writer.await.unwrap());
        }
    }

    // One last start publishes whatever the dead processes left behind;
    // its reads may list every object at once.
    let server = Oxbase::start(
        dir.path(),
        &nats.url(),
        &[("OXBASE_LIMITS__MAX_LIMIT", "0")],
    )
    .await;
    server.wait_drained(Duration::from_secs(30)).await;
    let js = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    let events = all_events(&js).await;
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "{KILLS} kills: {} creates and {} updates acknowledged, {} events",
        acked.created.len(),
        acked.updated.len(),
        events.len()
    );
    assert!(
        acked.created.len() > 50 && acked.updated.len() > 100,
        "too few writes to mean anything: {} creates, {} updates",
        acked.created.len(),
        acked.updated.len()
    );

    // No event id twice, and every message id is its event's id.
    let mut ids = HashSet::new();
    for (event, msg_id) in &events {
        let id = event["id"].as_str().unwrap();
        assert_eq!(id, msg_id);
        assert!(
            ids.insert(id.to_owned()),
            "event {id} is in the stream twice"
        );
    }

    // The store as it is now.
    let stored = server
        .call(
            reqwest::Method::GET,
            "classes/Item?limit=100000",
            json!(null),
        )
        .await;
    let stored: HashMap<&str, &Value> = stored["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["objectId"].as_str().unwrap(), o))
        .collect();

    // Every acknowledged write is stored and has its event.
    let mut created_events = HashSet::new();
    let mut updated_events = HashSet::new();
    let mut last_event: HashMap<String, &Value> = HashMap::new();
    for (event, _) in &events {
        let object = &event["data"]["object"];
        let id = object["objectId"].as_str().unwrap().to_owned();
        match event["type"].as_str().unwrap() {
            "oxbase.object.created" => {
                created_events.insert(id.clone());
            }
            "oxbase.object.updated" => {
                updated_events.insert((id.clone(), object["n"].as_i64().unwrap()));
            }
            other => panic!("unexpected event {other}"),
        }
        if let Some(previous) = last_event.get(&id) {
            assert!(
                previous["n"].as_i64() < object["n"].as_i64(),
                "events of {id} out of order"
            );
        }
        last_event.insert(id, object);
    }
    for id in &acked.created {
        assert!(
            stored.contains_key(id.as_str()),
            "acknowledged create {id} is not stored"
        );
        assert!(
            created_events.contains(id),
            "acknowledged create {id} has no event"
        );
    }
    for (id, n) in &acked.updated {
        assert!(
            updated_events.contains(&(id.clone(), *n)),
            "acknowledged update {id} n={n} has no event"
        );
    }
    // No event for a write that did not commit: each object's last event
    // is its stored state, and no event names an object that is not stored.
    for (id, object) in &last_event {
        let row = stored
            .get(id.as_str())
            .unwrap_or_else(|| panic!("event for {id}, which was never stored"));
        assert_eq!(
            row["n"], object["n"],
            "{id}: the last event is not what is stored"
        );
        assert_eq!(row["updatedAt"], object["updatedAt"], "{id}");
    }
    assert_eq!(
        last_event.len(),
        stored.len(),
        "a stored object has no event"
    );
}
