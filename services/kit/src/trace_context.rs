//! W3C trace context (`traceparent`, `tracestate`) across the hops oxbase
//! makes: NATS message headers, HTTP headers, and the `traceparent` of a
//! stored event (the CloudEvents distributed-tracing extension), so one
//! trace follows a request through the outbox, the event, its trigger
//! deliveries and the jobs it starts.
//!
//! Spans are made with `tracing`; the OpenTelemetry layer that
//! [`crate::telemetry`] installs when an OTLP endpoint is configured turns
//! them into exported spans. Until it does, [`enabled`] is false and
//! everything here returns at once, so a process that exports nothing
//! makes no spans and reads or writes no headers for them.

use std::sync::atomic::{AtomicBool, Ordering};

use async_nats::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::TraceContextExt;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The W3C header (and CloudEvents attribute) naming the parent span.
pub const TRACEPARENT: &str = "traceparent";
/// The W3C header of vendor-specific trace state.
pub const TRACESTATE: &str = "tracestate";

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether spans are exported by this process.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

pub(crate) fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// `make()` when spans are exported; otherwise a disabled span, which
/// costs nothing to enter or instrument with.
pub fn span(make: impl FnOnce() -> Span) -> Span {
    if enabled() { make() } else { Span::none() }
}

/// The W3C headers that carry `span`'s context to a callee: `traceparent`,
/// and `tracestate` when there is one. Empty when spans are not exported.
pub fn headers_of(span: &Span) -> Vec<(&'static str, String)> {
    if !enabled() {
        return Vec::new();
    }
    let mut out = Pairs::default();
    inject_context(&span.context(), &mut out);
    out.0
}

/// [`headers_of`] the current span.
pub fn current_headers() -> Vec<(&'static str, String)> {
    headers_of(&Span::current())
}

/// The current span's `traceparent`, for a stored event to carry.
pub fn current_traceparent() -> Option<String> {
    current_headers()
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
}

/// Adds `span`'s W3C headers to a NATS message's.
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    for (name, value) in headers_of(span) {
        headers.insert(name, value.as_str());
    }
}

/// [`inject`] the current span.
pub fn inject_current(headers: &mut HeaderMap) {
    inject(&Span::current(), headers);
}

/// Makes `span` a child of the span a NATS message's headers name. False
/// (and `span` left a root) when they name none.
pub fn continue_from_headers(span: &Span, headers: Option<&HeaderMap>) -> bool {
    match headers {
        Some(headers) if enabled() => adopt(span, extract_headers(headers)),
        _ => false,
    }
}

/// Makes `span` a child of the span `traceparent` names (with its
/// `tracestate`). False when it names none (absent, or malformed).
pub fn continue_from(span: &Span, traceparent: Option<&str>, tracestate: Option<&str>) -> bool {
    match traceparent {
        Some(traceparent) if enabled() => adopt(span, extract_traceparent(traceparent, tracestate)),
        _ => false,
    }
}

fn adopt(span: &Span, parent: Context) -> bool {
    if !parent.span().span_context().is_valid() {
        return false;
    }
    span.set_parent(parent).is_ok()
}

/// Writes `cx`'s W3C headers with `injector`; nothing when it has no valid
/// span.
pub fn inject_context(cx: &Context, injector: &mut dyn Injector) {
    TraceContextPropagator::new().inject_context(cx, injector);
}

/// Writes `cx`'s W3C headers into NATS headers.
pub fn inject_headers(cx: &Context, headers: &mut HeaderMap) {
    inject_context(cx, &mut NatsInjector(headers));
}

/// The remote span NATS headers name; an empty context when none.
pub fn extract_headers(headers: &HeaderMap) -> Context {
    TraceContextPropagator::new().extract(&NatsExtractor(headers))
}

/// The remote span a `traceparent` (and `tracestate`) names; an empty
/// context when it is malformed.
pub fn extract_traceparent(traceparent: &str, tracestate: Option<&str>) -> Context {
    TraceContextPropagator::new().extract(&TextExtractor {
        traceparent,
        tracestate,
    })
}

/// The `traceparent` of `cx`'s span, if it has a valid one.
pub fn traceparent_of(cx: &Context) -> Option<String> {
    let mut out = Pairs::default();
    inject_context(cx, &mut out);
    out.0
        .into_iter()
        .find_map(|(name, value)| (name == TRACEPARENT).then_some(value))
}

/// Header pairs, keeping only the two W3C names (so they can be
/// `'static`).
#[derive(Default)]
struct Pairs(Vec<(&'static str, String)>);

impl Injector for Pairs {
    fn set(&mut self, key: &str, value: String) {
        let name = match key {
            TRACEPARENT => TRACEPARENT,
            TRACESTATE => TRACESTATE,
            _ => return,
        };
        self.0.push((name, value));
    }
}

struct NatsInjector<'a>(&'a mut HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|value| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        [TRACEPARENT, TRACESTATE]
            .into_iter()
            .filter(|key| self.0.get(*key).is_some())
            .collect()
    }
}

