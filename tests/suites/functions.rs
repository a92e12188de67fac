//! The real function binaries (`main.rs` of each), started against a local Lambda Runtime API and
//! invoked with the fixtures in tests/fixtures, as `cargo lambda invoke --data-file` would.

use ak_adapters::redis::RedisResponseStore;
use ak_adapters::sqs::SqsQueue;
use ak_core::ports::{Queue, QueueMessage, ResponseStore};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use ak_tests::{redis_settings, sqs_client, unique_name};
use serde_json::{Value, json};
use std::process::Child;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn start(name: &str, env: &[(&str, &str)]) -> (RuntimeApi, Running) {
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary(name, "debug").unwrap_or_else(|e| panic!("{e}"));
    let child = spawn_function(&binary, &api, env).unwrap_or_else(|e| panic!("{e}"));
    (api, Running(child))
}

async fn invoke(api: &RuntimeApi, event: Value) -> Outcome {
    let id = api.invoke(event);
    match api.outcome(&id, WAIT).await {
        Some((outcome, _)) => outcome,
        None => panic!(
            "no answer within {WAIT:?}; init error: {:?}",
            api.init_error()
        ),
    }
}

async fn queue() -> (String, SqsQueue) {
    let url = ak_tests::create_queue("fn", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    (url.clone(), SqsQueue::new(sqs_client().await, &url))
}

#[tokio::test]
async fn request_handler_answers_api_gateway_events_and_direct_invokes() {
    let config = ak_tests::repo_config();
    let (api, _fn) = start(
        "request-handler",
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "offline"),
        ],
    )
    .await;
    let Outcome::Response(response) = invoke(&api, fixture("apigw_v1_post_chat.json")).await else {
        panic!("request-handler failed");
    };
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value =
        serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(body["agent"], "math", "{body}");
    assert_eq!(body["result"], "[offline model] math: 12 * 7 = 84");
    assert_eq!(body["session_id"], "user-123");

    let Outcome::Response(app) = invoke(&api, fixture("apigw_v1_get_app.json")).await else {
        panic!("GET /app failed");
    };
    assert_eq!(app["statusCode"], 200);
    assert!(
        app["body"]
            .as_str()
            .unwrap_or_default()
            .contains("Hello! from AK 'app'")
    );

    let Outcome::Response(info) = invoke(&api, fixture("apigw_v2_post_app_info.json")).await else {
        panic!("POST /app_info failed");
    };
    assert_eq!(info["statusCode"], 200, "HTTP API events work too: {info}");

    let Outcome::Response(direct) = invoke(&api, fixture("direct_invoke_envelope.json")).await
    else {
        panic!("direct invoke failed");
    };
    assert_eq!(direct["request_id"], "req-123", "{direct}");
    assert_eq!(direct["agent"], "history");
}

#[tokio::test]
async fn request_handler_refuses_to_start_without_a_model_key() {
    let config = ak_tests::repo_config();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let log = std::env::temp_dir().join(ak_tests::unique_name("init-error.log"));
    let env = [("AK_CONFIG_PATH_OVERRIDE", config.as_str())];
    let mut child = ak_tests::runtime_api::spawn_function_with_log(&binary, &api, &env, Some(&log))
        .unwrap_or_else(|e| panic!("{e}"));
    let status = tokio::task::spawn_blocking(move || child.wait()).await;
    let exited = status.ok().and_then(Result::ok);
    assert!(
        exited.is_some_and(|s| !s.success()),
        "it must not serve canned answers on Lambda"
    );
    let error = api.init_error().map(|e| e.to_string()).unwrap_or_default();
    assert!(error.contains("OPENAI_API_KEY"), "init error: {error}");
    // Said once in the function's log (CloudWatch gets stdout and stderr alike), not once per
    // layer that saw it.
    let log = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(log.matches("cold start failed").count(), 1, "{log}");
    assert!(!log.contains("Error: "), "{log}");
}

#[tokio::test]
async fn agent_runner_answers_an_sqs_batch_to_the_output_queue() {
    let (input_url, _) = queue().await;
    let (output_url, output) = queue().await;
    let redis = redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let config = ak_tests::repo_config();
    let (api, _fn) = start(
        "agent-runner",
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "offline"),
            ("AK_EXECUTION__MODE", "rest_async"),
            ("AK_EXECUTION__QUEUES__INPUT__URL", &input_url),
            ("AK_EXECUTION__QUEUES__OUTPUT__URL", &output_url),
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
            (
                "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                redis.url.expose(),
            ),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
        ],
    )
    .await;
    let request_id = unique_name("req");
    let mut event = fixture("sqs_input_event.json");
    event["Records"][0]["messageAttributes"]["request_id"]["stringValue"] = json!(request_id);
    let Outcome::Response(response) = invoke(&api, event).await else {
        panic!("agent-runner failed: {:?}", api.init_error());
    };
    assert_eq!(response, json!({"batchItemFailures": []}));
    let records = output
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    assert_eq!(records.len(), 1);
    let answer = QueueMessage::from_sqs_record(&records[0])
        .unwrap_or_else(|e| panic!("{e}"))
        .message;
    assert_eq!(answer.request_id, request_id);
    assert_eq!(answer.status_code, Some(200));
    assert_eq!(answer.user_id.as_deref(), Some("user-a"));
    assert_eq!(answer.body["agent"], "math");
}

