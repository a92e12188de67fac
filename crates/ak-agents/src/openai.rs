//! Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
//! llama.cpp, text-generation-inference, LM Studio, Groq, Mistral, DeepSeek, Gemini, OpenRouter,
//! LiteLLM, ...), over the shared [`ak_core::https`] client, built on first use so a cold start
//! does not pay for loading root certificates. Requests use only the standard fields every
//! server accepts; replies are read tolerantly ([`reply`]). Retries with exponential backoff on
//! 429, 5xx, timeouts and connection errors (honouring `Retry-After`), never on other 4xx.

mod reply;

use crate::model::{ModelError, ModelProvider, ModelReply, ModelRequest};
use ak_core::https::{HttpsClient, root_cause};
use ak_core::secret::Secret;
use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The public OpenAI API.
pub const OPENAI_BASE_URL: &str = "https://api.openai.com/v1";
const BACKOFF_FIRST: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
const RETRY_AFTER_MAX: Duration = Duration::from_secs(10);
/// Largest reply body read; a chat completion is far smaller.
const MAX_REPLY_BYTES: usize = 16 * 1024 * 1024;
/// Of an error body only this much is read: enough to find its code.
const MAX_ERROR_BYTES: usize = 64 * 1024;
/// An attempt shorter than this is not started: it could not finish before the deadline.
const MIN_ATTEMPT: Duration = Duration::from_millis(500);

/// Settings of [`OpenAiProvider`].
#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Base URL, e.g. `https://api.openai.com/v1`; `/chat/completions` is appended.
    pub base_url: String,
    /// Bearer token; compatible servers that need none may omit it.
    pub api_key: Option<Secret>,
    /// Per-attempt timeout.
    pub timeout: Duration,
    /// Retries after the first attempt.
    pub max_retries: u32,
}

/// An OpenAI-compatible Chat Completions client.
pub struct OpenAiProvider {
    endpoint: http::Uri,
    config: OpenAiConfig,
    client: OnceLock<Result<HttpsClient, String>>,
}

impl OpenAiProvider {
    /// A provider for this endpoint; no network or file access until the first call.
    pub fn new(config: OpenAiConfig) -> Result<Self, String> {
        // A query string stays at the end (Azure's `...?api-version=2024-10-21`).
        let (path, query) = match config.base_url.split_once('?') {
            Some((path, query)) => (path, format!("?{query}")),
            None => (config.base_url.as_str(), String::new()),
        };
        let url = format!("{}/chat/completions{query}", path.trim_end_matches('/'));
        let endpoint: http::Uri = url
            .parse()
            .map_err(|e| format!("model base URL {:?} is not a URL: {e}", config.base_url))?;
        if !matches!(endpoint.scheme_str(), Some("http" | "https")) || endpoint.host().is_none() {
            return Err(format!(
                "model base URL {:?} must be http(s)://host[:port]/path",
                config.base_url
            ));
        }
        Ok(Self {
            endpoint,
            config,
            client: OnceLock::new(),
        })
    }

    fn client(&self) -> Result<&HttpsClient, ModelError> {
        self.client
            .get_or_init(ak_core::https::client)
            .as_ref()
            .map_err(|e| ModelError::Connection {
                detail: e.clone(),
                attempts: 0,
            })
    }

    async fn send_once(&self, body: &Bytes) -> Result<(u16, Option<Duration>, Bytes), String> {
        let mut builder = http::Request::post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::ACCEPT, "application/json");
        if let Some(key) = &self.config.api_key {
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            );
        }
        let request = builder
            .body(Full::new(body.clone()))
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let client = self.client().map_err(|e| e.to_string())?;
        let response = client.request(request).await.map_err(|e| root_cause(&e))?;
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s).min(RETRY_AFTER_MAX));
        let success = (200..300).contains(&status);
        let limit = if success {
            MAX_REPLY_BYTES
        } else {
            MAX_ERROR_BYTES
        };
        let bytes = match http_body_util::Limited::new(response.into_body(), limit)
            .collect()
            .await
        {
            Ok(collected) => collected.to_bytes(),
            // An oversized error body: its status is enough.
            Err(_) if !success => Bytes::new(),
            Err(e) if e.is::<http_body_util::LengthLimitError>() => {
                return Ok((status, retry_after, Bytes::from_static(OVERSIZED)));
            }
            Err(e) => return Err(format!("the answer was cut off: {e}")),
        };
        Ok((status, retry_after, bytes))
    }
}

/// Stands in for a reply larger than [`MAX_REPLY_BYTES`], which is not read.
const OVERSIZED: &[u8] = b"\x00oversized";

fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after;
    }
    let exp = BACKOFF_FIRST
        .saturating_mul(1 << attempt.min(8))
        .min(BACKOFF_MAX);
    // Up to 25% jitter so retrying clients spread out.
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    exp + exp.mul_f64(f64::from(nanos % 1000) / 4000.0)
}

/// The request body: `model`, `messages`, and `tools` only when there are any (strict servers
/// refuse `tools: []`), nothing null or empty.
fn request_body(request: &ModelRequest) -> Bytes {
    let mut body = json!({"model": request.model, "messages": request.messages});
    if !request.tools.is_empty() {
        body["tools"] = request
            .tools
            .iter()
            .map(|t| {
                json!({"type": "function", "function": {
                    "name": t.name, "description": t.description, "parameters": t.parameters,
                }})
            })
            .collect();
    }
    Bytes::from(body.to_string())
}

