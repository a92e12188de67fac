//! AG-UI (`/api/v1/agui`) with `@ag-ui/client` 1.0's `HttpAgent`, and the AI SDK UI message
//! stream (`/api/v1/ai-sdk/chat`) with `ai` 6's `DefaultChatTransport` and
//! `readUIMessageStream` — the clients front ends use (CopilotKit, `useChat`) — against
//! `ak-local` in every execution mode and against the built request handler behind an API
//! Gateway REST API with the built authorizer.

use ak_tests::clients;
use ak_tests::gateway::RestGateway;
use ak_tests::local::LocalServer;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{RuntimeApi, function_binary, spawn_function};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MODES: [&str; 3] = ["direct", "rest_sync", "rest_async"];

/// `ak-local` in `mode`; with `model` its OpenAI-compatible server, else the offline model. In
/// direct mode with `store`, an in-memory response store (idempotency and event logs).
async fn serve(mode: &'static str, model: Option<&ScriptedModel>, store: bool) -> LocalServer {
    let mut env = LocalServer::mode_env(mode);
    if mode == "direct" && store {
        env.push(("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory"));
    }
    if let Some(model) = model {
        env.push(("OPENAI_BASE_URL", &model.base_url));
        env.push(("OPENAI_API_KEY", "sk-test"));
    }
    LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn types(run: &Value) -> Vec<&str> {
    run["types"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

fn events_of<'a>(run: &'a Value, kind: &str) -> Vec<&'a Value> {
    run["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == kind)
        .collect()
}

#[tokio::test]
async fn http_agent_runs_a_handoff_and_a_tool_call_in_every_mode() {
    for mode in MODES {
        let server = serve(mode, None, false).await;
        let url = format!("{}/api/v1/agui", server.base);
        let run_id = format!("run-{}", uuid());
        let got = clients::node(
            "agui.mjs",
            &[&url, "run", "what is 12 * 7", "thread-1", &run_id],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(got["error"], Value::Null, "{mode}: {got}");
        assert_eq!(
            got["failures"],
            json!([]),
            "{mode}: the client's verification passed"
        );
        let kinds = types(&got);
        assert_eq!(kinds.first(), Some(&"RUN_STARTED"), "{mode}: {kinds:?}");
        assert_eq!(kinds.last(), Some(&"RUN_FINISHED"), "{mode}: {kinds:?}");
        let steps: Vec<String> = got["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"].as_str().is_some_and(|t| t.starts_with("STEP_")))
            .map(|e| {
                format!(
                    "{}:{}",
                    e["type"].as_str().unwrap_or(""),
                    e["stepName"].as_str().unwrap_or("")
                )
            })
            .collect();
        assert_eq!(
            steps,
            [
                "STEP_STARTED:triage",
                "STEP_FINISHED:triage",
                "STEP_STARTED:math",
                "STEP_FINISHED:math"
            ],
            "{mode}: a step per agent"
        );
        assert_eq!(
            events_of(&got, "CUSTOM")[0]["value"],
            json!({"from": "triage", "to": "math"})
        );
        let call = events_of(&got, "TOOL_CALL_START")[0];
        assert_eq!(call["toolCallName"], "multiply");
        let result = events_of(&got, "TOOL_CALL_RESULT")[0];
        assert_eq!(result["toolCallId"], call["toolCallId"]);
        assert_eq!(got["result"]["result"], "[offline model] math: 12 * 7 = 84");
        assert_eq!(
            got["result"]["session_id"], "thread-1",
            "threadId is the session"
        );
        assert_eq!(
            got["result"]["request_id"],
            run_id.as_str(),
            "runId is the request id"
        );
        // The messages the client assembled: the multiply call, its result, the answer by math.
        let messages = got["messages"].as_array().cloned().unwrap_or_default();
        assert!(
            messages
                .iter()
                .any(|m| m["toolCalls"][0]["name"] == "multiply"),
            "{messages:?}"
        );
        assert!(
            messages.iter().any(|m| m["role"] == "assistant"
                && m["name"] == "math"
                && m["content"] == "[offline model] math: 12 * 7 = 84"),
            "{mode}: {messages:?}"
        );
    }
}

fn uuid() -> String {
    ak_tests::unique_name("id")
}

#[tokio::test]
async fn a_repeated_run_id_does_not_run_the_model_twice() {
    for mode in MODES {
        let model = ScriptedModel::start(vec![
            Reply::Echo(Duration::ZERO),
            Reply::Echo(Duration::ZERO),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let server = serve(mode, Some(&model), true).await;
        let url = format!("{}/api/v1/agui", server.base);
        let run_id = format!("run-{}", uuid());
        let mut answers = Vec::new();
        for _ in 0..2 {
            let got = clients::node(
                "agui.mjs",
                &[&url, "run", "say it once", "thread-r", &run_id],
            )
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
            assert_eq!(types(&got).last(), Some(&"RUN_FINISHED"), "{mode}: {got}");
            answers.push(got["result"]["result"].clone());
        }
        assert_eq!(
            answers,
            [json!("echo: say it once"), json!("echo: say it once")],
            "{mode}"
        );
        assert_eq!(model.calls(), 1, "{mode}: the repeat got the first answer");
    }
}

#[tokio::test]
async fn a_front_end_tool_call_ends_the_run_and_its_result_continues_it() {
    for mode in ["direct", "rest_async"] {
        let model = ScriptedModel::start(vec![
            Reply::ToolCall {
                name: "confirm".into(),
                arguments: json!({"question": "Proceed?"}),
            },
            Reply::Text("Done, as confirmed.".into()),
        ])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let server = serve(mode, Some(&model), false).await;
        let url = format!("{}/api/v1/agui", server.base);
        let got = clients::node("agui.mjs", &[&url, "frontend", "cancel my order"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let first = &got["first"];
        assert_eq!(first["failures"], json!([]), "{mode}: {got}");
        assert_eq!(
            events_of(first, "TOOL_CALL_START")[0]["toolCallName"],
            "confirm"
        );
        assert!(
            events_of(first, "TOOL_CALL_RESULT").is_empty(),
            "the client runs it"
        );
        assert_eq!(got["pending"].as_array().map(Vec::len), Some(1), "{got}");
        let second = &got["second"];
        assert_eq!(
            second["result"]["result"], "Done, as confirmed.",
            "{mode}: {got}"
        );
        let requests = model.requests();
        assert_eq!(requests.len(), 2, "{mode}");
        let offered: Vec<&str> = requests[0]["tools"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["function"]["name"].as_str())
            .collect();
        assert!(
            offered.contains(&"confirm"),
            "the front-end tool is offered: {offered:?}"
        );
        let messages = requests[1]["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let call = messages
            .iter()
            .find(|m| {
                m["role"] == "assistant" && m["tool_calls"][0]["function"]["name"] == "confirm"
            })
            .unwrap_or_else(|| panic!("{mode}: the call is in the continued run: {messages:?}"));
        let result = messages
            .iter()
            .find(|m| m["role"] == "tool")
            .unwrap_or_else(|| panic!("{mode}: {messages:?}"));
        assert_eq!(result["tool_call_id"], call["tool_calls"][0]["id"]);
        assert_eq!(result["content"], "yes, confirmed");
        assert_eq!(
            messages
                .iter()
                .filter(|m| m["content"] == "cancel my order")
                .count(),
            1,
            "the prompt once"
        );
    }
}

#[tokio::test]
async fn use_chat_assembles_the_answer_with_its_tool_parts_in_every_mode() {
    for mode in MODES {
        let server = serve(mode, None, false).await;
        let api = format!("{}/api/v1/ai-sdk/chat", server.base);
        let chat = format!("chat-{}", uuid());
        let got = clients::node("ai_sdk_ui.mjs", &[&api, "send", &chat, "what is 12 * 7"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(got["errors"], json!([]), "{mode}: {got}");
        let message = &got["message"];
        assert_eq!(message["role"], "assistant");
        assert_eq!(
            message["text"], "[offline model] math: 12 * 7 = 84",
            "{mode}: {got}"
        );
        assert_eq!(message["agents"], json!(["triage", "math"]));
        assert_eq!(message["tools"][0]["name"], "multiply");
        assert_eq!(message["tools"][0]["state"], "output-available");
        assert_eq!(message["tools"][0]["input"], json!({"a": 12, "b": 7}));
        assert_eq!(message["metadata"]["agent"], "math");
        assert_eq!(
            message["metadata"]["session_id"],
            chat.as_str(),
            "the chat id is the session"
        );
        assert!(
            message["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("msg-"))
        );
        // Nothing is running for the chat any more: the resume call says so (204).
        let resumed = clients::node("ai_sdk_ui.mjs", &[&api, "resume", &chat])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(resumed["resumed"], Value::Null, "{mode}: {resumed}");
    }
}

#[tokio::test]
async fn a_stream_dropped_mid_answer_resumes_with_the_rest_and_no_second_run() {
    let text = "One two three four five six seven eight nine ten eleven twelve.";
    for mode in MODES {
        let model = ScriptedModel::start(vec![Reply::text_stream(
            text,
            12,
            Duration::from_millis(150),
        )])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let server = serve(mode, Some(&model), true).await;
        let api = format!("{}/api/v1/ai-sdk/chat", server.base);
        let chat = format!("chat-{}", uuid());
        let got = clients::node(
            "ai_sdk_ui.mjs",
            &[&api, "drop", &chat, "count to twelve", "5"],
        )
        .await
        .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let seen: Vec<&str> = got["seen"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert!(
            seen.contains(&"text-delta"),
            "{mode}: dropped mid-answer: {seen:?}"
        );
        assert!(!seen.contains(&"finish"), "{mode}: {seen:?}");
        let resumed = &got["resumed"];
        assert_eq!(
            resumed["text"], text,
            "{mode}: the whole answer once: {got}"
        );
        assert_eq!(resumed["metadata"]["session_id"], chat.as_str());
        assert_eq!(got["errors"], json!([]), "{mode}: {got}");
        assert_eq!(
            model.calls(),
            1,
            "{mode}: the run went on; it did not run again"
        );
    }
}

#[tokio::test]
async fn without_a_store_direct_mode_has_nothing_to_resume() {
    let server = serve("direct", None, false).await;
    let api = format!("{}/api/v1/ai-sdk/chat", server.base);
    let got = clients::node("ai_sdk_ui.mjs", &[&api, "resume", "chat-unknown"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["resumed"], Value::Null, "{got}");
}

const SECRET: &str = "agui-ai-sdk-test-secret-of-32-bytes!!";

fn token(subject: &str) -> String {
    let claims = json!({"sub": subject, "exp": ak_core::ports::now_epoch_secs() + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn behind_api_gateway_each_user_resumes_only_their_own_chat() {
    let handler_api = Arc::new(RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}")));
    let auth_api = Arc::new(RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}")));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let handler = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let authorizer = function_binary("authorizer", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut handler = spawn_function(
        &handler,
        &handler_api,
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_EXECUTION__MODE", "direct"),
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory"),
            ("AK_MODEL__PROVIDER", "offline"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut authorizer = spawn_function(
        &authorizer,
        &auth_api,
        &[
            ("AK_AUTH__JWT__ALGORITHMS", "HS256"),
            ("AK_AUTH__JWT__SECRET", SECRET),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gateway = RestGateway::start(handler_api.clone(), Some(auth_api.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    // AG-UI through the gateway (one buffered body), as alice.
    let url = format!("{}/api/v1/agui", gateway.url);
    let run = clients::node_with_env(
        "agui.mjs",
        &[&url, "run", "what is 12 * 7", "thread-gw", "run-gw-1"],
        &[("AGUI_TOKEN", &token("alice"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(run["failures"], json!([]), "{run}");
    assert_eq!(
        run["result"]["result"], "[offline model] math: 12 * 7 = 84",
        "{run}"
    );
    assert_eq!(types(&run).last(), Some(&"RUN_FINISHED"));

    // useChat through the gateway, as alice; then each user's resume call.
    let api = format!("{}/api/v1/ai-sdk/chat", gateway.url);
    let sent = clients::node_with_env(
        "ai_sdk_ui.mjs",
        &[&api, "send", "chat-gw", "what is 12 * 7"],
        &[("AISDK_TOKEN", &token("alice"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sent["message"]["text"], "[offline model] math: 12 * 7 = 84",
        "{sent}"
    );
    let alice = clients::node_with_env(
        "ai_sdk_ui.mjs",
        &[&api, "resume", "chat-gw"],
        &[("AISDK_TOKEN", &token("alice"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        alice["resumed"],
        Value::Null,
        "the owner: nothing active (204): {alice}"
    );
    let bob = clients::node_with_env(
        "ai_sdk_ui.mjs",
        &[&api, "resume", "chat-gw"],
        &[("AISDK_TOKEN", &token("bob"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&bob["resumed"], &bob["error"]),
        (&Value::Null, &Value::Null),
        "another user's chat: nothing of it to resume (204): {bob}"
    );
    // Bob sends on the same chat id: his chat, not a takeover of alice's resume.
    let sent = clients::node_with_env(
        "ai_sdk_ui.mjs",
        &[&api, "send", "chat-gw", "what is 6 * 7"],
        &[("AISDK_TOKEN", &token("bob"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        sent["message"]["text"], "[offline model] math: 6 * 7 = 42",
        "{sent}"
    );
    let alice = clients::node_with_env(
        "ai_sdk_ui.mjs",
        &[&api, "resume", "chat-gw"],
        &[("AISDK_TOKEN", &token("alice"))],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&alice["resumed"], &alice["error"]),
        (&Value::Null, &Value::Null),
        "alice's resume is still hers (204, not another user's 404): {alice}"
    );
    let _ = handler.kill();
    let _ = authorizer.kill();
    let _ = handler.wait();
    let _ = authorizer.wait();
}
