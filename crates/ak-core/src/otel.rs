//! Traces with OpenTelemetry: every run's spans — the HTTP request, SQS sends and processing,
//! the agent invocation, each model call and tool execution — named and attributed after the
//! OpenTelemetry semantic conventions (HTTP, messaging, FaaS, and GenAI: `invoke_agent`,
//! `chat`, `execute_tool`), exported over OTLP/HTTP (protobuf).
//!
//! **On and off.** Tracing is on when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set, unless `OTEL_TRACES_EXPORTER=none` or
//! `OTEL_SDK_DISABLED=true`; `OTEL_TRACES_EXPORTER=console` prints each request's span tree on
//! stderr instead (what `ak-local --trace` sets). Off, nothing is built and the spans below are
//! disabled call sites (a relaxed load each). The exporter honours the standard `OTEL_*`
//! variables itself (endpoint, headers, sampler, service name, resource attributes).
//!
//! **No span lost to the freeze.** Ended spans wait in a buffer; [`flush`] exports them and is
//! awaited before each invocation's reply is handed to the Runtime API (after a streamed
//! body's last chunk), bounded by `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` /
//! `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; here 100 by default, not the spec's 10,000: a
//! slow collector costs each answer at most this, and the spans of that export are dropped and
//! counted). No thread, no timer: a frozen sandbox has nothing in flight.
//!
//! **One trace per request.** A request continues the caller's W3C `traceparent` header, else
//! the Lambda invocation's X-Ray trace (`_X_AMZN_TRACE_ID`); queue messages carry the sender's
//! span as the `traceparent` message attribute, and a record without one continues its
//! `AWSTraceHeader` system attribute. New trace ids start with the time in seconds, as X-Ray
//! wants them.
//!
//! **Content.** Prompts, answers and tool arguments and results go on spans only when
//! `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` is `true`, `SPAN_ONLY` or
//! `SPAN_AND_EVENT` (the contrib instrumentations' variable); never keys or tokens.
//!
//! Spans are `tracing` spans with target [`TARGET`]: code in any layer makes them with the
//! `tracing` macros (`otel.name`, `otel.kind`, `otel.status_code` fields set the span's name,
//! kind and status) and uses this module's helpers for what `tracing` cannot express.

use std::time::Duration;

/// The `tracing` target of every span meant for traces (logs never show them).
pub const TARGET: &str = "ak::otel";

/// `gen_ai.*` and other attribute names used on more than one span.
pub mod attr {
    /// The GenAI operation (`chat`, `invoke_agent`, `execute_tool`).
    pub const OPERATION: &str = "gen_ai.operation.name";
    /// The model provider (`openai`, `aws.bedrock`).
    pub const PROVIDER: &str = "gen_ai.provider.name";
    /// Why the model stopped, one per choice (`string[]`).
    pub const FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    /// The messages sent to the model, as JSON (opt-in content).
    pub const INPUT_MESSAGES: &str = "gen_ai.input.messages";
    /// The model's answer, as JSON (opt-in content).
    pub const OUTPUT_MESSAGES: &str = "gen_ai.output.messages";
}

/// Whether prompts, answers and tool arguments/results may go on spans
/// (`OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`).
pub fn capture_content() -> bool {
    static ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ON.get_or_init(|| {
        std::env::var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT").is_ok_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "true" | "1" | "span_only" | "span_and_event"
            )
        })
    })
}

/// How traces leave the process, from the environment (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// No tracing.
    Off,
    /// OTLP/HTTP to the configured endpoint.
    Otlp,
    /// A readable tree per request on stderr.
    Console,
}

impl Output {
    /// Reads `OTEL_SDK_DISABLED`, `OTEL_TRACES_EXPORTER` and the OTLP endpoint variables.
    pub fn from_env() -> Self {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let set = |name: &str| get(name).is_some_and(|v| !v.trim().is_empty());
        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Output::Off;
        }
        let exporter = get("OTEL_TRACES_EXPORTER").unwrap_or_default();
        let exporters: Vec<&str> = exporter
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let endpoint =
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") || set("OTEL_EXPORTER_OTLP_ENDPOINT");
        // Unset means `otlp`; one process exports one way: OTLP when asked for and possible,
        // else the console when asked for.
        let otlp = exporters.is_empty() || exporters.contains(&"otlp");
        if otlp && endpoint {
            Output::Otlp
        } else if exporters.contains(&"console") {
            Output::Console
        } else {
            Output::Off
        }
    }
}

