//! MCP as the MCP project's own servers and hosts behave, pinned in `tests/clients/js` and
//! installed by `scripts/test.sh`: the reference server `@modelcontextprotocol/server-everything`
//! as a tool source (every content type, a task-only tool, a restart that loses the session),
//! and the TypeScript SDK's client as a host of `ak-local`'s MCP endpoint (abort, bad
//! arguments, progress on a run longer than its request timeout).

use crate::mcp::{Killed, api_with_mcp, ask, free_port, tool_result, until_listening};
use ak_tests::clients;
use ak_tests::local::LocalServer;
use ak_tests::model_server::{Reply, ScriptedModel};
use serde_json::{Value, json};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// server-everything (streamable HTTP) listening on `port`.
async fn everything(port: u16) -> Killed {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("clients/js/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    assert!(
        script.is_file(),
        "{} is missing: scripts/test.sh installs it (npm ci in tests/clients/js)",
        script.display()
    );
    let child = Command::new("node")
        .arg(script)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        until_listening(port).await,
        "server-everything did not start"
    );
    Killed(child)
}

/// The messages of the model's `n`th request.
fn messages(model: &ScriptedModel, n: usize) -> Vec<Value> {
    model.requests()[n]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test]
async fn server_everythings_images_links_and_resources_reach_the_model_and_task_only_tools_are_not_offered()
 {
    let port = free_port();
    let _server = everything(port).await;
    let call = |name: &str, arguments: Value| Reply::ToolCall {
        name: format!("tools__{name}"),
        arguments,
    };
    let model = ScriptedModel::start(vec![
        call("get-tiny-image", json!({})),
        call("get-resource-links", json!({"count": 2})),
        call(
            "get-resource-reference",
            json!({"resourceType": "Text", "resourceId": 2}),
        ),
        Reply::Text("seen it all".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = api_with_mcp(&model, &format!("http://127.0.0.1:{port}/mcp"), 10.0);
    let (status, answer) = ask(&api).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("seen it all")),
        "{answer}"
    );

    let offered: Vec<String> = model.requests()[0]["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
        .collect();
    assert!(offered.contains(&"tools__echo".to_owned()), "{offered:?}");
    assert!(
        !offered
            .iter()
            .any(|t| t.contains("simulate-research-query")),
        "a tool callable only as a task is not offered: {offered:?}"
    );

    // The image: named in the tool result, and sent as an image part right after it.
    let after_image = messages(&model, 1);
    let tool = after_image
        .iter()
        .position(|m| m["role"] == "tool")
        .unwrap_or_else(|| panic!("{after_image:?}"));
    let text = after_image[tool]["content"].as_str().unwrap_or_default();
    assert!(text.contains("[image 1: image/png"), "{text}");
    let image = &after_image[tool + 1];
    assert_eq!(image["role"], "user", "{image}");
    let url = image["content"][1]["image_url"]["url"]
        .as_str()
        .unwrap_or_default();
    assert!(url.starts_with("data:image/png;base64,iVBOR"), "{image}");

    // Resource links with their URI, name and type.
    let links = tool_result_of(&messages(&model, 2));
    assert!(
        links.contains("[resource link]")
            && links.contains("<demo://resource/")
            && links.contains("(text/plain)"),
        "{links}"
    );
    // An embedded text resource with its text.
    let embedded = tool_result_of(&messages(&model, 3));
    assert!(
        embedded.contains("[resource demo://resource/"),
        "{embedded}"
    );
    assert!(
        embedded.lines().count() > 2,
        "the resource's text itself reaches the model: {embedded}"
    );
}

/// The `result` text of the last tool message of `messages`.
fn tool_result_of(messages: &[Value]) -> String {
    let content = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "tool")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default();
    serde_json::from_str::<Value>(content)
        .ok()
        .and_then(|v| v["result"].as_str().map(str::to_owned))
        .unwrap_or_else(|| content.to_owned())
}

#[tokio::test]
async fn a_restarted_server_everything_costs_at_most_one_call_and_later_runs_are_quick() {
    let port = free_port();
    let server = everything(port).await;
    let mut replies = Vec::new();
    for _ in 0..5 {
        replies.push(Reply::ToolCall {
            name: "tools__echo".into(),
            arguments: json!({"message": "ping"}),
        });
        replies.push(Reply::Text("echoed".into()));
    }
    let model = ScriptedModel::start(replies)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = api_with_mcp(&model, &format!("http://127.0.0.1:{port}/mcp"), 10.0);
    let (status, _) = ask(&api).await;
    assert_eq!(status, 200);
    assert_eq!(tool_result(&model), json!({"result": "Echo: ping"}));

    // The server restarts: it no longer knows the session this process holds, and answers
    // it with 400 and an error without an id.
    drop(server);
    let _server = everything(port).await;
    let mut failed = 0;
    for run in 0..4 {
        let started = Instant::now();
        let (status, answer) = ask(&api).await;
        let took = started.elapsed();
        assert_eq!(status, 200, "{answer}");
        let result = tool_result(&model);
        if result != json!({"result": "Echo: ping"}) {
            failed += 1;
            assert_eq!(
                run, 0,
                "only the first call after the restart may fail: {result}"
            );
        } else {
            assert!(
                took < Duration::from_secs(5),
                "run {run} took {took:?}: a restarted server must not cost every call its timeout"
            );
        }
    }
    assert!(failed <= 1);
}

/// `ak-local` in `mode`, answering through `model`; the URL of its MCP endpoint.
async fn local(mode: &'static str, model: &ScriptedModel) -> (LocalServer, String) {
    let mut env = LocalServer::mode_env(mode);
    env.push(("OPENAI_BASE_URL", &model.base_url));
    env.push(("OPENAI_API_KEY", "sk-test"));
    let server = LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!("{}/api/v1/mcp", server.base);
    (server, url)
}

#[tokio::test]
async fn the_typescript_sdk_gets_bad_arguments_as_error_results() {
    let model = ScriptedModel::start(vec![])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_server, url) = local("direct", &model).await;
    let out = clients::node(
        "mcp_host.mjs",
        &[&url, "call", "history", r#"{"session_id": 7}"#],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        out["session"].is_string(),
        "initialize names a session: {out}"
    );
    assert_eq!(out["isError"], true, "{out}");
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.contains("prompt is required")),
        "{out}"
    );
    let out = clients::node(
        "mcp_host.mjs",
        &[&url, "call", "nobody", r#"{"prompt": "hi"}"#],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out["isError"], true, "{out}");
    assert!(
        out["text"]
            .as_str()
            .is_some_and(|t| t.contains("the tools are")),
        "{out}"
    );
    assert_eq!(
        model.calls(),
        0,
        "no model call for arguments that cannot run"
    );
}

/// A host aborts a call (`abort`: it sends `notifications/cancelled`; `die`: its process
/// exits mid-call, closing the request): the model's stream is cut and the session keeps
/// nothing of it.
async fn abort_stops_the_run(mode: &'static str) {
    host_leaves(mode, "abort").await;
}

async fn host_leaves(mode: &'static str, how: &str) {
    let story = "Once upon a time ".repeat(40);
    let model = ScriptedModel::start(vec![
        Reply::text_stream(&story, 40, Duration::from_millis(250)),
        Reply::Text("a fresh start".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_server, url) = local(mode, &model).await;
    let session = format!("s-abort-{mode}-{}", free_port());
    let args = json!({"prompt": "tell me a long story", "session_id": session}).to_string();
    let out = clients::node_with_env(
        "mcp_host.mjs",
        &[&url, how, "history", &args],
        &[("ABORT_MS", "1500"), ("LINGER_MS", "3000")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    if how == "abort" {
        assert_eq!(out["aborted"], true, "{out}");
    } else {
        assert_eq!(out["died"], true, "{out}");
        // The runner looks for the cancellation every second.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    assert_eq!(
        model.abandoned(),
        1,
        "{mode}: the model's stream is cut when the host cancels"
    );
    let args = json!({"prompt": "start over", "session_id": session}).to_string();
    let out = clients::node("mcp_host.mjs", &[&url, "call", "history", &args])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out["text"], "a fresh start", "{out}");
    let sent = model.requests().last().cloned().unwrap_or_default();
    assert!(
        !sent.to_string().contains("tell me a long story"),
        "{mode}: the session holds no turn for the canceled call: {sent}"
    );
}

#[tokio::test]
async fn a_call_the_typescript_sdk_aborts_stops_the_run_in_direct_mode() {
    abort_stops_the_run("direct").await;
}

#[tokio::test]
async fn a_call_the_typescript_sdk_aborts_stops_the_run_in_rest_async_mode() {
    abort_stops_the_run("rest_async").await;
}

#[tokio::test]
async fn a_host_that_dies_mid_call_stops_the_run_in_rest_async_mode() {
    host_leaves("rest_async", "die").await;
}

#[tokio::test]
async fn a_seventy_second_run_completes_for_a_host_with_a_sixty_second_timeout_reset_by_progress() {
    let answer = "slow and steady ".repeat(14);
    let model = ScriptedModel::start(vec![Reply::text_stream(
        &answer,
        14,
        Duration::from_secs(5),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (_server, url) = local("direct", &model).await;
    let args = json!({"prompt": "take your time"}).to_string();
    let out = clients::node_with_env(
        "mcp_host.mjs",
        &[&url, "progress", "history", &args],
        &[("TIMEOUT_MS", "60000")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(out["failed"].is_null(), "{out}");
    assert_eq!(out["isError"], false, "{out}");
    assert_eq!(
        out["text"].as_str().map(str::trim),
        Some(answer.trim()),
        "{out}"
    );
    assert!(out["seconds"].as_f64().is_some_and(|s| s > 60.0), "{out}");
    let progress = out["progress"].as_array().cloned().unwrap_or_default();
    assert!(progress.len() >= 4, "progress every 15 s: {out}");
}
