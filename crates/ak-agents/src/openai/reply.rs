//! Reading Chat Completions replies the way OpenAI-compatible servers really write them.
//!
//! Only what the run loop needs is read — text, refusal, tool calls, finish reason and usage —
//! from a plain JSON tree, so whatever else a server adds, leaves out or spells its own way is
//! tolerated: missing or unknown `object`, `id`, `created`, `model`, `index`,
//! `system_fingerprint`, `service_tier`; any `finish_reason` (`eos_token` from
//! text-generation-inference, `""` from proxies, `model_length` from Mistral, none at all);
//! content as a string, `null` or a list of parts (Mistral's reasoning models send
//! `[{"type": "thinking", ...}, {"type": "text", ...}]`); reasoning in `reasoning_content`,
//! `reasoning` or a leading `<think>` block (kept out of the answer); tool calls without `type`,
//! with an empty, missing or repeated `id`, with `arguments` as a JSON object, `""` or missing;
//! the legacy `function_call`; usage missing, partial, or with numbers as text. A tool call's
//! `extra_content` (Gemini 3's thought signature, which must come back with the call) is kept.
//!
//! Only a body that is not JSON, or one with no choice at all, is an invalid response. A 2xx body
//! with an `error` object and no choice (OpenRouter reports upstream failures that way) is read
//! as the error it carries. The streaming reader uses the same field readers.

use crate::model::{FinishReason, ModelError, ModelReply, ToolCall, Usage};
use serde_json::{Map, Value};

/// Why a 2xx body gave no reply.
#[derive(Debug, PartialEq)]
pub(crate) enum ReadError {
    /// Not a Chat Completions response at all; the text says what it was instead.
    Invalid(String),
    /// An error object where the reply should be: handled like an HTTP error of this status.
    Embedded {
        /// The error's own status (its numeric `code`), else 502.
        status: u16,
        /// Its machine-readable code, as [`error_code`] finds it.
        code: Option<String>,
    },
}

impl From<ReadError> for ModelError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Invalid(why) => ModelError::InvalidResponse(why),
            ReadError::Embedded { code, .. } => ModelError::ErrorInReply { code },
        }
    }
}

/// Reads a non-streaming reply body.
pub(crate) fn read_reply(bytes: &[u8]) -> Result<ModelReply, ReadError> {
    // A byte order mark some servers put first is not part of the JSON.
    let bytes = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    let body: Value =
        serde_json::from_slice(bytes).map_err(|_| ReadError::Invalid(describe_non_json(bytes)))?;
    let Value::Object(body) = body else {
        return Err(ReadError::Invalid(format!(
            "the body is a JSON {}, not an object",
            kind(&body)
        )));
    };
    let Some(choice) = first_choice(&body) else {
        return Err(embedded_error(&body).unwrap_or_else(|| {
            ReadError::Invalid("the reply has no choices (no answer at all)".to_owned())
        }));
    };
    // `message` per the API; `delta` from servers that answer a plain call in stream shape; `text`
    // from servers that fall back to the legacy completions shape.
    let empty = Map::new();
    let message = ["message", "delta"]
        .iter()
        .find_map(|k| choice.get(*k).and_then(Value::as_object))
        .unwrap_or(&empty);
    let content = message
        .get("content")
        .or_else(|| choice.get("text"))
        .and_then(text_of);
    let mut calls = CallIds::default();
    let mut tool_calls: Vec<ToolCall> = match message.get("tool_calls") {
        Some(Value::Array(list)) => list.iter().filter_map(|c| calls.read(c)).collect(),
        Some(call @ Value::Object(_)) => calls.read(call).into_iter().collect(),
        _ => Vec::new(),
    };
    if tool_calls.is_empty()
        && let Some(function @ Value::Object(_)) = message.get("function_call")
    {
        tool_calls.extend(calls.read(&serde_json::json!({"function": function})));
    }
    let refusal = message
        .get("refusal")
        .and_then(non_empty_text)
        .or_else(|| message.get("content").and_then(refusal_part));
    Ok(ModelReply {
        content,
        refusal,
        tool_calls,
        reasoning: message.get("reasoning_content").and_then(non_empty_text),
        finish: finish_reason(choice.get("finish_reason")),
        usage: usage_of(body.get("usage")),
        model: body.get("model").and_then(non_empty_text),
    })
}

