//! Reading a streamed Chat Completions reply (`"stream": true`: server-sent events of
//! `chat.completion.chunk` objects) as real servers send it, with the tolerance of
//! [`super::reply`]: text deltas (string or parts), tool-call deltas assembled by `index` (or by
//! position or id when a server leaves the index out; whole calls in one chunk, as Ollama sends
//! them; arguments as text fragments or one JSON object), refusal deltas, `reasoning_content`
//! deltas (kept for the tool loop, never shown), usage from whichever chunk carries it (a final
//! chunk with `choices: []` under `stream_options.include_usage`, the finish chunk, or Groq's
//! `x_groq.usage`), comment lines (`: keep-alive`, `: OPENROUTER PROCESSING`), an `error` object
//! in a chunk, and llama.cpp's `error:` lines. Reasoning written into the content (a leading
//! `<think>` or `<thinking>` block, gpt-oss's analysis channel) is held back, so the text handed
//! on is the answer only.

use super::reply::{
    CallIds, ReadError, arguments_text, embedded_error, finish_reason, first_choice, strip_think,
    usage_of,
};
use crate::model::{FinishReason, ModelReply, ToolCall, Usage};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

#[derive(Default)]
struct PartialCall {
    id: Option<String>,
    name: String,
    arguments: String,
    arguments_value: Option<Value>,
    extra: Option<Value>,
}

/// Where the answer text stands while it streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Text {
    /// Nothing but whitespace yet, or the start of a tag that may open a reasoning block.
    Undecided,
    /// Inside a leading reasoning block: held back until it closes.
    Reasoning(&'static str),
    /// gpt-oss's raw channels: held back whole, the answer taken at the end.
    Channels,
    /// Answer text: handed on as it comes.
    Answer,
}

/// Assembles a streamed reply from the bytes of its body.
pub(crate) struct StreamReader {
    pending: Vec<u8>,
    field: Option<String>,
    data: String,
    raw: String,
    state: Text,
    emitted: usize,
    refusal: String,
    reasoning: String,
    calls: BTreeMap<usize, PartialCall>,
    finish: Option<FinishReason>,
    usage: Option<Usage>,
    /// The model the chunks name.
    model: Option<String>,
    error: Option<ReadError>,
    chunks: usize,
    /// The body's first bytes, while no chunk came: a server that answers a streaming request
    /// with one JSON body (an error, say) under a stream's content type is read for what it is.
    start: Vec<u8>,
}

/// How much of a body is kept while it has carried no chunk.
const START_BYTES: usize = 64 * 1024;

impl Default for StreamReader {
    fn default() -> Self {
        Self {
            pending: Vec::new(),
            field: None,
            data: String::new(),
            raw: String::new(),
            state: Text::Undecided,
            emitted: 0,
            refusal: String::new(),
            reasoning: String::new(),
            calls: BTreeMap::new(),
            finish: None,
            usage: None,
            model: None,
            error: None,
            chunks: 0,
            start: Vec::new(),
        }
    }
}

impl StreamReader {
    /// Feeds body bytes; returns the answer text that became known (to hand on at once).
    pub(crate) fn feed(&mut self, bytes: &[u8]) -> String {
        if self.chunks == 0 && self.start.len() < START_BYTES {
            let room = START_BYTES - self.start.len();
            self.start
                .extend_from_slice(&bytes[..bytes.len().min(room)]);
        }
        self.pending.extend_from_slice(bytes);
        self.lines(false)
    }

    /// Handles the complete lines waiting: a line ends at LF, CRLF or a lone CR (all three are
    /// SSE line ends). A CR last in the buffer may be the start of a CRLF, so it waits for
    /// more unless the body ended.
    fn lines(&mut self, at_end: bool) -> String {
        let mut out = String::new();
        while let Some(pos) = self.pending.iter().position(|b| matches!(b, b'\n' | b'\r')) {
            let cr = self.pending[pos] == b'\r';
            let end = match self.pending.get(pos + 1) {
                Some(b'\n') if cr => pos + 1,
                None if cr && !at_end => break,
                _ => pos,
            };
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let line = line.trim_end_matches(['\n', '\r']);
            out.push_str(&self.line(line));
        }
        out
    }