/// The longest [`flush`] waits for the collector: `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`, else
/// `OTEL_EXPORTER_OTLP_TIMEOUT` (milliseconds; 0 or unreadable: the default), else 100 ms.
pub fn flush_timeout() -> Duration {
    [
        "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
    ]
    .iter()
    .find_map(|name| std::env::var(name).ok()?.trim().parse::<u64>().ok())
    .filter(|ms| *ms > 0)
    .map_or(Duration::from_millis(100), Duration::from_millis)
}

/// A W3C `traceparent` header (`00-<trace id>-<span id>-<flags>`) read into (trace id, span
/// id, sampled); `None` for anything else (version `ff`, all-zero ids, wrong lengths).
pub fn parse_traceparent(header: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut parts = header.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |t: &str| {
        t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    if version.len() != 2
        || !lower_hex(version)
        || version == "ff"
        || (version == "00" && parts.next().is_some())
        || ![trace, span, flags].iter().all(|p| lower_hex(p))
    {
        return None;
    }
    let trace: [u8; 16] = hex(trace)?.try_into().ok()?;
    let span: [u8; 8] = hex(span)?.try_into().ok()?;
    let flags = hex(flags).filter(|f| f.len() == 1)?[0];
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span, flags & 1 == 1))
}

/// An X-Ray trace header (`Root=1-<8 hex>-<24 hex>;Parent=<16 hex>;Sampled=1`, what
/// `_X_AMZN_TRACE_ID` and SQS's `AWSTraceHeader` hold) read as [`parse_traceparent`] reads
/// W3C; other fields (`Lineage`, `Self`) are ignored.
pub fn parse_xray(header: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let (mut trace, mut span, mut sampled) = (None, None, false);
    for field in header.split(';') {
        match field.trim().split_once('=') {
            Some(("Root", v)) => {
                let (time, rest) = v.strip_prefix("1-")?.split_once('-')?;
                if time.len() == 8 && rest.len() == 24 {
                    trace = hex(&[time, rest].concat()).and_then(|b| b.try_into().ok());
                }
            }
            Some(("Parent", v)) => span = hex(v).and_then(|b| b.try_into().ok()),
            Some(("Sampled", v)) => sampled = v == "1",
            _ => {}
        }
    }
    let (trace, span): ([u8; 16], [u8; 8]) = (trace?, span?);
    (trace != [0; 16] && span != [0; 8]).then_some((trace, span, sampled))
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// Where a span's parent may come from, tried in order: W3C first, X-Ray second.
#[derive(Debug, Clone, Copy, Default)]
pub struct Carrier<'a> {
    /// A W3C `traceparent` value (an HTTP header, an SQS message attribute).
    pub traceparent: Option<&'a str>,
    /// An X-Ray header (`_X_AMZN_TRACE_ID`, SQS's `AWSTraceHeader`).
    pub xray: Option<&'a str>,
}

impl Carrier<'_> {
    /// The parent: (trace id, span id, sampled). A W3C parent's sampled flag is the caller's
    /// decision and stands; an X-Ray parent counts as sampled whatever it says, since
    /// Lambda's passthrough header says `Sampled=0` for most requests even where no X-Ray
    /// tracing runs (`OTEL_TRACES_SAMPLER` then decides).
    #[cfg_attr(not(feature = "otel"), allow(dead_code))]
    fn parent(&self) -> Option<([u8; 16], [u8; 8], bool)> {
        self.traceparent.and_then(parse_traceparent).or_else(|| {
            self.xray
                .and_then(parse_xray)
                .map(|(trace, span, _)| (trace, span, true))
        })
    }
}

/// The queue's name: the last segment of an SQS queue URL (or the text itself).
fn queue_name(queue: &str) -> &str {
    queue.rsplit('/').next().unwrap_or(queue)
}

