//! Amazon Bedrock through the Converse API, with the real AWS SDK client pointed at a scripted
//! Bedrock Runtime on loopback (`ak_tests::converse_server`): the triage → math handoff, a
//! function tool whose result goes back in a `toolResult` block, streaming through
//! `ConverseStream`, throttling retried, and an access error answered as a clear 502.

use crate::model_interop::reference_settings;
use crate::pipeline::{call, event};
use ak_adapters::AwsConfig;
use ak_agents::AgentRuntime;
use ak_core::config::ModelProvider;
use ak_core::ports::memory::MemorySessionStore;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_tests::converse_server::{Converse, ConverseServer, Received};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// The reference agents on a Bedrock model served by `server`.
fn bedrock_api(server: &ConverseServer) -> Api {
    let mut settings = reference_settings();
    settings.model.provider = Some(ModelProvider::Bedrock);
    settings.model.name = MODEL.into();
    settings.model.base_url = Some(server.url.clone());
    settings.model.max_retries = 2;
    settings.model.timeout = 5.0;
    let model = ak_agents::model_provider(&settings.model, &|_| None, false, &AwsConfig::default())
        .unwrap_or_else(|e| panic!("{e}"));
    let runtime = AgentRuntime::from_settings(
        &settings,
        &agent_app::tools(),
        model,
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Api::new(
        Router::builder(RoutePaths::default())
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        ChatService::new(Execution::Direct(Arc::new(runtime)), None, vec![]),
        1 << 20,
    )
}

fn triage_math_multiply() -> Vec<Converse> {
    vec![
        Converse::ToolUse {
            name: "transfer_to_math".into(),
            input: json!({}),
        },
        Converse::ToolUse {
            name: "multiply".into(),
            input: json!({"a": 12, "b": 7}),
        },
        Converse::Text("12 * 7 = 84".into()),
    ]
}

fn tool_names(request: &Received) -> Vec<String> {
    request.body["toolConfig"]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["toolSpec"]["name"].as_str().map(str::to_owned))
        .collect()
}

