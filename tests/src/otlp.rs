//! A real OTLP/HTTP trace receiver for the trace tests: `tests/clients/otlp_receiver.py`, which
//! decodes each export with the `opentelemetry-proto` package's generated classes and keeps the
//! spans (flattened to JSON: hex ids, kind and status names, plain attribute values, the
//! resource, and when each arrived).

use serde_json::Value;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncBufReadExt;

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    /// `http://127.0.0.1:PORT/v1/traces`: the value of `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`.
    pub endpoint: String,
    addr: String,
    _child: tokio::process::Child,
}

impl OtlpReceiver {
    /// Starts one on a free port; `delay_ms` holds every export that long before answering
    /// (a collector that does not answer in time).
    pub async fn start(delay_ms: u64) -> anyhow::Result<Self> {
        Self::start_with(&["--delay-ms", &delay_ms.to_string()]).await
    }

    /// Starts one with these options of the script (`--status 503 --retry-after 3`: a
    /// collector refusing every export and asking to be retried later).
    pub async fn start_with(options: &[&str]) -> anyhow::Result<Self> {
        let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("clients")
            .join("otlp_receiver.py");
        let mut child = tokio::process::Command::new(crate::python())
            .arg(script)
            .args(["--port", "0"])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .map_err(|_| anyhow::anyhow!("the OTLP receiver did not start within 30 s"))??
            .unwrap_or_default();
        let addr = line
            .strip_prefix("listening on ")
            .ok_or_else(|| anyhow::anyhow!("the OTLP receiver said {line:?}"))?
            .trim()
            .to_owned();
        Ok(Self {
            endpoint: format!("http://{addr}/v1/traces"),
            addr,
            _child: child,
        })
    }

    /// Every span received so far.
    pub async fn spans(&self) -> Vec<Value> {
        let url = format!("http://{}/spans", self.addr);
        ak_core::https::get_json(&url, Duration::from_secs(5))
            .await
            .ok()
            .and_then(|v| v.as_array().cloned())
            .unwrap_or_default()
    }

    /// How many spans arrived so far.
    pub async fn count(&self) -> u64 {
        let url = format!("http://{}/count", self.addr);
        ak_core::https::get_json(&url, Duration::from_secs(5))
            .await
            .ok()
            .and_then(|v| v["spans"].as_u64())
            .unwrap_or_default()
    }

    /// Waits until a span named `name` has arrived (or `timeout` passes); all spans so far.
    pub async fn wait_for(&self, name: &str, timeout: Duration) -> Vec<Value> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let spans = self.spans().await;
            if spans.iter().any(|s| s["name"] == name) || tokio::time::Instant::now() >= until {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