#[async_trait]
impl ModelProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    async fn complete(&self, request: &ModelRequest) -> Result<ModelReply, ModelError> {
        let body = request_body(request);
        let attempts = self.config.max_retries + 1;
        let mut last = ModelError::Connection {
            detail: "no attempt made".to_owned(),
            attempts: 0,
        };
        for attempt in 0..attempts {
            // Each attempt gets the configured timeout, shortened so it ends before the
            // deadline; one that could not finish in time is not started.
            let left = request
                .deadline
                .map(|d| d.saturating_duration_since(tokio::time::Instant::now()));
            let timeout = left.map_or(self.config.timeout, |left| left.min(self.config.timeout));
            if left.is_some_and(|left| left < MIN_ATTEMPT) {
                tracing::warn!(attempt, "no time left before the deadline for a model call");
                return Err(ModelError::Deadline { attempts: attempt });
            }
            let mut retry_after = None;
            match tokio::time::timeout(timeout, self.send_once(&body)).await {
                Err(_) if Some(timeout) == left => {
                    return Err(ModelError::Deadline {
                        attempts: attempt + 1,
                    });
                }
                Err(_) => {
                    last = ModelError::Timeout {
                        timeout_secs: self.config.timeout.as_secs_f64(),
                        attempts: attempt + 1,
                    };
                }
                Ok(Err(detail)) => {
                    last = ModelError::Connection {
                        detail,
                        attempts: attempt + 1,
                    };
                }
                Ok(Ok((status, after, bytes))) => {
                    let (status, detail, in_reply) = if (200..300).contains(&status) {
                        if bytes.as_ref() == OVERSIZED {
                            return Err(ModelError::InvalidResponse(format!(
                                "the reply is larger than {} MiB",
                                MAX_REPLY_BYTES >> 20
                            )));
                        }
                        match reply::read_reply(&bytes) {
                            Ok(reply) => return Ok(reply),
                            Err(reply::ReadError::Embedded { status, code }) => {
                                (status, code, true)
                            }
                            Err(invalid) => return Err(invalid.into()),
                        }
                    } else {
                        (status, reply::error_code(&bytes, status), false)
                    };
                    // A "code" that repeats the key would publish it.
                    let detail = detail.filter(|code| {
                        self.config
                            .api_key
                            .as_ref()
                            .is_none_or(|key| !code.contains(key.expose()))
                    });
                    let retryable = status == 429 || status >= 500;
                    if !retryable {
                        tracing::warn!(
                            status,
                            detail = detail.as_deref().unwrap_or(""),
                            "model provider rejected the request"
                        );
                        return Err(if in_reply {
                            ModelError::ErrorInReply { code: detail }
                        } else {
                            ModelError::Rejected { status, detail }
                        });
                    }
                    retry_after = after;
                    last = if in_reply {
                        ModelError::ErrorInReply { code: detail }
                    } else {
                        ModelError::Unavailable {
                            status,
                            attempts: attempt + 1,
                            detail,
                        }
                    };
                }
            }
            if attempt + 1 < attempts {
                let mut pause = backoff(attempt, retry_after);
                if let Some(deadline) = request.deadline {
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    if pause + MIN_ATTEMPT > left {
                        tracing::warn!(error = %last, "no time left before the deadline to retry");
                        return Err(last);
                    }
                    pause = pause.min(left);
                }
                tracing::warn!(error = %last, retry_in_ms = pause.as_millis() as u64, "model call failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
        Err(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_checked() {
        let config = |url: &str| OpenAiConfig {
            base_url: url.to_owned(),
            api_key: None,
            timeout: Duration::from_secs(1),
            max_retries: 0,
        };
        assert!(OpenAiProvider::new(config("https://api.openai.com/v1")).is_ok());
        assert!(OpenAiProvider::new(config("http://127.0.0.1:11434/v1/")).is_ok());
        assert!(OpenAiProvider::new(config("api.openai.com")).is_err());
        assert!(OpenAiProvider::new(config("ftp://x/v1")).is_err());
        let azure = OpenAiProvider::new(config(
            "https://r.openai.azure.com/openai/deployments/gpt-4o/?api-version=2024-10-21",
        ))
        .map(|p| p.endpoint.to_string())
        .unwrap_or_default();
        assert_eq!(
            azure,
            "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
        );
    }

    #[test]
    fn backoff_grows_and_honours_retry_after() {
        assert!(backoff(0, None) >= BACKOFF_FIRST && backoff(0, None) < BACKOFF_FIRST * 2);
        assert!(backoff(3, None) >= BACKOFF_FIRST * 8);
        assert!(backoff(30, None) <= BACKOFF_MAX + BACKOFF_MAX / 4);
        assert_eq!(
            backoff(0, Some(Duration::from_secs(2))),
            Duration::from_secs(2)
        );
    }

    #[test]
    fn rejected_requests_name_the_code_not_the_message() {
        let body = br#"{"error": {"message": "Incorrect API key provided: sk-abc***xyz", "type": "invalid_request_error", "code": "invalid_api_key"}}"#;
        let e = ModelError::Rejected {
            status: 401,
            detail: reply::error_code(body, 401),
        };
        assert!(e.to_string().contains("invalid_api_key"), "{e}");
        assert!(!e.to_string().contains("sk-"));
    }

    #[test]
    fn requests_carry_only_standard_non_empty_fields() {
        let request = ModelRequest {
            model: "m".into(),
            agent: "a".into(),
            messages: vec![json!({"role": "user", "content": "hi"})],
            tools: Vec::new(),
            deadline: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request)).unwrap_or_default();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
    }
}