/// A refusal given as a content part (`{"type": "refusal", "refusal": "..."}`).
pub(crate) fn refusal_part(content: &Value) -> Option<String> {
    content.as_array()?.iter().find_map(|part| {
        (part.get("type").and_then(Value::as_str) == Some("refusal"))
            .then(|| part.get("refusal").and_then(non_empty_text))
            .flatten()
    })
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// What a non-JSON body looks like, without quoting it (it may echo the request).
pub(crate) fn describe_non_json(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let start = text.trim_start();
    if start.is_empty() {
        "the body is empty".to_owned()
    } else if start.starts_with('<') {
        "the body is an HTML or XML page, not JSON (a proxy or gateway answered?)".to_owned()
    } else {
        format!("the body is not JSON ({} bytes)", bytes.len())
    }
}

/// The choice with index 0, else the first one.
pub(crate) fn first_choice(body: &Map<String, Value>) -> Option<&Map<String, Value>> {
    let choices = body.get("choices")?.as_array()?;
    let objects = || choices.iter().filter_map(Value::as_object);
    objects()
        .find(|c| c.get("index").and_then(Value::as_u64) == Some(0))
        .or_else(|| objects().next())
}

/// An `error` object in a body that should have held a reply.
pub(crate) fn embedded_error(body: &Map<String, Value>) -> Option<ReadError> {
    let error = body.get("error").filter(|e| !e.is_null())?;
    let status = error
        .get("code")
        .and_then(number)
        .and_then(|c| u16::try_from(c).ok())
        .filter(|c| (400..=599).contains(c))
        .unwrap_or(502);
    Some(ReadError::Embedded {
        status,
        code: error_code_of(&Value::Object(body.clone()), status),
    })
}

fn non_empty_text(v: &Value) -> Option<String> {
    v.as_str()
        .filter(|s| !s.trim().is_empty())
        .map(str::to_owned)
}

/// The answer text of a `content` value: a string, or the text parts of a list of parts
/// (`text` / `output_text` parts and plain strings, joined), never reasoning or thinking parts.
/// A leading `<think>…</think>` block (reasoning models served without a reasoning parser) is
/// removed. Empty or whitespace-only text counts as none.
pub(crate) fn text_of(content: &Value) -> Option<String> {
    let text = match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts.iter().filter_map(part_text).collect(),
        Value::Object(_) => part_text(content)?,
        _ => return None,
    };
    let text = strip_think(&text);
    (!text.trim().is_empty()).then(|| text.to_owned())
}

fn part_text(part: &Value) -> Option<String> {
    match part {
        Value::String(s) => Some(s.clone()),
        Value::Object(p) => match p.get("type").and_then(Value::as_str) {
            // `text` as a string, or as `{"value": ...}` (the Assistants API's shape).
            Some("text" | "output_text") | None => match p.get("text")? {
                Value::String(t) => Some(t.clone()),
                Value::Object(t) => t.get("value").and_then(Value::as_str).map(str::to_owned),
                _ => None,
            },
            // thinking, reasoning, redacted_thinking, refusal, images, audio, ...
            Some(_) => None,
        },
        _ => None,
    }
}