#[tokio::test]
async fn response_handler_stores_an_sqs_batch() {
    let redis = redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let (api, _fn) = start(
        "response-handler",
        &[
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
            (
                "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                redis.url.expose(),
            ),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
        ],
    )
    .await;
    let request_id = unique_name("req");
    let mut event = fixture("sqs_output_event.json");
    event["Records"][0]["messageAttributes"]["request_id"]["stringValue"] = json!(request_id);
    let Outcome::Response(response) = invoke(&api, event).await else {
        panic!("response-handler failed: {:?}", api.init_error());
    };
    assert_eq!(response, json!({"batchItemFailures": []}));
    let store = RedisResponseStore::new(&redis).unwrap_or_else(|e| panic!("{e}"));
    let stored = store
        .get(&request_id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(stored.body["result"], "12 * 7 = 84");
    assert_eq!(stored.user_id.as_deref(), Some("user-a"));
}

/// The scripted model of the shipped example: triage hands off to math, math calls `multiply`,
/// then answers with what the tool returned.
async fn triage_math_multiply() -> ak_tests::model_server::ScriptedModel {
    use ak_tests::model_server::{Reply, ScriptedModel};
    ScriptedModel::start(vec![
        Reply::ToolCall {
            name: "transfer_to_math".into(),
            arguments: json!({}),
        },
        Reply::ToolCall {
            name: "multiply".into(),
            arguments: json!({"a": 12, "b": 7}),
        },
        Reply::Text("12 * 7 = 84".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

/// The tool result the model received: the content of the `tool` message answering the
/// `multiply` call, in the last request.
fn multiply_result(model: &ak_tests::model_server::ScriptedModel) -> Value {
    let requests = model.requests();
    let last = requests.last().cloned().unwrap_or_default();
    let messages = last["messages"].as_array().cloned().unwrap_or_default();
    let id = messages
        .iter()
        .filter_map(|m| m["tool_calls"].as_array())
        .flatten()
        .find(|c| c["function"]["name"] == "multiply")
        .and_then(|c| c["id"].as_str().map(str::to_owned))
        .unwrap_or_default();
    messages
        .iter()
        .find(|m| m["role"] == "tool" && m["tool_call_id"] == id.as_str())
        .and_then(|m| m["content"].as_str())
        .and_then(|c| serde_json::from_str(c).ok())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn the_shipped_multiply_tool_answers_through_the_built_request_handler() {
    let model = triage_math_multiply().await;
    let config = ak_tests::repo_config();
    let (api, _fn) = start(
        "request-handler",
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-tools"),
            ("OPENAI_BASE_URL", &model.base_url),
        ],
    )
    .await;
    let mut event = fixture("apigw_v1_post_chat.json");
    event["body"] = json!(json!({"prompt": "what is 12 * 7"}).to_string());
    let Outcome::Response(response) = invoke(&api, event).await else {
        panic!("request-handler failed");
    };
    assert_eq!(response["statusCode"], 200, "{response}");
    let body: Value =
        serde_json::from_str(response["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(
        (&body["agent"], &body["result"]),
        (&json!("math"), &json!("12 * 7 = 84"))
    );
    assert_eq!(model.calls(), 3);
    assert_eq!(
        multiply_result(&model),
        json!({"product": 84}),
        "the tool ran"
    );
    // The model was offered the tool the way config.yaml gives it to math.
    let offered: Vec<Value> = model.requests()[1]["tools"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert!(
        offered.iter().any(|t| t["function"]["name"] == "multiply"),
        "{offered:?}"
    );
}

#[tokio::test]
async fn the_shipped_multiply_tool_answers_through_the_built_agent_runner_in_rest_sync() {
    let model = triage_math_multiply().await;
    let (input_url, _) = queue().await;
    let (output_url, output) = queue().await;
    let redis = redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let config = ak_tests::repo_config();
    let (api, _fn) = start(
        "agent-runner",
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_MODEL__PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-tools"),
            ("OPENAI_BASE_URL", &model.base_url),
            ("AK_EXECUTION__MODE", "rest_sync"),
            ("AK_EXECUTION__QUEUES__INPUT__URL", &input_url),
            ("AK_EXECUTION__QUEUES__OUTPUT__URL", &output_url),
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
            (
                "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                redis.url.expose(),
            ),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
        ],
    )
    .await;
    let mut event = fixture("sqs_input_event.json");
    event["Records"][0]["messageAttributes"]["request_id"]["stringValue"] =
        json!(unique_name("tools"));
    event["Records"][0]["body"] = json!(json!({"prompt": "what is 12 * 7"}).to_string());
    let Outcome::Response(response) = invoke(&api, event).await else {
        panic!("agent-runner failed: {:?}", api.init_error());
    };
    assert_eq!(response, json!({"batchItemFailures": []}));
    let records = output
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let answer = QueueMessage::from_sqs_record(&records[0])
        .unwrap_or_else(|e| panic!("{e}"))
        .message;
    assert_eq!(answer.body["result"], "12 * 7 = 84", "{}", answer.body);
    assert_eq!(
        multiply_result(&model),
        json!({"product": 84}),
        "the tool ran"
    );
}
