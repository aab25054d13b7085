//! Tracing setup: readable lines on a terminal, JSON lines for log shippers,
//! the most recent lines kept in memory for Parse's `/scriptlog`, and,
//! when an OTLP endpoint is configured, oxbase's spans exported as
//! OpenTelemetry traces (see [`crate::trace_context`] for how a trace
//! crosses NATS and the outbox).

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{Bytes, HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, fmt};

use crate::config::{Config, LogFormat};

/// Installs the global subscriber, with log lines only. `RUST_LOG`, when
/// set, overrides `filter`. Calling it twice is harmless (tests start many
/// services in one process).
pub fn init(format: LogFormat, filter: &str) {
    install(format, filter, None);
}

/// Installs the global subscriber a process of `command` (`api`,
/// `triggers`...) runs with: [`init`]'s log lines, and its spans exported
/// to `otel_endpoint` when one is set. Call it inside the Tokio runtime,
/// which carries the exports; [`shutdown`] sends what is left.
pub fn init_for(config: &Config, command: &str) {
    let endpoint = config.otel_endpoint.as_deref().filter(|e| !e.is_empty());
    let traces = endpoint.and_then(|endpoint| {
        tracer_provider(config, command, endpoint)
            .inspect_err(|err| eprintln!("warning: traces are not exported: {err}"))
            .ok()
    });
    install(config.log_format, &config.log_level, traces);
}

/// Sends the spans not yet exported and stops the exporter. A process that
/// exports traces calls it once, as it ends.
pub async fn shutdown() {
    let provider = exporting().lock().unwrap_or_else(|e| e.into_inner()).take();
    let Some(provider) = provider else {
        return;
    };
    // It blocks until the last batch is sent, and that send runs on this
    // runtime: off its workers, or a runtime with one would wait forever.
    let stopped = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    if let Ok(Err(err)) = stopped {
        eprintln!("warning: the last traces may be lost: {err}");
    }
}

fn exporting() -> &'static Mutex<Option<SdkTracerProvider>> {
    static PROVIDER: OnceLock<Mutex<Option<SdkTracerProvider>>> = OnceLock::new();
    PROVIDER.get_or_init(|| Mutex::new(None))
}

fn install(format: LogFormat, filter: &str, traces: Option<SdkTracerProvider>) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let lines = match format {
        LogFormat::Text => fmt::layer().boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed(),
    };
    // Each layer has its own filter: the log level does not decide which
    // spans are exported, and other crates' spans (and the exporter's own
    // logs) are never exported.
    let logs = lines.and_then(RecentLogsLayer).with_filter(filter);
    let spans = traces.as_ref().map(|provider| {
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("oxbase"))
            .with_filter(Targets::new().with_target("oxbase", Level::INFO))
    });
    let installed = tracing_subscriber::registry()
        .with(logs)
        .with(spans)
        .try_init()
        .is_ok();
    if let (true, Some(provider)) = (installed, traces) {
        *exporting().lock().unwrap_or_else(|e| e.into_inner()) = Some(provider);
        crate::trace_context::enable();
    }
}

/// The exporting provider: batches of spans sent as OTLP protobuf to
/// `<endpoint>/v1/traces`.
fn tracer_provider(
    config: &Config,
    command: &str,
    endpoint: &str,
) -> Result<SdkTracerProvider, String> {
    let runtime = tokio::runtime::Handle::try_current()
        .map_err(|_| "no Tokio runtime to send them on".to_owned())?;
    let http = reqwest::Client::builder()
        .timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| format!("cannot build the HTTP client: {err}"))?;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_http_client(OtlpHttp { http, runtime })
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(traces_url(endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(|err| format!("otel_endpoint {endpoint:?}: {err}"))?;
    let service = config
        .otel_service_name
        .clone()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| default_service_name(command));
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        // A trace continued from a caller keeps the caller's decision.
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            config.otel_sample_ratio,
        ))))
        .with_resource(Resource::builder().with_service_name(service).build())
        .build())
}

/// How long one export may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