/// The PRODUCER span of a message sent to `queue` (an SQS queue URL, or a local queue's name);
/// a send made inside it carries its context ([`current_traceparent`]). Record the message id
/// in `messaging.message.id` once known.
pub fn producer_span(queue: &str) -> tracing::Span {
    let name = queue_name(queue);
    tracing::info_span!(
        target: TARGET,
        "send",
        otel.name = %format!("send {name}"),
        otel.kind = "producer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "aws_sqs",
        messaging.operation.name = "send",
        messaging.operation.type = "send",
        messaging.destination.name = %name,
        aws.sqs.queue.url = %queue,
        messaging.message.id = tracing::field::Empty,
        error.type = tracing::field::Empty,
    )
}

/// The CONSUMER span processing one queue record (`process <queue>`), a child of the sender's
/// span (`carrier`: the record's `traceparent` attribute, else its `AWSTraceHeader`) and
/// linked to it, as the messaging conventions allow for single-message processing.
pub fn consumer_span(queue: &str, message_id: &str, carrier: Carrier<'_>) -> tracing::Span {
    let name = queue_name(queue);
    let span = tracing::info_span!(
        target: TARGET,
        "process",
        otel.name = %format!("process {name}"),
        otel.kind = "consumer",
        otel.status_code = tracing::field::Empty,
        messaging.system = "aws_sqs",
        messaging.operation.name = "process",
        messaging.operation.type = "process",
        messaging.destination.name = %name,
        messaging.message.id = %message_id,
        faas.trigger = "pubsub",
        error.type = tracing::field::Empty,
    );
    set_parent(&span, carrier);
    add_link(&span, carrier);
    span
}

/// Marks `span` failed with a low-cardinality `error.type` (`timeout`, `500`, a class name).
pub fn record_error(span: &tracing::Span, error_type: &str) {
    span.record("otel.status_code", "error");
    span.record("error.type", error_type);
}

pub use imp::{
    add_link, current_traceparent, flush, flush_boxed, init_layer, set_parent, set_str_array,
    spans_dropped,
};

