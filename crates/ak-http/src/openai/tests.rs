use super::*;
use crate::sse::parse_sse;

fn parse(body: Value) -> Result<Parsed, OpenAiError> {
    parse_request(
        body.as_object().unwrap_or(&Map::new()),
        &http::HeaderMap::new(),
    )
}

fn parse_with(body: Value, headers: &[(&'static str, &str)]) -> Result<Parsed, OpenAiError> {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.insert(
            *name,
            HeaderValue::from_str(value).unwrap_or_else(|e| panic!("{e}")),
        );
    }
    parse_request(body.as_object().unwrap_or(&Map::new()), &map)
}

fn refused(body: Value) -> Value {
    match parse(body) {
        Ok(parsed) => panic!("accepted: {parsed:?}"),
        Err(e) => {
            assert_eq!(e.status, StatusCode::BAD_REQUEST);
            e.body()["error"].clone()
        }
    }
}

#[test]
fn the_last_user_message_is_the_prompt_and_the_rest_its_history() {
    let parsed = parse(json!({
        "model": "math",
        "messages": [
            {"role": "system", "content": "Answer briefly."},
            {"role": "user", "content": "what is 2 * 3"},
            {"role": "assistant", "content": "6"},
            {"role": "user", "content": [{"type": "text", "text": "and"}, {"type": "text", "text": "times 7?"}]}
        ],
        "temperature": 0.2,
        "user": "someone"
    }))
    .unwrap_or_else(|e| panic!("{:?}", e.body()));
    assert_eq!(parsed.prompt, "and\ntimes 7?");
    assert_eq!(
        parsed.history,
        vec![
            json!({"role": "system", "content": "Answer briefly."}),
            json!({"role": "user", "content": "what is 2 * 3"}),
            json!({"role": "assistant", "content": "6"}),
        ]
    );
    assert!(!parsed.stream);
    assert_eq!(parsed.session_id, None);
}

#[test]
fn client_tool_exchanges_and_images_of_earlier_turns_are_left_out() {
    let parsed = parse(json!({
        "model": "m",
        "messages": [
            {"role": "developer", "content": "Be kind."},
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:x"}}, {"type": "text", "text": "what is this"}]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "look", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c1", "content": "a cat"},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "thanks"}
        ]
    }))
    .unwrap_or_else(|e| panic!("{:?}", e.body()));
    assert_eq!(
        parsed.history,
        vec![
            json!({"role": "system", "content": "Be kind."}),
            json!({"role": "user", "content": "what is this"}),
            json!({"role": "assistant", "content": "A cat."}),
        ]
    );
}

#[test]
fn what_cannot_be_honoured_is_refused_naming_the_parameter() {
    let user = json!([{"role": "user", "content": "hi"}]);
    let cases = [
        (json!({"model": "m", "messages": user, "n": 2}), "n"),
        (
            json!({"model": "m", "messages": user, "logprobs": true}),
            "logprobs",
        ),
        (
            json!({"model": "m", "messages": user, "modalities": ["text", "audio"]}),
            "modalities",
        ),
        (
            json!({"model": "m", "messages": user, "response_format": {"type": "json_object"}}),
            "response_format",
        ),
        (
            json!({"model": "m", "messages": user, "tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "required"}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "messages": user, "tool_choice": {"type": "function", "function": {"name": "f"}}}),
            "tool_choice",
        ),
        (
            json!({"model": "m", "messages": user, "stream": "yes"}),
            "stream",
        ),
        (json!({"model": "m"}), "messages"),
        (json!({"model": "m", "messages": []}), "messages"),
        (
            json!({"model": "m", "messages": [{"role": "assistant", "content": "hi"}]}),
            "messages",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": "  "}]}),
            "messages",
        ),
        (
            json!({"model": "m", "messages": [{"content": "hi"}]}),
            "messages",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages",
        ),
    ];
    for (body, param) in cases {
        let error = refused(body.clone());
        assert_eq!(error["param"], param, "{body}: {error}");
        assert_eq!(error["type"], "invalid_request_error");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Tools the model may use are accepted (and not offered): Open WebUI sends its own.
    let accepted = parse(
        json!({"model": "m", "messages": user, "n": 1, "tool_choice": "auto",
        "tools": [{"type": "function", "function": {"name": "get_time"}}],
        "response_format": {"type": "text"}, "logprobs": false, "modalities": ["text"]}),
    );
    assert!(accepted.is_ok());
}

#[test]
fn headers_name_a_session_and_an_idempotency_key() {
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}], "stream": true, "stream_options": {"include_usage": true}});
    let parsed = parse_with(
        body.clone(),
        &[
            ("x-session-id", "chat-7"),
            ("idempotency-key", "key-1"),
            ("x-request-id", "other"),
        ],
    )
    .unwrap_or_else(|e| panic!("{:?}", e.body()));
    assert_eq!(parsed.session_id.as_deref(), Some("chat-7"));
    assert_eq!(parsed.request_id.as_deref(), Some("key-1"));
    assert!(parsed.stream && parsed.include_usage);
    let parsed = parse_with(body.clone(), &[("x-request-id", "req-9")])
        .unwrap_or_else(|e| panic!("{:?}", e.body()));
    assert_eq!(
        parsed.request_id, None,
        "a proxy's X-Request-Id is not an idempotency key"
    );
    let Err(bad) = parse_with(body, &[("idempotency-key", "has spaces!")]) else {
        panic!("an id with spaces was accepted");
    };
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert!(bad.message.contains("idempotency-key"), "{}", bad.message);
}

