//! Replies in the shapes real OpenAI-compatible servers send, through the whole agent loop: the
//! request handler's API in direct mode, the agent runtime, and the model over real HTTP (the
//! scripted server answering with each reply's exact status, content type and body).
//!
//! The conformance corpus is `tests/fixtures/model_replies/<server>/<kind>.json` (see its
//! README): one file per reply, with what it represents and what the client must get.

use crate::pipeline::{call, event};
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, ToolRegistry};
use ak_core::config::{AgentDefinition, Settings};
use ak_core::ports::SessionStore;
use ak_core::ports::memory::MemorySessionStore;
use ak_core::secret::Secret;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_tests::model_server::{Reply, ScriptedModel};
use serde_json::{Value, json};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const KEY: &str = "sk-interop-secret-key";

/// One reply of the corpus.
pub(crate) struct Fixture {
    pub(crate) path: PathBuf,
    pub(crate) server: String,
    pub(crate) status: u16,
    pub(crate) content_type: String,
    pub(crate) body: String,
    pub(crate) expect: Value,
}

impl Fixture {
    pub(crate) fn reply(&self) -> Reply {
        Reply::Raw {
            status: self.status,
            content_type: self.content_type.clone(),
            body: self.body.clone(),
        }
    }

    pub(crate) fn name(&self) -> String {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures");
        self.path
            .strip_prefix(&dir)
            .unwrap_or(&self.path)
            .display()
            .to_string()
    }
}

/// Every fixture under `tests/fixtures/<dir>`, sorted by path.
pub(crate) fn corpus(dir: &str) -> Vec<Fixture> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(dir);
    let mut paths = Vec::new();
    let servers = std::fs::read_dir(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for server in servers.flatten().filter(|e| e.path().is_dir()) {
        for file in std::fs::read_dir(server.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if file.path().extension().is_some_and(|x| x == "json") {
                paths.push(file.path());
            }
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let body = match &v["body"] {
                Value::String(raw) => raw.clone(),
                other => other.to_string(),
            };
            Fixture {
                server: v["server"].as_str().unwrap_or_default().to_owned(),
                status: v["status"]
                    .as_u64()
                    .and_then(|s| u16::try_from(s).ok())
                    .unwrap_or(200),
                content_type: v["content_type"]
                    .as_str()
                    .unwrap_or("application/json")
                    .to_owned(),
                body,
                expect: v["expect"].clone(),
                path,
            }
        })
        .collect()
}

use agent_app::multiply;

/// The reference agents: triage hands off to history and math; math has `multiply`.
pub(crate) fn reference_settings() -> Settings {
    let def = |name: &str, handoffs: &[&str], tools: &[&str]| AgentDefinition {
        name: name.into(),
        instructions: format!("You are the {name} agent."),
        handoff_description: Some(format!("Specialist agent for {name} questions")),
        handoffs: handoffs.iter().map(|s| (*s).to_owned()).collect(),
        tools: tools.iter().map(|s| (*s).to_owned()).collect(),
        model: None,
        mcp_servers: Vec::new(),
        approval: Vec::new(),
    };
    let mut settings = Settings::default();
    settings.model.name = "interop-model".into();
    settings.agents.default = Some("triage".into());
    settings.agents.definitions = vec![
        def("triage", &["history", "math"], &[]),
        def("math", &[], &["multiply"]),
        def("history", &[], &[]),
    ];
    settings
}

pub(crate) struct Interop {
    pub(crate) api: Api,
    pub(crate) sessions: Arc<MemorySessionStore>,
    pub(crate) model: ScriptedModel,
}

/// Direct mode over a scripted model answering `replies`, with no retries (so each error reply
/// is seen once) and an in-memory session store the test can read.
pub(crate) async fn interop(replies: Vec<Reply>) -> Interop {
    let model = ScriptedModel::start(replies)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new(KEY)),
        timeout: Duration::from_secs(5),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let sessions = Arc::new(MemorySessionStore::default());
    let runtime = AgentRuntime::from_settings(
        &reference_settings(),
        &ToolRegistry::new().with(multiply()),
        Arc::new(provider),
        sessions.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::builder(RoutePaths::default())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let chat = ChatService::new(Execution::Direct(Arc::new(runtime)), None, vec![]);
    Interop {
        api: Api::new(router, chat, 1 << 20),
        sessions,
        model,
    }
}

impl Interop {
    async fn ask(&self, agent: &str, prompt: &str, session: &str) -> (u16, Value) {
        let body = json!({"prompt": prompt, "agent": agent, "session_id": session}).to_string();
        let (status, _, body) = call(&self.api, event("POST", Some(&body), None, None)).await;
        (status, body)
    }