#[cfg(feature = "otel")]
mod imp {
    use super::{Carrier, Output};
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
        TracerProvider as _,
    };
    use opentelemetry::{KeyValue, Value};
    use opentelemetry_sdk::error::OTelSdkResult;
    use opentelemetry_sdk::trace::{
        IdGenerator, RandomIdGenerator, SdkTracerProvider, SpanData, SpanExporter as _,
        SpanProcessor,
    };
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex, OnceLock};
    use std::time::Duration;
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::Layer;
    use tracing_subscriber::registry::LookupSpan;

    /// Ended spans kept for one flush; more are dropped (and counted).
    const MAX_BUFFERED: usize = 4096;

    #[derive(Debug)]
    struct Shared {
        spans: Mutex<Vec<SpanData>>,
        exporter: tokio::sync::Mutex<Option<opentelemetry_otlp::SpanExporter>>,
        console: bool,
        dropped: AtomicU64,
    }

    static SHARED: OnceLock<Arc<Shared>> = OnceLock::new();
    /// Kept for the process's life: the last handle dropped would shut tracing down.
    static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps ended spans for [`flush`] (OTLP), or prints each local root's tree when it ends
    /// (console).
    #[derive(Debug)]
    struct Buffering(Arc<Shared>);

    impl SpanProcessor for Buffering {
        fn on_start(&self, _: &mut opentelemetry_sdk::trace::Span, _: &opentelemetry::Context) {}

        fn on_end(&self, span: SpanData) {
            if !span.span_context.is_sampled() {
                return;
            }
            let local_root = span.parent_span_id == SpanId::INVALID || span.parent_span_is_remote;
            let trace = span.span_context.trace_id();
            let mut spans = lock(&self.0.spans);
            if spans.len() >= MAX_BUFFERED {
                self.0.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let root = span.span_context.span_id();
            spans.push(span);
            if self.0.console && local_root {
                // This root's spans only: others of the trace (the request's, while its
                // queued run prints) wait for their own root.
                let mut ids = vec![root];
                let mut tree = Vec::new();
                loop {
                    let (found, rest): (Vec<SpanData>, Vec<SpanData>) =
                        spans.drain(..).partition(|s| {
                            s.span_context.trace_id() == trace
                                && (ids.contains(&s.span_context.span_id())
                                    || ids.contains(&s.parent_span_id))
                        });
                    *spans = rest;
                    if found.is_empty() {
                        break;
                    }
                    ids.extend(found.iter().map(|s| s.span_context.span_id()));
                    tree.extend(found);
                }
                drop(spans);
                eprint!("{}", super::console::render(tree));
            }
        }

        fn force_flush(&self) -> OTelSdkResult {
            Ok(())
        }

        fn shutdown_with_timeout(&self, _: Duration) -> OTelSdkResult {
            Ok(())
        }

        fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
            if let Ok(mut exporter) = self.0.exporter.try_lock()
                && let Some(exporter) = exporter.as_mut()
            {
                exporter.set_resource(resource);
            }
        }
    }

    /// Trace ids whose first four bytes are the time in seconds (X-Ray refuses ids older than
    /// 30 days by that time); span ids random.
    #[derive(Debug)]
    struct XrayIds(RandomIdGenerator);

    impl IdGenerator for XrayIds {
        fn new_trace_id(&self) -> TraceId {
            let mut bytes = self.0.new_trace_id().to_bytes();
            let secs = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            bytes[..4].copy_from_slice(&u32::try_from(secs).unwrap_or(u32::MAX).to_be_bytes());
            TraceId::from_bytes(bytes)
        }

        fn new_span_id(&self) -> SpanId {
            self.0.new_span_id()
        }
    }

    /// OTLP requests through ak-core's hyper client (made on the first export, so cold start
    /// reads no certificates), each bounded by the flush timeout.
    #[derive(Debug)]
    struct OtlpHttp {
        client: OnceLock<Result<crate::https::HttpsClient, String>>,
    }

    #[async_trait::async_trait]
    impl opentelemetry_http::HttpClient for OtlpHttp {
        async fn send_bytes(
            &self,
            request: http::Request<bytes::Bytes>,
        ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
            use http_body_util::BodyExt as _;
            let client = self
                .client
                .get_or_init(crate::https::client)
                .as_ref()
                .map_err(|e| e.clone())?;
            let (parts, body) = request.into_parts();
            let request = http::Request::from_parts(parts, http_body_util::Full::new(body));
            let (parts, body) = client.request(request).await?.into_parts();
            let body = http_body_util::Limited::new(body, 1 << 20)
                .collect()
                .await?
                .to_bytes();
            Ok(http::Response::from_parts(parts, body))
        }
    }

    /// Says on stderr which `OTEL_*` settings this build does not follow (it sends
    /// OTLP/HTTP protobuf, uncompressed).
    fn warn_unsupported() {
        for (names, supported) in [
            (
                [
                    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                    "OTEL_EXPORTER_OTLP_PROTOCOL",
                ],
                "http/protobuf",
            ),
            (
                [
                    "OTEL_EXPORTER_OTLP_TRACES_COMPRESSION",
                    "OTEL_EXPORTER_OTLP_COMPRESSION",
                ],
                "none",
            ),
        ] {
            if let Some((name, value)) = names
                .iter()
                .find_map(|n| Some((*n, std::env::var(n).ok()?)))
                .filter(|(_, v)| !v.trim().is_empty() && v.trim() != supported)
            {
                eprintln!("{name}={value} is not supported: traces go out as {supported}");
            }
        }
    }

    /// The resource: the service (`OTEL_SERVICE_NAME`, else the function's name) and, on
    /// Lambda, the FaaS and cloud attributes.
    fn resource() -> opentelemetry_sdk::Resource {
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let mut attrs = Vec::new();
        if let Some(region) = env("AWS_REGION") {
            attrs.push(KeyValue::new("cloud.provider", "aws"));
            attrs.push(KeyValue::new("cloud.platform", "aws_lambda"));
            attrs.push(KeyValue::new("cloud.region", region));
        }
        for (key, var) in [
            ("faas.name", "AWS_LAMBDA_FUNCTION_NAME"),
            ("faas.version", "AWS_LAMBDA_FUNCTION_VERSION"),
            ("faas.instance", "AWS_LAMBDA_LOG_STREAM_NAME"),
        ] {
            if let Some(value) = env(var) {
                attrs.push(KeyValue::new(key, value));
            }
        }
        if let Some(mb) = env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|m| m.parse::<i64>().ok())
        {
            attrs.push(KeyValue::new("faas.max_memory", mb * 1024 * 1024));
        }
        let mut builder = opentelemetry_sdk::Resource::builder().with_attributes(attrs);
        let named = env("OTEL_SERVICE_NAME").is_some()
            || env("OTEL_RESOURCE_ATTRIBUTES").is_some_and(|a| {
                a.split(',')
                    .any(|kv| kv.split('=').next().map(str::trim) == Some("service.name"))
            });
        if !named {
            let name = env("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|| "agent-kernel".to_owned());
            builder = builder.with_service_name(name);
        }
        builder.build()
    }

    /// The tracing layer for `output`, installed beside the log layer by
    /// [`crate::logging`]; `None` when `output` is [`Output::Off`] or the exporter cannot be
    /// built (said on stderr: the function still serves, untraced).
    pub fn init_layer<S>(output: Output) -> Option<Box<dyn Layer<S> + Send + Sync>>
    where
        S: tracing::Subscriber + for<'a> LookupSpan<'a> + Send + Sync,
    {
        use opentelemetry_otlp::WithHttpConfig as _;
        let exporter = match output {
            Output::Off => return None,
            Output::Console => None,
            Output::Otlp => {
                warn_unsupported();
                // One attempt: the exporter's retries would sleep on the function's only
                // thread; a failed export is dropped and counted instead (see `flush`).
                let built = opentelemetry_otlp::SpanExporter::builder()
                    .with_http()
                    .with_http_client(OtlpHttp {
                        client: OnceLock::new(),
                    })
                    .with_retry_policy(opentelemetry_otlp::RetryPolicy::disabled())
                    .build();
                match built {
                    Ok(exporter) => Some(exporter),
                    Err(e) => {
                        eprintln!("tracing is off: the OTLP exporter cannot be built: {e}");
                        return None;
                    }
                }
            }
        };
        let shared = SHARED
            .get_or_init(|| {
                Arc::new(Shared {
                    spans: Mutex::default(),
                    exporter: tokio::sync::Mutex::new(exporter),
                    console: output == Output::Console,
                    dropped: AtomicU64::new(0),
                })
            })
            .clone();
        let provider = PROVIDER.get_or_init(|| {
            SdkTracerProvider::builder()
                .with_span_processor(Buffering(shared))
                .with_id_generator(XrayIds(RandomIdGenerator::default()))
                .with_resource(resource())
                .build()
        });
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("agent-kernel"))
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_level(false)
            .with_target(false)
            .with_filter(
                tracing_subscriber::filter::Targets::new()
                    .with_target(super::TARGET, tracing::level_filters::LevelFilter::TRACE),
            );
        Some(Box::new(layer))
    }

    /// Exports the spans ended so far, waiting at most the flush timeout and never past
    /// `deadline` (less 50 ms for the reply itself); an export that fails or does not finish
    /// in time drops its spans, counts them ([`spans_dropped`]) and logs one line. Does
    /// nothing when tracing is off or prints to the console.
    pub async fn flush(deadline: Option<tokio::time::Instant>) {
        let Some(shared) = SHARED.get() else { return };
        if shared.console {
            return;
        }
        let batch = std::mem::take(&mut *lock(&shared.spans));
        if batch.is_empty() {
            return;
        }
        let count = batch.len() as u64;
        let mut bound = super::flush_timeout();
        if let Some(deadline) = deadline {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            bound = bound.min(left.saturating_sub(Duration::from_millis(50)));
        }
        let exporter = shared.exporter.lock().await;
        let Some(exporter) = exporter.as_ref() else {
            return;
        };
        let failure = match tokio::time::timeout(bound, exporter.export(batch)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {} ms", bound.as_millis()),
        };
        let total = shared.dropped.fetch_add(count, Ordering::Relaxed) + count;
        tracing::warn!(spans = count, dropped_total = total, error = %failure, "trace export failed; its spans are dropped");
        let function = crate::metrics::function_name();
        crate::metrics::emit(
            &[("FunctionName", function.as_str())],
            &[("SpansDropped", count as f64, crate::metrics::Unit::Count)],
            &[],
        );
    }

    /// [`flush`] as a boxed future (the form `ak_lambda::before_reply` takes).
    pub fn flush_boxed(
        deadline: tokio::time::Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(flush(Some(deadline)))
    }

    /// Spans dropped since start: the buffer was full, or their export failed or timed out.
    pub fn spans_dropped() -> u64 {
        SHARED
            .get()
            .map_or(0, |s| s.dropped.load(Ordering::Relaxed))
    }

    fn context_of(parent: ([u8; 16], [u8; 8], bool)) -> SpanContext {
        let (trace, span, sampled) = parent;
        SpanContext::new(
            TraceId::from_bytes(trace),
            SpanId::from_bytes(span),
            if sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            },
            true,
            TraceState::default(),
        )
    }

    /// Makes the first readable parent in `carrier` the parent of `span` (which must not have
    /// been entered yet); a span without one starts a new trace.
    pub fn set_parent(span: &Span, carrier: Carrier<'_>) {
        if SHARED.get().is_none() || span.is_disabled() {
            return;
        }
        if let Some(parent) = carrier.parent() {
            let cx = opentelemetry::Context::new().with_remote_span_context(context_of(parent));
            let _ = span.set_parent(cx);
        }
    }

    /// Links `span` to the context in `carrier` (a message's sender, where the parent is
    /// another).
    pub fn add_link(span: &Span, carrier: Carrier<'_>) {
        if SHARED.get().is_none() || span.is_disabled() {
            return;
        }
        if let Some(parent) = carrier.parent() {
            span.add_link(context_of(parent));
        }
    }

    /// The W3C `traceparent` of the current span, to carry to the next function; `None` when
    /// tracing is off.
    pub fn current_traceparent() -> Option<String> {
        SHARED.get()?;
        let cx = Span::current().context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    /// Sets a `string[]` attribute (`gen_ai.response.finish_reasons`), which `tracing` fields
    /// cannot carry.
    pub fn set_str_array(span: &Span, key: &'static str, values: Vec<String>) {
        if SHARED.get().is_none() || span.is_disabled() {
            return;
        }
        span.set_attribute(
            key,
            Value::Array(
                values
                    .into_iter()
                    .map(opentelemetry::StringValue::from)
                    .collect::<Vec<_>>()
                    .into(),
            ),
        );
    }
}

