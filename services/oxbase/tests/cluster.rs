//! The event backbone on a 3-node NATS cluster with the events stream at 3
//! replicas: killing the stream's leader while writing loses nothing, and
//! no write fails because of it.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use async_nats::jetstream;
use serde_json::json;

use common::{Nats, Oxbase, all_events, free_port};

const WRITES: usize = 300;

async fn connect(ports: &[u16]) -> jetstream::Context {
    let servers: Vec<async_nats::ServerAddr> = ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{p}").parse().unwrap())
        .collect();
    jetstream::new(async_nats::connect(servers).await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_nats_node_loses_no_event() {
    let dir = tempfile::tempdir().unwrap();
    let client_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let cluster_ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let stores: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut nodes: Vec<Option<Nats>> = (0..3)
        .map(|i| {
            Some(Nats::start_node(
                client_ports[i],
                stores[i].path(),
                &format!("n{i}"),
                cluster_ports[i],
                &cluster_ports,
            ))
        })
        .collect();
    let urls = |ports: &[u16]| {
        ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    };
    let server = Oxbase::start(
        dir.path(),
        &urls(&client_ports),
        &[
            ("OXBASE_EVENTS__STREAM__REPLICAS", "3"),
            ("OXBASE_TRIGGERS__REPLICAS", "3"),
        ],
    )
    .await;
    let js = connect(&client_ports).await;
    let mut stream = js.get_stream("OXBASE_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap();
    assert_eq!(info.config.num_replicas, 3);
    let leader = info
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("the stream has a leader");

    let mut created = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        if i == WRITES / 3 {
            // The stream's leader goes away mid-run.
            let index: usize = leader.trim_start_matches('n').parse().unwrap();
            nodes[index].take();
        }
        let object = server
            .try_call(reqwest::Method::POST, "classes/Item", json!({"i": i}))
            .await
            .unwrap_or_else(|e| panic!("write {i} failed while a NATS node was down: {e}"));
        created.push(object["objectId"].as_str().unwrap().to_owned());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    server.wait_drained(Duration::from_secs(60)).await;
    let survivors: Vec<u16> = nodes
        .iter()
        .zip(&client_ports)
        .filter(|(node, _)| node.is_some())
        .map(|(_, port)| *port)
        .collect();
    let js = connect(&survivors).await;
    let events = all_events(&js).await;
    let ids: HashSet<&str> = events
        .iter()
        .map(|(e, _)| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), events.len(), "an event id appears twice");
    let objects: Vec<&str> = events
        .iter()
        .map(|(e, _)| e["data"]["object"]["objectId"].as_str().unwrap())
        .collect();
    assert_eq!(objects, created, "every write's event, in order, once");
}
