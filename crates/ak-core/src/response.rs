//! What the API answers: a status, headers and a JSON body, turned into an HTTP response in one
//! place so every answer has `Content-Type: application/json`.

use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::Body;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A JSON answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Extra headers (`Retry-After`, `Allow`, ...); `Content-Type` is added on conversion.
    pub headers: HeaderMap,
    /// The body.
    pub body: Value,
    /// How the request ended, for logs and metrics (`ok`, or the error class).
    pub outcome: &'static str,
}

impl ApiResponse {
    /// An answer with this status and body.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body,
            outcome: "ok",
        }
    }

    /// A 200 answer.
    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// The HTTP response, with `Content-Type: application/json`.
    pub fn into_http(self) -> http::Response<Body> {
        let text = serde_json::to_string(&self.body).unwrap_or_else(|_| "{}".to_owned());
        let mut response = http::Response::new(Body::Text(text));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<Value> for ApiResponse {
    fn from(body: Value) -> Self {
        ApiResponse::ok(body)
    }
}

/// The answer to a chat request, as returned by direct mode and stored for the queue modes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatAnswer {
    /// The final text of the run.
    pub result: String,
    /// The session the turn belongs to.
    pub session_id: String,
    /// The request this answers.
    pub request_id: String,
    /// The agent that produced the answer (after handoffs).
    pub agent: String,
    /// `true` when the model declined to answer: `result` is its refusal. Omitted otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub refusal: bool,
    /// `true` when the model's token limit cut the answer off: `result` is what it wrote.
    /// Omitted otherwise.
    #[serde(default, skip_serializing_if = "is_false")]
    pub truncated: bool,
    /// Tokens the run's model calls used (all zero when the answer came from the session
    /// without a model call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<TokenUsage>,
}

/// Token counts of a run, as the provider reported them (0 where it did not).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_false(b: &bool) -> bool {
    !*b
}

impl ChatAnswer {
    /// The answer of a finished run.
    pub fn of(answer: crate::ports::AgentAnswer, session_id: &str, request_id: &str) -> Self {
        Self {
            result: answer.text,
            session_id: session_id.to_owned(),
            request_id: request_id.to_owned(),
            agent: answer.agent,
            refusal: answer.refusal,
            truncated: answer.truncated,
            usage: Some(TokenUsage {
                prompt_tokens: answer.prompt_tokens,
                completion_tokens: answer.completion_tokens,
                total_tokens: answer.total_tokens,
            }),
        }
    }
}