    /// One SSE line: `data:`/`error:` fields gather, a blank line dispatches, comments and other
    /// fields are skipped.
    fn line(&mut self, line: &str) -> String {
        if line.is_empty() {
            return self.dispatch();
        }
        if line.starts_with(':') {
            return String::new();
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        if !matches!(field, "data" | "error") {
            return String::new();
        }
        if self.field.as_deref() != Some(field) && !self.data.is_empty() {
            let out = self.dispatch();
            self.field = Some(field.to_owned());
            self.data.push_str(value);
            return out;
        }
        self.field = Some(field.to_owned());
        if !self.data.is_empty() {
            self.data.push('\n');
        }
        self.data.push_str(value);
        String::new()
    }

    fn dispatch(&mut self) -> String {
        let data = std::mem::take(&mut self.data);
        let field = self.field.take();
        let data = data.trim();
        if data.is_empty() || data == "[DONE]" {
            return String::new();
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return String::new();
        };
        if field.as_deref() == Some("error") {
            // llama.cpp: `error: {"code": 400, "message": ..., "type": ...}`.
            let wrapped = serde_json::json!({"error": chunk});
            self.error = wrapped.as_object().and_then(embedded_error);
            return String::new();
        }
        let Value::Object(chunk) = chunk else {
            return String::new();
        };
        self.chunks += 1;
        if self.model.is_none()
            && let Some(Value::String(model)) = chunk.get("model")
            && !model.is_empty()
        {
            self.model = Some(model.clone());
        }
        if let Some(usage) = chunk
            .get("usage")
            .filter(|u| u.is_object())
            .or_else(|| chunk.get("x_groq").and_then(|x| x.get("usage")))
        {
            self.usage = Some(usage_of(Some(usage)));
        }
        let Some(choice) = first_choice(&chunk) else {
            if let Some(error) = embedded_error(&chunk) {
                self.error = Some(error);
            }
            return String::new();
        };
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish = Some(finish_reason(Some(reason)));
        }
        let empty = Map::new();
        let delta = ["delta", "message"]
            .iter()
            .find_map(|k| choice.get(*k).and_then(Value::as_object))
            .unwrap_or(&empty);
        // A refusal is the answer: its text goes out as it comes.
        let mut out = String::new();
        if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
            self.refusal.push_str(text);
            out.push_str(text);
        }
        if let Some(text) = delta.get("reasoning_content").and_then(Value::as_str) {
            self.reasoning.push_str(text);
        }
        match delta.get("tool_calls") {
            Some(Value::Array(calls)) => {
                for (position, call) in calls.iter().enumerate() {
                    self.tool_call_delta(position, call);
                }
            }
            Some(call @ Value::Object(_)) => self.tool_call_delta(0, call),
            _ => {}
        }
        let content = match delta.get("content").or_else(|| choice.get("text")) {
            Some(Value::String(text)) => self.text(text),
            Some(Value::Array(parts)) => {
                let text: String = parts
                    .iter()
                    .filter_map(|p| match p {
                        Value::String(s) => Some(s.clone()),
                        Value::Object(o) => match o.get("type").and_then(Value::as_str) {
                            Some("text" | "output_text") | None => {
                                o.get("text").and_then(Value::as_str).map(str::to_owned)
                            }
                            Some("refusal") => {
                                if let Some(r) = o.get("refusal").and_then(Value::as_str) {
                                    self.refusal.push_str(r);
                                }
                                None
                            }
                            Some(_) => None,
                        },
                        _ => None,
                    })
                    .collect();
                self.text(&text)
            }
            _ => String::new(),
        };
        out.push_str(&content);
        out
    }

    fn tool_call_delta(&mut self, position: usize, call: &Value) {
        let Some(call) = call.as_object() else { return };
        if call
            .get("type")
            .and_then(Value::as_str)
            .is_some_and(|t| t != "function")
        {
            return;
        }
        let id = call
            .get("id")
            .and_then(Value::as_str)
            .filter(|id| !id.is_empty());
        let function = call.get("function").and_then(Value::as_object);
        let field = |k: &str| function.and_then(|f| f.get(k)).or_else(|| call.get(k));
        let names_a_tool = field("name")
            .and_then(Value::as_str)
            .is_some_and(|n| !n.trim().is_empty());
        let index = call
            .get("index")
            .and_then(Value::as_u64)
            .and_then(|i| usize::try_from(i).ok())
            .or_else(|| {
                // No index: the call with this id; else the last call, when this is more of it
                // (no id, and no second name for a call that has one); else a new call.
                id.and_then(|id| {
                    self.calls
                        .iter()
                        .find(|(_, c)| c.id.as_deref() == Some(id))
                        .map(|(i, _)| *i)
                })
            })
            .unwrap_or_else(|| match self.calls.iter().next_back() {
                Some((last, c)) if id.is_none() && (!names_a_tool || c.name.is_empty()) => *last,
                _ => self
                    .calls
                    .keys()
                    .next_back()
                    .map_or(position, |last| last + 1),
            });
        let entry = self.calls.entry(index).or_default();
        if entry.id.is_none() {
            entry.id = id.map(str::to_owned);
        }
        if let Some(name) = field("name").and_then(Value::as_str)
            && entry.name.is_empty()
        {
            name.trim().clone_into(&mut entry.name);
        }
        match field("arguments") {
            Some(Value::String(piece)) => entry.arguments.push_str(piece),
            Some(value @ (Value::Object(_) | Value::Array(_))) => {
                entry.arguments_value = Some(value.clone());
            }
            _ => {}
        }
        if let Some(extra) = call.get("extra_content").filter(|e| e.is_object()) {
            entry.extra = Some(extra.clone());
        }
    }

    /// New content text; returns what of it (and of what was held back) is answer.
    fn text(&mut self, piece: &str) -> String {
        self.raw.push_str(piece);
        loop {
            match self.state {
                Text::Answer => {
                    let new = self.raw[self.emitted..].to_owned();
                    self.emitted = self.raw.len();
                    return new;
                }
                Text::Channels => return String::new(),
                Text::Reasoning(close) => {
                    let Some(end) = self.raw.find(close) else {
                        return String::new();
                    };
                    let after = end + close.len();
                    let rest = &self.raw[after..];
                    if rest.trim().is_empty() {
                        return String::new();
                    }
                    self.emitted = after + (rest.len() - rest.trim_start().len());
                    self.state = Text::Answer;
                }
                Text::Undecided => {
                    let start = self.raw.trim_start();
                    if start.is_empty() {
                        return String::new();
                    }
                    if start.starts_with("<|channel|>") {
                        self.state = Text::Channels;
                        continue;
                    }
                    let opened = [("<think>", "</think>"), ("<thinking>", "</thinking>")]
                        .iter()
                        .find(|(open, _)| start.starts_with(open))
                        .map(|(_, close)| *close);
                    if let Some(close) = opened {
                        self.state = Text::Reasoning(close);
                        continue;
                    }
                    let could_open = ["<think>", "<thinking>", "<|channel|>"]
                        .iter()
                        .any(|tag| tag.starts_with(start));
                    if could_open {
                        return String::new();
                    }
                    // Leading whitespace is part of the answer (the whole reply keeps it too).
                    self.emitted = 0;
                    self.state = Text::Answer;
                }
            }
        }
    }

    /// The reply, once the body ended.
    pub(crate) fn finish(mut self) -> Result<ModelReply, ReadError> {
        self.lines(true);
        if !self.pending.is_empty() {
            let rest = String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned();
            self.line(&rest);
        }
        if !self.data.is_empty() {
            self.dispatch();
        }
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        if self.chunks == 0 {
            // Not a stream after all: one JSON body (an answer, or an error object).
            if !looks_like_stream(&self.start) && self.start.len() < START_BYTES {
                return super::reply::read_reply(&self.start);
            }
            return Err(ReadError::Invalid(
                "the stream carried no chunk (no answer at all)".to_owned(),
            ));
        }
        let mut ids = CallIds::default();
        let tool_calls = std::mem::take(&mut self.calls)
            .into_values()
            .map(|call| ToolCall {
                id: ids.assign(call.id.as_deref()),
                name: call.name,
                arguments: match call.arguments_value {
                    Some(value) if call.arguments.trim().is_empty() => value.to_string(),
                    _ => arguments_text(Some(&Value::String(call.arguments))),
                },
                extra: call.extra,
            })
            .collect();
        let content = strip_think(&self.raw);
        let non_empty = |s: String| (!s.trim().is_empty()).then_some(s);
        Ok(ModelReply {
            content: non_empty(content.to_owned()),
            refusal: non_empty(std::mem::take(&mut self.refusal)),
            tool_calls,
            reasoning: non_empty(std::mem::take(&mut self.reasoning)),
            finish: self.finish.clone().unwrap_or_default(),
            usage: self.usage.unwrap_or_default(),
            model: self.model.take(),
        })
    }

    /// Text held back to be judged at the end (gpt-oss channels): what the answer turned out to
    /// be, beyond what was already handed on.
    pub(crate) fn unsent_answer(&self) -> String {
        match self.state {
            Text::Channels => strip_think(&self.raw).to_owned(),
            _ => String::new(),
        }
    }
}