    /// The session's items; none of them may be an assistant message without text or calls.
    pub(crate) async fn session_items(&self, session: &str) -> Result<Vec<Value>, String> {
        let limits = ak_core::ports::HistoryLimits {
            max_items: usize::MAX,
            max_bytes: usize::MAX,
        };
        let items: Vec<Value> = self
            .sessions
            .load(session, limits)
            .await
            .map_err(|e| e.to_string())?
            .map(|s| s.turns.into_iter().flat_map(|t| t.items).collect())
            .unwrap_or_default();
        for item in &items {
            let empty_text = item["content"].as_str().is_none_or(|t| t.trim().is_empty());
            if item["role"] == "assistant" && empty_text && item.get("tool_calls").is_none() {
                return Err(format!(
                    "the session stored an empty assistant message: {item}"
                ));
            }
        }
        Ok(items)
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// The provider's code an error message ends with: `... (HTTP 401: invalid_api_key)` or
/// `... (rate_limited)`; `None` for `... (HTTP 401)` or no parentheses.
fn code_in(message: &str) -> Option<String> {
    let inner = message.strip_suffix(')')?.rsplit_once('(')?.1;
    match inner.strip_prefix("HTTP ") {
        Some(rest) => rest.split_once(": ").map(|(_, code)| code.to_owned()),
        None => Some(inner.to_owned()),
    }
}

/// Runs one fixture and checks what the client got against its `expect`.
async fn check(f: &Fixture) -> Result<(), String> {
    let expect = &f.expect;
    let kind = text(&expect["kind"]);
    let follow_up = match kind {
        "handoff" => vec![Reply::Text("12 * 7 = 84".into())],
        "tool" => vec![Reply::Text("It is 84.".into())],
        _ => vec![],
    };
    let mut replies = vec![f.reply()];
    replies.extend(follow_up);
    let s = interop(replies).await;
    let agent = match kind {
        "handoff" => "triage",
        "tool" => "math",
        _ => "history",
    };
    let (status, body) = s.ask(agent, "a question", "s-interop").await;
    let fail = |what: String| Err(format!("{what}; the client got {status} {body}"));
    let leaked = [Some(KEY), expect["secret_text"].as_str()]
        .into_iter()
        .flatten()
        .find(|secret| !secret.is_empty() && body.to_string().contains(secret));
    if let Some(secret) = leaked {
        return fail(format!("the answer leaks {secret:?}"));
    }
    match kind {
        "text" | "refusal" | "cut_off" => {
            if status != 200 || body["result"] != expect["result"] || body["agent"] != agent {
                return fail(format!("expected 200 with result {}", expect["result"]));
            }
            let flags = (body["refusal"] == true, body["truncated"] == true);
            if flags != (kind == "refusal", kind == "cut_off") {
                return fail("refusal/truncated flags do not match the kind".into());
            }
            let items = s.session_items("s-interop").await?;
            if items.last().map(|i| &i["content"]) != Some(&expect["result"]) {
                return fail(format!("the session's last item is {:?}", items.last()));
            }
        }
        "handoff" => {
            let to = text(&expect["to"]);
            if status != 200 || body["agent"] != to || body["result"] != "12 * 7 = 84" {
                return fail(format!(
                    "expected the {to} agent to answer after the handoff"
                ));
            }
            s.session_items("s-interop").await?;
        }
        "tool" => {
            if status != 200 || body["result"] != "It is 84." {
                return fail("expected the run to finish after the tool call".into());
            }
            let requests = s.model.requests();
            let messages = requests
                .get(1)
                .and_then(|r| r["messages"].as_array())
                .cloned()
                .unwrap_or_default();
            let call = messages
                .iter()
                .filter_map(|m| m["tool_calls"].as_array())
                .flatten()
                .find(|c| c["function"]["name"] == expect["name"])
                .cloned()
                .unwrap_or_default();
            let arguments: Value =
                serde_json::from_str(text(&call["function"]["arguments"])).unwrap_or_default();
            if arguments != expect["arguments"] {
                return fail(format!("the call sent back is {call}"));
            }
            let result = messages
                .iter()
                .find(|m| m["role"] == "tool" && m["tool_call_id"] == call["id"]);
            if !result.is_some_and(|r| text(&r["content"]).contains("84"))
                || text(&call["id"]).is_empty()
            {
                return fail(format!("no tool result paired with {call}: {messages:?}"));
            }
            s.session_items("s-interop").await?;
        }
        "filtered" => {
            if status != 422 || body["reason"] != "content_filter" {
                return fail("expected 422 with reason content_filter".into());
            }
        }
        "error" => {
            let message = text(&body["error"]);
            let named = if f.status == 200 {
                message.contains("instead of a reply")
            } else {
                message.contains(&format!("HTTP {}", f.status))
            };
            let code = code_in(message);
            // A provider that kept rate limiting is the client's to retry later (429); an
            // exhausted quota and every other failure are the provider's (502).
            let wanted = if f.status == 429 && expect["code"] != "insufficient_quota" {
                429
            } else {
                502
            };
            if status != wanted || !named || code.as_deref() != expect["code"].as_str() {
                return fail(format!(
                    "expected {wanted} naming HTTP {} and the code {} (found {code:?})",
                    f.status, expect["code"]
                ));
            }
        }
        "invalid" => {
            if status != 502 || !text(&body["error"]).contains("not a Chat Completions response") {
                return fail(
                    "expected 502 saying the answer is not a Chat Completions response".into(),
                );
            }
        }
        other => return Err(format!("unknown expect.kind {other:?}")),
    }
    if !matches!(kind, "error" | "invalid" | "filtered") && body.get("request_id").is_none() {
        return fail("no request_id".into());
    }
    Ok(())
}

#[tokio::test]
async fn every_reply_of_the_conformance_corpus_gives_the_client_what_a_user_expects() {
    let fixtures = corpus("model_replies");
    let servers: BTreeSet<&str> = fixtures.iter().map(|f| f.server.as_str()).collect();
    assert!(
        servers.len() >= 12,
        "the corpus covers {} servers: {servers:?}",
        servers.len()
    );
    let mut failures = Vec::new();
    for f in &fixtures {
        if let Err(e) = check(f).await {
            failures.push(format!("{}: {e}", f.name()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} replies failed:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

fn reply(body: Value) -> Reply {
    Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: body.to_string(),
    }
}

#[tokio::test]
async fn replies_that_were_refused_before_now_answer_200_with_their_text() {
    let plain = |message: Value, finish: Value| {
        reply(json!({
            "id": "x", "object": "chat.completion", "created": 1, "model": "m",
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        }))
    };
    // A text-generation-inference finish reason, and the empty one some proxies send.
    for finish in [json!("eos_token"), json!("")] {
        let s = interop(vec![plain(
            json!({"role": "assistant", "content": "William of Normandy won."}),
            finish.clone(),
        )])
        .await;
        let (status, body) = s
            .ask("history", "who won the battle of Hastings", "s-a")
            .await;
        assert_eq!(
            (status, text(&body["result"])),
            (200, "William of Normandy won."),
            "finish_reason {finish}: {body}"
        );
    }
    // No top-level "object" (nor id, created, model).
    let s = interop(vec![reply(json!({
        "choices": [{"message": {"role": "assistant", "content": "Hello there."}, "finish_reason": "stop"}],
    }))])
    .await;
    let (status, body) = s.ask("history", "hi", "s-b").await;
    assert_eq!(
        (status, text(&body["result"])),
        (200, "Hello there."),
        "{body}"
    );
    // Content as a list of parts from a reasoning model: the thinking is not the answer.
    let s = interop(vec![plain(
        json!({"role": "assistant", "content": [
            {"type": "thinking", "thinking": [{"type": "text", "text": "The user greets me."}]},
            {"type": "text", "text": "Hello there."}
        ]}),
        json!("stop"),
    )])
    .await;
    let (status, body) = s.ask("history", "hi", "s-c").await;
    assert_eq!(
        (status, text(&body["result"])),
        (200, "Hello there."),
        "{body}"
    );
    let sent_back = s
        .session_items("s-c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        !Value::Array(sent_back)
            .to_string()
            .contains("The user greets me"),
        "thinking is kept out of the session, so it is never sent back to the model"
    );
    // A handoff from a server that sends eos_token, no "type" and no call id.
    let s = interop(vec![
        plain(
            json!({"role": "assistant", "content": null, "tool_calls": [
                {"function": {"name": "transfer_to_math", "arguments": {}}}
            ]}),
            json!("eos_token"),
        ),
        Reply::Text("12 * 7 = 84".into()),
    ])
    .await;
    let (status, body) = s.ask("triage", "what is 12 * 7", "s-d").await;
    assert_eq!((status, text(&body["agent"])), (200, "math"), "{body}");
    let second = &s.model.requests()[1]["messages"];
    assert_eq!(
        second[2]["tool_calls"][0]["id"], second[3]["tool_call_id"],
        "the generated call id pairs the call with its result: {second}"
    );
    assert!(
        second[2].get("content").is_none(),
        "no content: null is sent back: {}",
        second[2]
    );
}

#[tokio::test]
async fn a_refusal_reaches_the_client_and_the_session_as_text() {
    let s = interop(vec![reply(json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "refusal": "I cannot help with that request."}, "finish_reason": "stop"}],
    }))])
    .await;
    let (status, body) = s.ask("history", "something out of policy", "s-r").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "I cannot help with that request.");
    assert_eq!(body["refusal"], true);
    let items = s
        .session_items("s-r")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[1]["content"], "I cannot help with that request.");
    assert_eq!(items[1]["outcome"], "refusal");
}

