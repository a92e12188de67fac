//! Answers that stream: the OpenAI-compatible provider reading server-sent events from real
//! servers' shapes (the corpus `tests/fixtures/model_streams`), the run's events as SSE to the
//! client through `ak-local` and through the built request handler speaking Lambda's response
//! streaming protocol, heartbeats, and a client that leaves stopping the run.

use crate::model_interop::{Fixture, corpus, interop, reference_settings};
use crate::pipeline::{Store, System, event, system};
use agent_app::multiply;
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, ToolRegistry};
use ak_core::config::ExecutionMode;
use ak_core::ports::memory::MemorySessionStore;
use ak_core::ports::{HistoryLimits, SessionStore};
use ak_core::secret::Secret;
use ak_http::api::{Api, Reply};
use ak_http::sse::parse_sse;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_tests::model_server::{Reply as Model, ScriptedModel};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use futures_util::StreamExt;
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The events of an SSE text: `(name, data)`, after checking every event has the next id.
fn events_of(text: &str) -> Vec<(String, Value)> {
    let events = parse_sse(text);
    for (i, (id, name, _)) in events.iter().enumerate() {
        assert_eq!(
            *id,
            Some(i as u64 + 1),
            "event {name} has id {id:?}: {text}"
        );
    }
    events.into_iter().map(|(_, n, d)| (n, d)).collect()
}

fn deltas(events: &[(String, Value)]) -> String {
    events
        .iter()
        .filter(|(n, _)| n == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect()
}

fn named<'a>(events: &'a [(String, Value)], name: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, d)| d)
        .collect()
}

/// Runs one streamed reply of the corpus through a streaming request and checks the events.
async fn check(f: &Fixture) -> Result<(), String> {
    let expect = &f.expect;
    let kind = expect["kind"].as_str().unwrap_or_default();
    let mut replies = vec![f.reply()];
    match kind {
        "handoff" => replies.push(Model::text_stream("12 * 7 = 84", 3, Duration::ZERO)),
        "tool" => replies.push(Model::text_stream("It is 84.", 3, Duration::ZERO)),
        _ => {}
    }
    let s = interop(replies).await;
    let agent = match kind {
        "handoff" => "triage",
        "tool" => "math",
        _ => "history",
    };
    let body = json!({"prompt": "a question", "agent": agent, "session_id": "s", "stream": true});
    let response = s
        .api
        .handle(event("POST", Some(&body.to_string()), None, None))
        .await;
    let status = response.status().as_u16();
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    if status != 200 {
        return Err(format!("status {status}: {text}"));
    }
    let events = events_of(&text);
    let last = events.last().cloned().unwrap_or_default();
    let fail = |what: &str| Err(format!("{what}; events: {events:?}"));
    if !matches!(last.0.as_str(), "done" | "error") {
        return fail("the stream does not end with done or error");
    }
    match kind {
        "text" | "refusal" | "cut_off" => {
            if last.0 != "done" || last.1["result"] != expect["result"] {
                return fail(&format!("expected done with {}", expect["result"]));
            }
            if deltas(&events) != expect["result"].as_str().unwrap_or_default() {
                return fail("the deltas do not add up to the result");
            }
            if (last.1["refusal"] == true, last.1["truncated"] == true)
                != (kind == "refusal", kind == "cut_off")
            {
                return fail("refusal/truncated flags");
            }
            if let Some(total) = expect["usage"]["total_tokens"].as_u64()
                && last.1["usage"]["total_tokens"].as_u64() != Some(total)
            {
                return fail(&format!("usage should total {total}"));
            }
        }
        "handoff" => {
            let agents: Vec<&Value> = named(&events, "agent");
            if agents != [&json!({"agent": "triage"}), &json!({"agent": "math"})]
                || last.1["agent"] != "math"
                || deltas(&events) != "12 * 7 = 84"
            {
                return fail("expected agent triage, agent math, then math's answer");
            }
        }
        "tool" => {
            let calls = named(&events, "tool_call");
            let results = named(&events, "tool_result");
            if calls.first().map(|c| &c["arguments"]) != Some(&expect["arguments"])
                || results.len() != 1
                || results[0]["name"] != "multiply"
                || results[0]["ok"] != true
                || results[0]["id"] != calls[0]["id"]
                || calls[0]["id"].as_str().is_none_or(str::is_empty)
                || last.1["result"] != "It is 84."
            {
                return fail("expected the multiply call, its result, then the answer");
            }
        }
        "filtered" => {
            if last.0 != "error" || last.1["status"] != 422 {
                return fail("expected an error event with status 422");
            }
        }
        "error" | "invalid" => {
            if last.0 != "error" || last.1["status"] != 502 {
                return fail("expected an error event with status 502");
            }
            if let Some(secret) = expect["secret_text"].as_str()
                && text.contains(secret)
            {
                return fail("provider text leaked");
            }
        }
        other => return Err(format!("unknown kind {other}")),
    }
    Ok(())
}

