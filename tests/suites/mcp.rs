//! MCP both ways, against the Python MCP SDK: agents calling the tools of an MCP server
//! (`tests/mcp/tools_server.py`, started by `scripts/test.sh`), and the API's own MCP endpoint
//! called by the SDK's client (`tests/mcp/client.py`) through `ak-local`, and by streamable-HTTP
//! POSTs in API Gateway events through the built request handler.

use crate::model_interop::reference_settings;
use crate::pipeline::{call, event};
use ak_agents::AgentRuntime;
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_core::config::{McpServerSettings, Settings};
use ak_core::ports::memory::MemorySessionStore;
use ak_core::secret::Secret;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) struct Killed(pub(crate) Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"))
}

pub(crate) async fn until_listening(port: u16) -> bool {
    for _ in 0..150 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// The test tools server on a port of its own (for a test that stops it).
async fn own_tools_server() -> (Killed, String) {
    let port = free_port();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/tools_server.py");
    let child = Command::new(ak_tests::python())
        .arg(script)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        until_listening(port).await,
        "the MCP tools server did not start"
    );
    (Killed(child), format!("http://127.0.0.1:{port}/mcp"))
}

/// The history agent with the tools of the MCP server at `url` (as server `tools`, `timeout`
/// seconds), answering through `model`.
pub(crate) fn api_with_mcp(model: &ScriptedModel, url: &str, timeout: f64) -> Api {
    api_with_mcp_approving(model, url, timeout, &[], None)
}

/// [`api_with_mcp`] where the server's tools named in `approval` wait for a person's
/// approval, with `store` keeping the pauses.
fn api_with_mcp_approving(
    model: &ScriptedModel,
    url: &str,
    timeout: f64,
    approval: &[&str],
    store: Option<Arc<dyn ak_core::ports::ResponseStore>>,
) -> Api {
    let mut settings: Settings = reference_settings();
    settings.mcp.servers = vec![McpServerSettings {
        name: "tools".into(),
        url: url.to_owned(),
        headers: Default::default(),
        allowed_tools: None,
        timeout,
        approval: approval.iter().map(|t| (*t).to_owned()).collect(),
    }];
    for def in &mut settings.agents.definitions {
        if def.name == "history" {
            def.mcp_servers = vec!["tools".into()];
        }
    }
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new("sk-mcp")),
        timeout: Duration::from_secs(10),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = AgentRuntime::from_settings(
        &settings,
        &agent_app::tools(),
        Arc::new(provider),
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Api::new(
        Router::builder(RoutePaths::default())
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        ChatService::new(Execution::Direct(Arc::new(runtime)), store, vec![]),
        1 << 20,
    )
}

/// What the model was sent back for its tool call: the content of the `tool` message of the
/// last request.
pub(crate) fn tool_result(model: &ScriptedModel) -> Value {
    let last = model.requests().last().cloned().unwrap_or_default();
    let content = last["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .rev()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    serde_json::from_str(&content).unwrap_or(Value::String(content))
}

pub(crate) async fn ask(api: &Api) -> (u16, Value) {
    let body = json!({"prompt": "use the tools", "agent": "history"}).to_string();
    let (status, _, answer) = call(api, event("POST", Some(&body), None, None)).await;
    (status, answer)
}

/// A model that calls the MCP server's `add` with 2 and 3, then answers "2 + 3 = 5".
async fn model_adding_two_and_three() -> ScriptedModel {
    ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "tools__add".into(),
            arguments: json!({"a": 2, "b": 3}),
        },
        Reply::Text("2 + 3 = 5".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn an_agent_calls_a_tool_of_an_mcp_server_and_answers_with_its_result() {
    let model = model_adding_two_and_three().await;
    let api = api_with_mcp(&model, &ak_tests::mcp_url(), 5.0);
    let (status, answer) = ask(&api).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("2 + 3 = 5")),
        "{answer}"
    );
    let offered = model.requests()[0]["tools"].clone();
    let add = offered
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["function"]["name"] == "tools__add")
        .cloned()
        .unwrap_or_else(|| panic!("the server's tools are offered: {offered}"));
    assert_eq!(add["function"]["description"], "Adds two integers.");
    assert!(
        add["function"]["parameters"]["properties"]["a"].is_object(),
        "{add}"
    );
    let result = tool_result(&model);
    assert_eq!(
        result,
        json!({"result": {"result": 5}}),
        "the server's answer reached the model, once (its structured content)"
    );
}

