//! CloudWatch metrics as Embedded Metric Format lines: one JSON object on stdout per event, which
//! CloudWatch Logs turns into metrics (namespace `AgentKernel`) without an API call or agent.

use serde_json::{Map, Value, json};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether metric lines are written (off for human-readable logs).
static ENABLED: AtomicBool = AtomicBool::new(true);

/// Turns metric lines on or off (off where logs are for a person: `ak-local` on a terminal).
pub fn set_enabled(on: bool) {
    ENABLED.store(on, Ordering::Relaxed);
}

/// Whether [`emit`] writes its lines.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "AgentKernel";

/// A metric's unit, as CloudWatch names it.
#[derive(Debug, Clone, Copy)]
pub enum Unit {
    /// A count.
    Count,
    /// Milliseconds.
    Milliseconds,
}

impl Unit {
    fn as_str(self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

/// One EMF record: metrics with their dimensions, plus extra properties for log searches.
pub fn emf(
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
    properties: &[(&str, Value)],
) -> Value {
    let timestamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut record = Map::new();
    record.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [dimensions.iter().map(|(k, _)| *k).collect::<Vec<_>>()],
                "Metrics": metrics.iter().map(|(name, _, unit)| json!({"Name": name, "Unit": unit.as_str()})).collect::<Vec<_>>(),
            }],
        }),
    );
    for (name, value) in dimensions {
        record.insert((*name).into(), Value::String((*value).to_owned()));
    }
    for (name, value, _) in metrics {
        record.insert((*name).into(), json!(value));
    }
    for (name, value) in properties {
        record.insert((*name).into(), value.clone());
    }
    Value::Object(record)
}

/// Writes one EMF record as a line on stdout.
pub fn emit(
    dimensions: &[(&str, &str)],
    metrics: &[(&str, f64, Unit)],
    properties: &[(&str, Value)],
) {
    if !enabled() {
        return;
    }
    let line = emf(dimensions, metrics, properties).to_string();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// The function name Lambda gives this process, or `ak-local`.
pub fn function_name() -> String {
    std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "ak-local".to_owned())
}

/// What one agent run did, for its log line and metrics.
pub struct AgentRun<'a> {
    /// The request.
    pub request_id: &'a str,
    /// Its session.
    pub session_id: &'a str,
    /// Who asked.
    pub user_id: Option<&'a str>,
    /// The answering agent, or `""` when the run failed.
    pub agent: &'a str,
    /// Tokens used.
    pub tokens: u64,
    /// Wall time of the run.
    pub duration_ms: f64,
    /// Time spent waiting for the model.
    pub model_ms: f64,
    /// `ok`, `cancelled` (its client canceled or left: not counted as an error), or the
    /// error class.
    pub outcome: &'a str,
}

/// Logs an agent run and emits `AgentRuns`, `AgentErrors`, `RunLatency`, `ModelLatency` and
/// `Tokens`, and `Errors` by error class when it failed.
pub fn agent_run(run: &AgentRun<'_>) {
    tracing::info!(
        request_id = run.request_id,
        session_id = run.session_id,
        user_id = run.user_id.unwrap_or(""),
        agent = run.agent,
        tokens = run.tokens,
        duration_ms = run.duration_ms,
        model_ms = run.model_ms,
        outcome = run.outcome,
        "agent run"
    );
    // A run its client canceled (or left) did not fail.
    let failed = if matches!(run.outcome, "ok" | "cancelled") {
        0.0
    } else {
        1.0
    };
    emit(
        &[("Function", &function_name())],
        &[
            ("AgentRuns", 1.0, Unit::Count),
            ("AgentErrors", failed, Unit::Count),
            ("RunLatency", run.duration_ms, Unit::Milliseconds),
            ("ModelLatency", run.model_ms, Unit::Milliseconds),
            ("Tokens", run.tokens as f64, Unit::Count),
        ],
        &[("outcome", run.outcome.into()), ("agent", run.agent.into())],
    );
    if !matches!(run.outcome, "ok" | "cancelled") {
        error_class(run.outcome);
    }
}

/// Emits `Errors` = 1 with the error class as a dimension (`model_provider`,
/// `service_unavailable`, `bad_request`, ...).
pub fn error_class(class: &str) {
    emit(
        &[("Function", &function_name()), ("ErrorClass", class)],
        &[("Errors", 1.0, Unit::Count)],
        &[],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_the_embedded_metric_format() {
        let r = emf(
            &[("Function", "request-handler"), ("Mode", "rest_sync")],
            &[
                ("Requests", 1.0, Unit::Count),
                ("Latency", 2.5, Unit::Milliseconds),
            ],
            &[("request_id", json!("req-1"))],
        );
        let directive = &r["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "AgentKernel");
        assert_eq!(directive["Dimensions"], json!([["Function", "Mode"]]));
        assert_eq!(
            directive["Metrics"][1],
            json!({"Name": "Latency", "Unit": "Milliseconds"})
        );
        assert!(r["_aws"]["Timestamp"].as_u64().is_some());
        assert_eq!(
            (r["Function"].as_str(), r["Latency"].as_f64()),
            (Some("request-handler"), Some(2.5))
        );
        assert_eq!(r["request_id"], "req-1");
    }
}
