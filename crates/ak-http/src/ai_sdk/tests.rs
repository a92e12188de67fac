use super::*;
use crate::sse::parse_sse;

fn encode(events: Vec<RunEvent>) -> (Vec<Value>, bool) {
    let mut encoder = UiMessageEncoder::new("msg-r1");
    let mut text = String::new();
    for event in &events {
        text.push_str(&encoder.encode(None, event));
    }
    text.push_str(&encoder.finish(None));
    let done = text.ends_with("data: [DONE]\n\n");
    let chunks = parse_sse(&text)
        .into_iter()
        .map(|(_, _, data)| data)
        .filter(|d| !d.is_null())
        .collect();
    (chunks, done)
}

fn types(chunks: &[Value]) -> Vec<&str> {
    chunks.iter().filter_map(|c| c["type"].as_str()).collect()
}

#[test]
fn a_run_is_a_ui_message_stream_with_dynamic_tool_parts() {
    let (chunks, done) = encode(vec![
        RunEvent::Agent {
            agent: "triage".into(),
        },
        RunEvent::Agent {
            agent: "math".into(),
        },
        RunEvent::ToolCall {
            id: "call_1".into(),
            name: "multiply".into(),
            arguments: json!({"a": 12, "b": 7}),
        },
        RunEvent::ToolResult {
            id: "call_1".into(),
            name: "multiply".into(),
            ok: true,
        },
        RunEvent::Delta {
            text: "12 * 7 = 84".into(),
        },
        RunEvent::Done(
            json!({"result": "12 * 7 = 84", "agent": "math", "request_id": "r1", "session_id": "c1"}),
        ),
    ]);
    assert!(done, "ends with [DONE]");
    assert_eq!(
        types(&chunks),
        [
            "start",
            "start-step",
            "data-agent",
            "data-agent",
            "tool-input-available",
            "tool-output-available",
            "finish-step",
            "start-step",
            "text-start",
            "text-delta",
            "text-end",
            "finish-step",
            "finish",
        ]
    );
    assert_eq!(chunks[0]["messageId"], "msg-r1");
    assert_eq!(chunks[4]["input"], json!({"a": 12, "b": 7}));
    assert_eq!(chunks[4]["dynamic"], true);
    assert_eq!(chunks[4]["providerExecuted"], true);
    let finish = chunks.last().unwrap_or(&Value::Null);
    assert_eq!(finish["finishReason"], "stop");
    assert_eq!(finish["messageMetadata"]["agent"], "math");
    assert_eq!(finish["messageMetadata"]["session_id"], "c1");
}

#[test]
fn a_failed_tool_is_an_output_error_and_a_failed_run_an_error_chunk() {
    let (chunks, _) = encode(vec![
        RunEvent::ToolCall {
            id: "c".into(),
            name: "t".into(),
            arguments: json!({}),
        },
        RunEvent::ToolResult {
            id: "c".into(),
            name: "t".into(),
            ok: false,
        },
        RunEvent::Error(json!({"status": 502, "error": "model provider failed"})),
    ]);
    assert!(types(&chunks).contains(&"tool-output-error"));
    let last = chunks.last().unwrap_or(&Value::Null);
    assert_eq!(last["type"], "error");
    assert_eq!(last["errorText"], "model provider failed");
}

#[test]
fn ui_messages_become_the_prompt_and_a_text_history() {
    let messages = json!([
        {"id": "u1", "role": "user", "parts": [{"type": "text", "text": "what is 12 * 7"}]},
        {"id": "a1", "role": "assistant", "parts": [{"type": "step-start"}, {"type": "dynamic-tool", "toolName": "multiply", "toolCallId": "c", "state": "output-available", "input": {}, "output": {"ok": true}}, {"type": "text", "text": "84"}]},
        {"id": "u2", "role": "user", "parts": [{"type": "text", "text": "and times 2?"}]}
    ]);
    let (prompt, history) = conversation(Some(&messages)).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prompt, "and times 2?");
    assert_eq!(
        history,
        vec![
            json!({"role": "user", "content": "what is 12 * 7"}),
            json!({"role": "assistant", "content": "84"}),
        ]
    );
    assert!(conversation(Some(&json!([]))).is_err());
    assert!(
        conversation(Some(
            &json!([{"id": "a", "role": "assistant", "parts": []}])
        ))
        .is_err()
    );
}

#[test]
fn a_retried_attempt_continues_the_open_text() {
    let (chunks, done) = encode(vec![
        RunEvent::Agent { agent: "a".into() },
        RunEvent::Delta {
            text: "The ans".into(),
        },
        RunEvent::Error(json!({"status": 500, "error": "runner died"})),
        RunEvent::Retry { agent: "a".into() },
        RunEvent::Delta {
            text: "The answer is 42.".into(),
        },
        RunEvent::Done(json!({"result": "The answer is 42."})),
    ]);
    assert!(done);
    let text: String = chunks
        .iter()
        .filter(|c| c["type"] == "text-delta")
        .filter_map(|c| c["delta"].as_str())
        .collect();
    assert_eq!(text, "The answer is 42.");
    assert!(!types(&chunks).contains(&"error"), "{chunks:?}");
}