/// `oxbase-<command>`, or `oxbase` without one.
fn default_service_name(command: &str) -> String {
    if command.is_empty() {
        "oxbase".to_owned()
    } else {
        format!("oxbase-{command}")
    }
}

/// The traces URL under an OTLP/HTTP base URL, as the OpenTelemetry SDKs
/// read `OTEL_EXPORTER_OTLP_ENDPOINT`.
fn traces_url(endpoint: &str) -> String {
    format!("{}/v1/traces", endpoint.trim_end_matches('/'))
}

/// The exporter's HTTP client: the tree's reqwest, its requests run on
/// the process's runtime because the batch processor exports from a
/// thread of its own, outside any runtime.
#[derive(Debug)]
struct OtlpHttp {
    http: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

#[async_trait::async_trait]
impl HttpClient for OtlpHttp {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        let (status, headers, body) = self
            .runtime
            .spawn(async move {
                let response = http.execute(request).await?;
                let status = response.status();
                let headers = response.headers().clone();
                let body = response.bytes().await?;
                Ok::<_, reqwest::Error>((status, headers, body))
            })
            .await??;
        let mut response = Response::builder().status(status).body(body)?;
        *response.headers_mut() = headers;
        Ok(response)
    }
}

/// How many lines `/scriptlog` can look back over. Parse Server reads its
/// log files; a process here keeps its last lines instead, so a restart
/// forgets them.
const RECENT_LOG_LINES: usize = 1000;

/// One logged line, as `/scriptlog` answers it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogLine {
    pub level: Level,
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: i64,
}

/// The process's most recent info, warn and error lines, oldest first.
#[derive(Debug, Default)]
pub struct RecentLogs {
    lines: Mutex<VecDeque<LogLine>>,
}

impl RecentLogs {
    fn push(&self, line: LogLine) {
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == RECENT_LOG_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }

    /// The kept lines, oldest first.
    pub fn snapshot(&self) -> Vec<LogLine> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }
}

/// The lines this process logged last.
pub fn recent_logs() -> &'static RecentLogs {
    static RECENT: OnceLock<RecentLogs> = OnceLock::new();
    RECENT.get_or_init(RecentLogs::default)
}

struct RecentLogsLayer;

impl<S: Subscriber> Layer<S> for RecentLogsLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let level = *event.metadata().level();
        if level > Level::INFO {
            return;
        }
        let mut text = MessageText::default();
        event.record(&mut text);
        let timestamp_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        recent_logs().push(LogLine {
            level,
            message: text.finish(),
            timestamp_ms,
        });
    }
}

/// The event's message followed by its other fields as `key=value`.
#[derive(Default)]
struct MessageText {
    message: String,
    fields: String,
}

impl MessageText {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for MessageText {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
            return;
        }
        if !self.fields.is_empty() {
            self.fields.push(' ');
        }
        let _ = write!(self.fields, "{}={value:?}", field.name());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_go_to_the_traces_path_of_the_endpoint() {
        assert_eq!(
            traces_url("http://collector:4318"),
            "http://collector:4318/v1/traces"
        );
        assert_eq!(
            traces_url("https://collector.example/otlp/"),
            "https://collector.example/otlp/v1/traces"
        );
        assert_eq!(default_service_name("triggers"), "oxbase-triggers");
        assert_eq!(default_service_name(""), "oxbase");
    }

    #[test]
    fn recent_logs_keep_info_and_above_with_their_fields() {
        let subscriber = tracing_subscriber::registry().with(RecentLogsLayer);
        tracing::subscriber::with_default(subscriber, || {
            tracing::info!(class = "GameScore", "purged");
            tracing::debug!("too chatty to keep");
            tracing::error!("store unreachable");
        });
        let lines = recent_logs().snapshot();
        let kept: Vec<(Level, &str)> = lines
            .iter()
            .map(|l| (l.level, l.message.as_str()))
            .collect();
        assert!(kept.contains(&(Level::INFO, "purged class=\"GameScore\"")));
        assert!(kept.contains(&(Level::ERROR, "store unreachable")));
        assert!(!lines.iter().any(|l| l.message.contains("too chatty")));
    }
}
