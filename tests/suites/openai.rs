//! The OpenAI-compatible endpoint (`/api/v1/openai/v1`) with the clients people use: the
//! official `openai` SDKs for Python (sync, async, streamed, raw responses, exception classes)
//! and Node, the Vercel AI SDK's OpenAI-compatible provider, and the requests Open WebUI and
//! LibreChat send (`tests/fixtures/openai_clients/`, each with its source) — against `ak-local`
//! in every execution mode and against the built request handler behind an API Gateway REST
//! API with the built authorizer.

use ak_tests::clients;
use ak_tests::gateway::RestGateway;
use ak_tests::local::LocalServer;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{RuntimeApi, function_binary, spawn_function};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

const MODES: [&str; 3] = ["direct", "rest_sync", "rest_async"];

/// `ak-local` in `mode` with the repository's agents (triage first) answering through `model`.
async fn serve(mode: &'static str, model: &ScriptedModel) -> (LocalServer, String) {
    let mut env = LocalServer::mode_env(mode);
    env.push(("OPENAI_BASE_URL", &model.base_url));
    env.push(("OPENAI_API_KEY", "sk-test"));
    let server = LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("{}/api/v1/openai/v1", server.base);
    (server, base)
}

fn echo() -> Reply {
    Reply::Echo(Duration::ZERO)
}