fn encode(events: Vec<RunEvent>, include_usage: bool) -> String {
    let mut encoder = ChunkEncoder::new("r-1", "triage", include_usage);
    let mut text = String::new();
    let mut last = None;
    for event in &events {
        text.push_str(&encoder.encode(None, event));
        if event.is_last() {
            last = Some(event.clone());
        }
    }
    text.push_str(&encoder.finish(last.as_ref()));
    text
}

/// The JSON chunks of a stream (`[DONE]` is not JSON and is left out).
fn chunks(text: &str) -> Vec<Value> {
    parse_sse(text)
        .into_iter()
        .map(|(_, _, data)| data)
        .filter(|data| !data.is_null())
        .collect()
}

fn content(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

#[test]
fn a_run_is_chunks_a_finish_reason_usage_and_done() {
    let text = encode(
        vec![
            RunEvent::Agent {
                agent: "triage".into(),
            },
            RunEvent::ToolCall {
                id: "call-1".into(),
                name: "transfer_to_math".into(),
                arguments: json!({}),
            },
            RunEvent::Agent {
                agent: "math".into(),
            },
            RunEvent::ToolCall {
                id: "call-1".into(),
                name: "multiply".into(),
                arguments: json!({"a": 6, "b": 7}),
            },
            RunEvent::ToolResult {
                id: "call-1".into(),
                name: "multiply".into(),
                ok: true,
            },
            RunEvent::Delta {
                text: "6 * 7 ".into(),
            },
            RunEvent::Delta {
                text: "= 42".into(),
            },
            RunEvent::Done(
                json!({"result": "6 * 7 = 42", "agent": "math", "usage": {"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}}),
            ),
        ],
        true,
    );
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(
        !text.contains("tool_calls"),
        "our tool calls stay inside the run: {text}"
    );
    let chunks = chunks(&text);
    assert_eq!(
        chunks[0]["choices"][0]["delta"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(content(&chunks), "6 * 7 = 42");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"][0]["finish_reason"].is_null())
        .collect();
    assert_eq!(finish.len(), 1);
    assert_eq!(finish[0]["choices"][0]["finish_reason"], "stop");
    let usage = chunks.last().unwrap_or(&Value::Null);
    assert_eq!(usage["choices"], json!([]), "{text}");
    assert_eq!(usage["usage"]["total_tokens"], 13);
    assert!(
        chunks
            .iter()
            .all(|c| c["id"] == "chatcmpl-r-1" && c["object"] == "chat.completion.chunk")
    );
    assert_eq!(
        finish[0]["model"], "math",
        "the answering agent names the model"
    );
}

#[test]
fn an_answer_without_deltas_is_sent_whole_and_a_cut_one_says_length() {
    let text = encode(
        vec![RunEvent::Done(
            json!({"result": "stored answer", "truncated": true}),
        )],
        false,
    );
    let chunks = chunks(&text);
    assert_eq!(content(&chunks), "stored answer");
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "length")
    );
    assert!(
        chunks.iter().all(|c| c.get("usage").is_none()),
        "no usage chunk unless asked"
    );
}

#[test]
fn a_failure_is_one_error_event_without_done() {
    let text = encode(
        vec![
            RunEvent::Agent {
                agent: "triage".into(),
            },
            RunEvent::Delta {
                text: "part".into(),
            },
            RunEvent::Error(
                json!({"status": 502, "error": "model provider failed: 500", "request_id": "r-1"}),
            ),
        ],
        true,
    );
    assert!(!text.contains("[DONE]"), "{text}");
    let last = chunks(&text).pop().unwrap_or(Value::Null);
    assert_eq!(last["error"]["type"], "server_error");
    assert_eq!(last["error"]["message"], "model provider failed: 500");
}

#[test]
fn a_retried_attempt_continues_the_text_the_client_has() {
    let text = encode(
        vec![
            RunEvent::Agent { agent: "a".into() },
            RunEvent::Delta {
                text: "The answer ".into(),
            },
            RunEvent::Error(json!({"status": 500, "error": "runner died"})),
            RunEvent::Retry { agent: "a".into() },
            RunEvent::Delta {
                text: "The ans".into(),
            },
            RunEvent::Delta {
                text: "wer is 42.".into(),
            },
            RunEvent::Done(json!({"result": "The answer is 42."})),
        ],
        false,
    );
    assert_eq!(content(&chunks(&text)), "The answer is 42.");
    assert!(!text.contains("runner died"), "{text}");
    let diverged = encode(
        vec![
            RunEvent::Delta {
                text: "First try".into(),
            },
            RunEvent::Retry { agent: "a".into() },
            RunEvent::Delta {
                text: "Second".into(),
            },
            RunEvent::Done(json!({"result": "Second"})),
        ],
        false,
    );
    assert_eq!(content(&chunks(&diverged)), "First try\n\nSecond");
}

#[test]
fn a_stream_cut_before_the_answer_ends_with_an_error() {
    let text = encode(
        vec![RunEvent::Delta {
            text: "half".into(),
        }],
        false,
    );
    let last = chunks(&text).pop().unwrap_or(Value::Null);
    assert_eq!(last["error"]["code"], "timeout");
}

#[test]
fn errors_have_openai_shape_and_retry_hints() {
    let response =
        OpenAiError::from(ApiError::PayloadTooLarge { size: 10, limit: 5 }).into_response();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    let error = &body["error"];
    for key in ["message", "type", "param", "code"] {
        assert!(error.get(key).is_some(), "{key} in {body}");
    }
    assert_eq!(error["code"], "request_too_large");
    let busy = OpenAiError::from_event(
        &json!({"status": 503, "error": "SQS is unavailable", "request_id": "r"}),
    )
    .into_response();
    assert_eq!(
        busy.headers().get("retry-after").map(|v| v.as_bytes()),
        Some(&b"2"[..])
    );
    assert_eq!(
        busy.headers().get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"r"[..])
    );
    let late = OpenAiError::new(StatusCode::GATEWAY_TIMEOUT, "still running").into_response();
    assert_eq!(
        late.headers().get("x-should-retry").map(|v| v.as_bytes()),
        Some(&b"false"[..])
    );
}

#[test]
fn text_before_a_tool_call_is_set_apart_and_the_answer_is_not_repeated() {
    let text = encode(
        vec![
            RunEvent::Agent {
                agent: "triage".into(),
            },
            RunEvent::Delta {
                text: "Let me hand you to math. ".into(),
            },
            RunEvent::Agent {
                agent: "math".into(),
            },
            RunEvent::Delta {
                text: "Computing. ".into(),
            },
            RunEvent::ToolCall {
                id: "c1".into(),
                name: "multiply".into(),
                arguments: json!({}),
            },
            RunEvent::ToolResult {
                id: "c1".into(),
                name: "multiply".into(),
                ok: true,
            },
            RunEvent::Delta {
                text: "It is ".into(),
            },
            RunEvent::Delta { text: "84.".into() },
            RunEvent::Done(json!({"result": "It is 84.", "agent": "math"})),
        ],
        false,
    );
    assert_eq!(
        content(&chunks(&text)),
        "Let me hand you to math. \n\nComputing. \n\nIt is 84."
    );
    // A stored answer arriving whole after text of an earlier segment.
    let whole = encode(
        vec![
            RunEvent::Delta {
                text: "Checking. ".into(),
            },
            RunEvent::ToolCall {
                id: "c1".into(),
                name: "t".into(),
                arguments: json!({}),
            },
            RunEvent::Done(json!({"result": "Done."})),
        ],
        false,
    );
    assert_eq!(content(&chunks(&whole)), "Checking. \n\nDone.");
}
