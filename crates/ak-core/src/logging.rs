//! Logs. The Lambda functions write one JSON object per line on stdout, which CloudWatch Logs
//! stores as is (with CloudWatch Embedded Metric Format lines for the metrics). `ak-local` on a
//! terminal writes lines a person reads instead, without metric lines; piped or redirected, it
//! writes JSON like the functions.

use crate::config::LogLevel;
use std::io::IsTerminal;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// What is logged: `level`, with the MCP SDK's own lines off — it logs every session's start
/// and end at info (one line per request is the request log's job), and its errors quote the
/// server's whole URL, which may carry a key (our MCP client logs what failed, the URL cut to
/// its host). `RUST_LOG`, when set, replaces it: a list of `level` and `target=level`
/// (`debug,rmcp=off`).
/// Trace spans (target [`crate::otel::TARGET`]) are never logged.
fn filter(level: LogLevel) -> Targets {
    std::env::var("RUST_LOG")
        .ok()
        .and_then(|spec| spec.parse::<Targets>().ok())
        .unwrap_or_else(|| {
            format!("{},rmcp=off", level.as_str())
                .parse()
                .unwrap_or_default()
        })
        .with_target(crate::otel::TARGET, LevelFilter::OFF)
}

/// Installs the JSON log subscriber at `level`; `RUST_LOG` refines it when set. Traces go out
/// beside the logs when the `OTEL_*` variables ask for them (see [`crate::otel`]). Safe to
/// call more than once (later calls do nothing).
pub fn init(level: LogLevel) {
    init_with(level, crate::otel::Output::from_env());
}

/// [`init`] with traces going to `traces`.
fn init_with(level: LogLevel, traces: crate::otel::Output) {
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .json()
                .with_current_span(false)
                .with_span_list(false)
                .with_target(false)
                .with_filter(filter(level)),
        )
        .with(crate::otel::init_layer(traces))
        .try_init();
}

/// For a program a person runs (`ak-local`): human-readable lines on stderr, without metric
/// lines, when stderr is a terminal; otherwise [`init`]'s JSON. `console_traces` prints each
/// request's trace as a tree on stderr (as `OTEL_TRACES_EXPORTER=console` does).
pub fn init_local(level: LogLevel, console_traces: bool) {
    let traces = if console_traces {
        crate::otel::Output::Console
    } else {
        crate::otel::Output::from_env()
    };
    if !std::io::stderr().is_terminal() {
        init_with(level, traces);
        return;
    }
    crate::metrics::set_enabled(false);
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .compact()
                .with_writer(std::io::stderr)
                .with_target(false)
                .with_filter(filter(level)),
        )
        .with(crate::otel::init_layer(traces))
        .try_init();
}