struct TextExtractor<'a> {
    traceparent: &'a str,
    tracestate: Option<&'a str>,
}

impl Extractor for TextExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            TRACEPARENT => Some(self.traceparent),
            TRACESTATE => self.tracestate,
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        let mut keys = vec![TRACEPARENT];
        if self.tracestate.is_some() {
            keys.push(TRACESTATE);
        }
        keys
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceFlags, TraceId, TraceState, TracerProvider as _,
    };
    use opentelemetry_sdk::trace::SdkTracerProvider;
    use tracing_subscriber::layer::SubscriberExt;

    use super::*;

    const PARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn remote(flags: TraceFlags, state: TraceState) -> Context {
        Context::new().with_remote_span_context(SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            flags,
            true,
            state,
        ))
    }

    #[test]
    fn a_context_goes_into_nats_headers_and_comes_back() {
        let state = TraceState::from_key_value([("vendor", "x1")]).unwrap();
        let cx = remote(TraceFlags::SAMPLED, state);
        let mut headers = HeaderMap::new();
        headers.insert("Nats-Msg-Id", "event-1");
        inject_headers(&cx, &mut headers);
        assert_eq!(headers.get(TRACEPARENT).unwrap().as_str(), PARENT);
        assert_eq!(headers.get(TRACESTATE).unwrap().as_str(), "vendor=x1");
        assert_eq!(headers.get("Nats-Msg-Id").unwrap().as_str(), "event-1");

        let back = extract_headers(&headers);
        let span = back.span();
        let context = span.span_context();
        assert!(context.is_remote() && context.is_sampled());
        assert_eq!(context, cx.span().span_context());
        assert_eq!(context.trace_state().header(), "vendor=x1");
    }

    #[test]
    fn a_traceparent_string_round_trips() {
        let cx = extract_traceparent(PARENT, None);
        assert!(cx.span().span_context().is_valid());
        assert_eq!(traceparent_of(&cx).as_deref(), Some(PARENT));
        // The sampling decision travels: an unsampled caller stays so.
        let unsampled = remote(TraceFlags::default(), TraceState::default());
        let text = traceparent_of(&unsampled).unwrap();
        assert!(text.ends_with("-00"), "{text}");
        assert!(
            !extract_traceparent(&text, None)
                .span()
                .span_context()
                .is_sampled()
        );
    }

    #[test]
    fn malformed_or_missing_context_is_no_context() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            let cx = extract_traceparent(bad, None);
            assert!(!cx.span().span_context().is_valid(), "{bad:?}");
            assert_eq!(traceparent_of(&cx), None, "{bad:?}");
        }
        let cx = extract_headers(&HeaderMap::new());
        assert!(!cx.span().span_context().is_valid());
        let mut headers = HeaderMap::new();
        inject_headers(&Context::new(), &mut headers);
        assert!(headers.get(TRACEPARENT).is_none());
    }

    /// Spans made through the OpenTelemetry layer, as `telemetry::init`
    /// sets it up.
    #[test]
    fn spans_continue_the_context_they_are_given_and_pass_on_their_own() {
        let provider = SdkTracerProvider::builder().build();
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("test"));
        let subscriber = tracing_subscriber::registry().with(layer);
        enable();
        tracing::subscriber::with_default(subscriber, || {
            let mut headers = HeaderMap::new();
            headers.insert(TRACEPARENT, PARENT);
            let span = tracing::info_span!("deliver");
            assert!(continue_from_headers(&span, Some(&headers)));
            let mut onward = HeaderMap::new();
            span.in_scope(|| inject_current(&mut onward));
            let sent = onward.get(TRACEPARENT).unwrap().as_str().to_owned();
            // Same trace, the new span as parent, still sampled.
            let parts: Vec<&str> = sent.split('-').collect();
            assert_eq!(parts[1], "0af7651916cd43dd8448eb211c80319c");
            assert_ne!(parts[2], "b7ad6b7169203331");
            assert_eq!(parts[3], "01");
            assert_eq!(
                span.in_scope(current_traceparent).as_deref(),
                Some(sent.as_str())
            );

            // A child made from that text joins the same trace.
            let child = tracing::info_span!("job.run");
            assert!(continue_from(&child, Some(&sent), None));
            let child_parent = traceparent_of(&child.context()).unwrap();
            assert!(child_parent.contains("0af7651916cd43dd8448eb211c80319c"));

            // Nothing to continue: the span starts its own trace.
            let root = tracing::info_span!("root");
            assert!(!continue_from(&root, Some("garbage"), None));
            assert!(!continue_from_headers(&root, Some(&HeaderMap::new())));
            let own = traceparent_of(&root.context()).unwrap();
            assert!(!own.contains("0af7651916cd43dd8448eb211c80319c"));
        });
    }

    #[test]
    fn without_the_layer_nothing_is_carried() {
        let subscriber = tracing_subscriber::registry();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("deliver");
            let mut headers = HeaderMap::new();
            inject(&span, &mut headers);
            assert!(headers.get(TRACEPARENT).is_none());
            assert!(span.in_scope(current_traceparent).is_none());
        });
    }
}
