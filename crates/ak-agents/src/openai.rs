//! Any OpenAI-compatible Chat Completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama,
//! llama.cpp, text-generation-inference, LM Studio, Groq, Mistral, DeepSeek, Gemini, OpenRouter,
//! LiteLLM, ...), over the shared [`ak_core::https`] client, built on first use so a cold start
//! does not pay for loading root certificates. Requests use only the standard fields every
//! server accepts; replies, buffered or streamed, are read tolerantly (modules `reply` and `stream`).
//! Retries with exponential backoff on 429, 5xx, timeouts and connection errors (honouring
//! `Retry-After`), never on other 4xx, and never once streamed text has reached the client.

mod reply;
mod stream;

use crate::model::{ModelError, ModelProvider, ModelReply, ModelRequest, TextSink};
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
pub(crate) const MIN_ATTEMPT: Duration = Duration::from_millis(500);

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
    /// Set once the server refused `stream_options`: later calls leave it out.
    no_stream_options: std::sync::atomic::AtomicBool,
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
            no_stream_options: std::sync::atomic::AtomicBool::new(false),
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

    /// One attempt: the request, then the reply read as a stream (text handed to `sink` as it
    /// arrives; `timeout` bounds the wait for the headers and every gap between chunks, and
    /// `deadline` the whole answer) or as one body (`timeout` bounds the whole exchange).
    /// `emitted` says whether text went out.
    async fn attempt(
        &self,
        body: Bytes,
        sink: Option<&TextSink>,
        timeout: Duration,
        deadline: Option<tokio::time::Instant>,
        emitted: &mut bool,
    ) -> Result<ModelReply, Failure> {
        let started = tokio::time::Instant::now();
        let mut builder = http::Request::post(&self.endpoint)
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(
                http::header::ACCEPT,
                if sink.is_some() {
                    "text/event-stream"
                } else {
                    "application/json"
                },
            );
        if let Some(key) = &self.config.api_key {
            builder = builder.header(
                http::header::AUTHORIZATION,
                format!("Bearer {}", key.expose()),
            );
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Failure::Connection(format!("cannot build the request: {e}")))?;
        let client = self
            .client()
            .map_err(|e| Failure::Connection(e.to_string()))?;
        let response = match tokio::time::timeout(timeout, client.request(request)).await {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(e)) => return Err(Failure::Connection(root_cause(&e))),
            Ok(Ok(response)) => response,
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Duration::from_secs_f64(s.min(RETRY_AFTER_MAX.as_secs_f64())));
        // A streaming request is read as a stream unless the answer says it is JSON: some
        // servers stream under `text/plain` or no content type at all (a JSON body that comes
        // anyway is still read whole, see `StreamReader::finish`).
        let content_type = response
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        let event_stream = content_type.contains("text/event-stream")
            || (sink.is_some() && !content_type.contains("json"));
        let mut body = response.into_body();
        if !(200..300).contains(&status) {
            // Only the start of an error body: enough for its code.
            let left = timeout.saturating_sub(started.elapsed());
            let bytes = tokio::time::timeout(left, read_limited(&mut body, MAX_ERROR_BYTES))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(Failure::Status {
                status,
                code: reply::error_code(&bytes, status),
                retry_after,
                in_reply: false,
                about_stream_options: String::from_utf8_lossy(&bytes).contains("stream_options"),
            });
        }
        if event_stream {
            let mut reader = stream::StreamReader::default();
            let mut read = 0usize;
            loop {
                // `timeout` bounds each silence; the deadline bounds the whole answer, however
                // steadily it streams.
                let silence_ends = tokio::time::Instant::now() + timeout;
                let until = deadline.map_or(silence_ends, |d| d.min(silence_ends));
                let frame = match tokio::time::timeout_at(until, body.frame()).await {
                    Err(_) if deadline.is_some_and(|d| d <= silence_ends) => {
                        return Err(Failure::Deadline);
                    }
                    Err(_) => return Err(Failure::Timeout),
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        return Err(Failure::Connection(format!("the answer was cut off: {e}")));
                    }
                    Ok(Some(Ok(frame))) => frame,
                };
                let Ok(data) = frame.into_data() else {
                    continue;
                };
                read += data.len();
                if read > MAX_REPLY_BYTES {
                    return Err(too_large());
                }
                let text = reader.feed(&data);
                if let Some(sink) = sink
                    && !text.is_empty()
                {
                    sink.send(&text);
                    *emitted = true;
                }
            }
            if let Some(sink) = sink {
                let held_back = reader.unsent_answer();
                if !held_back.is_empty() {
                    sink.send(&held_back);
                    *emitted = true;
                }
            }
            return reader.finish().map_err(Failure::from);
        }
        let left = timeout.saturating_sub(started.elapsed());
        let bytes = match tokio::time::timeout(left, read_limited(&mut body, MAX_REPLY_BYTES)).await
        {
            Err(_) => return Err(Failure::Timeout),
            Ok(Err(Some(e))) => {
                return Err(Failure::Connection(format!("the answer was cut off: {e}")));
            }
            Ok(Err(None)) => return Err(too_large()),
            Ok(Ok(bytes)) => bytes,
        };
        // A server may stream to a request that did not ask for it, or answer a streaming
        // request with one JSON body: either is read for what it is.
        let reply = if stream::looks_like_stream(&bytes) {
            stream::read_stream(&bytes)
        } else {
            reply::read_reply(&bytes)
        }
        .map_err(Failure::from)?;
        if let Some(sink) = sink
            && let Some(text) = reply.refusal.as_ref().or(reply.content.as_ref())
        {
            sink.send(text);
            *emitted = true;
        }
        Ok(reply)
    }
}