/// `text` without the reasoning some models write into their content: a leading
/// `<think>…</think>` or `<thinking>…</thinking>` block, everything up to a lone `</think>` (the
/// DeepSeek-R1 template opens the block in the prompt, so the reply starts inside it), and the
/// analysis channel of gpt-oss's raw format (only its `final` channel is the answer). An
/// unclosed block (the answer was cut off while thinking) leaves no answer.
pub(crate) fn strip_think(text: &str) -> &str {
    const FINAL: &str = "<|channel|>final<|message|>";
    if let Some(at) = text.rfind(FINAL) {
        let answer = &text[at + FINAL.len()..];
        let end = ["<|end|>", "<|return|>", "<|call|>"]
            .iter()
            .filter_map(|m| answer.find(m))
            .min()
            .unwrap_or(answer.len());
        return answer[..end].trim();
    }
    if text.trim_start().starts_with("<|channel|>") {
        // Only analysis or commentary: no answer yet.
        return "";
    }
    let trimmed = text.trim_start();
    for (open, close) in [("<think>", "</think>"), ("<thinking>", "</thinking>")] {
        if let Some(rest) = trimmed.strip_prefix(open) {
            return match rest.find(close) {
                Some(end) => rest[end + close.len()..].trim_start(),
                None => "",
            };
        }
    }
    match text.find("</think>") {
        Some(end) => text[end + "</think>".len()..].trim_start(),
        None => text,
    }
}

/// Maps the many spellings of a finish reason onto what the run loop distinguishes.
pub(crate) fn finish_reason(v: Option<&Value>) -> FinishReason {
    match v
        .and_then(Value::as_str)
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        Some("length" | "max_tokens" | "model_length" | "max_output_tokens") => {
            FinishReason::Length
        }
        Some("tool_calls" | "function_call" | "tool_use") => FinishReason::ToolCalls,
        // Gemini's native reasons pass through its OpenAI-compatible endpoint unmapped.
        Some(
            "content_filter"
            | "content_filtered"
            | "safety"
            | "guardrail_intervened"
            | "recitation"
            | "prohibited_content"
            | "blocklist"
            | "spii"
            | "image_safety",
        ) => FinishReason::ContentFilter,
        Some("refusal") => FinishReason::Refusal,
        Some("error") => FinishReason::Error,
        _ => FinishReason::Stop,
    }
}

/// A non-negative integer from a number (integer or float) or numeric text.
fn number(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite() && *f >= 0.0)
                .map(|f| f as u64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Token counts; anything missing is 0, a missing total is the sum of the others.
pub(crate) fn usage_of(v: Option<&Value>) -> Usage {
    let Some(Value::Object(u)) = v else {
        return Usage::default();
    };
    let get = |k: &str| u.get(k).and_then(number);
    let prompt_tokens = get("prompt_tokens")
        .or_else(|| get("input_tokens"))
        .unwrap_or(0);
    let completion_tokens = get("completion_tokens")
        .or_else(|| get("output_tokens"))
        .unwrap_or(0);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: get("total_tokens")
            .unwrap_or_else(|| prompt_tokens.saturating_add(completion_tokens)),
    }
}

/// The arguments of a call as JSON text: a string as is (empty → `{}`), an object or other JSON
/// value serialized, missing or null → `{}`.
pub(crate) fn arguments_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) if s.trim().is_empty() => "{}".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// Hands out call ids: the server's when it gave a usable, unrepeated one, else a fresh one, so
/// every tool result pairs with exactly its call.
#[derive(Default)]
pub(crate) struct CallIds {
    seen: Vec<String>,
}

impl CallIds {
    /// A usable id for a call the server named `given`.
    pub(crate) fn assign(&mut self, given: Option<&str>) -> String {
        let id = match given.map(str::trim) {
            Some(id) if !id.is_empty() && !self.seen.iter().any(|s| s == id) => id.to_owned(),
            _ => fresh_call_id(),
        };
        self.seen.push(id.clone());
        id
    }

