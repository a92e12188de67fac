//! Traces, as a collector sees them: the built functions under local Runtime APIs export to a
//! real OTLP/HTTP receiver (`ak_tests::otlp`, decoding with `opentelemetry-proto`). A rest_sync
//! request through the request handler, SQS (moto), the agent runner and the response handler
//! is one trace with the HTTP, messaging and GenAI spans in the right tree; each invocation's
//! spans arrive before its reply reaches the Runtime API (buffered and streamed); content
//! stays off spans unless asked for; a collector that does not answer costs an answer at most
//! the configured bound.

use ak_adapters::sqs::SqsQueue;
use ak_core::ports::Queue;
use ak_tests::event_source::EventSource;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::otlp::OtlpReceiver;
use ak_tests::runtime_api::{
    Killed, Outcome, RuntimeApi, function_binary, spawn_function, spawn_function_with_log,
};
use ak_tests::{redis_settings, sqs_client, unique_name};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const WAIT: Duration = Duration::from_secs(30);

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/events")
        .join(name);
    let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
        .unwrap_or_default();
    v["event"].clone()
}

/// When an outcome observed at `at` arrived, in nanoseconds since the epoch (the receiver's
/// clock).
fn unix_nanos(at: Instant) -> u128 {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (now - at.elapsed()).as_nanos()
}

/// Triage hands off to math, math multiplies, then answers: three model calls, 11 + 7 tokens
/// each.
fn triage_to_math() -> Vec<Reply> {
    ak_tests::model_server::triage_to_multiply(6, 7)
}

fn named<'a>(spans: &'a [Value], name: &str) -> Vec<&'a Value> {
    spans.iter().filter(|s| s["name"] == name).collect()
}

fn one<'a>(spans: &'a [Value], name: &str) -> &'a Value {
    let found = named(spans, name);
    assert_eq!(
        found.len(),
        1,
        "one span {name:?} expected; spans: {:#?}",
        spans
            .iter()
            .map(|s| (&s["name"], &s["span_id"], &s["parent_span_id"]))
            .collect::<Vec<_>>()
    );
    found[0]
}

fn child_of(span: &Value, parent: &Value) -> bool {
    span["parent_span_id"] == parent["span_id"] && span["trace_id"] == parent["trace_id"]
}