/// How an attempt failed.
enum Failure {
    /// No headers, or a silence in the body, within the timeout.
    Timeout,
    /// The connection failed or the body was cut off.
    Connection(String),
    /// The deadline came while the answer was still streaming.
    Deadline,
    /// An error status, or an error object inside a 2xx body.
    Status {
        status: u16,
        code: Option<String>,
        retry_after: Option<Duration>,
        in_reply: bool,
        /// Whether the error body names `stream_options` (a server that does not take it).
        about_stream_options: bool,
    },
    /// An answer that can never be read: not retried.
    Invalid(ModelError),
}

impl From<reply::ReadError> for Failure {
    fn from(e: reply::ReadError) -> Self {
        match e {
            reply::ReadError::Invalid(why) => Failure::Invalid(ModelError::InvalidResponse(why)),
            reply::ReadError::Embedded { status, code } => Failure::Status {
                status,
                code,
                retry_after: None,
                in_reply: true,
                about_stream_options: false,
            },
        }
    }
}

fn too_large() -> Failure {
    Failure::Invalid(ModelError::InvalidResponse(format!(
        "the reply is larger than {} MiB",
        MAX_REPLY_BYTES >> 20
    )))
}

/// Reads a body up to `limit` bytes: `Err(None)` when it is longer, `Err(Some)` when it broke.
async fn read_limited(
    body: &mut hyper::body::Incoming,
    limit: usize,
) -> Result<Bytes, Option<hyper::Error>> {
    let mut out = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.map_err(Some)?.into_data() {
            if out.len() + data.len() > limit {
                return Err(None);
            }
            out.extend_from_slice(&data);
        }
    }
    Ok(out.freeze())
}

pub(crate) fn backoff(attempt: u32, retry_after: Option<Duration>) -> Duration {
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
/// refuse `tools: []`), nothing null or empty; `stream` (with `stream_options.include_usage`,
/// for the token counts, unless the server refused it) when streaming.
fn request_body(request: &ModelRequest, stream_options: bool) -> Bytes {
    let mut body = json!({"model": request.model, "messages": request.messages});
    if request.on_text.is_some() {
        body["stream"] = json!(true);
        if stream_options {
            body["stream_options"] = json!({"include_usage": true});
        }
    }
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
        use std::sync::atomic::Ordering;
        let attempts = self.config.max_retries + 1;
        let mut stream_options = !self.no_stream_options.load(Ordering::Relaxed);
        let mut last = ModelError::Connection {
            detail: "no attempt made".to_owned(),
            attempts: 0,
        };
        let mut attempt = 0;
        while attempt < attempts {
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
            let body = request_body(request, stream_options);
            let mut emitted = false;
            let failure = match self
                .attempt(
                    body,
                    request.on_text.as_ref(),
                    timeout,
                    request.deadline,
                    &mut emitted,
                )
                .await
            {
                Ok(reply) => return Ok(reply),
                Err(failure) => failure,
            };
            let mut retry_after = None;
            match failure {
                Failure::Invalid(e) => return Err(e),
                Failure::Status {
                    status: 400 | 422,
                    in_reply: false,
                    about_stream_options: true,
                    ..
                } if request.on_text.is_some() && stream_options => {
                    // Some servers refuse `stream_options`: ask again without it, and leave it
                    // out from now on.
                    tracing::info!("the model provider refused stream_options; asking without");
                    self.no_stream_options.store(true, Ordering::Relaxed);
                    stream_options = false;
                    continue;
                }
                Failure::Deadline => {
                    tracing::warn!("the model was still writing at the deadline");
                    return Err(ModelError::Deadline {
                        attempts: attempt + 1,
                    });
                }
                Failure::Timeout if Some(timeout) == left => {
                    return Err(ModelError::Deadline {
                        attempts: attempt + 1,
                    });
                }
                Failure::Timeout => {
                    last = ModelError::Timeout {
                        timeout_secs: self.config.timeout.as_secs_f64(),
                        attempts: attempt + 1,
                    };
                }
                Failure::Connection(detail) => {
                    last = ModelError::Connection {
                        detail,
                        attempts: attempt + 1,
                    };
                }
                Failure::Status {
                    status,
                    code,
                    retry_after: after,
                    in_reply,
                    ..
                } => {
                    // A "code" that repeats the key would publish it.
                    let detail = code.filter(|code| {
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
            if emitted {
                // The client already has part of this answer: a second attempt would repeat it.
                tracing::warn!(error = %last, "the model call failed after text reached the client");
                return Err(last);
            }
            attempt += 1;
            if attempt < attempts {
                let mut pause = backoff(attempt - 1, retry_after);
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
            on_text: None,
        };
        let body: serde_json::Value =
            serde_json::from_slice(&request_body(&request, true)).unwrap_or_default();
        assert_eq!(
            body,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        );
    }
}