/// Checks what the SDK sent for the handoff and the tool call.
fn check_requests(received: &[Received], operation: &str, triage_instructions: &str) {
    assert_eq!(received.len(), 3, "{received:?}");
    for request in received {
        assert!(request.signed, "SigV4-signed for bedrock: {request:?}");
        assert!(
            request
                .path
                .starts_with("/model/anthropic.claude-3-5-haiku")
                && request.path.ends_with(operation),
            "{}",
            request.path
        );
    }
    let first = &received[0].body;
    assert!(
        first["system"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains(triage_instructions),
        "instructions go in system: {first}"
    );
    assert_eq!(
        first["messages"],
        json!([{"role": "user", "content": [{"text": "what is 12 * 7"}]}])
    );
    let offered = tool_names(&received[0]);
    assert!(
        offered.contains(&"transfer_to_math".to_owned()),
        "{offered:?}"
    );
    assert!(tool_names(&received[1]).contains(&"multiply".to_owned()));
    // The math agent's second call: its toolUse, then the result in a user turn, same id.
    let messages = received[2].body["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let roles: Vec<&str> = messages.iter().filter_map(|m| m["role"].as_str()).collect();
    assert!(
        roles.windows(2).all(|w| w[0] != w[1]),
        "roles alternate: {roles:?}"
    );
    let used = messages
        .iter()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b["toolUse"]["name"] == "multiply")
        .unwrap_or_else(|| panic!("the toolUse is sent back: {messages:?}"));
    let result = messages
        .iter()
        .filter(|m| m["role"] == "user")
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .find(|b| b.get("toolResult").is_some())
        .unwrap_or_else(|| panic!("the toolResult is sent: {messages:?}"));
    assert_eq!(
        result["toolResult"]["toolUseId"],
        used["toolUse"]["toolUseId"]
    );
    assert_eq!(
        result["toolResult"]["content"],
        json!([{"json": {"product": 84}}])
    );
    assert_eq!(result["toolResult"]["status"], "success");
}

#[tokio::test]
async fn triage_hands_off_to_math_which_multiplies_on_a_bedrock_model() {
    let server = ConverseServer::start(triage_math_multiply())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = bedrock_api(&server);
    let body = json!({"prompt": "what is 12 * 7"}).to_string();
    let (status, _, answer) = call(&api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "12 * 7 = 84");
    assert_eq!(answer["agent"], "math");
    assert_eq!(
        answer["usage"]["total_tokens"], 54,
        "usage summed over 3 calls"
    );
    check_requests(&server.received(), "/converse", "You are the triage agent");
}

#[tokio::test]
async fn a_streamed_answer_comes_through_converse_stream() {
    let server = ConverseServer::start(triage_math_multiply())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = bedrock_api(&server);
    let body = json!({"prompt": "what is 12 * 7", "stream": true}).to_string();
    let response = api.handle(event("POST", Some(&body), None, None)).await;
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    let events = ak_http::sse::parse_sse(&text);
    let names: Vec<&str> = events.iter().map(|(_, n, _)| n.as_str()).collect();
    assert_eq!(names.first(), Some(&"agent"), "{text}");
    assert!(
        names.contains(&"tool_call") && names.contains(&"tool_result"),
        "{names:?}"
    );
    let done = events.last().map(|(_, _, d)| d.clone()).unwrap_or_default();
    assert_eq!(names.last(), Some(&"done"), "{text}");
    let after = names.iter().rposition(|n| *n == "tool_result").unwrap_or(0);
    let deltas: String = events[after..]
        .iter()
        .filter(|(_, n, _)| n == "delta")
        .filter_map(|(_, _, d)| d["text"].as_str())
        .collect();
    assert_eq!(deltas, "12 * 7 = 84", "word by word");
    assert_eq!(done["result"], "12 * 7 = 84");
    check_requests(
        &server.received(),
        "/converse-stream",
        "You are the triage agent",
    );
}

#[tokio::test]
async fn throttling_is_retried_and_an_access_error_is_a_clear_502() {
    let server = ConverseServer::start(vec![
        Converse::Error(429, "ThrottlingException"),
        Converse::Text("after a pause".into()),
        Converse::Error(403, "AccessDeniedException"),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = bedrock_api(&server);
    let body = json!({"prompt": "hello", "agent": "history"}).to_string();
    let (status, _, answer) = call(&api, event("POST", Some(&body), None, None)).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("after a pause")),
        "{answer}"
    );
    assert_eq!(server.received().len(), 2, "one retry");

    let (status, _, answer) = call(&api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 502, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("may not invoke") && error.contains(MODEL),
        "says what to fix: {error}"
    );
    assert!(
        !error.contains("scripted"),
        "never the service's own text: {error}"
    );
    assert_eq!(server.received().len(), 3, "an access error is not retried");
}

#[tokio::test]
async fn the_built_request_handler_reaches_bedrock_through_the_sdks_endpoint_variable() {
    let server = ConverseServer::start(triage_math_multiply())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    // AWS_ENDPOINT_URL (moto, for SQS and DynamoDB) is passed on too: the service's own
    // variable wins for Bedrock.
    let mut child = spawn_function(
        &binary,
        &api,
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "bedrock"),
            ("AK_MODEL__NAME", MODEL),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", &server.url),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
            .unwrap_or_default();
    event["body"] = json!(json!({"prompt": "what is 12 * 7"}).to_string());
    let id = api.invoke(event);
    let outcome = api.outcome(&id, Duration::from_secs(20)).await;
    let _ = child.kill();
    let _ = child.wait();
    let Some((Outcome::Response(response), _)) = outcome else {
        panic!("no answer: {outcome:?}; init error {:?}", api.init_error());
    };
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value =
        serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(body["result"], "12 * 7 = 84", "{body}");
    check_requests(&server.received(), "/converse", "You determine which agent");
}
