//! OpenTelemetry traces end to end: `oxbase all` exporting over OTLP/HTTP
//! to a stand-in collector in this process, against a real nats-server.
//! One trace runs from a client's request through the outbox, the event,
//! the afterSave delivery to a webhook, and the job that webhook starts
//! through the API, to the job's run on its webhook handler.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use serde_json::{Value, json};

use common::{Nats, Oxbase, ServiceProcess, free_port};

/// One span as the collector received it; ids in lower-case hex.
#[derive(Debug, Clone)]
struct Received {
    service: String,
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    attributes: HashMap<String, String>,
}

#[derive(Default)]
struct Collected {
    spans: Vec<Received>,
    /// Posts whose body was not an OTLP protobuf export.
    malformed: usize,
}

/// A stand-in OTLP/HTTP collector: `POST /v1/traces` with protobuf.
struct Collector {
    url: String,
    collected: Arc<Mutex<Collected>>,
}

impl Collector {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let collected = Arc::new(Mutex::new(Collected::default()));
        let app = axum::Router::new()
            .route("/v1/traces", post(collect))
            .with_state(Arc::clone(&collected));
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, collected }
    }

    fn spans(&self) -> Vec<Received> {
        self.collected.lock().unwrap().spans.clone()
    }
}

async fn collect(
    State(collected): State<Arc<Mutex<Collected>>>,
    headers: HeaderMap,
    body: Bytes,
) -> axum::response::Response {
    let protobuf = headers
        .get("content-type")
        .is_some_and(|v| v == "application/x-protobuf");
    let mut collected = collected.lock().unwrap();
    let request = match ExportTraceServiceRequest::decode(body) {
        Ok(request) if protobuf => request,
        _ => {
            collected.malformed += 1;
            return StatusCode::BAD_REQUEST.into_response();
        }
    };
    for resource in request.resource_spans {
        let service = resource
            .resource
            .map(|r| attributes(&r.attributes))
            .and_then(|mut a| a.remove("service.name"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                collected.spans.push(Received {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                    attributes: attributes(&span.attributes),
                });
            }
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    ([("content-type", "application/x-protobuf")], answer).into_response()
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// One request a hook webhook received.
#[derive(Debug, Clone)]
struct Hit {
    path: String,
    traceparent: Option<String>,
}

/// The webhooks of the afterSave trigger (`/after`) and the job (`/job`).
/// The trigger's starts the job through the API, passing its trace on as
/// an instrumented handler would.
struct Webhooks {
    url: String,
    hits: Arc<Mutex<Vec<Hit>>>,
}

#[derive(Clone)]
struct WebhookState {
    hits: Arc<Mutex<Vec<Hit>>>,
    api: String,
}

impl Webhooks {
    async fn start(api: &str) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let hits = Arc::new(Mutex::new(Vec::new()));
        let state = WebhookState {
            hits: Arc::clone(&hits),
            api: api.to_owned(),
        };
        let app = axum::Router::new()
            .route("/after", post(after_save))
            .route("/job", post(job))
            .with_state(state);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, hits }
    }

    fn hits(&self) -> Vec<Hit> {
        self.hits.lock().unwrap().clone()
    }

    fn hit(&self, path: &str) -> Option<Hit> {
        self.hits().into_iter().find(|hit| hit.path == path)
    }
}

fn record(state: &WebhookState, path: &str, headers: &HeaderMap) -> Option<String> {
    let traceparent = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.hits.lock().unwrap().push(Hit {
        path: path.to_owned(),
        traceparent: traceparent.clone(),
    });
    traceparent
}

async fn after_save(State(state): State<WebhookState>, headers: HeaderMap) -> impl IntoResponse {
    let traceparent = record(&state, "/after", &headers);
    let api = state.api.clone();
    tokio::spawn(async move {
        let mut request = reqwest::Client::new()
            .post(format!("{api}/parse/jobs/report"))
            .header("X-Parse-Application-Id", "app")
            .header("X-Parse-Master-Key", "mk")
            .json(&json!({"month": "May"}));
        if let Some(traceparent) = traceparent {
            request = request.header("traceparent", traceparent);
        }
        let response = request.send().await.unwrap();
        assert!(response.status().is_success(), "{response:?}");
    });
    axum::Json(json!({"success": true}))
}

async fn job(State(state): State<WebhookState>, headers: HeaderMap) -> impl IntoResponse {
    record(&state, "/job", &headers);
    axum::Json(json!({"success": "done"}))
}

/// `(trace id, parent span id)` of a `traceparent`.
fn parse_traceparent(text: &str) -> (String, String) {
    let parts: Vec<&str> = text.split('-').collect();
    assert_eq!(parts.len(), 4, "{text}");
    assert_eq!(parts[0], "00", "{text}");
    (parts[1].to_owned(), parts[2].to_owned())
}

/// The one span named `name` whose attribute `key` is `value`.
fn span<'a>(spans: &'a [Received], name: &str, key: &str, value: &str) -> &'a Received {
    let found: Vec<&Received> = spans
        .iter()
        .filter(|s| s.name == name && s.attributes.get(key).is_some_and(|v| v == value))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{name} with {key} = {value}: {found:#?}\nall spans: {spans:#?}"
    );
    found[0]
}

fn assert_child(child: &Received, parent: &Received) {
    assert_eq!(
        (&child.trace_id, &child.parent_span_id),
        (&parent.trace_id, &parent.span_id),
        "{} is not a child of {}: {child:#?} {parent:#?}",
        child.name,
        parent.name
    );
}

