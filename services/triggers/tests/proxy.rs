//! The webhook proxy against a real nats-server (on PATH; `bash
//! ops/test.sh` installs one): it calls the webhook the registry holds for
//! the hook a subject names, and nothing in a request, such as a URL header
//! from an older caller or a forger, sends it (and the webhook key)
//! anywhere else.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream;
use oxbase_hooks::HookRegistry;
use oxbase_kit::{Readiness, Secret, Shutdown};
use oxbase_proto::hooks::{HOOK_FAILURE, WEBHOOK_KEY};
use oxbase_proto::{HookEntry, TriggerName};
use oxbase_test_support::NatsServer;
use oxbase_triggers::{Metrics, Settings, WebhookClient, WebhookProxy};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// The header the proxy used to take its URL from.
const FORGED_URL_HEADER: &str = "Oxbase-Webhook-Url";

/// One request a listener received: its headers (names in lower case) and
/// body.
#[derive(Debug, Clone)]
struct Hit {
    headers: HashMap<String, String>,
    body: serde_json::Value,
}

/// An HTTP listener that records every request and answers each with
/// `{"success": <name>}`.
struct Listener {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

impl Listener {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&hits);
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                tokio::spawn(answer(socket, name, Arc::clone(&recorded)));
            }
        });
        Self { url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }
}

/// Reads one request, records it and answers with `Connection: close`.
async fn answer(socket: tokio::net::TcpStream, name: &str, hits: Arc<Mutex<Vec<Hit>>>) {
    let (read, mut write) = socket.into_split();
    let mut reader = BufReader::new(read);
    let mut line = String::new();
    if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
        return;
    }
    let mut headers = HashMap::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
            return;
        }
        let Some((name, value)) = line.trim_end().split_once(':') else {
            break;
        };
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_owned());
    }
    let length = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; length];
    if reader.read_exact(&mut body).await.is_err() {
        return;
    }
    hits.lock().unwrap().push(Hit {
        headers,
        body: serde_json::from_slice(&body).unwrap_or_default(),
    });
    let reply = serde_json::json!({ "success": name }).to_string();
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{reply}",
        reply.len()
    );
    let _ = write.write_all(response.as_bytes()).await;
}

fn function(name: &str, url: Option<&str>) -> HookEntry {
    HookEntry {
        function_name: Some(name.into()),
        class_name: None,
        trigger_name: None,
        job_name: None,
        url: url.map(str::to_owned),
        nats: url.is_none(),
        rate_limit: None,
    }
}

fn trigger(class_name: &str, trigger: TriggerName, url: &str) -> HookEntry {
    HookEntry {
        function_name: None,
        class_name: Some(class_name.into()),
        trigger_name: Some(trigger),
        job_name: None,
        url: Some(url.into()),
        nats: false,
        rate_limit: None,
    }
}

/// A proxy with its own registry on its own connection, as a triggers
/// process has, keeping the registry loaded until `shutdown`.
async fn start_proxy(url: &str, shutdown: &Shutdown) -> Readiness {
    let client = async_nats::connect(url).await.unwrap();
    let settings = Settings {
        webhook_key: Some(Secret::new("the-webhook-key")),
        timeout: Duration::from_secs(5),
        ..Settings::default()
    };
    let registry = HookRegistry::new(jetstream::new(client.clone()), &settings.subjects, 1);
    tokio::spawn(Arc::clone(&registry).run(shutdown.clone()));
    let proxy = WebhookProxy::new(
        client,
        registry,
        WebhookClient::new(&settings).unwrap(),
        Arc::new(settings),
        Arc::new(Metrics::default()),
    );
    let readiness = Readiness::new();
    tokio::spawn(proxy.run(readiness.clone(), shutdown.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !readiness.is_ready() {
        assert!(Instant::now() < deadline, "the proxy never subscribed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    readiness
}

/// What the proxy answered a request on `subject` that carries a forged
/// URL: the webhook's body, or the failure it reported.
async fn ask(
    client: &async_nats::Client,
    subject: &str,
    forged_url: &str,
) -> Result<String, String> {
    let mut headers = HeaderMap::new();
    headers.insert(FORGED_URL_HEADER, forged_url);
    let reply = client
        .request_with_headers(subject.to_owned(), headers, "{}".into())
        .await
        .unwrap();
    match reply.headers.as_ref().and_then(|h| h.get(HOOK_FAILURE)) {
        Some(failure) => Err(failure.as_str().to_owned()),
        None => Ok(String::from_utf8(reply.payload.to_vec()).unwrap()),
    }
}

#[tokio::test]
async fn the_proxy_calls_only_registered_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let nats = NatsServer::start(dir.path());
    let url = nats.url.clone();
    let shutdown = Shutdown::new();
    let _ready = start_proxy(&url, &shutdown).await;
    let registered = Listener::start("registered").await;
    let attacker = Listener::start("attacker").await;

    // Another process registers the hooks, so the proxy learns of them
    // through the bucket, however soon it is asked.
    let api = async_nats::connect(&url).await.unwrap();
    let api_registry = HookRegistry::new(
        jetstream::new(api.clone()),
        &Settings::default().subjects,
        1,
    );
    for entry in [
        function("hello", Some(&registered.url)),
        function("onNats", None),
        trigger("Item", TriggerName::BeforeSave, &registered.url),
    ] {
        api_registry.create(entry).await.unwrap();
    }

    let hello = ask(&api, "oxbase.webhooks.functions.hello", &attacker.url).await;
    assert_eq!(hello, Ok(r#"{"success":"registered"}"#.to_owned()));
    let before_save = ask(
        &api,
        "oxbase.webhooks.triggers.beforeSave.Item",
        &attacker.url,
    )
    .await;
    assert_eq!(before_save, Ok(r#"{"success":"registered"}"#.to_owned()));
    let hits = registered.hits();
    assert_eq!(hits.len(), 2, "{hits:?}");
    for hit in &hits {
        assert_eq!(
            hit.headers.get(&WEBHOOK_KEY.to_ascii_lowercase()),
            Some(&"the-webhook-key".to_owned())
        );
        assert_eq!(hit.body, serde_json::json!({}));
    }

    // Hooks without a webhook: none registered, one served over NATS, and
    // one registered on another class.
    for (subject, target) in [
        (
            "oxbase.webhooks.functions.unknown",
            r#"the function "unknown""#,
        ),
        (
            "oxbase.webhooks.functions.onNats",
            r#"the function "onNats""#,
        ),
        (
            "oxbase.webhooks.triggers.beforeSave.Other",
            "beforeSave on Other",
        ),
        (
            "oxbase.webhooks.triggers.afterSave.Item",
            "afterSave on Item",
        ),
    ] {
        assert_eq!(
            ask(&api, subject, &attacker.url).await,
            Err(format!("no webhook registered for {target}")),
            "{subject}"
        );
    }
    assert_eq!(
        ask(&api, "oxbase.webhooks.functions.a.b", &attacker.url).await,
        Err(r#"no webhook registered for the subject "oxbase.webhooks.functions.a.b""#.to_owned())
    );

    // A webhook deleted from the registry is no longer called.
    api_registry.delete("function.hello").await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let answer = ask(&api, "oxbase.webhooks.functions.hello", &attacker.url).await;
        if answer.is_err() {
            assert_eq!(
                answer,
                Err(r#"no webhook registered for the function "hello""#.to_owned())
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the deleted webhook is still called"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert!(attacker.hits().is_empty(), "{:?}", attacker.hits());
    shutdown.trigger();
}