#[tokio::test]
async fn the_python_sdk_works_unchanged_in_every_mode() {
    for mode in MODES {
        let model = ScriptedModel::constant(echo())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_server, base) = serve(mode, &model).await;
        let got = clients::python("openai_sdk.py", &[&base, "basic", "what is 2 * 3"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let answer = "echo: what is 2 * 3";
        assert_eq!(
            got["models"],
            json!(["triage", "math", "history"]),
            "{mode}: the default agent first"
        );
        assert_eq!(got["retrieved"], "triage");
        let create = &got["create"];
        assert_eq!(create["content"], answer, "{mode}: {got}");
        assert_eq!(create["object"], "chat.completion");
        assert_eq!(create["role"], "assistant");
        assert_eq!(create["model"], "triage", "the answering agent");
        assert_eq!(create["finish_reason"], "stop");
        assert_eq!(
            create["usage"]["total_tokens"], 18,
            "the model's usage: {create}"
        );
        assert!(
            create["id"]
                .as_str()
                .is_some_and(|id| id.starts_with("chatcmpl-"))
        );
        let raw = &got["raw"];
        assert_eq!(raw["status"], 200);
        assert_eq!(raw["agent"], "triage");
        assert_eq!(raw["content_type"], "application/json");
        assert!(
            raw["request_id"].as_str().is_some_and(|id| !id.is_empty()),
            "{raw}"
        );
        assert_eq!(raw["content"], answer);
        let stream = &got["stream"];
        assert_eq!(stream["content"], answer, "{mode}: {stream}");
        assert_eq!(stream["finish_reasons"], json!(["stop"]));
        assert_eq!(stream["usage"]["total_tokens"], 18);
        assert_eq!(got["stream_helper"], answer);
        assert_eq!(
            got["streaming_response"]["content_type"],
            "text/event-stream"
        );
        assert_eq!(
            got["streaming_response"]["done"], true,
            "ends in data: [DONE]"
        );
        assert_eq!(got["async"]["content"], answer);
        assert_eq!(got["async"]["stream"], answer);
        let unknown = &got["unknown_model"];
        assert_eq!(unknown["class"], "NotFoundError", "{unknown}");
        assert_eq!(unknown["status"], 404);
        assert_eq!(unknown["code"], "model_not_found");
        assert_eq!(unknown["param"], "model");
        assert!(
            unknown["message"]
                .as_str()
                .is_some_and(|m| m.contains("triage, math, history"))
        );
        assert_eq!(got["two_choices"]["class"], "BadRequestError");
        assert_eq!(got["two_choices"]["param"], "n");
        assert_eq!(got["unknown_model_retrieve"]["class"], "NotFoundError");
        // Each request ran the model once (create, raw, stream, helper, streaming response,
        // async ×2); the refused ones never reached it.
        assert_eq!(model.calls(), 7, "{mode}");
    }
}

#[tokio::test]
async fn the_node_sdk_and_the_ai_sdk_work_unchanged_in_every_mode() {
    for mode in MODES {
        let model = ScriptedModel::constant(echo())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let (_server, base) = serve(mode, &model).await;
        let answer = "echo: name a prime";
        let got = clients::node("openai_sdk.mjs", &[&base, "name a prime"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(got["models"], json!(["triage", "math", "history"]));
        assert_eq!(got["create"]["content"], answer, "{mode}: {got}");
        assert_eq!(got["create"]["usage"]["total_tokens"], 18);
        assert_eq!(got["create"]["agent"], "triage");
        assert!(got["create"]["request_id"].is_string());
        assert_eq!(got["stream"]["content"], answer);
        assert_eq!(got["stream"]["finish_reasons"], json!(["stop"]));
        assert_eq!(got["stream"]["usage"]["total_tokens"], 18);
        assert_eq!(got["unknown_model"]["class"], "NotFoundError", "{got}");
        assert_eq!(got["unknown_model"]["code"], "model_not_found");

        let got = clients::node("ai_sdk.mjs", &[&base, "name a prime"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(got["generate"]["text"], answer, "{mode}: {got}");
        assert_eq!(got["generate"]["finish_reason"], "stop");
        assert_eq!(got["generate"]["input_tokens"], 11);
        assert_eq!(got["generate"]["output_tokens"], 7);
        assert_eq!(got["generate"]["model"], "triage");
        assert_eq!(got["stream"]["text"], answer, "{got}");
        assert_eq!(got["stream"]["finish_reason"], "stop");
        assert_eq!(got["stream"]["total_tokens"], 18);
        assert_eq!(got["stream"]["errors"], json!([]), "{got}");
        assert_eq!(got["unknown_model"]["status"], 404, "{got}");
    }
}

/// The user messages of one model request, in order.
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
async fn a_five_turn_conversation_gives_the_model_each_earlier_turn_once() {
    for mode in ["direct", "rest_async"] {
        let model = ScriptedModel::start(Vec::new())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let model = {
            // Echo every call (recorded, unlike `constant`).
            let replies = (0..5).map(|_| echo()).collect();
            drop(model);
            ScriptedModel::start(replies)
                .await
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (_server, base) = serve(mode, &model).await;
        let got = clients::python("openai_sdk.py", &[&base, "conversation", "5"])
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e}"));
        let replies: Vec<&str> = got["replies"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(
            replies,
            [
                "echo: turn 1",
                "echo: turn 2",
                "echo: turn 3",
                "echo: turn 4",
                "echo: turn 5"
            ],
            "{mode}"
        );
        let requests = model.requests();
        assert_eq!(requests.len(), 5, "{mode}: one model call per turn");
        for (i, request) in requests.iter().enumerate() {
            let expected: Vec<String> = (1..=i + 1).map(|n| format!("turn {n}")).collect();
            assert_eq!(
                user_turns(request),
                expected,
                "{mode}: request {i}: {request}"
            );
            let answers: Vec<&str> = request["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "assistant")
                .filter_map(|m| m["content"].as_str())
                .collect();
            let expected: Vec<String> = (1..=i).map(|n| format!("echo: turn {n}")).collect();
            assert_eq!(answers, expected, "{mode}: earlier answers once each");
            let systems: Vec<&Value> = request["messages"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|m| m["role"] == "system")
                .collect();
            assert_eq!(systems.len(), 1, "one system message: {request}");
            let system = systems[0]["content"].as_str().unwrap_or_default();
            assert!(
                system.starts_with("You determine which agent")
                    && system.ends_with("Answer in one line."),
                "the client's system message follows the agent's instructions: {system}"
            );
        }
    }
}

#[tokio::test]
async fn a_named_session_keeps_the_conversation_and_an_idempotency_key_runs_once() {
    let model = ScriptedModel::start((0..3).map(|_| echo()).collect())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (_server, base) = serve("rest_sync", &model).await;
    let first = clients::python(
        "openai_sdk.py",
        &[
            &base,
            "headers",
            "first",
            "X-Session-Id=chat-42",
            "Idempotency-Key=key-1",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first["content"], "echo: first");
    assert_eq!(first["session_id"], "chat-42");
    assert_eq!(first["request_id"], "key-1");
    // The same request again (a client's retry): the first answer, no second model call.
    let again = clients::python(
        "openai_sdk.py",
        &[
            &base,
            "headers",
            "first",
            "X-Session-Id=chat-42",
            "Idempotency-Key=key-1",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again["content"], "echo: first");
    assert_eq!(model.calls(), 1);
    // The next turn sends only its own message: the session holds the first.
    let second = clients::python(
        "openai_sdk.py",
        &[&base, "headers", "second", "X-Session-Id=chat-42"],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(second["content"], "echo: second");
    let requests = model.requests();
    assert_eq!(user_turns(&requests[1]), ["first", "second"]);
}

#[tokio::test]
async fn a_model_that_keeps_rate_limiting_is_a_rate_limit_error() {
    let model = ScriptedModel::constant(Reply::Status(429))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut env = LocalServer::mode_env("direct");
    env.push(("OPENAI_BASE_URL", &model.base_url));
    env.push(("OPENAI_API_KEY", "sk-test"));
    env.push(("AK_MODEL__MAX_RETRIES", "0"));
    let server = LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("{}/api/v1/openai/v1", server.base);
    let got = clients::python("openai_sdk.py", &[&base, "error", "any-key"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["class"], "RateLimitError", "{got}");
    assert_eq!(got["status"], 429);
    assert_eq!(got["type"], "rate_limit_error");
    assert_eq!(got["retry_after"], "2");
    assert!(got["request_id"].is_string(), "{got}");
}

/// A request recorded from a chat UI (`tests/fixtures/openai_clients/<name>`).
fn recorded(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/openai_clients")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Sends a recorded request (its method, path, headers and body) to `base`; status, headers
/// and body text.
async fn replay(base: &str, fixture: &Value) -> (u16, hyper::HeaderMap, String) {
    let path = fixture["path"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("/v1");
    let method = fixture["method"].as_str().unwrap_or("GET");
    let headers: Vec<(String, String)> = fixture["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(name, _)| {
            !name.eq_ignore_ascii_case("host") && !name.eq_ignore_ascii_case("content-length")
        })
        .map(|(name, value)| (name.clone(), value.as_str().unwrap_or_default().to_owned()))
        .collect();
    let body = (method == "POST").then(|| &fixture["body"]);
    ak_tests::http_raw(&format!("{base}{path}"), method, &headers, body)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The text of a `chat.completion.chunk` stream, and whether it ended in `[DONE]`.
fn stream_text(body: &str) -> (String, bool, Vec<Value>) {
    let mut text = String::new();
    let mut chunks = Vec::new();
    let mut done = false;
    for line in body.lines() {
        let Some(data) = line.strip_prefix("data: ") else {
            continue;
        };
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let chunk: Value = serde_json::from_str(data).unwrap_or_else(|e| panic!("{e}: {data}"));
        if let Some(piece) = chunk["choices"][0]["delta"]["content"].as_str() {
            text.push_str(piece);
        }
        chunks.push(chunk);
    }
    (text, done, chunks)
}

#[tokio::test]
async fn the_requests_open_webui_and_librechat_send_are_answered_as_they_expect() {
    let config = std::env::temp_dir().join(ak_tests::unique_name("support-config"));
    std::fs::write(
        &config,
        "agents:\n  default: support-agent\n  definitions:\n    - name: support-agent\n      instructions: You help customers.\n",
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::constant(echo())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let config_path = config.display().to_string();
    for mode in ["direct", "rest_async"] {
        let mut env = LocalServer::mode_env(mode);
        env.push(("OPENAI_BASE_URL", &model.base_url));
        env.push(("OPENAI_API_KEY", "sk-test"));
        env.push(("AK_CONFIG_PATH_OVERRIDE", &config_path));
        let server = LocalServer::start(&env)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let base = format!("{}/api/v1/openai/v1", server.base);

        for name in ["openwebui_models_list.json", "librechat_models_list.json"] {
            let (status, _, body) = replay(&base, &recorded(name)).await;
            assert_eq!(status, 200, "{name}: {body}");
            let list: Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(list["object"], "list");
            assert_eq!(list["data"][0]["id"], "support-agent", "{name}: {list}");
        }
        // Chats, streamed: each UI reads the text from the deltas and stops at [DONE].
        for name in [
            "openwebui_chat_stream.json",
            "openwebui_chat_followup_stream.json",
            "librechat_chat_stream.json",
        ] {
            let fixture = recorded(name);
            let (status, headers, body) = replay(&base, &fixture).await;
            assert_eq!(status, 200, "{mode} {name}: {body}");
            assert_eq!(
                headers.get("content-type").and_then(|v| v.to_str().ok()),
                Some("text/event-stream"),
                "{name}"
            );
            let (text, done, chunks) = stream_text(&body);
            let last_user = fixture["body"]["messages"]
                .as_array()
                .and_then(|m| m.iter().rev().find(|m| m["role"] == "user"))
                .and_then(|m| m["content"].as_str())
                .unwrap_or_default()
                .to_owned();
            assert_eq!(text, format!("echo: {last_user}"), "{mode} {name}");
            assert!(done, "{name}: ends in [DONE]");
            let wants_usage = fixture["body"]["stream_options"]["include_usage"] == true;
            assert_eq!(
                chunks.iter().any(|c| c["usage"]["total_tokens"] == 18),
                wants_usage,
                "{name}: a usage chunk exactly when asked"
            );
        }
        // Background tasks (titles, tags, follow-ups): one JSON answer with one choice.
        for name in [
            "openwebui_title_generation.json",
            "openwebui_tags_generation.json",
            "openwebui_follow_up_generation.json",
            "librechat_title.json",
        ] {
            let (status, _, body) = replay(&base, &recorded(name)).await;
            assert_eq!(status, 200, "{mode} {name}: {body}");
            let answer: Value = serde_json::from_str(&body).unwrap_or_default();
            assert_eq!(answer["object"], "chat.completion", "{name}");
            assert_eq!(answer["choices"].as_array().map(Vec::len), Some(1));
            assert!(
                answer["choices"][0]["message"]["content"]
                    .as_str()
                    .is_some_and(|c| c.starts_with("echo: ")),
                "{name}: {answer}"
            );
        }
        // An image in the prompt: the agents read text only, and the UI shows why.
        let (status, _, body) = replay(&base, &recorded("openwebui_chat_image_parts.json")).await;
        assert_eq!(status, 400, "{body}");
        let error: Value = serde_json::from_str(&body).unwrap_or_default();
        assert!(
            error["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("image_url") && m.contains("text parts only")),
            "{error}"
        );
        drop(server);
    }
    let _ = std::fs::remove_file(config);
}

/// A signed token for the test authorizer (HS256, the secret below).
fn token(subject: &str) -> String {
    let claims = json!({
        "sub": subject,
        "exp": ak_core::ports::now_epoch_secs() + 600,
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

const SECRET: &str = "openai-surface-test-secret-of-32-bytes!";

#[tokio::test]
async fn through_api_gateway_with_the_authorizer_the_api_key_is_the_token() {
    let model = ScriptedModel::constant(echo())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
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
            ("OPENAI_BASE_URL", &model.base_url),
            ("OPENAI_API_KEY", "sk-test"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let mut authorizer = spawn_function(
        &authorizer,
        &auth_api,
        &[
            ("AK_AUTH__JWT__ALGORITHMS", "HS256"),
            ("AK_AUTH__JWT__SECRET", SECRET),
            ("AK_AUTH__JWT__REQUIRED_CLAIMS__SUB", "alice,bob"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let gateway = RestGateway::start(handler_api.clone(), Some(auth_api.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("{}/api/v1/openai/v1", gateway.url);

    let got = clients::python("openai_sdk.py", &[&base, "error", "-"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["status"], 403, "a key that is no token: {got}");
    assert_eq!(got["class"], "PermissionDeniedError");
    let got = clients::python("openai_sdk.py", &[&base, "error", &token("mallory")])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got["class"], "PermissionDeniedError",
        "a token the rules deny: {got}"
    );
    let got = clients::python("openai_sdk.py", &[&base, "error", "none"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        got["class"], "AuthenticationError",
        "no token at all: {got}"
    );
    assert_eq!(got["status"], 401);
    assert_eq!(model.calls(), 0, "nothing refused reached the model");

    let alice = token("alice");
    let got = clients::python(
        "openai_sdk.py",
        &[
            &base,
            "headers",
            "hello from alice",
            &format!("Authorization=Bearer {alice}"),
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["content"], "echo: hello from alice", "{got}");
    // A session alice started is hers: bob's streamed request is refused with its status (403
    // before anything is written), not a 200 stream carrying an error.
    let got = clients::python(
        "openai_sdk.py",
        &[
            &base,
            "headers",
            "my session",
            &format!("Authorization=Bearer {alice}"),
            "X-Session-Id=owned-1",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["session_id"], "owned-1", "{got}");
    let bob = token("bob");
    let got = clients::python(
        "openai_sdk.py",
        &[
            &base,
            "stream_headers",
            "let me in",
            &format!("Authorization=Bearer {bob}"),
            "X-Session-Id=owned-1",
        ],
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got["class"], "PermissionDeniedError", "{got}");
    assert_eq!(got["status"], 403);
    let _ = handler.kill();
    let _ = authorizer.kill();
    let _ = handler.wait();
    let _ = authorizer.wait();
}