/// A tool its MCP server's `approval` list names waits for a person: the run pauses before
/// calling it; approved, the server's tool runs once and the answer follows.
#[tokio::test]
async fn an_mcp_tool_in_its_servers_approval_list_waits_for_a_decision() {
    let model = model_adding_two_and_three().await;
    let store = Arc::new(ak_core::ports::memory::MemoryResponseStore::default());
    let api = api_with_mcp_approving(&model, &ak_tests::mcp_url(), 5.0, &["add"], Some(store));
    let (status, paused) = ask(&api).await;
    assert_eq!(
        (status, &paused["status"]),
        (200, &json!("PAUSED")),
        "{paused}"
    );
    assert_eq!(paused["approvals"][0]["tool"], "tools__add");
    assert_eq!(paused["approvals"][0]["arguments"], json!({"a": 2, "b": 3}));
    assert_eq!(model.requests().len(), 1, "the tool has not run");
    let decision = json!({"request_id": paused["request_id"],
        "decisions": [{"id": paused["approvals"][0]["id"], "approve": true}]})
    .to_string();
    let mut e: Value = serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
        .unwrap_or_default();
    e["body"] = json!(decision);
    let path = "/api/v1/chat/approvals";
    e["path"] = json!(path);
    e["resource"] = json!(path);
    e["requestContext"]["resourcePath"] = json!(path);
    e["requestContext"]["path"] = json!(format!("/agents{path}"));
    let (status, _, answer) = call(&api, crate::pipeline::decode(&e)).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("2 + 3 = 5")),
        "{answer}"
    );
    assert_eq!(
        tool_result(&model),
        json!({"result": {"result": 5}}),
        "the server's tool ran"
    );
}

#[tokio::test]
async fn a_slow_mcp_tool_times_out_into_an_error_result_and_the_run_still_answers() {
    let model = ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "tools__slow_echo".into(),
            arguments: json!({"text": "hi", "seconds": 5}),
        },
        Reply::Text("the tool was too slow".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = api_with_mcp(&model, &ak_tests::mcp_url(), 1.0);
    let started = Instant::now();
    let (status, answer) = ask(&api).await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the server's timeout"
    );
    let result = tool_result(&model);
    assert!(
        result["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer within 1 s")),
        "{result}"
    );
}

#[tokio::test]
async fn an_mcp_server_stopped_mid_test_gives_an_error_result_not_a_5xx() {
    let (server, url) = own_tools_server().await;
    let model = ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "tools__add".into(),
            arguments: json!({"a": 1, "b": 1}),
        },
        Reply::Text("first".into()),
        Reply::ToolCall {
            name: "tools__add".into(),
            arguments: json!({"a": 2, "b": 2}),
        },
        Reply::Text("the server is gone".into()),
        Reply::Text("no tools this time".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = api_with_mcp(&model, &url, 2.0);
    let (status, _) = ask(&api).await;
    assert_eq!(status, 200);
    assert_eq!(tool_result(&model)["result"]["result"], 2);
    drop(server);
    // The tools were listed before: the call fails, the run answers.
    let (status, answer) = ask(&api).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("the server is gone")),
        "{answer}"
    );
    let error = tool_result(&model)["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("MCP server tools"), "{error}");
    assert!(
        !error.contains("127.0.0.1") && !error.contains("http") && !error.contains("rmcp"),
        "no URL (it may carry a key) and no internals reach the model: {error}"
    );
    // And a run that needs the list again goes on without the server's tools.
    let (status, answer) = ask(&api).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("no tools this time")),
        "{answer}"
    );
}