async fn master(
    client: &reqwest::Client,
    base: &str,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> Value {
    let mut request = client
        .request(method, format!("{base}/parse/{path}"))
        .header("X-Parse-Application-Id", "app")
        .header("X-Parse-Master-Key", "mk");
    if !body.is_null() {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    assert!(status.is_success(), "{path}: {status}: {body}");
    body
}

/// The latest message on `subject` of the events stream, once there is one.
async fn event_message(
    nats_url: &str,
    subject: &str,
) -> async_nats::jetstream::message::StreamMessage {
    let client = async_nats::connect(nats_url).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("OXBASE_EVENTS")
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => return message,
            Err(err) => assert!(Instant::now() < deadline, "no event on {subject}: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// Two threads: the collector answers the last export while the test
// waits for the process to exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_runs_from_a_request_through_the_event_its_trigger_and_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let collector = Collector::start().await;
    let data = dir.path().join("data").display().to_string();
    // Exported only when the process ends: what arrives was flushed by
    // its shutdown.
    let env = [
        ("OXBASE_DATA_DIR", data.as_str()),
        ("OXBASE_APP_ID", "app"),
        ("OXBASE_MASTER_KEY", "mk"),
        ("OXBASE_ALLOW_CLIENT_CLASS_CREATION", "true"),
        ("OXBASE_OTEL_ENDPOINT", collector.url.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "600000"),
    ];
    let server = ServiceProcess::start("all", &nats.url(), &env).await;
    let base = server.base.clone();
    let webhooks = Webhooks::start(&base).await;
    let http = reqwest::Client::new();
    let post = reqwest::Method::POST;
    let after = format!("{}/after", webhooks.url);
    let hook = json!({"className": "Item", "triggerName": "afterSave", "url": after});
    master(&http, &base, post.clone(), "hooks/triggers", hook).await;
    let job_hook = json!({"jobName": "report", "url": format!("{}/job", webhooks.url)});
    master(&http, &base, post.clone(), "hooks/jobs", job_hook).await;

    // The client's own span, which the request continues.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736".to_owned();
    let client_span = "00f067aa0ba902b7";
    let response = http
        .post(format!("{base}/parse/classes/Item"))
        .header("X-Parse-Application-Id", "app")
        .header("traceparent", format!("00-{trace_id}-{client_span}-01"))
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let statuses = master(
            &http,
            &base,
            reqwest::Method::GET,
            "classes/_JobStatus",
            Value::Null,
        )
        .await;
        if statuses["results"][0]["status"] == "succeeded" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the job never succeeded: {statuses}; webhooks saw {:?}",
            webhooks.hits()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let event = event_message(&nats.url(), "oxbase.events.Item.created").await;
    let stopped = tokio::task::block_in_place(|| server.terminate());
    assert!(stopped.success());

    let spans = collector.spans();
    assert_eq!(collector.collected.lock().unwrap().malformed, 0);
    assert!(
        spans.iter().all(|s| s.service == "oxbase-all"),
        "{spans:#?}"
    );
    let request = span(&spans, "http.request", "url.path", "/parse/classes/Item");
    assert_eq!(request.trace_id, trace_id);
    assert_eq!(request.parent_span_id, client_span);
    assert_eq!(request.attributes["http.request.method"], "POST");
    assert_eq!(request.attributes["http.response.status_code"], "201");
    let published = span(
        &spans,
        "outbox.publish",
        "messaging.destination.name",
        "oxbase.events.Item.created",
    );
    assert_child(published, request);
    let routed = span(
        &spans,
        "trigger.route",
        "messaging.source.name",
        "oxbase.events.Item.created",
    );
    assert_child(routed, published);
    let delivered = span(&spans, "trigger.deliver", "oxbase.class", "Item");
    assert_child(delivered, routed);
    assert_eq!(delivered.attributes["oxbase.attempts"], "1");
    let started = span(&spans, "http.request", "url.path", "/parse/jobs/report");
    assert_child(started, delivered);
    let run = span(&spans, "job.run", "oxbase.job.name", "report");
    assert_child(run, started);

    // The event carries the write's span in its body and the publish's in
    // its header.
    let body: Value = serde_json::from_slice(&event.payload).unwrap();
    let extension = parse_traceparent(body["traceparent"].as_str().unwrap());
    assert_eq!(extension, (trace_id.clone(), request.span_id.clone()));
    let header = event.headers.get("traceparent").unwrap().as_str();
    assert_eq!(
        parse_traceparent(header),
        (trace_id.clone(), published.span_id.clone())
    );

    // Each webhook was called with the span that called it.
    let after_hit = webhooks.hit("/after").unwrap();
    let job_hit = webhooks.hit("/job").unwrap();
    assert_eq!(
        parse_traceparent(after_hit.traceparent.as_deref().unwrap()),
        (trace_id.clone(), delivered.span_id.clone())
    );
    assert_eq!(
        parse_traceparent(job_hit.traceparent.as_deref().unwrap()),
        (trace_id, run.span_id.clone())
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_traced_or_carried() {
    let dir = tempfile::tempdir().unwrap();
    let nats = Nats::start(free_port(), &dir.path().join("nats"));
    let server = Oxbase::start(&dir.path().join("data"), &nats.url(), &[]).await;
    let response = server
        .request(reqwest::Method::POST, "classes/Item")
        .header(
            "traceparent",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        )
        .json(&json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let event = event_message(&nats.url(), "oxbase.events.Item.created").await;
    let body: Value = serde_json::from_slice(&event.payload).unwrap();
    assert!(body.get("traceparent").is_none(), "{body}");
    assert!(event.headers.get("traceparent").is_none());
    assert_eq!(body["data"]["object"]["n"], 1);
}