#[tokio::test]
async fn a_rest_sync_request_is_one_trace_across_the_three_functions() {
    let receiver = OtlpReceiver::start(0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::start(triage_to_math())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let input_url = ak_tests::create_queue("trace-in", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let output_url = ak_tests::create_queue("trace-out", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let redis = redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let config = ak_tests::repo_config();
    let common = [
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_EXECUTION__MODE", "rest_sync"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url.as_str()),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", output_url.as_str()),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
            redis.url.expose(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
            prefix.as_str(),
        ),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            receiver.endpoint.as_str(),
        ),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2000"),
    ];
    let start = |name: &'static str, extra: Vec<(&'static str, String)>| {
        let common = common.to_vec();
        async move {
            let api = Arc::new(RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}")));
            let binary = function_binary(name, "debug").unwrap_or_else(|e| panic!("{e}"));
            let mut env: Vec<(&str, &str)> = common;
            env.push(("AWS_LAMBDA_FUNCTION_NAME", name));
            env.extend(extra.iter().map(|(k, v)| (*k, v.as_str())));
            let child = spawn_function(&binary, &api, &env).unwrap_or_else(|e| panic!("{e}"));
            (api, Killed(child))
        }
    };
    let model_env = vec![
        ("AK_MODEL__PROVIDER", "openai".to_owned()),
        ("OPENAI_API_KEY", "sk-trace".to_owned()),
        ("OPENAI_BASE_URL", model.base_url.clone()),
    ];
    let (handler_api, _handler) = start("request-handler", Vec::new()).await;
    let (runner_api, _runner) = start("agent-runner", model_env).await;
    let (responses_api, _responses) = start("response-handler", Vec::new()).await;
    let sqs = sqs_client().await;
    let input: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs.clone(), &input_url));
    let output: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs, &output_url));
    let _runs = EventSource::start(input, runner_api, 10, WAIT);
    let _stores = EventSource::start(output, responses_api, 10, WAIT);

    // Lambda hands the request handler its X-Ray trace (API Gateway's, with tracing on).
    let xray_parent = "53995c3f42cd8ad8";
    handler_api.set_trace_header(&format!(
        "Root=1-5759e988-bd862e3fe1be46a994272793;Parent={xray_parent};Sampled=0"
    ));
    let trace_id = "5759e988bd862e3fe1be46a994272793";
    let mut event = fixture("http/post_chat.json");
    event["body"] =
        json!(json!({"prompt": "what is 6 * 7", "session_id": unique_name("s")}).to_string());
    let id = handler_api.invoke(event);
    let Some((Outcome::Response(answer), answered_at)) = handler_api.outcome(&id, WAIT).await
    else {
        panic!("no answer; init error: {:?}", handler_api.init_error());
    };
    let answered_at = unix_nanos(answered_at);
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let body: Value =
        serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert_eq!(body["result"], "6 * 7 = 42", "{body}");

    let input_name = input_url.rsplit('/').next().unwrap_or_default();
    let output_name = output_url.rsplit('/').next().unwrap_or_default();
    let all = receiver
        .wait_for(&format!("process {output_name}"), WAIT)
        .await;
    let spans: Vec<Value> = all
        .iter()
        .filter(|s| s["trace_id"] == trace_id)
        .cloned()
        .collect();

    // The request handler: the HTTP request under Lambda's X-Ray segment, then the send.
    let server = one(&spans, "POST /api/v1/chat");
    assert_eq!(server["kind"], "SERVER");
    assert_eq!(server["parent_span_id"], xray_parent);
    assert_eq!(server["attributes"]["http.response.status_code"], 200);
    assert_eq!(server["attributes"]["http.request.method"], "POST");
    assert_eq!(server["resource"]["service.name"], "request-handler");
    let send_input = one(&spans, &format!("send {input_name}"));
    assert_eq!(send_input["kind"], "PRODUCER");
    assert!(child_of(send_input, server));
    assert_eq!(send_input["attributes"]["messaging.system"], "aws_sqs");
    assert!(send_input["attributes"]["messaging.message.id"].is_string());
    for span in [server, send_input] {
        let received = span["received_unix_nano"].as_u64().unwrap_or(u64::MAX) as u128;
        assert!(
            received < answered_at,
            "{} reached the collector {} ms after the reply reached the Runtime API",
            span["name"],
            (received - answered_at) as f64 / 1e6
        );
    }

    // The agent runner: the record's processing continues the send, then the agents.
    let process_input = one(&spans, &format!("process {input_name}"));
    assert_eq!(process_input["kind"], "CONSUMER");
    assert!(child_of(process_input, send_input));
    assert_eq!(process_input["links"][0]["span_id"], send_input["span_id"]);
    assert_eq!(process_input["resource"]["service.name"], "agent-runner");
    let triage = one(&spans, "invoke_agent triage");
    assert!(child_of(triage, process_input));
    assert_eq!(
        triage["attributes"]["gen_ai.operation.name"],
        "invoke_agent"
    );
    assert_eq!(triage["attributes"]["gen_ai.provider.name"], "openai");
    let math = one(&spans, "invoke_agent math");
    assert!(child_of(math, triage), "the handoff is a child of triage");
    let chats = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chats.len(), 3, "one chat span per model call");
    assert_eq!(chats.iter().filter(|c| child_of(c, triage)).count(), 1);
    assert_eq!(chats.iter().filter(|c| child_of(c, math)).count(), 2);
    for chat in &chats {
        assert_eq!(chat["kind"], "CLIENT");
        assert_eq!(chat["attributes"]["gen_ai.operation.name"], "chat");
        assert_eq!(chat["attributes"]["gen_ai.request.model"], "gpt-4o-mini");
        assert_eq!(chat["attributes"]["gen_ai.usage.input_tokens"], 11);
        assert_eq!(chat["attributes"]["gen_ai.usage.output_tokens"], 7);
        assert!(
            chat["attributes"]["gen_ai.response.model"].is_string(),
            "{chat}"
        );
    }
    let last = chats
        .iter()
        .max_by_key(|c| c["start_time_unix_nano"].as_u64())
        .copied()
        .unwrap_or(&Value::Null);
    assert_eq!(
        last["attributes"]["gen_ai.response.finish_reasons"],
        json!(["stop"])
    );
    let tool = one(&spans, "execute_tool multiply");
    assert!(child_of(tool, math));
    assert_eq!(tool["attributes"]["gen_ai.tool.name"], "multiply");
    assert!(tool["attributes"]["gen_ai.tool.call.id"].is_string());
    // The run's tokens are the answer's.
    assert_eq!(
        triage["attributes"]["gen_ai.usage.input_tokens"],
        body["usage"]["prompt_tokens"]
    );
    assert_eq!(
        triage["attributes"]["gen_ai.usage.output_tokens"],
        body["usage"]["completion_tokens"]
    );
    assert_eq!(body["usage"]["prompt_tokens"], 33, "{body}");
    let send_output = one(&spans, &format!("send {output_name}"));
    assert!(child_of(send_output, process_input));

    // The response handler continues the answer's send.
    let process_output = one(&spans, &format!("process {output_name}"));
    assert!(child_of(process_output, send_output));
    assert_eq!(
        process_output["resource"]["service.name"],
        "response-handler"
    );

    // Content stays off spans unless asked for.
    for span in &spans {
        for key in [
            "gen_ai.input.messages",
            "gen_ai.output.messages",
            "gen_ai.tool.call.arguments",
        ] {
            assert!(span["attributes"].get(key).is_none(), "{key} on {span}");
        }
    }
}