async fn ak_local_offline() -> (Killed, String) {
    let port = free_port();
    let binary = function_binary("ak-local", "debug").unwrap_or_else(|e| panic!("{e}"));
    let child = Command::new(binary)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(until_listening(port).await, "ak-local did not start");
    (Killed(child), format!("http://127.0.0.1:{port}"))
}

#[tokio::test]
async fn the_python_sdks_client_lists_and_calls_the_agents_of_ak_local() {
    let (_server, base) = ak_local_offline().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mcp/client.py");
    let output = tokio::process::Command::new(ak_tests::python())
        .arg(script)
        .arg(format!("{base}/api/v1/mcp"))
        .arg("triage")
        .arg("what is 12 * 7")
        .output()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let got: Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    let names: Vec<&str> = got["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str())
        .collect();
    assert_eq!(names, ["triage", "math", "history"]);
    assert_eq!(
        got["tools"][1]["description"],
        "Specialist agent for math questions"
    );
    assert_eq!(got["text"], "[offline model] math: 12 * 7 = 84", "{got}");
    assert_eq!(got["is_error"], false);
    assert_eq!(got["structured"]["agent"], "math");
}

/// A streamable-HTTP POST of `message` to `/api/v1/mcp` as an API Gateway (REST) event, by
/// `user` when given.
fn mcp_event(message: &Value, user: Option<&str>) -> Value {
    let mut e: Value = serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
        .unwrap_or_default();
    e["path"] = json!("/api/v1/mcp");
    e["resource"] = json!("/api/v1/mcp");
    e["requestContext"]["path"] = json!("/agents/api/v1/mcp");
    e["body"] = json!(message.to_string());
    e["headers"]["Accept"] = json!("application/json, text/event-stream");
    e["headers"]["Content-Type"] = json!("application/json");
    e["headers"]["MCP-Protocol-Version"] = json!("2025-06-18");
    e["multiValueHeaders"] = Value::Null;
    if let Some(user) = user {
        e["requestContext"]["authorizer"] = json!({"principalId": user, "user_id": user});
    }
    e
}

#[tokio::test]
async fn the_built_request_handler_answers_mcp_in_api_gateway_events() {
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let child = spawn_function(
        &binary,
        &api,
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "offline"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _child = Killed(child);
    let rpc = |event: Value| {
        let api = &api;
        async move {
            let id = api.invoke(event);
            match api.outcome(&id, Duration::from_secs(20)).await {
                Some((Outcome::Response(r), _)) => {
                    assert_eq!(r["statusCode"], 200, "{r}");
                    serde_json::from_str::<Value>(r["body"].as_str().unwrap_or_default())
                        .unwrap_or_default()
                }
                other => panic!("{other:?}; init error {:?}", api.init_error()),
            }
        }
    };
    let init = rpc(mcp_event(
        &json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "test", "version": "1"}}}),
        None,
    ))
    .await;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "agent-kernel",
        "{init}"
    );
    let list = rpc(mcp_event(
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
        None,
    ))
    .await;
    assert_eq!(
        list["result"]["tools"].as_array().map(Vec::len),
        Some(3),
        "{list}"
    );
    let session = ak_tests::unique_name("mcp-s");
    let call = |user: &'static str| {
        mcp_event(
            &json!({"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {
                "name": "triage", "arguments": {"prompt": "what is 12 * 7", "session_id": session}}}),
            Some(user),
        )
    };
    let answer = rpc(call("user-a")).await;
    assert_eq!(
        answer["result"]["content"][0]["text"], "[offline model] math: 12 * 7 = 84",
        "{answer}"
    );
    assert_eq!(answer["result"]["isError"], false);
    // The principal flows as for chat: user-a's session is not user-b's.
    let refused = rpc(call("user-b")).await;
    assert_eq!(refused["result"]["isError"], true, "{refused}");
    assert!(
        refused["result"]["content"][0]["text"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to another user"),
        "{refused}"
    );
}
