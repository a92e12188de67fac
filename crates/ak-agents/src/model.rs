//! What the run loop needs from a model: one Chat Completions call with tools.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A function tool offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct ToolSpec {
    /// Function name.
    pub name: String,
    /// What it does.
    pub description: String,
    /// JSON schema of its arguments.
    pub parameters: Value,
}

/// One call to the model.
#[derive(Debug, Clone)]
pub struct ModelRequest {
    /// Model name.
    pub model: String,
    /// The agent asking (for providers that care, such as the offline model).
    pub agent: String,
    /// Chat messages in the Chat Completions format, system message first.
    pub messages: Vec<Value>,
    /// Tools the model may call.
    pub tools: Vec<ToolSpec>,
    /// When the answer must be there (the function's deadline less a margin); the provider
    /// shortens or skips attempts that would end later.
    pub deadline: Option<tokio::time::Instant>,
    /// Set to stream: the provider asks for a streamed answer and hands each piece of answer
    /// text (reasoning kept out) to this sink as it arrives.
    pub on_text: Option<TextSink>,
}

/// Receives answer text as the model writes it.
#[derive(Clone)]
pub struct TextSink(pub std::sync::Arc<dyn Fn(&str) + Send + Sync>);

impl TextSink {
    /// Hands `text` on.
    pub fn send(&self, text: &str) {
        if !text.is_empty() {
            (self.0)(text);
        }
    }
}

impl std::fmt::Debug for TextSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TextSink")
    }
}

/// A function call requested by the model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ToolCall {
    /// Call id, echoed in the tool result.
    pub id: String,
    /// Function name.
    pub name: String,
    /// Arguments as JSON text.
    pub arguments: String,
    /// Provider data that must travel back with the call in later requests (the tool call's
    /// `extra_content`: Gemini 3 refuses a conversation whose calls lost their thought signature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// Tokens used, summed over a run's model calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Both.
    pub total_tokens: u64,
}

impl std::ops::AddAssign for Usage {
    fn add_assign(&mut self, other: Usage) {
        // Saturating: a server's absurd count must not overflow the sum.
        self.prompt_tokens = self.prompt_tokens.saturating_add(other.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(other.completion_tokens);
        self.total_tokens = self.total_tokens.saturating_add(other.total_tokens);
    }
}

/// Why the model stopped writing, as far as the run loop cares. Servers name it in many ways
/// (`stop`, `eos_token`, `end_turn`, `max_tokens`, `model_length`, `""`, none at all); the
/// reader maps them onto these.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum FinishReason {
    /// A normal end (also: no reason given, or one this runtime does not know).
    #[default]
    Stop,
    /// The token limit cut the answer off (`length`).
    Length,
    /// The model asked for tool calls.
    ToolCalls,
    /// The provider's content filter stopped the answer (`content_filter`, Gemini's `SAFETY`,
    /// `RECITATION`, `PROHIBITED_CONTENT`, ...).
    ContentFilter,
    /// The model declined (`refusal`): its text, if any, is a refusal.
    Refusal,
    /// The provider failed while writing the answer (`error`, as OpenRouter reports an upstream
    /// failure): what came is not a complete answer.
    Error,
}

/// The model's answer to one call.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ModelReply {
    /// Text, when the model wrote any (reasoning and thinking kept out).
    pub content: Option<String>,
    /// The model declined to answer; this is its explanation (OpenAI's `message.refusal`).
    pub refusal: Option<String>,
    /// Function calls, when the model made any.
    pub tool_calls: Vec<ToolCall>,
    /// The model's `reasoning_content`, sent back with its tool calls within the same run
    /// (DeepSeek's thinking mode requires it there) and never stored or shown.
    pub reasoning: Option<String>,
    /// Why the model stopped.
    pub finish: FinishReason,
    /// Tokens this call used (0 where the server did not say).
    pub usage: Usage,
    /// The model that answered, as the server names it (its `model` field), when it says.
    pub model: Option<String>,
}

/// A model call that failed; the message is safe to show a client (no key, no request body).
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    /// The provider refused the request (4xx other than 429); not retried.
    #[error("the model provider rejected the request (HTTP {status}{})", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Rejected {
        /// HTTP status.
        status: u16,
        /// Error type or code the provider named.
        detail: Option<String>,
    },
    /// 429 or 5xx on every attempt.
    #[error("the model provider answered HTTP {status} {}{}", attempts_text(*attempts), detail.as_deref().map(|d| format!(" ({d})")).unwrap_or_default())]
    Unavailable {
        /// Last HTTP status.
        status: u16,
        /// Attempts made.
        attempts: u32,
        /// Error type or code the provider named in its last answer.
        detail: Option<String>,
    },
    /// No answer within the timeout, on every attempt.
    #[error("the model provider did not answer within {timeout_secs} s ({})", attempts_text(*attempts))]
    Timeout {
        /// Per-attempt timeout.
        timeout_secs: f64,
        /// Attempts made.
        attempts: u32,
    },
    /// The provider could not be reached.
    #[error("cannot reach the model provider ({}): {detail}", attempts_text(*attempts))]
    Connection {
        /// What failed.
        detail: String,
        /// Attempts made.
        attempts: u32,
    },
    /// The answer is not a Chat Completions response.
    #[error("the model provider's answer is not a Chat Completions response: {0}")]
    InvalidResponse(String),
    /// A 2xx answer that carries an error object instead of a reply (OpenRouter, LM Studio).
    #[error("the model provider answered with an error instead of a reply{}", code.as_deref().map(|c| format!(" ({c})")).unwrap_or_default())]
    ErrorInReply {
        /// The error's code, as for [`ModelError::Rejected`].
        code: Option<String>,
    },
    /// The provider refused the request for a reason the operator can fix (the function's role
    /// may not invoke the model, the model does not exist there); not retried. The text says
    /// what and how.
    #[error("{reason}")]
    Refused {
        /// What was refused and what to do about it.
        reason: String,
    },
    /// The function's deadline came before the model answered: no attempt could finish in time.
    #[error("the model provider did not answer before the function's deadline ({})", attempts_text(*attempts))]
    Deadline {
        /// Attempts made (or begun).
        attempts: u32,
    },
}

fn attempts_text(attempts: u32) -> String {
    match attempts {
        1 => "on the one attempt".to_owned(),
        n => format!("on all {n} attempts"),
    }
}

impl ModelError {
    /// Whether the provider's content filter refused the request (an error whose code is
    /// `content_filter`, as Azure OpenAI answers a filtered prompt).
    pub fn is_content_filter(&self) -> bool {
        matches!(self, ModelError::Rejected { detail: Some(code), .. } if code == "content_filter")
    }
}

/// A source of model answers: an OpenAI-compatible API, or the offline model.
#[async_trait]
pub trait ModelProvider: Send + Sync {
    /// A short name for logs (`openai`, `offline`).
    fn name(&self) -> &'static str;

    /// One Chat Completions call.
    async fn complete(&self, request: &ModelRequest) -> Result<ModelReply, ModelError>;
}