#[tokio::test]
async fn cut_off_filtered_and_empty_answers_are_never_an_empty_result() {
    let choice = |message: Value, finish: &str| {
        reply(json!({"choices": [{"message": message, "finish_reason": finish}]}))
    };
    let s = interop(vec![choice(
        json!({"content": "The battle was fought in"}),
        "length",
    )])
    .await;
    let (status, body) = s.ask("history", "tell me everything", "s-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["result"].as_str(), body["truncated"].as_bool()),
        (Some("The battle was fought in"), Some(true))
    );

    let s = interop(vec![choice(json!({"content": null}), "content_filter")]).await;
    let (status, body) = s.ask("history", "x", "s-2").await;
    assert_eq!(
        (status, &body["reason"]),
        (422, &json!("content_filter")),
        "{body}"
    );
    assert!(text(&body["error"]).contains("content filter"), "{body}");
    assert!(s.session_items("s-2").await.unwrap_or_default().is_empty());

    let s = interop(vec![choice(
        json!({"content": "", "reasoning_content": "thinking that never ends"}),
        "length",
    )])
    .await;
    let (status, body) = s.ask("history", "x", "s-3").await;
    assert_eq!(status, 502, "{body}");
    assert!(text(&body["error"]).contains("token limit"), "{body}");
    assert!(!body.to_string().contains("thinking that never ends"));
    assert!(s.session_items("s-3").await.unwrap_or_default().is_empty());

    let s = interop(vec![choice(json!({"role": "assistant"}), "stop")]).await;
    let (status, body) = s.ask("history", "x", "s-4").await;
    assert_eq!(status, 502, "{body}");
    assert!(text(&body["error"]).contains("no text"), "{body}");
}

