//! The GenAI spans of a run (OpenTelemetry semantic conventions for generative AI, as of
//! semantic-conventions v1.41: `invoke_agent {agent}`, `chat {model}`,
//! `execute_tool {tool}`), made with `tracing` under [`ak_core::otel::TARGET`] — disabled
//! call sites when tracing is off. A handoff is a child `invoke_agent {target}` span (the
//! conventions have no handoff operation). Prompts, answers, tool arguments and results go on
//! them only with `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT` (see
//! [`ak_core::otel::capture_content`]).

use crate::model::{FinishReason, ModelReply, Usage};
use ak_core::otel::{TARGET, attr, capture_content, record_error, set_str_array};
use serde_json::{Value, json};
use tracing::Span;
use tracing::field::Empty;

/// The `gen_ai.provider.name` of a provider's short name.
pub fn provider_name(short: &str) -> &str {
    match short {
        "bedrock" => "aws.bedrock",
        other => other,
    }
}

/// An `invoke_agent {agent}` span (INTERNAL) under `parent` (the current span when `None`).
pub fn agent_span(
    parent: Option<&Span>,
    agent: &str,
    session_id: &str,
    provider: &str,
    model: &str,
) -> Span {
    let parent = parent.cloned().unwrap_or_else(Span::current);
    tracing::info_span!(
        target: TARGET,
        parent: &parent,
        "invoke_agent",
        otel.name = %format!("invoke_agent {agent}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "invoke_agent",
        gen_ai.agent.name = %agent,
        gen_ai.conversation.id = %session_id,
        gen_ai.provider.name = %provider,
        gen_ai.request.model = %model,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        error.type = Empty,
    )
}

/// Records a run's (or a handed-off agent's) token totals on its `invoke_agent` span.
pub fn record_usage(span: &Span, usage: &Usage) {
    span.record("gen_ai.usage.input_tokens", int(usage.prompt_tokens));
    span.record("gen_ai.usage.output_tokens", int(usage.completion_tokens));
}

/// A count as the i64 OpenTelemetry's int attributes are (the bridge turns unsigned fields into
/// text).
fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A `chat {model}` span (CLIENT) for one model call of `agent`, under `parent`, with the
/// request's messages when content capture is on.
pub fn chat_span(parent: &Span, provider: &str, model: &str, messages: &[Value]) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: parent,
        "chat",
        otel.name = %format!("chat {model}"),
        otel.kind = "client",
        otel.status_code = Empty,
        gen_ai.operation.name = "chat",
        gen_ai.provider.name = %provider,
        gen_ai.request.model = %model,
        gen_ai.response.model = Empty,
        gen_ai.usage.input_tokens = Empty,
        gen_ai.usage.output_tokens = Empty,
        gen_ai.input.messages = Empty,
        gen_ai.output.messages = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() && capture_content() {
        let mut parts: Vec<Value> = messages.iter().map(message_parts).collect();
        // The latest messages when all would be too much for one span (the system message
        // and the last ones are kept).
        while parts.len() > 2 && Value::Array(parts.clone()).to_string().len() > 8 * content_limit()
        {
            parts.remove(1);
        }
        span.record(attr::INPUT_MESSAGES, Value::Array(parts).to_string());
    }
    span
}