    /// One element of `tool_calls`; `None` for calls of another type than function (e.g.
    /// `custom`), which this runtime cannot answer.
    fn read(&mut self, call: &Value) -> Option<ToolCall> {
        let call = call.as_object()?;
        if let Some(t) = call.get("type").and_then(Value::as_str)
            && t != "function"
        {
            return None;
        }
        let function = call.get("function").and_then(Value::as_object);
        let field = |k: &str| function.and_then(|f| f.get(k)).or_else(|| call.get(k));
        Some(ToolCall {
            extra: call.get("extra_content").filter(|v| v.is_object()).cloned(),
            id: self.assign(call.get("id").and_then(Value::as_str)),
            name: field("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .trim()
                .to_owned(),
            arguments: arguments_text(field("arguments")),
        })
    }
}

/// A fresh call id: 9 letters and digits, a form every server accepts (Mistral requires it).
pub(crate) fn fresh_call_id() -> String {
    ak_core::request::new_id()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(9)
        .collect()
}

/// The machine-readable code of an error body answered with HTTP `status`, in any of the
/// shapes servers use, never its free text: `{"error": {"code"|"type"}}`,
/// `{"object": "error", "code"|"type"}`, `{"error": "...", "error_type"}`
/// (text-generation-inference), `[{"error": {"status"}}]` (Gemini), `{"errors": [{"code"}]}`
/// (Cloudflare). A numeric code that only repeats `status` gives way to the error's kind.
/// `None` for `{"detail": ...}`, plain text, HTML and the like.
pub(crate) fn error_code(bytes: &[u8], status: u16) -> Option<String> {
    error_code_of(&serde_json::from_slice(bytes).ok()?, status)
}

fn error_code_of(body: &Value, status: u16) -> Option<String> {
    let body = match body {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let token = |v: &Value| match v {
        Value::String(s) => {
            let s = s.trim();
            let ok = !s.is_empty()
                && s.len() <= 64
                && !matches!(s.to_ascii_lowercase().as_str(), "none" | "null")
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-'));
            ok.then(|| s.to_owned())
        }
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    };
    let pick = |obj: &Value, keys: &[&str]| keys.iter().find_map(|k| obj.get(*k).and_then(token));
    // A code that repeats the HTTP status says nothing new; the error's kind (`type`, Gemini's
    // `status`, TGI's `error_type`) does.
    let best = |obj: &Value, kinds: &[&str]| {
        let code = pick(obj, &["code"]);
        match code {
            Some(c) if c.parse::<u16>().ok() != Some(status) => Some(c),
            repeated => pick(obj, kinds).or(repeated),
        }
    };
    match body.get("error") {
        Some(error @ Value::Object(_)) => best(error, &["status", "type"]),
        Some(Value::String(_)) => best(body, &["error_type", "type"]),
        _ if body.get("object").and_then(Value::as_str) == Some("error") => best(body, &["type"]),
        // Cloudflare's API envelope: {"success": false, "errors": [{"code", "message"}]}.
        _ => match body.get("errors") {
            Some(Value::Array(errors)) => errors.first().and_then(|e| best(e, &["type"])),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> ModelReply {
        read_reply(v.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e:?}"))
    }

    fn choice(message: Value, finish: Value) -> Value {
        json!({"choices": [{"message": message, "finish_reason": finish}]})
    }

    #[test]
    fn the_minimal_reply_is_enough() {
        let r = read(json!({"choices": [{"message": {"content": "Hi."}}]}));
        assert_eq!(r.content.as_deref(), Some("Hi."));
        assert_eq!((r.finish, r.usage), (FinishReason::Stop, Usage::default()));
    }

    #[test]
    fn finish_reasons_of_every_spelling() {
        for (given, expected) in [
            (json!("stop"), FinishReason::Stop),
            (json!("eos_token"), FinishReason::Stop),
            (json!(""), FinishReason::Stop),
            (json!(null), FinishReason::Stop),
            (json!(7), FinishReason::Stop),
            (json!("length"), FinishReason::Length),
            (json!("model_length"), FinishReason::Length),
            (json!("tool_calls"), FinishReason::ToolCalls),
            (json!("content_filter"), FinishReason::ContentFilter),
            (json!("RECITATION"), FinishReason::ContentFilter),
            (json!("PROHIBITED_CONTENT"), FinishReason::ContentFilter),
            (json!("refusal"), FinishReason::Refusal),
            (json!("error"), FinishReason::Error),
        ] {
            let r = read(choice(json!({"content": "x"}), given.clone()));
            assert_eq!(r.finish, expected, "{given}");
        }
    }

    #[test]
    fn content_parts_keep_text_and_drop_thinking() {
        let r = read(choice(
            json!({"content": [
                {"type": "thinking", "thinking": [{"type": "text", "text": "secret plan"}]},
                {"type": "text", "text": "Hello "},
                "there."
            ], "reasoning_content": "more thoughts"}),
            json!("stop"),
        ));
        assert_eq!(r.content.as_deref(), Some("Hello there."));
        let r = read(choice(
            json!({"content": "<think>\nhmm\n</think>\n\nWilliam won."}),
            json!("stop"),
        ));
        assert_eq!(r.content.as_deref(), Some("William won."));
        let r = read(choice(
            json!({"content": "<think>never finished"}),
            json!("length"),
        ));
        assert_eq!(r.content, None);
        let r = read(choice(json!({"content": "  \n"}), json!("stop")));
        assert_eq!(r.content, None);
        for (content, answer) in [
            (
                "Okay, the user asks... 1066.\n</think>\n\nWilliam won.",
                Some("William won."),
            ),
            (
                "<thinking>plan</thinking>\nWilliam won.",
                Some("William won."),
            ),
            (
                "<|channel|>analysis<|message|>think<|end|><|start|>assistant<|channel|>final<|message|>William won.<|return|>",
                Some("William won."),
            ),
            ("<|channel|>analysis<|message|>still thinking", None),
        ] {
            let r = read(choice(json!({"content": content}), json!("stop")));
            assert_eq!(r.content.as_deref(), answer, "{content}");
        }
        let r = read(choice(
            json!({"content": [{"type": "text", "text": {"value": "Hi", "annotations": []}}]}),
            json!("stop"),
        ));
        assert_eq!(r.content.as_deref(), Some("Hi"));
    }

    #[test]
    fn refusals_are_read() {
        let r = read(choice(
            json!({"content": null, "refusal": "I cannot help with that request."}),
            json!("stop"),
        ));
        assert_eq!(
            (r.content, r.refusal.as_deref()),
            (None, Some("I cannot help with that request."))
        );
        let r = read(choice(
            json!({"content": [{"type": "refusal", "refusal": "I can't help"}]}),
            json!("stop"),
        ));
        assert_eq!(
            (r.content, r.refusal.as_deref()),
            (None, Some("I can't help"))
        );
        let bom = [
            b"\xef\xbb\xbf".as_slice(),
            br#"{"choices": [{"message": {"content": "x"}}]}"#,
        ]
        .concat();
        assert!(
            read_reply(&bom).is_ok(),
            "a byte order mark is not an error"
        );
    }

    #[test]
    fn tool_calls_in_every_shape_get_usable_ids_and_arguments() {
        let r = read(choice(
            json!({"content": null, "tool_calls": [
                {"id": "", "function": {"name": "multiply", "arguments": {"a": 12, "b": 7}}},
                {"function": {"name": "transfer_to_math", "arguments": ""}},
                {"id": "0", "type": "function", "function": {"name": "a", "arguments": "{\"x\":1}"}},
                {"id": "0", "type": "function", "function": {"name": "b"}},
                {"id": "c", "type": "custom", "custom": {"name": "grammar"}}
            ]}),
            json!("stop"),
        ));
        let names: Vec<&str> = r.tool_calls.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["multiply", "transfer_to_math", "a", "b"]);
        assert_eq!(r.tool_calls[0].arguments, r#"{"a":12,"b":7}"#);
        assert_eq!(r.tool_calls[1].arguments, "{}");
        assert_eq!(r.tool_calls[3].arguments, "{}");
        assert_eq!(r.tool_calls[2].id, "0");
        let ids: std::collections::HashSet<&str> =
            r.tool_calls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids.len(),
            4,
            "ids are unique and non-empty: {:?}",
            r.tool_calls
        );
        assert!(ids.iter().all(|id| !id.is_empty()));

        let legacy = read(choice(
            json!({"function_call": {"name": "multiply", "arguments": "{}"}}),
            json!("function_call"),
        ));
        assert_eq!(legacy.tool_calls.len(), 1);
        assert_eq!(legacy.tool_calls[0].name, "multiply");
    }

    #[test]
    fn usage_missing_partial_or_as_text() {
        let r = read(json!({"choices": [{"message": {"content": "x"}}],
            "usage": {"prompt_tokens": "10", "completion_tokens": 5.0}}));
        assert_eq!(
            r.usage,
            Usage {
                prompt_tokens: 10,
                completion_tokens: 5,
                total_tokens: 15
            }
        );
        let r = read(json!({"choices": [{"message": {"content": "x"}}], "usage": null}));
        assert_eq!(r.usage, Usage::default());
        let r = read(json!({"choices": [{"message": {"content": "x"}}],
            "usage": {"prompt_tokens": 18446744073709551615u64, "completion_tokens": 1e30}}));
        assert_eq!(r.usage.total_tokens, u64::MAX, "saturates, never overflows");
    }

    #[test]
    fn only_no_json_or_no_choice_is_invalid() {
        for (body, says) in [
            (&b"<html><body>502 Bad Gateway</body></html>"[..], "HTML"),
            (b"", "empty"),
            (b"upstream connect error", "not JSON"),
            (b"[1, 2]", "array"),
            (br#"{"choices": []}"#, "no choices"),
            (br#"{"id": "x", "object": "chat.completion"}"#, "no choices"),
        ] {
            match read_reply(body) {
                Err(ReadError::Invalid(why)) => assert!(why.contains(says), "{why}"),
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(body)),
            }
        }
        let embedded =
            read_reply(br#"{"error": {"code": 429, "message": "Rate limit exceeded upstream"}}"#);
        assert_eq!(
            embedded,
            Err(ReadError::Embedded {
                status: 429,
                code: Some("429".into())
            })
        );
    }

    #[test]
    fn error_codes_in_every_shape_and_never_free_text() {
        for (body, code) in [
            (
                json!({"error": {"message": "Incorrect API key provided: sk-abc", "type": "invalid_request_error", "code": "invalid_api_key"}}),
                Some("invalid_api_key"),
            ),
            (
                json!({"error": {"message": "m", "type": "invalid_request_error", "code": null}}),
                Some("invalid_request_error"),
            ),
            (
                json!({"object": "error", "message": "m", "type": "BadRequestError", "code": 400}),
                Some("BadRequestError"),
            ),
            (
                json!({"error": {"code": 400, "message": "m", "type": "exceed_context_size_error"}}),
                Some("exceed_context_size_error"),
            ),
            (
                json!({"error": {"message": "m", "type": "None", "code": "400"}}),
                Some("400"),
            ),
            (
                json!({"error": {"message": "m", "type": "invalid_request_error", "code": "401"}}),
                Some("401"),
            ),
            (
                json!({"success": false, "errors": [{"code": 10000, "message": "Authentication error"}]}),
                Some("10000"),
            ),
            (
                json!({"error": "Input validation error: too long", "error_type": "validation"}),
                Some("validation"),
            ),
            (
                json!([{"error": {"code": 400, "message": "m", "status": "INVALID_ARGUMENT"}}]),
                Some("INVALID_ARGUMENT"),
            ),
            (json!({"error": "model not found"}), None),
            (json!({"detail": "Not authenticated"}), None),
            (json!({"message": "Unauthorized"}), None),
            (
                json!({"error": {"message": "m", "code": "this is free text, not a code"}}),
                None,
            ),
        ] {
            assert_eq!(
                error_code(body.to_string().as_bytes(), 400).as_deref(),
                code,
                "{body}"
            );
        }
        assert_eq!(error_code(b"<html>nginx</html>", 502), None);
        let mistral =
            json!({"object": "error", "message": "m", "type": "rate_limited", "code": "1300"});
        assert_eq!(
            error_code(mistral.to_string().as_bytes(), 429).as_deref(),
            Some("1300"),
            "a code of its own is kept"
        );
    }
}