#[tokio::test]
async fn gemini_thought_signatures_travel_back_with_their_calls() {
    let fixture = corpus("model_replies")
        .into_iter()
        .find(|f| f.name().ends_with("gemini/tool.json"))
        .unwrap_or_else(|| panic!("gemini/tool.json is in the corpus"));
    let s = interop(vec![fixture.reply(), Reply::Text("It is 84.".into())]).await;
    let (status, body) = s.ask("math", "what is 12 * 7", "s-g").await;
    assert_eq!(
        (status, text(&body["result"])),
        (200, "It is 84."),
        "{body}"
    );
    let call = &s.model.requests()[1]["messages"][2]["tool_calls"][0];
    assert!(
        call["extra_content"]["google"]["thought_signature"]
            .as_str()
            .is_some_and(|sig| !sig.is_empty()),
        "the signature goes back with its call: {call}"
    );
}

#[tokio::test]
async fn a_slow_model_is_cut_at_the_functions_deadline_with_a_json_answer() {
    let model = ScriptedModel::constant(Reply::Hang(Duration::from_secs(20)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new(KEY)),
        timeout: Duration::from_secs(30),
        max_retries: 3,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime = AgentRuntime::from_settings(
        &reference_settings(),
        &ToolRegistry::new().with(multiply()),
        Arc::new(provider),
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::builder(RoutePaths::default())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Api::new(
        router,
        ChatService::new(Execution::Direct(Arc::new(runtime)), None, vec![]),
        1 << 20,
    );
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
            .unwrap_or_default();
    event["body"] = json!(json!({"prompt": "hello", "agent": "history"}).to_string());
    let started = std::time::Instant::now();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    let answer = api.handle_event_until(event, Some(deadline)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(3),
        "answered before the deadline: {took:?}"
    );
    assert_eq!(answer["statusCode"], 502, "{answer}");
    let body: Value =
        serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or_default();
    assert!(
        text(&body["error"]).contains("deadline") && body["request_id"].is_string(),
        "{body}"
    );
}

#[tokio::test]
async fn handoffs_send_no_tool_traffic_to_an_agent_without_tools() {
    let s = interop(vec![
        reply(json!({"choices": [{"message": {"tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "transfer_to_history", "arguments": "{}"}}
        ]}, "finish_reason": "tool_calls"}]})),
        Reply::Text("William won.".into()),
        Reply::Text("On Christmas Day.".into()),
    ])
    .await;
    let (status, body) = s
        .ask("triage", "who won the battle of Hastings", "s-h")
        .await;
    assert_eq!((status, text(&body["agent"])), (200, "history"), "{body}");
    let (status, _) = s.ask("history", "when was he crowned", "s-h").await;
    assert_eq!(status, 200);
    for request in &s.model.requests()[1..] {
        let messages = request["messages"].as_array().cloned().unwrap_or_default();
        assert!(request.get("tools").is_none(), "{request}");
        assert!(
            messages
                .iter()
                .all(|m| m["role"] != "tool" && m.get("tool_calls").is_none()),
            "an agent without tools gets no tool calls or results: {messages:?}"
        );
    }
}

#[tokio::test]
async fn deepseek_reasoning_goes_back_with_its_tool_calls_within_a_run_only() {
    let s = interop(vec![
        reply(json!({"choices": [{"message": {"content": "", "reasoning_content": "12 times 7, use the tool",
            "tool_calls": [{"id": "call_00_x", "type": "function",
                "function": {"name": "multiply", "arguments": "{\"a\": 12, \"b\": 7}"}}]},
            "finish_reason": "tool_calls"}]})),
        Reply::Text("It is 84.".into()),
    ])
    .await;
    let (status, body) = s.ask("math", "what is 12 * 7", "s-r").await;
    assert_eq!(
        (status, text(&body["result"])),
        (200, "It is 84."),
        "{body}"
    );
    let second = &s.model.requests()[1]["messages"];
    assert_eq!(
        second[2]["reasoning_content"], "12 times 7, use the tool",
        "DeepSeek's thinking mode needs it back with the call: {second}"
    );
    let stored = s.session_items("s-r").await.unwrap_or_default();
    assert!(
        !Value::Array(stored)
            .to_string()
            .contains("reasoning_content"),
        "never stored"
    );
    assert!(!body.to_string().contains("use the tool"), "never shown");
}

#[tokio::test]
async fn blocked_and_broken_answers_never_pass_as_complete_ones() {
    let with_finish = |finish: &str| {
        reply(
            json!({"choices": [{"message": {"content": "Here is the first chapter: It was"},
            "finish_reason": finish}]}),
        )
    };
    for blocked in ["RECITATION", "PROHIBITED_CONTENT", "SAFETY"] {
        let s = interop(vec![with_finish(blocked)]).await;
        let (status, body) = s.ask("history", "x", "s-b").await;
        assert_eq!(
            (status, &body["reason"]),
            (422, &json!("content_filter")),
            "{blocked}: {body}"
        );
        assert!(s.session_items("s-b").await.unwrap_or_default().is_empty());
    }
    let s = interop(vec![with_finish("error")]).await;
    let (status, body) = s.ask("history", "x", "s-e").await;
    assert_eq!(status, 502, "{body}");
    assert!(text(&body["error"]).contains("while writing"), "{body}");
    assert!(s.session_items("s-e").await.unwrap_or_default().is_empty());
}

#[tokio::test]
async fn huge_bodies_are_not_read_whole_and_a_code_never_shows_the_key() {
    let huge = Reply::Raw {
        status: 200,
        content_type: "application/json".into(),
        body: format!(
            "{{\"choices\": [{{\"message\": {{\"content\": \"{}\"}}}}]}}",
            "x".repeat(17 << 20)
        ),
    };
    let s = interop(vec![huge]).await;
    let (status, body) = s.ask("history", "x", "s-1").await;
    assert_eq!(status, 502, "{body}");
    assert!(
        text(&body["error"]).contains("larger than 16 MiB"),
        "{body}"
    );

    let page = Reply::Raw {
        status: 500,
        content_type: "text/html".into(),
        body: format!("<html>{}</html>", "y".repeat(1 << 20)),
    };
    let s = interop(vec![page]).await;
    let (status, body) = s.ask("history", "x", "s-2").await;
    assert_eq!(status, 502);
    assert!(text(&body["error"]).contains("HTTP 500"), "{body}");

    let echo = Reply::Raw {
        status: 401,
        content_type: "application/json".into(),
        body: json!({"error": {"code": KEY, "message": "bad key"}}).to_string(),
    };
    let s = interop(vec![echo]).await;
    let (status, body) = s.ask("history", "x", "s-3").await;
    assert_eq!(status, 502);
    assert!(!body.to_string().contains(KEY), "{body}");
    assert!(text(&body["error"]).ends_with("(HTTP 401)"), "{body}");
}