/// Most characters of one text on a span (`OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else
/// `OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, else 4096): a span stays within what collectors take
/// (X-Ray: 64 KB a segment).
fn content_limit() -> usize {
    static LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *LIMIT.get_or_init(|| {
        [
            "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        ]
        .iter()
        .find_map(|n| std::env::var(n).ok()?.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or(4096)
    })
}

/// `text` within [`content_limit`] characters, marked when cut.
fn capped(text: &str) -> String {
    let limit = content_limit();
    match text.char_indices().nth(limit) {
        None => text.to_owned(),
        Some((end, _)) => format!("{}…[truncated]", &text[..end]),
    }
}

/// Records a model call's outcome on its [`chat_span`].
pub fn record_reply(span: &Span, reply: &Result<ModelReply, crate::model::ModelError>) {
    if span.is_disabled() {
        return;
    }
    match reply {
        Ok(reply) => {
            record_usage(span, &reply.usage);
            if let Some(model) = &reply.model {
                span.record("gen_ai.response.model", model.as_str());
            }
            let finish = finish_reason(&reply.finish);
            set_str_array(span, attr::FINISH_REASONS, vec![finish.to_owned()]);
            if capture_content() {
                let mut parts = Vec::new();
                if let Some(text) = reply.content.as_ref().or(reply.refusal.as_ref()) {
                    parts.push(json!({"type": "text", "content": capped(text)}));
                }
                for call in &reply.tool_calls {
                    parts.push(
                        json!({"type": "tool_call", "id": call.id, "name": call.name,
                                      "arguments": arguments(&call.arguments)}),
                    );
                }
                // The conventions' output finish reasons: `tool_call`, not OpenAI's `tool_calls`.
                let finish = if finish == "tool_calls" {
                    "tool_call"
                } else {
                    finish
                };
                let out = json!([{"role": "assistant", "parts": parts, "finish_reason": finish}]);
                span.record(attr::OUTPUT_MESSAGES, out.to_string());
            }
        }
        Err(e) => record_error(span, model_error_type(e)),
    }
}

/// An `execute_tool {tool}` span (INTERNAL) for call `id` of `tool`, under `parent`;
/// `extension` marks an MCP server's tool.
pub fn tool_span(parent: &Span, tool: &str, id: &str, extension: bool, arguments: &str) -> Span {
    let span = tracing::info_span!(
        target: TARGET,
        parent: parent,
        "execute_tool",
        otel.name = %format!("execute_tool {tool}"),
        otel.kind = "internal",
        otel.status_code = Empty,
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %tool,
        gen_ai.tool.call.id = %id,
        gen_ai.tool.type = if extension { "extension" } else { "function" },
        gen_ai.tool.call.arguments = Empty,
        gen_ai.tool.call.result = Empty,
        error.type = Empty,
    );
    if !span.is_disabled() && capture_content() {
        span.record("gen_ai.tool.call.arguments", capped(arguments));
    }
    span
}

/// Records a tool's result on its [`tool_span`]: an `{"error": …}` result marks it failed.
pub fn record_tool_result(span: &Span, result: &Value) {
    if span.is_disabled() {
        return;
    }
    if result.get("error").is_some() {
        record_error(span, "tool_error");
    }
    if capture_content() {
        let text = match result {
            Value::String(s) => capped(s),
            other => capped(&other.to_string()),
        };
        span.record("gen_ai.tool.call.result", text);
    }
}

fn finish_reason(finish: &FinishReason) -> &'static str {
    match finish {
        FinishReason::Stop => "stop",
        FinishReason::Length => "length",
        FinishReason::ToolCalls => "tool_calls",
        FinishReason::ContentFilter => "content_filter",
        FinishReason::Refusal => "refusal",
        FinishReason::Error => "error",
    }
}

/// A low-cardinality `error.type` for a failed model call.
fn model_error_type(e: &crate::model::ModelError) -> &'static str {
    use crate::model::ModelError as E;
    match e {
        E::Timeout { .. } | E::Deadline { .. } => "timeout",
        E::Rejected { .. } | E::Refused { .. } => "rejected",
        E::Unavailable { .. } => "unavailable",
        E::Connection { .. } => "connection",
        E::InvalidResponse(_) | E::ErrorInReply { .. } => "invalid_response",
    }
}

fn arguments(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}

/// A Chat Completions message in the conventions' message shape
/// (`{"role", "parts": [{"type": "text" | "tool_call" | "tool_call_response", …}]}`).
fn message_parts(message: &Value) -> Value {
    let role = message["role"].as_str().unwrap_or("user");
    let mut parts = Vec::new();
    match &message["content"] {
        Value::String(text) if role == "tool" => {
            parts.push(json!({
            "type": "tool_call_response", "id": message["tool_call_id"], "response": capped(text)}))
        }
        Value::String(text) => parts.push(json!({"type": "text", "content": capped(text)})),
        Value::Array(items) => {
            for item in items {
                if let Some(text) = item["text"].as_str() {
                    parts.push(json!({"type": "text", "content": capped(text)}));
                } else {
                    parts.push(json!({"type": item["type"].as_str().unwrap_or("other")}));
                }
            }
        }
        _ => {}
    }
    for call in message["tool_calls"].as_array().into_iter().flatten() {
        parts.push(json!({"type": "tool_call", "id": call["id"],
                          "name": call["function"]["name"],
                          "arguments": arguments(call["function"]["arguments"].as_str().unwrap_or("{}"))}));
    }
    json!({"role": role, "parts": parts})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_completions_messages_become_the_conventions_parts() {
        let call = json!({"role": "assistant", "content": "looking",
            "tool_calls": [{"id": "c1", "type": "function",
                            "function": {"name": "weather", "arguments": "{\"city\":\"Oslo\"}"}}]});
        assert_eq!(
            message_parts(&call),
            json!({"role": "assistant", "parts": [
                {"type": "text", "content": "looking"},
                {"type": "tool_call", "id": "c1", "name": "weather", "arguments": {"city": "Oslo"}}]})
        );
        let result = json!({"role": "tool", "tool_call_id": "c1", "content": "sunny"});
        assert_eq!(
            message_parts(&result),
            json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "c1", "response": "sunny"}]})
        );
        assert_eq!(provider_name("bedrock"), "aws.bedrock");
        assert_eq!(provider_name("openai"), "openai");
        let long = "é".repeat(5000);
        let cut = capped(&long);
        assert!(
            cut.ends_with("…[truncated]") && cut.chars().count() == 4096 + 12,
            "{}",
            cut.len()
        );
        assert_eq!(capped("short"), "short");
    }
}
