use super::*;
use crate::sse::parse_sse;

fn task() -> TaskIds {
    TaskIds {
        id: "task-m1".into(),
        context: "ctx-1".into(),
        prompt: "what is 12 * 7".into(),
        message: "m1".into(),
    }
}

fn encode(events: Vec<RunEvent>, fresh: bool) -> Vec<Value> {
    let mut encoder = TaskEncoder::new(json!(7), task(), fresh);
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

fn kinds(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| f["result"].as_object())
        .filter_map(|r| r.keys().next().cloned())
        .collect()
}

fn artifact_text(frames: &[Value]) -> String {
    let mut text = String::new();
    for f in frames {
        let update = &f["result"]["artifactUpdate"];
        if update.is_null() {
            continue;
        }
        if update["append"] == false {
            text.clear();
        }
        text.push_str(
            update["artifact"]["parts"][0]["text"]
                .as_str()
                .unwrap_or_default(),
        );
    }
    text
}

#[test]
fn a_streamed_message_is_the_task_then_updates_then_its_end() {
    let frames = encode(
        vec![
            RunEvent::Agent {
                agent: "triage".into(),
            },
            RunEvent::Agent {
                agent: "math".into(),
            },
            RunEvent::ToolCall {
                id: "c".into(),
                name: "multiply".into(),
                arguments: json!({}),
            },
            RunEvent::ToolResult {
                id: "c".into(),
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
                json!({"result": "12 * 7 = 84", "agent": "math", "session_id": "ctx-1"}),
            ),
        ],
        true,
    );
    assert!(
        frames.iter().all(|f| f["id"] == 7 && f["jsonrpc"] == "2.0"),
        "the request's id on every event"
    );
    assert_eq!(
        kinds(&frames),
        [
            "task",
            "statusUpdate",
            "statusUpdate",
            "statusUpdate",
            "artifactUpdate",
            "artifactUpdate",
            "artifactUpdate",
            "statusUpdate"
        ]
    );
    assert_eq!(
        frames[0]["result"]["task"]["status"]["state"],
        "TASK_STATE_SUBMITTED"
    );
    assert_eq!(
        frames[0]["result"]["task"]["history"][0]["role"],
        "ROLE_USER"
    );
    assert_eq!(
        frames[2]["result"]["statusUpdate"]["metadata"]["agent"],
        "math"
    );
    assert_eq!(artifact_text(&frames), "12 * 7 = 84");
    let last = frames.last().unwrap_or(&Value::Null);
    assert_eq!(
        last["result"]["statusUpdate"]["status"]["state"],
        "TASK_STATE_COMPLETED"
    );
    assert_eq!(last["result"]["statusUpdate"]["contextId"], "ctx-1");
    let chunks: Vec<&Value> = frames
        .iter()
        .filter(|f| f["result"]["artifactUpdate"].is_object())
        .collect();
    assert_eq!(
        chunks
            .last()
            .map(|c| c["result"]["artifactUpdate"]["lastChunk"].clone()),
        Some(json!(true))
    );
}

#[test]
fn a_failed_or_canceled_run_ends_with_its_state() {
    let failed = encode(
        vec![RunEvent::Error(
            json!({"status": 502, "error": "model provider failed"}),
        )],
        true,
    );
    let last = failed.last().unwrap_or(&Value::Null);
    assert_eq!(
        last["result"]["statusUpdate"]["status"]["state"],
        "TASK_STATE_FAILED"
    );
    assert_eq!(
        last["result"]["statusUpdate"]["status"]["message"]["parts"][0]["text"],
        "model provider failed"
    );
    let canceled = encode(
        vec![RunEvent::Error(
            json!({"status": 410, "error": "the request was canceled"}),
        )],
        true,
    );
    assert_eq!(
        canceled
            .last()
            .map(|f| f["result"]["statusUpdate"]["status"]["state"].clone()),
        Some(json!("TASK_STATE_CANCELED"))
    );
}

#[test]
fn a_subscription_starts_with_a_working_snapshot_and_replays_the_text_once() {
    let frames = encode(
        vec![
            RunEvent::Agent { agent: "a".into() },
            RunEvent::Delta {
                text: "one ".into(),
            },
            RunEvent::Delta { text: "two".into() },
            RunEvent::Done(json!({"result": "one two"})),
        ],
        false,
    );
    assert_eq!(
        frames[0]["result"]["task"]["status"]["state"],
        "TASK_STATE_WORKING"
    );
    assert_eq!(artifact_text(&frames), "one two");
}

#[test]
fn answered_tasks_carry_their_artifact_status_message_and_trimmed_history() {
    let answer = Answer::ok(
        json!({"result": "84", "agent": "math", "session_id": "ctx-1", "request_id": "task-m1"}),
    );
    let done = task().with_answer(&answer, None);
    assert_eq!(done["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(done["artifacts"][0]["parts"][0]["text"], "84");
    assert_eq!(done["history"].as_array().map(Vec::len), Some(2));
    let one = task().with_answer(&answer, Some(1));
    assert_eq!(one["history"][0]["role"], "ROLE_AGENT");
    let none = task().with_answer(&answer, Some(0));
    assert!(none.get("history").is_none());
    let failed = task().with_answer(&Answer::new(502, json!({"error": "boom"})), None);
    assert_eq!(failed["status"]["state"], "TASK_STATE_FAILED");
    assert!(failed.get("artifacts").is_none());
}

#[test]
fn task_ids_come_from_message_ids() {
    assert_eq!(task_id("9f1c2d3e-aaaa"), "task-9f1c2d3e-aaaa");
    assert_eq!(task_id("9f1c2d3e-aaaa"), task_id("9f1c2d3e-aaaa"));
    let odd = task_id("a message id with spaces / and slashes");
    assert!(
        odd.starts_with("task-") && check_id("t", &odd).is_ok(),
        "{odd}"
    );
}