#[cfg(not(feature = "otel"))]
mod imp {
    //! Built without the `otel` feature: the same API, doing nothing.
    use super::{Carrier, Output};
    use tracing::Span;

    /// No layer: this build has no tracing.
    pub fn init_layer<S>(
        output: Output,
    ) -> Option<Box<dyn tracing_subscriber::Layer<S> + Send + Sync>>
    where
        S: tracing::Subscriber,
    {
        if output != Output::Off {
            eprintln!("tracing is off: this build has no `otel` feature");
        }
        None
    }
    /// Nothing to export.
    pub async fn flush(_: Option<tokio::time::Instant>) {}
    /// Nothing to export.
    pub fn flush_boxed(
        _: tokio::time::Instant,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
        Box::pin(async {})
    }
    /// None dropped.
    pub fn spans_dropped() -> u64 {
        0
    }
    /// Nothing to set.
    pub fn set_parent(_: &Span, _: Carrier<'_>) {}
    /// Nothing to link.
    pub fn add_link(_: &Span, _: Carrier<'_>) {}
    /// No trace.
    pub fn current_traceparent() -> Option<String> {
        None
    }
    /// Nothing to set.
    pub fn set_str_array(_: &Span, _: &'static str, _: Vec<String>) {}
}

#[cfg(feature = "otel")]
mod console {
    //! The tree `OTEL_TRACES_EXPORTER=console` prints for each local root span.
    use opentelemetry::trace::SpanId;
    use opentelemetry_sdk::trace::SpanData;
    use std::fmt::Write as _;

    /// Attributes worth a glance in a terminal.
    const SHOWN: &[&str] = &[
        "http.response.status_code",
        "gen_ai.request.model",
        "gen_ai.response.finish_reasons",
        "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens",
        "gen_ai.tool.call.id",
        "messaging.message.id",
        "error.type",
    ];

    /// `spans` (one trace's, ended in this process) as an indented tree, children by start.
    pub fn render(mut spans: Vec<SpanData>) -> String {
        spans.sort_by_key(|s| s.start_time);
        let ids: Vec<SpanId> = spans.iter().map(|s| s.span_context.span_id()).collect();
        let mut out = String::new();
        let Some(first) = spans.first() else {
            return out;
        };
        let _ = writeln!(out, "trace {}", first.span_context.trace_id());
        for (i, span) in spans.iter().enumerate() {
            if !ids.contains(&span.parent_span_id) {
                line(&spans, i, 1, &mut out);
            }
        }
        out
    }

    fn line(spans: &[SpanData], i: usize, depth: usize, out: &mut String) {
        let span = &spans[i];
        let ms = span
            .end_time
            .duration_since(span.start_time)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0;
        let _ = write!(out, "{}{} {:.1} ms", "  ".repeat(depth), span.name, ms);
        for kv in &span.attributes {
            if SHOWN.contains(&kv.key.as_str()) {
                let _ = write!(out, " {}={}", kv.key, kv.value);
            }
        }
        if let opentelemetry::trace::Status::Error { description } = &span.status {
            let _ = write!(out, " ERROR {description}");
        }
        out.push('\n');
        let id = span.span_context.span_id();
        for (j, child) in spans.iter().enumerate() {
            if child.parent_span_id == id && j != i {
                line(spans, j, depth + 1, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparents_and_xray_headers_read_as_the_same_trace() {
        let w3c = parse_traceparent("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01");
        let xray = parse_xray(
            "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1;Lineage=a:1",
        );
        assert!(w3c.is_some());
        assert_eq!(w3c, xray);
        for bad in [
            "",
            "00-00000000000000000000000000000000-53995c3f42cd8ad8-01",
            "ff-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a99427279-53995c3f42cd8ad8-01",
            "00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01-extra",
            "00-5759e988bd862e3fe1be46a99427279z-53995c3f42cd8ad8-01",
            "00-5759E988BD862E3FE1BE46A994272793-53995c3f42cd8ad8-01",
            "zz-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
        assert_eq!(parse_xray("Root=1-5759e988-bd862e3fe1be46a994272793"), None);
        assert_eq!(parse_xray("Root=2-x;Parent=53995c3f42cd8ad8"), None);
        let carrier = Carrier {
            traceparent: Some("garbage"),
            xray: Some("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8"),
        };
        assert_eq!(carrier.parent().map(|p| p.1), xray.map(|p| p.1));
        // The caller's "not sampled" stands; Lambda's passthrough `Sampled=0` does not.
        let unsampled = Carrier {
            traceparent: Some("00-5759e988bd862e3fe1be46a994272793-53995c3f42cd8ad8-00"),
            xray: None,
        };
        assert_eq!(unsampled.parent().map(|p| p.2), Some(false));
        let passthrough = Carrier {
            traceparent: None,
            xray: Some(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0",
            ),
        };
        assert_eq!(passthrough.parent().map(|p| p.2), Some(true));
    }

    #[test]
    fn tracing_is_on_only_with_an_endpoint_and_not_switched_off() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| (*v).to_owned())
            }
        };
        assert_eq!(Output::from_lookup(env(&[])), Output::Off);
        assert_eq!(
            Output::from_lookup(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://localhost:4318"
            )])),
            Output::Otlp
        );
        assert_eq!(
            Output::from_lookup(env(&[(
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://c/v1/traces"
            )])),
            Output::Otlp
        );
        assert_eq!(
            Output::from_lookup(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
                ("OTEL_TRACES_EXPORTER", "none")
            ])),
            Output::Off
        );
        assert_eq!(
            Output::from_lookup(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318"),
                ("OTEL_SDK_DISABLED", "TRUE")
            ])),
            Output::Off
        );
        assert_eq!(
            Output::from_lookup(env(&[("OTEL_TRACES_EXPORTER", "console")])),
            Output::Console
        );
        assert_eq!(
            Output::from_lookup(env(&[
                ("OTEL_TRACES_EXPORTER", "otlp,console"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
            ])),
            Output::Otlp
        );
        assert_eq!(
            Output::from_lookup(env(&[
                ("OTEL_TRACES_EXPORTER", "zipkin"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://localhost:4318")
            ])),
            Output::Off
        );
        assert_eq!(
            Output::from_lookup(env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")])),
            Output::Off
        );
    }
}
