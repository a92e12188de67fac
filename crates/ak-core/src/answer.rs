//! What a request is answered with: an [`Answer`] (a status code and a JSON body, as the HTTP
//! API, the output queue and the response store all carry it), the body of a finished run
//! ([`ChatAnswer`]), and what an agent run produced ([`AgentAnswer`], [`AgentFailure`]).

use crate::error::ApiError;
use crate::events::RunEvent;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// An answer: a status code (the HTTP API's status table) and the JSON body the client gets.
/// This is what travels on the output queue (`status_code` attribute and body), what the
/// response store keeps, and what the edge turns into an HTTP response.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The status code (200, 202, 4xx, 5xx).
    pub status: u16,
    /// The body.
    pub body: Value,
}

impl Answer {
    /// An answer with this status and body; a status outside 100–599 (a corrupt record) is
    /// read as 500.
    pub fn new(status: u16, body: Value) -> Self {
        let status = if (100..=599).contains(&status) {
            status
        } else {
            500
        };
        Self { status, body }
    }

    /// A 200 answer.
    pub fn ok(body: Value) -> Self {
        Self::new(200, body)
    }

    /// A rest_async request taken in: `202 {"status": "ACCEPTED", "request_id"}`.
    pub fn accepted(request_id: &str) -> Self {
        Self::new(202, json!({"status": "ACCEPTED", "request_id": request_id}))
    }

    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The last event of a stream for this answer: `done`, or `error` (the body with its
    /// `status` and `request_id`) for an error status.
    pub fn final_event(self, request_id: &str) -> RunEvent {
        if self.is_success() {
            return RunEvent::Done(self.body);
        }
        let mut body = self.body;
        if let Value::Object(map) = &mut body {
            map.insert("status".into(), json!(self.status));
            map.entry("request_id")
                .or_insert_with(|| Value::String(request_id.to_owned()));
        }
        RunEvent::Error(body)
    }
}

impl From<&ApiError> for Answer {
    fn from(error: &ApiError) -> Self {
        Answer::new(error.status_code(), error.body())
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
    /// Calls of the client's own tools (`client_tools` of a protocol surface) the run stopped
    /// at, for the client to run: `[{"id", "name", "arguments"}]` (`arguments` as the JSON
    /// text the model wrote). The client sends their results in its next request. Omitted
    /// when none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<Value>,
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
    pub fn of(answer: AgentAnswer, session_id: &str, request_id: &str) -> Self {
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
            tool_calls: answer.tool_calls,
        }
    }
}

/// What an agent run produced.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentAnswer {
    /// The final text.
    pub text: String,
    /// The agent that wrote it.
    pub agent: String,
    /// Prompt tokens of the run's model calls.
    pub prompt_tokens: u64,
    /// Completion tokens of the run's model calls.
    pub completion_tokens: u64,
    /// Tokens used by the run.
    pub total_tokens: u64,
    /// Time spent waiting for the model (0 when the answer was already in the session).
    pub model_ms: f64,
    /// The model declined to answer; `text` is its refusal.
    pub refusal: bool,
    /// The token limit cut the answer off; `text` is what was written.
    pub truncated: bool,
    /// Client tool calls the run stopped at (see [`ChatAnswer::tool_calls`]).
    pub tool_calls: Vec<Value>,
    /// The run paused for a person's approval of tool calls: its state, to store and resume
    /// from (`{"agent", "items", "calls", "approvals", "usage", "turns", "expires_in"}`; see
    /// `ak_runtime::exec::approval`). `None` for a finished run.
    pub pause: Option<Value>,
}

/// Why a run produced no answer, as the client will see it, and whether a retry may help.
#[derive(Debug)]
pub struct AgentFailure {
    /// The error the client gets.
    pub error: ApiError,
    /// Whether running the request again later may succeed (model or store outage).
    pub transient: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_events_carry_the_status_of_failures() {
        let done = Answer::ok(json!({"result": "84"})).final_event("r");
        assert_eq!(done, RunEvent::Done(json!({"result": "84"})));
        let failed = Answer::new(502, json!({"error": "model failed"})).final_event("r-1");
        assert_eq!(
            failed,
            RunEvent::Error(json!({"error": "model failed", "status": 502, "request_id": "r-1"}))
        );
        assert_eq!(Answer::new(999, Value::Null).status, 500);
    }
}