/// Reads a whole streamed body at once (a server that streamed to a non-streaming request).
pub(crate) fn read_stream(bytes: &[u8]) -> Result<ModelReply, ReadError> {
    let mut reader = StreamReader::default();
    reader.feed(bytes);
    reader.feed(b"\n\n");
    reader.finish()
}

/// Whether a body is a stream of server-sent events rather than one JSON reply.
pub(crate) fn looks_like_stream(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(64)]);
    let start = text.trim_start();
    start.starts_with("data:") || start.starts_with(':') || start.starts_with("event:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sse(chunks: &[Value]) -> String {
        let mut text: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        text.push_str("data: [DONE]\n\n");
        text
    }

    fn delta(d: Value) -> Value {
        json!({"choices": [{"index": 0, "delta": d, "finish_reason": null}]})
    }

    #[test]
    fn lone_cr_line_ends_and_leading_whitespace_are_kept_apart_right() {
        let body = sse(&[
            delta(json!({"content": "\n\n"})),
            delta(json!({"content": " Hello"})),
            delta(json!({"content": " world"})),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
        ])
        .replace("\n\n", "\r\r");
        for split in [1, 3, 1000] {
            let mut reader = StreamReader::default();
            let mut handed_on = String::new();
            for piece in body.as_bytes().chunks(split) {
                handed_on.push_str(&reader.feed(piece));
            }
            let reply = reader.finish().unwrap_or_else(|e| panic!("{e:?}"));
            assert_eq!(reply.content.as_deref(), Some("\n\n Hello world"));
            assert_eq!(
                handed_on, "\n\n Hello world",
                "the deltas add up to the answer"
            );
        }
    }

    #[test]
    fn one_json_body_under_a_stream_content_type_is_read_as_what_it_is() {
        let mut reader = StreamReader::default();
        reader.feed(br#"{"error": {"message": "Incorrect API key", "code": "invalid_api_key"}}"#);
        match reader.finish() {
            Err(ReadError::Embedded { code, .. }) => {
                assert_eq!(code.as_deref(), Some("invalid_api_key"));
            }
            other => panic!("{other:?}"),
        }
        let mut reader = StreamReader::default();
        reader.feed(
            json!({"choices": [{"message": {"role": "assistant", "content": "whole"}, "finish_reason": "stop"}]})
                .to_string()
                .as_bytes(),
        );
        let reply = reader.finish().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(reply.content.as_deref(), Some("whole"));
    }

    #[test]
    fn text_arrives_piece_by_piece_even_when_split_mid_line() {
        let body = sse(&[
            delta(json!({"role": "assistant", "content": ""})),
            delta(json!({"content": "William "})),
            delta(json!({"content": "won."})),
            json!({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}),
            json!({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}}),
        ]);
        let mut reader = StreamReader::default();
        let mut handed_on = String::new();
        for piece in body.as_bytes().chunks(7) {
            handed_on.push_str(&reader.feed(piece));
        }
        let reply = reader.finish().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(handed_on, "William won.");
        assert_eq!(reply.content.as_deref(), Some("William won."));
        assert_eq!(
            (reply.finish, reply.usage.total_tokens),
            (FinishReason::Stop, 5)
        );
    }

    #[test]
    fn tool_calls_assemble_by_index_and_without_one() {
        let body = sse(&[
            delta(
                json!({"tool_calls": [{"index": 0, "id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": ""}}]}),
            ),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\": 1"}}]})),
            delta(json!({"tool_calls": [{"index": 0, "function": {"arguments": "2, \"b\": 7}"}}]})),
            delta(
                json!({"tool_calls": [{"id": "", "function": {"name": "transfer_to_math", "arguments": {}}}]}),
            ),
        ]);
        let reply = read_stream(body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        let calls: Vec<(&str, &str)> = reply
            .tool_calls
            .iter()
            .map(|c| (c.name.as_str(), c.arguments.as_str()))
            .collect();
        assert_eq!(
            calls,
            [
                ("multiply", "{\"a\": 12, \"b\": 7}"),
                ("transfer_to_math", "{}")
            ]
        );
        assert!(reply.tool_calls.iter().all(|c| !c.id.is_empty()));
    }

    #[test]
    fn reasoning_is_held_back_while_it_streams() {
        let body = sse(&[
            delta(json!({"content": "<thi"})),
            delta(json!({"content": "nk>let me see"})),
            delta(json!({"content": "</think>\n\nWilliam"})),
            delta(json!({"content": " won.", "reasoning_content": "more"})),
        ]);
        let mut reader = StreamReader::default();
        let handed_on = reader.feed(body.as_bytes());
        assert_eq!(handed_on, "William won.");
        let reply = reader.finish().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(reply.content.as_deref(), Some("William won."));
        assert_eq!(reply.reasoning.as_deref(), Some("more"));
    }

    #[test]
    fn comments_errors_and_odd_shapes() {
        let body =
            ": OPENROUTER PROCESSING\n\ndata: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
        let reply = read_stream(body.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(reply.content.as_deref(), Some("Hi"));
        let llama = "error: {\"code\":400,\"message\":\"too long\",\"type\":\"exceed_context_size_error\"}\n\ndata: [DONE]\n\n";
        assert!(matches!(
            read_stream(llama.as_bytes()),
            Err(ReadError::Embedded { status: 400, .. })
        ));
        let midway = sse(&[
            delta(json!({"content": "partial"})),
            json!({"error": {"code": 502, "message": "upstream died"}}),
        ]);
        assert!(matches!(
            read_stream(midway.as_bytes()),
            Err(ReadError::Embedded { status: 502, .. })
        ));
        assert!(matches!(
            read_stream(b"data: [DONE]\n\n"),
            Err(ReadError::Invalid(_))
        ));
        let groq = sse(&[
            delta(json!({"content": "x"})),
            json!({"choices": [{"delta": {}, "finish_reason": "stop"}], "x_groq": {"usage": {"total_tokens": 9}}}),
        ]);
        assert_eq!(
            read_stream(groq.as_bytes())
                .map(|r| r.usage.total_tokens)
                .ok(),
            Some(9)
        );
        assert!(looks_like_stream(b"data: {}") && !looks_like_stream(b"{\"choices\": []}"));
    }
}