#[tokio::test]
async fn every_streamed_reply_of_the_corpus_gives_the_client_its_events() {
    let fixtures = corpus("model_streams");
    let servers: BTreeSet<&str> = fixtures.iter().map(|f| f.server.as_str()).collect();
    assert!(servers.len() >= 6, "{servers:?}");
    let mut failures = Vec::new();
    for f in &fixtures {
        if let Err(e) = check(f).await {
            failures.push(format!("{}: {e}", f.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} streams:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

fn triage_to_math(pause: Duration) -> Vec<Model> {
    vec![
        Model::tool_call_stream("transfer_to_math", &json!({})),
        Model::text_stream("12 * 7 is 84: twelve sevens make eighty-four.", 8, pause),
    ]
}

struct LocalServer {
    child: std::process::Child,
    base: String,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ak-local serve` in direct mode against a scripted model.
async fn ak_local(model: &ScriptedModel, env: &[(&str, &str)]) -> LocalServer {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("ak-local", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut command = std::process::Command::new(binary);
    command
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AK_EXECUTION__MODE", "direct")
        .env("AK_MODEL__PROVIDER", "openai")
        .env("OPENAI_API_KEY", "sk-stream")
        .env("OPENAI_BASE_URL", &model.base_url)
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let server = LocalServer {
        child: command.spawn().unwrap_or_else(|e| panic!("{e}")),
        base: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ak-local did not start");
}

#[tokio::test]
async fn a_handoff_streams_through_ak_local_as_the_model_writes_it() {
    let model = ScriptedModel::start(triage_to_math(Duration::from_millis(150)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let server = ak_local(&model, &[]).await;
    let response = ak_tests::post_streaming(
        &format!("{}/api/v1/chat", server.base),
        &json!({"prompt": "what is 12 * 7"}),
        "text/event-stream",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status, 200);
    assert_eq!(
        response.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let chunks = response.chunks().await;
    let text: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    let events = events_of(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(&names[..2], ["agent", "agent"], "{names:?}");
    assert_eq!(
        named(&events, "agent"),
        [&json!({"agent": "triage"}), &json!({"agent": "math"})]
    );
    assert!(named(&events, "delta").len() >= 4, "{names:?}");
    let done = events.last().map(|(_, d)| d.clone()).unwrap_or_default();
    assert_eq!(names.last(), Some(&"done"));
    assert_eq!(deltas(&events), done["result"].as_str().unwrap_or_default());
    assert_eq!(done["agent"], "math");
    assert!(
        done["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|t| t > 0),
        "{done}"
    );

    // The first delta reached the client while the model was still writing.
    let first_delta = chunks
        .iter()
        .find(|(_, c)| c.contains("event: delta"))
        .map(|(at, _)| *at)
        .unwrap_or_else(Instant::now);
    let model_finished = model
        .sent_chunks()
        .last()
        .copied()
        .unwrap_or_else(Instant::now);
    assert!(
        first_delta + Duration::from_millis(500) < model_finished,
        "the first delta came {:?} before the model's last piece",
        model_finished.saturating_duration_since(first_delta)
    );
}

#[tokio::test]
async fn a_client_that_leaves_stops_the_model_call() {
    let model = ScriptedModel::start(vec![Model::text_stream(
        "one two three four five six seven eight nine ten",
        10,
        Duration::from_millis(300),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let server = ak_local(&model, &[]).await;
    let mut response = ak_tests::post_streaming(
        &format!("{}/api/v1/chat", server.base),
        &json!({"prompt": "count", "agent": "history", "stream": true}),
        "*/*",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    while let Some((_, chunk)) = response.next_chunk().await {
        if chunk.contains("event: delta") {
            break;
        }
    }
    drop(response);
    for _ in 0..50 {
        if model.abandoned() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        model.abandoned(),
        1,
        "the model's answer was dropped midway"
    );
    assert!(
        model.sent_chunks().len() < 8,
        "{} pieces went out",
        model.sent_chunks().len()
    );

    // In-process: nothing is saved for a run that did not finish.
    let model = ScriptedModel::start(vec![Model::text_stream(
        "one two three four five six",
        6,
        Duration::from_millis(200),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let sessions = Arc::new(MemorySessionStore::default());
    let api = direct_api(&model, sessions.clone());
    let body = json!({"prompt": "count", "agent": "history", "session_id": "left", "stream": true});
    let Reply::Events(mut events) = api
        .respond(event("POST", Some(&body.to_string()), None, None))
        .await
    else {
        panic!("not a stream");
    };
    while let Some(Ok(chunk)) = events.next().await {
        if String::from_utf8_lossy(&chunk).contains("event: delta") {
            break;
        }
    }
    drop(events);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(model.abandoned(), 1);
    let all = HistoryLimits {
        max_items: usize::MAX,
        max_bytes: usize::MAX,
    };
    assert!(
        sessions.load("left", all).await.ok().flatten().is_none(),
        "nothing was saved"
    );
}

fn direct_api(model: &ScriptedModel, sessions: Arc<MemorySessionStore>) -> Api {
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new("sk-stream")),
        timeout: Duration::from_secs(10),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = AgentRuntime::from_settings(
        &reference_settings(),
        &ToolRegistry::new().with(multiply()),
        Arc::new(provider),
        sessions,
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

#[tokio::test]
async fn a_long_run_keeps_its_stream_alive_with_heartbeats() {
    // Shortened timings: a 3.5 s answer against a 2 s limit for a silent response, with a
    // 0.3 s heartbeat. The same mechanism carries a 60 s run past API Gateway's 29 s.
    let model = ScriptedModel::start(vec![Model::text_stream(
        "a slow and thoughtful answer",
        4,
        Duration::from_millis(700),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let server = ak_local(&model, &[("AK_API__STREAM_HEARTBEAT", "0.3")]).await;
    let started = Instant::now();
    let response = ak_tests::post_streaming(
        &format!("{}/api/v1/chat", server.base),
        &json!({"prompt": "take your time", "agent": "history", "stream": true}),
        "text/event-stream",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let chunks = response.chunks().await;
    let took = started.elapsed();
    let text: String = chunks.iter().map(|(_, c)| c.as_str()).collect();
    assert!(took > Duration::from_secs(2), "the run took {took:?}");
    assert!(text.contains(": keep-alive"), "{text}");
    assert!(text.contains("event: done"), "{text}");
    let mut last = started;
    let mut longest = Duration::ZERO;
    for (at, _) in &chunks {
        longest = longest.max(at.duration_since(last));
        last = *at;
    }
    assert!(
        longest < Duration::from_secs(1),
        "the longest silence was {longest:?}"
    );
}

#[tokio::test]
async fn the_built_request_handler_streams_through_lambda_response_streaming() {
    let model = ScriptedModel::start(triage_to_math(Duration::from_millis(150)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut child = spawn_function(
        &binary,
        &api,
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_EXECUTION__MODE", "direct"),
            ("AK_MODEL__PROVIDER", "openai"),
            ("OPENAI_API_KEY", "sk-stream"),
            ("OPENAI_BASE_URL", &model.base_url),
            ("AK_API__RESPONSE_STREAMING", "true"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let fixture = |name: &str| -> Value {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/events")
            .join(name);
        let v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default();
        v["event"].clone()
    };
    let mut url_event = fixture("function_url/post_chat.json");
    url_event["body"] = json!(json!({"prompt": "what is 12 * 7", "stream": true}).to_string());
    url_event["isBase64Encoded"] = json!(false);
    let id = api.invoke(url_event.clone());
    let outcome = api.outcome(&id, Duration::from_secs(20)).await;
    let Some((
        Outcome::Streamed {
            prelude,
            body,
            chunks,
        },
        _,
    )) = outcome
    else {
        let _ = child.kill();
        panic!("not streamed: {outcome:?}");
    };
    assert_eq!(prelude["statusCode"], 200, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "text/event-stream");
    let text = String::from_utf8_lossy(&body).into_owned();
    let events = events_of(&text);
    assert_eq!(
        named(&events, "agent"),
        [&json!({"agent": "triage"}), &json!({"agent": "math"})]
    );
    let done = events.last().map(|(_, d)| d.clone()).unwrap_or_default();
    assert_eq!(deltas(&events), done["result"].as_str().unwrap_or_default());
    let first_delta = chunks
        .iter()
        .find(|(_, c)| String::from_utf8_lossy(c).contains("event: delta"))
        .map(|(at, _)| *at)
        .unwrap_or_else(Instant::now);
    let model_finished = model
        .sent_chunks()
        .last()
        .copied()
        .unwrap_or_else(Instant::now);
    assert!(first_delta + Duration::from_millis(500) < model_finished);

    // A request that does not ask for a stream, in the same streaming deployment: its JSON
    // answer, after the prelude.
    url_event["body"] = json!(json!({"prompt": "what is 12 * 7", "agent": "nobody"}).to_string());
    let id = api.invoke(url_event);
    let Some((Outcome::Streamed { prelude, body, .. }, _)) =
        api.outcome(&id, Duration::from_secs(20)).await
    else {
        panic!("not streamed");
    };
    assert_eq!(prelude["statusCode"], 400, "{prelude}");
    assert_eq!(prelude["headers"]["content-type"], "application/json");
    let answer: Value = serde_json::from_slice(&body).unwrap_or_default();
    assert!(
        answer["error"]
            .as_str()
            .unwrap_or_default()
            .contains("unknown agent"),
        "{answer}"
    );

    // An HTTP API event cannot stream: answered in one piece.
    let mut http_event = fixture("http/get_app.json");
    http_event["rawPath"] = json!("/api/v1/nope");
    let id = api.invoke(http_event);
    let outcome = api.outcome(&id, Duration::from_secs(20)).await;
    assert!(
        matches!(outcome, Some((Outcome::Response(ref a), _)) if a["statusCode"] == 404),
        "{outcome:?}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn a_queue_mode_stream_carries_heartbeats_then_the_stored_answer() {
    let s = Arc::new(
        system(
            ExecutionMode::RestSync,
            Store::Redis,
            vec![Model::Text("William won.".into())],
            |_| {},
        )
        .await,
    );
    let api = s.api.clone();
    let body =
        json!({"prompt": "who won the battle of Hastings", "agent": "history", "stream": true});
    let waiting = tokio::spawn(async move {
        api.handle(event("POST", Some(&body.to_string()), None, None))
            .await
    });
    pump_until(&s, &waiting).await;
    let response = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    let events = events_of(&text);
    let (name, data) = events.last().cloned().unwrap_or_default();
    assert_eq!(
        (name.as_str(), &data["result"]),
        ("done", &json!("William won.")),
        "{text}"
    );
}

async fn pump_until<T>(s: &System, task: &tokio::task::JoinHandle<T>) {
    while !task.is_finished() {
        s.run_runner().await;
        s.run_responses().await;
    }
}

/// A direct-mode API over `model` with a deadline-carrying request: the raw event of a REST API
/// POST of `body`, answered through Lambda response streaming as the request handler does.
async fn streamed_event_reply(
    api: &Api,
    body: &Value,
    deadline: Duration,
) -> (Vec<(String, Value)>, Duration) {
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
            .unwrap_or_default();
    event["body"] = json!(body.to_string());
    let started = Instant::now();
    let reply = api
        .respond_raw_event(
            &event.to_string(),
            Some(tokio::time::Instant::now() + deadline),
        )
        .await;
    let ak_http::api::EventReply::Streamed { body, .. } = reply else {
        panic!("a REST API event is streamed");
    };
    let text: String = body
        .map(|chunk| String::from_utf8_lossy(&chunk.unwrap_or_default()).into_owned())
        .collect::<Vec<_>>()
        .await
        .concat();
    (events_of(&text), started.elapsed())
}

#[tokio::test]
async fn a_model_that_keeps_writing_is_stopped_at_the_deadline_with_an_error_event() {
    // 40 pieces 100 ms apart: never silent for long, but 4 s in all, against a 2 s deadline.
    let model = ScriptedModel::start(vec![Model::text_stream(
        &"word ".repeat(40),
        40,
        Duration::from_millis(100),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api =
        direct_api(&model, Arc::new(MemorySessionStore::default())).with_response_streaming(true);
    let (events, took) = streamed_event_reply(
        &api,
        &json!({"prompt": "go on", "agent": "history", "stream": true}),
        Duration::from_secs(2),
    )
    .await;
    let (name, data) = events.last().cloned().unwrap_or_default();
    assert_eq!(name, "error", "{events:?}");
    assert_eq!(data["status"], 502);
    assert!(
        data["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{data}"
    );
    assert!(
        took < Duration::from_millis(2500),
        "ended {took:?} after the start"
    );
    assert!(
        named(&events, "delta").len() >= 3,
        "the text so far went out first"
    );
}

#[tokio::test]
async fn an_http_api_payload_1_event_and_a_direct_invoke_get_one_json_answer() {
    let model = ScriptedModel::constant(Model::Text("one piece".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api =
        direct_api(&model, Arc::new(MemorySessionStore::default())).with_response_streaming(true);
    let fixture: Value = serde_json::from_str(include_str!(
        "../fixtures/events/http/payload_v1_post_chat.json"
    ))
    .unwrap_or_default();
    let mut event = fixture["event"].clone();
    event["body"] = json!(json!({"prompt": "hi", "agent": "history", "stream": true}).to_string());
    event["isBase64Encoded"] = json!(false);
    match api.respond_raw_event(&event.to_string(), None).await {
        ak_http::api::EventReply::Buffered(answer) => {
            assert_eq!(answer["statusCode"], 200, "{answer}");
        }
        ak_http::api::EventReply::Streamed { .. } => panic!("an HTTP API cannot take a stream"),
    }
    let direct = json!({"prompt": "hi", "agent": "history", "stream": true});
    let answer = api.handle_event(direct).await;
    assert_eq!(answer["result"], "one piece", "{answer}");
}

#[tokio::test]
async fn a_400_about_stream_options_is_asked_again_without_them_once_and_for_all() {
    let refusal = Model::Raw {
        status: 400,
        content_type: "application/json".into(),
        body: json!({"error": {"message": "Unrecognized request argument supplied: stream_options", "type": "invalid_request_error", "code": null}}).to_string(),
    };
    let model = ScriptedModel::start(vec![
        refusal,
        Model::text_stream("first", 2, Duration::ZERO),
        Model::text_stream("second", 2, Duration::ZERO),
        Model::Status(400),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = direct_api(&model, Arc::new(MemorySessionStore::default()));
    for prompt in ["one", "two"] {
        let body = json!({"prompt": prompt, "agent": "history", "stream": true});
        let (_, _, text) = post_in_process(&api, &body).await;
        assert!(text.contains("event: done"), "{text}");
    }
    let sent: Vec<bool> = model
        .requests()
        .iter()
        .map(|r| r.get("stream_options").is_some())
        .collect();
    assert_eq!(
        sent,
        [true, false, false],
        "asked again without, and not sent again"
    );
    // Any other 400 is the model's answer to the request, not retried.
    let body = json!({"prompt": "three", "agent": "history", "stream": true});
    let (_, _, text) = post_in_process(&api, &body).await;
    assert!(text.contains("event: error"), "{text}");
    assert_eq!(model.calls(), 4);
}

#[tokio::test]
async fn every_tool_result_follows_its_tool_call_and_streams_name_their_request() {
    let model = ScriptedModel::start(vec![
        Model::tool_call_stream("transfer_to_math", &json!({})),
        Model::tool_call_stream("no_such_tool", &json!({"x": 1})),
        Model::text_stream("  84", 2, Duration::ZERO),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let api = direct_api(&model, Arc::new(MemorySessionStore::default()));
    let body = json!({"prompt": "what is 12 * 7", "stream": true, "request_id": "req-named"});
    let (status, headers, text) = post_in_process(&api, &body).await;
    assert_eq!(status, 200);
    assert_eq!(
        headers.get("x-request-id").map(|v| v.as_bytes()),
        Some(&b"req-named"[..])
    );
    assert!(headers.get("x-session-id").is_some());
    let events = events_of(&text);
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_str()).collect();
    let call = names.iter().position(|n| *n == "tool_call");
    let result = names.iter().position(|n| *n == "tool_result");
    assert!(call.is_some() && call < result, "{names:?}");
    let done = events.last().map(|(_, d)| d.clone()).unwrap_or_default();
    let after_tools = names
        .iter()
        .rposition(|n| *n == "tool_result" || *n == "agent")
        .unwrap_or(0);
    let text_after: String = events[after_tools..]
        .iter()
        .filter(|(n, _)| n == "delta")
        .filter_map(|(_, d)| d["text"].as_str())
        .collect();
    assert_eq!(
        text_after,
        done["result"].as_str().unwrap_or("-"),
        "leading spaces too"
    );
}

#[tokio::test]
async fn a_client_that_leaves_frees_its_request_id_in_direct_mode_with_a_store() {
    let s = Arc::new(
        system(
            ExecutionMode::Direct,
            Store::Redis,
            vec![
                Model::text_stream(
                    "a slow answer that is never heard",
                    10,
                    Duration::from_millis(300),
                ),
                Model::Text("the retry's answer".into()),
            ],
            |_| {},
        )
        .await,
    );
    let id = ak_tests::unique_name("left");
    let body = json!({"prompt": "hello", "agent": "history", "stream": true, "request_id": id})
        .to_string();
    let Reply::Events(mut stream) = s.api.respond(event("POST", Some(&body), None, None)).await
    else {
        panic!("a stream");
    };
    // Leave once the model is writing.
    while let Some(Ok(chunk)) = stream.next().await {
        if String::from_utf8_lossy(&chunk).contains("event: delta") {
            break;
        }
    }
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let retry = json!({"prompt": "hello", "agent": "history", "request_id": id}).to_string();
    let (status, _, answer) =
        crate::pipeline::call(&s.api, event("POST", Some(&retry), None, None)).await;
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("the retry's answer")),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for a lapsing claim"
    );
}

/// POSTs `body` to the in-process API: status, headers and the whole text.
async fn post_in_process(api: &Api, body: &Value) -> (u16, lambda_http::http::HeaderMap, String) {
    let response = api
        .handle(event("POST", Some(&body.to_string()), None, None))
        .await;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = match response.body() {
        lambda_http::Body::Text(t) => t.clone(),
        _ => String::new(),
    };
    (status, headers, text)
}
