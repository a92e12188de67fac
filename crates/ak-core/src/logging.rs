//! Structured logs: one JSON object per line on stdout, which CloudWatch Logs stores as is.

use crate::config::LogLevel;
use tracing_subscriber::EnvFilter;

/// Installs the JSON log subscriber at `level`; `RUST_LOG` refines it when set. Safe to call
/// more than once (later calls do nothing).
pub fn init(level: LogLevel) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level.as_str()));
    let _ = tracing_subscriber::fmt()
        .json()
        .with_env_filter(filter)
        .with_current_span(false)
        .with_target(false)
        .try_init();
}