/// A request handler in direct mode under a local Runtime API, exporting to `endpoint`.
async fn direct_handler(
    model: &ScriptedModel,
    extra: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> (RuntimeApi, Killed) {
    let config = ak_tests::repo_config();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut env = vec![
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_EXECUTION__MODE", "direct"),
        ("AK_MODEL__PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-trace"),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
    ];
    env.extend_from_slice(extra);
    let child = spawn_function_with_log(&binary, &api, &env, log).unwrap_or_else(|e| panic!("{e}"));
    (api, Killed(child))
}

#[tokio::test]
async fn a_streamed_answer_continues_the_callers_trace_and_carries_content_when_asked() {
    let receiver = OtlpReceiver::start(0)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::start(triage_to_math())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (api, _handler) = direct_handler(
        &model,
        &[
            ("AK_API__RESPONSE_STREAMING", "true"),
            (
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                receiver.endpoint.trim_end_matches("/v1/traces"),
            ),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000"),
            ("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true"),
        ],
        None,
    )
    .await;
    let (trace_id, parent) = ("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7");
    let mut event = fixture("function_url/post_chat.json");
    event["body"] = json!(json!({"prompt": "what is 6 * 7", "stream": true}).to_string());
    event["isBase64Encoded"] = json!(false);
    event["headers"]["traceparent"] = json!(format!("00-{trace_id}-{parent}-01"));
    let id = api.invoke(event);
    let Some((Outcome::Streamed { body, .. }, answered_at)) = api.outcome(&id, WAIT).await else {
        panic!("not streamed; init error: {:?}", api.init_error());
    };
    let answered_at = unix_nanos(answered_at);
    assert!(
        String::from_utf8_lossy(&body).contains("event: done"),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let spans: Vec<Value> = receiver
        .spans()
        .await
        .into_iter()
        .filter(|s| s["trace_id"] == trace_id)
        .collect();
    let server = one(&spans, "POST /api/v1/chat");
    assert_eq!(
        server["parent_span_id"], parent,
        "the caller's span is the parent"
    );
    for span in &spans {
        let received = span["received_unix_nano"].as_u64().unwrap_or(u64::MAX) as u128;
        assert!(
            received < answered_at,
            "{} came after the stream ended",
            span["name"]
        );
    }
    let triage = one(&spans, "invoke_agent triage");
    assert!(child_of(triage, server));
    let chats = named(&spans, "chat gpt-4o-mini");
    assert_eq!(chats.len(), 3);
    let first = chats
        .iter()
        .min_by_key(|c| c["start_time_unix_nano"].as_u64())
        .copied()
        .unwrap_or(&Value::Null);
    let input: Value = serde_json::from_str(
        first["attributes"]["gen_ai.input.messages"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(
        input
            .as_array()
            .and_then(|m| m.last())
            .cloned()
            .unwrap_or_default(),
        json!({"role": "user", "parts": [{"type": "text", "content": "what is 6 * 7"}]}),
        "{input}"
    );
    let output: Value = serde_json::from_str(
        first["attributes"]["gen_ai.output.messages"]
            .as_str()
            .unwrap_or_default(),
    )
    .unwrap_or_default();
    assert_eq!(output[0]["parts"][0]["type"], "tool_call", "{output}");
    assert_eq!(output[0]["parts"][0]["name"], "transfer_to_math");
    let tool = one(&spans, "execute_tool multiply");
    assert_eq!(
        tool["attributes"]["gen_ai.tool.call.arguments"],
        "{\"a\":6,\"b\":7}"
    );
    assert_eq!(
        tool["attributes"]["gen_ai.tool.call.result"],
        "{\"product\":42}"
    );
}

#[tokio::test]
async fn a_collector_that_does_not_answer_costs_each_answer_at_most_the_bound() {
    // The collector holds every export for 30 s; the bound is 300 ms.
    let receiver = OtlpReceiver::start(30_000)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::start(vec![
        Reply::Text("first".into()),
        Reply::Text("second".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = std::env::temp_dir().join(unique_name("trace-slow.log"));
    let (api, _handler) = direct_handler(
        &model,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                receiver.endpoint.as_str(),
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "300"),
            ("AK_AGENTS__DEFAULT", "history"),
        ],
        Some(&log),
    )
    .await;
    for prompt in ["first", "second"] {
        let mut event = fixture("http/post_chat.json");
        event["body"] = json!(json!({"prompt": prompt}).to_string());
        let started = Instant::now();
        let id = api.invoke(event);
        let Some((Outcome::Response(answer), at)) = api.outcome(&id, WAIT).await else {
            panic!("no answer; init error: {:?}", api.init_error());
        };
        let took = at.duration_since(started);
        assert_eq!(answer["statusCode"], 200, "{answer}");
        assert!(
            took < Duration::from_secs(3),
            "the answer took {took:?} with a collector that does not answer"
        );
    }
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        text.contains("trace export failed") && text.contains("\"SpansDropped\""),
        "the drop is logged and counted:\n{text}"
    );
}

/// A collector that refuses every export with `503` and `Retry-After: 3` is not retried: the
/// export's one attempt fails at once and the answer does not wait for a retry.
#[tokio::test]
async fn a_collector_asking_for_retries_does_not_hold_the_answer() {
    let receiver = OtlpReceiver::start_with(&["--status", "503", "--retry-after", "3"])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ScriptedModel::start(vec![Reply::Text("answered".into())])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (api, _handler) = direct_handler(
        &model,
        &[
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                receiver.endpoint.as_str(),
            ),
            ("AK_AGENTS__DEFAULT", "history"),
        ],
        None,
    )
    .await;
    let mut event = fixture("http/post_chat.json");
    event["body"] = json!(json!({"prompt": "hello"}).to_string());
    let started = Instant::now();
    let id = api.invoke(event);
    let Some((Outcome::Response(answer), at)) = api.outcome(&id, WAIT).await else {
        panic!("no answer; init error: {:?}", api.init_error());
    };
    assert_eq!(answer["statusCode"], 200, "{answer}");
    let took = at.duration_since(started);
    assert!(
        took < Duration::from_millis(1500),
        "the answer took {took:?}: a retry after 3 s must not hold it"
    );
}

#[tokio::test]
async fn ak_local_prints_each_requests_tree_across_its_queues() {
    let log = std::env::temp_dir().join(unique_name("ak-local-trace.log"));
    let env = ak_tests::local::LocalServer::mode_env("rest_async");
    let server = ak_tests::local::LocalServer::start_with(&["--trace"], &env, Some(&log))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let (trace_id, parent) = ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331");
    let (status, _, text) = ak_tests::http_raw(
        &format!("{}/api/v1/chat", server.base),
        "POST",
        &[(
            "traceparent".to_owned(),
            format!("00-{trace_id}-{parent}-01"),
        )],
        Some(&json!({"prompt": "what is 12 * 7"})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 202, "{text}");
    let accepted: Value = serde_json::from_str(&text).unwrap_or_default();
    let id = accepted["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!id.is_empty(), "{accepted}");
    let mut text = String::new();
    for _ in 0..100 {
        text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("process output") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // One tree per span that began in the process's trace: the request, the runner's record,
    // the response handler's record, all of the caller's trace.
    let trees: Vec<&str> = text.lines().filter(|l| l.starts_with("trace ")).collect();
    assert!(trees.len() >= 3, "{text}");
    assert!(
        trees.iter().all(|t| *t == format!("trace {trace_id}")),
        "{text}"
    );
    for span in [
        "POST /api/v1/chat",
        "send input",
        "process input",
        "invoke_agent triage",
        "invoke_agent math",
        "execute_tool multiply",
        "send output",
        "process output",
    ] {
        assert!(
            text.contains(&format!("  {span} ")),
            "{span} missing:\n{text}"
        );
    }
    drop(server);
}
