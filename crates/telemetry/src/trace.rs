//! Distributed tracing: OTLP export of the spans a stanza's trip creates, and W3C trace
//! context to carry them across the cluster's links.
//!
//! The spans of a stanza's trip use the target [`TARGET`]. They are exported when an OTLP
//! endpoint is configured and are never written to the log, so with tracing off (the default)
//! no layer is interested in them and creating one costs a callsite check. The cluster copies
//! [`current_context`] into every envelope it sends and starts the receiving span with
//! [`adopt`], so edge → router → router → edge is one trace.

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry::KeyValue;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use opentelemetry_sdk::Resource;
use std::collections::HashMap;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `tracing` target of the spans that make up a stanza's trip.
pub const TARGET: &str = "starling_trace";

/// Where and what to export.
#[derive(Clone, Debug)]
pub struct OtlpSettings {
    /// OTLP/gRPC endpoint, `http://host:4317`.
    pub endpoint: String,
    /// `service.name` of this node's spans (`starling-edge`, `starling-router`, …).
    pub service: String,
    /// `service.instance.id`: the node id.
    pub instance: String,
    /// Fraction of new traces recorded (0..=1); a trace started elsewhere follows its parent.
    pub sample_ratio: f64,
}

/// A `tracing` layer exporting spans over OTLP/gRPC, and the provider to flush on shutdown.
/// Must be called inside a tokio runtime (the exporter's channel lives on it).
pub fn otlp_layer<S>(
    settings: &OtlpSettings,
) -> Result<
    (tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::Tracer>, SdkTracerProvider),
    String,
>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(settings.endpoint.clone())
        .build()
        .map_err(|e| format!("OTLP exporter for {}: {e}", settings.endpoint))?;
    let resource = Resource::builder()
        .with_service_name(settings.service.clone())
        .with_attribute(KeyValue::new("service.instance.id", settings.instance.clone()))
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(settings.sample_ratio))))
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("starling");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}

/// The W3C `traceparent` and `tracestate` of the current span, when it is being traced.
pub fn current_context() -> Option<(String, String)> {
    let span = tracing::Span::current();
    if span.is_none() || span.is_disabled() {
        return None;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return None;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    let parent = carrier.remove("traceparent")?;
    Some((parent, carrier.remove("tracestate").unwrap_or_default()))
}

/// Make `span` a child of the remote span a `traceparent` names (no-op for a disabled span or
/// an empty or malformed context).
pub fn adopt(span: &tracing::Span, traceparent: &str, tracestate: &str) {
    if traceparent.is_empty() || span.is_disabled() {
        return;
    }
    let mut carrier: HashMap<String, String> = HashMap::new();
    carrier.insert("traceparent".into(), traceparent.into());
    if !tracestate.is_empty() {
        carrier.insert("tracestate".into(), tracestate.into());
    }
    let cx = TraceContextPropagator::new().extract(&carrier);
    if cx.span().span_context().is_valid() {
        let _ = span.set_parent(cx);
    }
}
