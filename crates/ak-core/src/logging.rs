//! Logs. The Lambda functions write one JSON object per line on stdout, which CloudWatch Logs
//! stores as is (with CloudWatch Embedded Metric Format lines for the metrics). `ak-local` on a
//! terminal writes lines a person reads instead, without metric lines; piped or redirected, it
//! writes JSON like the functions.

use crate::config::LogLevel;
use std::io::IsTerminal;
use tracing_subscriber::EnvFilter;

fn filter(level: LogLevel) -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        // The MCP SDK logs every session's start and end at info: one line per request is
        // the request log's job.
        EnvFilter::new(format!("{},rmcp=warn", level.as_str()))
    })
}

/// Installs the JSON log subscriber at `level`; `RUST_LOG` refines it when set. Safe to call
/// more than once (later calls do nothing).
pub fn init(level: LogLevel) {
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter(level))
        .with_current_span(false)
        .with_target(false)
        .try_init();
}

/// For a program a person runs (`ak-local`): human-readable lines on stderr, without metric
/// lines, when stderr is a terminal; otherwise [`init`]'s JSON.
pub fn init_local(level: LogLevel) {
    if !std::io::stderr().is_terminal() {
        init(level);
        return;
    }
    crate::metrics::set_enabled(false);
    let _ = tracing_subscriber::fmt()
        .compact()
        .with_writer(std::io::stderr)
        .with_env_filter(filter(level))
        .with_target(false)
        .try_init();
}
