//! A2A 1.0 (`/api/v1/a2a`) with the official clients — `a2a-sdk` (Python) and `@a2a-js/sdk` —
//! against `ak-local` in every execution mode and against the built request handler behind an
//! API Gateway REST API with the built authorizer; the agent card validated against the
//! specification's JSON Schema.

use ak_tests::clients;
use ak_tests::gateway::RestGateway;
use ak_tests::local::LocalServer;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{RuntimeApi, function_binary, spawn_function};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MODES: [&str; 3] = ["direct", "rest_sync", "rest_async"];

/// `ak-local` in `mode` (direct mode with an in-memory response store: tasks to read back),
/// answering through `model` (else the offline model).
async fn serve(mode: &'static str, model: Option<&ScriptedModel>) -> (LocalServer, String) {
    let mut env = LocalServer::mode_env(mode);
    if mode == "direct" {
        env.push(("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory"));
    }
    if let Some(model) = model {
        env.push(("OPENAI_BASE_URL", &model.base_url));
        env.push(("OPENAI_API_KEY", "sk-test"));
    }
    let server = LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("{}/api/v1/a2a", server.base);
    (server, base)
}

fn user_turns(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "user")
        .filter_map(|m| m["content"].as_str().map(str::to_owned))
        .collect()
}

#[tokio::test]
async fn the_python_client_sends_follows_and_cancels_tasks_in_every_mode() {
    for mode in MODES {
        let model = ScriptedModel::start(
            (0..20)
                .map(|_| Reply::Echo(Duration::from_millis(800)))
                .collect(),
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (_server, base) = serve(mode, Some(&model)).await;
        let got = clients::python("a2a_sdk.py", &[&base, "flow"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let card = &got["card"];
        assert_eq!(card["name"], "triage");
        assert_eq!(
            card["urls"],
            json!([base]),
            "{mode}: the card names the endpoint it was read from"
        );
        assert_eq!(card["streaming"], true);
        assert_eq!(card["skills"], json!(["triage", "math", "history"]));

        let blocking = &got["blocking"];
        assert_eq!(blocking["state"], "TASK_STATE_COMPLETED", "{mode}: {got}");
        assert_eq!(blocking["text"], "echo: hello");
        assert_eq!(blocking["history"], json!(["ROLE_USER", "ROLE_AGENT"]));
        assert!(blocking["context"].as_str().is_some_and(|c| !c.is_empty()));
        assert_eq!(
            got["again"]["id"], blocking["id"],
            "{mode}: the same message is the same task"
        );
        assert_eq!(got["again"]["text"], "echo: hello");
        assert_eq!(
            got["again"]["context"], blocking["context"],
            "{mode}: the same message again names the same context"
        );
        assert_eq!(
            got["again"]["history_contexts"],
            json!([blocking["context"]])
        );
        assert_eq!(got["continued"]["context"], blocking["context"]);
        assert_eq!(got["continued"]["text"], "echo: and then?");

        let state = got["non_blocking"]["state"].as_str().unwrap_or_default();
        if mode == "direct" {
            assert_eq!(
                state, "TASK_STATE_COMPLETED",
                "direct mode answers within the call"
            );
        } else {
            assert_eq!(state, "TASK_STATE_SUBMITTED", "{mode}: {got}");
            let subscribed = &got["subscribed"];
            assert_eq!(
                subscribed["kinds"][0], "task",
                "{mode}: a snapshot first: {subscribed}"
            );
            assert_eq!(subscribed["state"], "TASK_STATE_COMPLETED");
            assert_eq!(subscribed["text"], "echo: take your time");
        }
        assert_eq!(got["got"]["state"], "TASK_STATE_COMPLETED", "{mode}: {got}");
        assert_eq!(got["got"]["text"], "echo: take your time");
        assert_eq!(got["got"]["history"], 1, "historyLength 1");
        assert_eq!(
            got["got_whole"]["history"],
            json!(["ROLE_USER", "ROLE_AGENT"]),
            "{mode}: GetTask gives the user's message back too"
        );

        let streamed = &got["streamed"];
        assert_eq!(streamed["kinds"][0], "task", "{mode}: {streamed}");
        assert_eq!(streamed["state"], "TASK_STATE_COMPLETED");
        assert_eq!(streamed["text"], "echo: stream this");

        let cancel = &got["cancel"];
        if mode == "direct" {
            assert_eq!(
                cancel["after"]["class"], "TaskNotCancelableError",
                "{cancel}"
            );
        } else {
            assert_eq!(cancel["after"], "TASK_STATE_CANCELED", "{mode}: {cancel}");
            assert_eq!(
                cancel["again"]["class"], "TaskNotCancelableError",
                "{cancel}"
            );
            assert_eq!(
                cancel["later"], "TASK_STATE_CANCELED",
                "{mode}: the run's own answer does not replace it"
            );
        }
        assert_eq!(got["unknown"]["class"], "TaskNotFoundError");
        assert_eq!(got["subscribe_ended"]["class"], "UnsupportedOperationError");

        let answered = model.answered_prompts();
        assert_eq!(answered.get("hello"), Some(&1), "{mode}: {answered:?}");
        let continued = model
            .requests()
            .into_iter()
            .find(|r| user_turns(r).last().is_some_and(|t| t == "and then?"))
            .unwrap_or_else(|| panic!("{mode}: no model call for the continued context"));
        assert_eq!(
            user_turns(&continued),
            ["hello", "and then?"],
            "{mode}: the context's earlier turn once"
        );
    }
}

#[tokio::test]
async fn a_client_that_drops_its_stream_subscribes_again_and_gets_the_rest() {
    let text = "Alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima.";
    for mode in MODES {
        let model = ScriptedModel::start(vec![Reply::text_stream(
            text,
            12,
            Duration::from_millis(150),
        )])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let (_server, base) = serve(mode, Some(&model)).await;
        let got = clients::python("a2a_sdk.py", &[&base, "drop", "spell it out", "4"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let before = &got["before"];
        assert!(
            before["kinds"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "artifact_update")),
            "{mode}: dropped mid-answer: {before}"
        );
        assert_ne!(before["state"], "TASK_STATE_COMPLETED", "{mode}: {before}");
        let after = &got["after"];
        assert_eq!(after["text"], text, "{mode}: no gap, no duplicate: {got}");
        assert_eq!(after["state"], "TASK_STATE_COMPLETED");
        assert_eq!(model.calls(), 1, "{mode}: one run");
    }
}

#[tokio::test]
async fn the_js_client_sends_and_streams_in_every_mode() {
    for mode in MODES {
        let (_server, base) = serve(mode, None).await;
        let got = clients::node("a2a.mjs", &[&base, "what is 12 * 7"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let answer = "[offline model] math: 12 * 7 = 84";
        assert_eq!(
            got["send"]["state"], "TASK_STATE_COMPLETED",
            "{mode}: {got}"
        );
        assert_eq!(got["send"]["text"], answer);
        assert_eq!(got["stream"]["kinds"][0], "task");
        assert_eq!(
            got["stream"]["state"], "TASK_STATE_COMPLETED",
            "{mode}: {got}"
        );
        assert_eq!(got["stream"]["text"], answer);
    }
}

#[tokio::test]
async fn the_agent_card_validates_against_the_specifications_schema() {
    let (_server, base) = serve("direct", None).await;
    for url in [
        format!("{base}/.well-known/agent-card.json"),
        format!("{base}/math/.well-known/agent-card.json"),
    ] {
        let got = clients::python("a2a_card.py", &[&url])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got["problems"], json!([]), "{url}: {got}");
    }
    let math = clients::python(
        "a2a_card.py",
        &[&format!("{base}/math/.well-known/agent-card.json")],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(math["card"]["name"], "math");
    assert_eq!(
        math["card"]["supportedInterfaces"][0]["url"],
        format!("{base}/math")
    );
    assert!(
        math["card"].get("securitySchemes").is_none(),
        "no authorizer here"
    );
}

const SECRET: &str = "a2a-gateway-test-secret-of-32-bytes!!!";

fn token(subject: &str) -> String {
    let claims = json!({"sub": subject, "exp": ak_core::ports::now_epoch_secs() + 600});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn rpc(url: &str, token: &str, method: &str, params: Value) -> Value {
    let headers = vec![
        ("content-type".to_owned(), "application/json".to_owned()),
        ("authorization".to_owned(), format!("Bearer {token}")),
        ("a2a-version".to_owned(), "1.0".to_owned()),
    ];
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
    let (status, _, text) = ak_tests::http_raw(url, "POST", &headers, Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "JSON-RPC answers with HTTP 200: {text}");
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[tokio::test]
async fn behind_api_gateway_the_card_names_the_stage_and_tasks_stay_their_users() {
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
            ("AK_AUTH__JWT__ALGORITHMS", "HS256"),
            ("AK_AUTH__JWT__SECRET", SECRET),
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
    let base = format!("{}/api/v1/a2a", gateway.url);
    let alice = token("alice");

    let card = clients::python(
        "a2a_card.py",
        &[&format!("{base}/.well-known/agent-card.json"), &alice],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(card["problems"], json!([]), "{card}");
    assert_eq!(
        card["card"]["supportedInterfaces"][0]["url"],
        base.as_str(),
        "the URL as the client reached it, stage included"
    );
    assert_eq!(
        card["card"]["securitySchemes"]["bearer"]["httpAuthSecurityScheme"]["scheme"],
        "Bearer"
    );

    let js = clients::node_with_env(
        "a2a.mjs",
        &[&base, "what is 12 * 7"],
        &[("A2A_TOKEN", &alice)],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        js["send"]["text"], "[offline model] math: 12 * 7 = 84",
        "{js}"
    );
    assert_eq!(js["stream"]["state"], "TASK_STATE_COMPLETED", "{js}");

    let sent = rpc(&base, &alice, "SendMessage", json!({"message": {"messageId": "gw-1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}})).await;
    let task_id = sent["result"]["task"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(
        sent["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED",
        "{sent}"
    );
    let own = rpc(&base, &alice, "GetTask", json!({"id": task_id})).await;
    assert_eq!(own["result"]["id"], task_id.as_str(), "{own}");
    let other = rpc(&base, &token("bob"), "GetTask", json!({"id": task_id})).await;
    assert_eq!(
        other["error"]["code"], -32001,
        "another user's task is not found: {other}"
    );
    let legacy = rpc(&base, &alice, "message/send", json!({})).await;
    assert_eq!(legacy["error"]["code"], -32009, "{legacy}");
    let unknown = rpc(&base, &alice, "NoSuchMethod", json!({})).await;
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");
    let _ = handler.kill();
    let _ = authorizer.kill();
    let _ = handler.wait();
    let _ = authorizer.wait();
}
