use super::*;
use crate::sse::parse_sse;

fn encode(events: Vec<RunEvent>) -> Vec<Value> {
    let mut encoder = AgUiEncoder::new("thread-1", "run-1");
    let mut text = String::new();
    for event in &events {
        text.push_str(&encoder.encode(None, event));
    }
    text.push_str(&encoder.finish(None));
    parse_sse(&text)
        .into_iter()
        .map(|(_, _, data)| data)
        .collect()
}

fn types(events: &[Value]) -> Vec<&str> {
    events.iter().filter_map(|e| e["type"].as_str()).collect()
}

fn handoff_and_tool_run() -> Vec<RunEvent> {
    vec![
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
            text: "12 * 7 ".into(),
        },
        RunEvent::Delta {
            text: "= 84".into(),
        },
        RunEvent::Done(
            json!({"result": "12 * 7 = 84", "agent": "math", "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}),
        ),
    ]
}

#[test]
fn a_run_is_the_event_sequence_the_protocol_requires() {
    let events = encode(handoff_and_tool_run());
    assert_eq!(
        types(&events),
        [
            "RUN_STARTED",
            "STEP_STARTED",
            "STEP_FINISHED",
            "CUSTOM",
            "STEP_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "TOOL_CALL_RESULT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "STEP_FINISHED",
            "RUN_FINISHED",
        ]
    );
    assert_eq!(events[0]["threadId"], "thread-1");
    assert_eq!(events[3]["value"], json!({"from": "triage", "to": "math"}));
    assert_eq!(events[5]["toolCallId"], "call_1");
    assert_eq!(events[6]["delta"], r#"{"a":12,"b":7}"#);
    assert_eq!(events[8]["content"], r#"{"ok":true}"#);
    assert_eq!(events[9]["name"], "math", "the message names its agent");
    let last = events.last().unwrap_or(&Value::Null);
    assert_eq!(last["result"]["result"], "12 * 7 = 84");
    assert_eq!(last["usage"][0]["totalTokens"], 7);
    assert!(last["outcome"].get("pendingToolCallIds").is_none());
    // No member is ever null: the client's schemas refuse nulls.
    let text = events.iter().map(Value::to_string).collect::<String>();
    assert!(!text.contains("null"), "{text}");
}

#[test]
fn a_front_end_tool_call_ends_the_run_pending() {
    let events = encode(vec![
        RunEvent::Agent { agent: "a".into() },
        RunEvent::ToolCall {
            id: "fe_1".into(),
            name: "confirm".into(),
            arguments: json!({"q": "ok?"}),
        },
        RunEvent::Done(
            json!({"result": "", "agent": "a", "tool_calls": [{"id": "fe_1", "name": "confirm", "arguments": "{\"q\":\"ok?\"}"}]}),
        ),
    ]);
    assert_eq!(
        types(&events),
        [
            "RUN_STARTED",
            "STEP_STARTED",
            "TOOL_CALL_START",
            "TOOL_CALL_ARGS",
            "TOOL_CALL_END",
            "STEP_FINISHED",
            "RUN_FINISHED"
        ]
    );
    assert_eq!(events[6]["outcome"]["pendingToolCallIds"], json!(["fe_1"]));
}

#[test]
fn a_failure_is_run_error_with_a_text_code_unless_a_retry_follows() {
    let failed = encode(vec![
        RunEvent::Agent { agent: "a".into() },
        RunEvent::Delta { text: "par".into() },
        RunEvent::Error(json!({"status": 502, "error": "model provider failed"})),
    ]);
    let last = failed.last().unwrap_or(&Value::Null);
    assert_eq!(last["type"], "RUN_ERROR");
    assert_eq!(last["code"], "502");
    assert_eq!(last["message"], "model provider failed");

    let retried = encode(vec![
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
    assert!(!types(&retried).contains(&"RUN_ERROR"), "{retried:?}");
    let text: String = retried
        .iter()
        .filter(|e| e["type"] == "TEXT_MESSAGE_CONTENT")
        .filter_map(|e| e["delta"].as_str())
        .collect();
    assert_eq!(text, "The answer is 42.");
    assert_eq!(
        retried.last().map(|e| e["type"].clone()),
        Some(json!("RUN_FINISHED"))
    );
}

#[test]
fn a_stored_answer_without_deltas_is_one_message_and_a_cut_stream_is_an_error() {
    let events = encode(vec![RunEvent::Done(
        json!({"result": "stored", "agent": "a"}),
    )]);
    assert_eq!(
        types(&events),
        [
            "RUN_STARTED",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED"
        ]
    );
    let cut = encode(vec![RunEvent::Delta {
        text: "half".into(),
    }]);
    assert_eq!(cut.last().map(|e| e["code"].clone()), Some(json!("504")));
}

#[test]
fn messages_become_the_prompt_and_a_history_of_text_and_front_end_tool_exchanges() {
    let messages = json!([
        {"id": "s", "role": "system", "content": "Be brief."},
        {"id": "u1", "role": "user", "content": "what is 12 * 7"},
        {"id": "a1", "role": "assistant", "content": "", "toolCalls": [
            {"id": "call_1", "type": "function", "function": {"name": "multiply", "arguments": "{}"}}]},
        {"id": "r1", "role": "tool", "toolCallId": "call_1", "content": "{\"ok\":true}"},
        {"id": "a2", "role": "assistant", "content": "84"},
        {"id": "u2", "role": "user", "content": [{"type": "text", "text": "confirm it"}]},
        {"id": "a3", "role": "assistant", "toolCalls": [
            {"id": "fe_1", "type": "function", "function": {"name": "confirm", "arguments": "{\"q\":\"84?\"}"}}]},
        {"id": "r2", "role": "tool", "toolCallId": "fe_1", "content": "yes"}
    ]);
    let (prompt, history) =
        conversation(Some(&messages), &["confirm"]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(prompt, "", "a continuation after a front-end tool result");
    assert_eq!(
        history,
        vec![
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "what is 12 * 7"}),
            json!({"role": "assistant", "content": "84"}),
            json!({"role": "user", "content": "confirm it"}),
            json!({"role": "assistant", "content": "", "tool_calls": [{"id": "fe_1", "type": "function", "function": {"name": "confirm", "arguments": "{\"q\":\"84?\"}"}}]}),
            json!({"role": "tool", "tool_call_id": "fe_1", "content": "yes"}),
        ],
        "the agents' own tool exchange is left out"
    );
    let ends_with_assistant = json!([{"id": "a", "role": "assistant", "content": "hi"}]);
    assert!(conversation(Some(&ends_with_assistant), &[]).is_err());
}

#[test]
fn front_end_tools_need_unique_names_and_object_schemas() {
    let ok = client_tools(Some(&json!([
        {"name": "confirm", "description": "Ask the user", "parameters": {"type": "object", "properties": {}}},
        {"name": "notify"}
    ])))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(ok.len(), 2);
    assert!(ok[1].get("parameters").is_none());
    for (tools, field) in [
        (json!([{"name": "a"}, {"name": "a"}]), "tools[1].name"),
        (
            json!([{"name": "a", "parameters": {"type": "string"}}]),
            "tools[0].parameters",
        ),
        (
            json!([{"name": "a", "parameters": [1]}]),
            "tools[0].parameters",
        ),
        (
            json!([{"name": "a", "parameters": "abc"}]),
            "tools[0].parameters",
        ),
    ] {
        let error = client_tools(Some(&tools))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains(field), "{tools}: {error}");
    }
}
