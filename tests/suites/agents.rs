//! The agent runtime against a real OpenAI-compatible HTTP server (the scripted model), checking
//! the exact requests the project sends.

use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, FnTool, ModelError, RunError, ToolError, ToolRegistry};
use ak_core::RunRequest;
use ak_core::config::{AgentDefinition, Settings};
use ak_core::ports::SessionStore;
use ak_core::ports::memory::MemorySessionStore;
use ak_core::secret::Secret;
use ak_http::ErrorResponse;
use ak_tests::model_server::{Reply, ScriptedModel};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

fn definition(
    name: &str,
    instructions: &str,
    description: Option<&str>,
    handoffs: &[&str],
    tools: &[&str],
) -> AgentDefinition {
    AgentDefinition {
        name: name.into(),
        instructions: instructions.into(),
        handoff_description: description.map(str::to_owned),
        handoffs: handoffs.iter().map(|s| (*s).to_owned()).collect(),
        tools: tools.iter().map(|s| (*s).to_owned()).collect(),
        model: None,
        mcp_servers: Vec::new(),
        approval: Vec::new(),
    }
}

fn settings(max_turns: u32) -> Settings {
    let mut settings = Settings::default();
    settings.model.name = "gpt-test-mini".into();
    settings.agents.default = Some("triage".into());
    settings.agents.max_turns = max_turns;
    settings.agents.definitions = vec![
        definition(
            "triage",
            "You determine which agent to use based on the user's question.",
            None,
            &["history", "math"],
            &[],
        ),
        definition(
            "math",
            "You provide help with math problems.",
            Some("Specialist agent for math questions"),
            &[],
            &["multiply"],
        ),
        definition(
            "history",
            "You provide assistance with historical queries.",
            Some("Specialist agent for historical questions"),
            &[],
            &[],
        ),
    ];
    settings
}

fn tools() -> ToolRegistry {
    ToolRegistry::new().with(FnTool::new(
        "multiply",
        "Multiplies two integers",
        json!({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
        |args: Value, _ctx| async move {
            let a = args["a"].as_i64().ok_or_else(|| ToolError("a must be an integer".into()))?;
            let b = args["b"].as_i64().ok_or_else(|| ToolError("b must be an integer".into()))?;
            Ok(json!({"product": a * b}))
        },
    ))
}

struct Setup {
    model: ScriptedModel,
    runtime: AgentRuntime,
    sessions: Arc<MemorySessionStore>,
}

async fn setup(replies: Vec<Reply>, max_turns: u32, timeout: Duration, max_retries: u32) -> Setup {
    let model = ScriptedModel::start(replies)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new("sk-test-key")),
        timeout,
        max_retries,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let sessions = Arc::new(MemorySessionStore::default());
    let runtime = AgentRuntime::from_settings(
        &settings(max_turns),
        &tools(),
        Arc::new(provider),
        sessions.clone(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    Setup {
        model,
        runtime,
        sessions,
    }
}

const ALL: ak_core::ports::HistoryLimits = ak_core::ports::HistoryLimits {
    max_items: usize::MAX,
    max_bytes: usize::MAX,
};

fn ask(prompt: &str, session: &str) -> RunRequest {
    RunRequest::from_value(
        json!({"prompt": prompt, "session_id": session, "locale": "en-GB"}),
        &ak_core::request::Caller::Anonymous,
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn tool_names(request: &Value) -> Vec<String> {
    request["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t["function"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn triage_hands_off_to_math_and_math_answers() {
    let s = setup(
        vec![
            Reply::ToolCall {
                name: "transfer_to_math".into(),
                arguments: json!({}),
            },
            Reply::Text("12 * 7 = 84".into()),
        ],
        10,
        Duration::from_secs(5),
        0,
    )
    .await;
    let outcome = s
        .runtime
        .run(&ask("what is 12 * 7", "s-1"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.agent, "math");
    assert_eq!(outcome.text, "12 * 7 = 84");
    assert_eq!(outcome.turns, 2);
    assert_eq!(
        outcome.usage.total_tokens, 36,
        "usage summed over both calls"
    );

    let requests = s.model.requests();
    assert_eq!(requests.len(), 2);
    let first = &requests[0];
    assert_eq!(first["model"], "gpt-test-mini");
    assert_eq!(first["messages"][0]["role"], "system");
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("You determine which agent")
    );
    assert!(
        first["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .contains("\"locale\":\"en-GB\""),
        "extras reach the agent"
    );
    assert_eq!(
        first["messages"][1],
        json!({"role": "user", "content": "what is 12 * 7"})
    );
    assert_eq!(
        tool_names(first),
        vec!["transfer_to_history", "transfer_to_math"]
    );
    let math_tool = first["tools"]
        .as_array()
        .and_then(|t| {
            t.iter()
                .find(|t| t["function"]["name"] == "transfer_to_math")
        })
        .cloned()
        .unwrap_or_default();
    assert_eq!(math_tool["type"], "function");
    assert!(
        math_tool["function"]["description"]
            .as_str()
            .unwrap_or_default()
            .contains("Specialist agent for math questions")
    );
    assert_eq!(math_tool["function"]["parameters"]["type"], "object");

    let second = &requests[1];
    assert!(
        second["messages"][0]["content"]
            .as_str()
            .unwrap_or_default()
            .starts_with("You provide help with math"),
        "math's own system message"
    );
    assert_eq!(
        tool_names(second),
        vec!["multiply"],
        "math offers its tool, no handoffs"
    );
    let history = second["messages"].as_array().cloned().unwrap_or_default();
    assert_eq!(
        history,
        vec![
            history[0].clone(),
            json!({"role": "user", "content": "what is 12 * 7"})
        ],
        "the handoff was routing, not conversation: math sees the question, not the transfer"
    );

    let stored = s
        .sessions
        .load("s-1", ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let items = &stored.turns[0].items;
    assert_eq!(
        items.len(),
        4,
        "the session keeps the whole turn: {items:?}"
    );
    assert_eq!(
        items[1]["tool_calls"][0]["function"]["name"],
        "transfer_to_math"
    );
    assert_eq!(items[2]["tool_call_id"], items[1]["tool_calls"][0]["id"]);
    assert_eq!(
        items[2]["content"],
        json!({"assistant": "math"}).to_string()
    );
}

#[tokio::test]
async fn rust_tools_run_and_their_results_go_back_to_the_model() {
    let s = setup(
        vec![
            Reply::ToolCall {
                name: "transfer_to_math".into(),
                arguments: json!({}),
            },
            Reply::ToolCall {
                name: "multiply".into(),
                arguments: json!({"a": 12, "b": 7}),
            },
            Reply::ToolCall {
                name: "multiply".into(),
                arguments: json!({"a": "twelve"}),
            },
            Reply::Text("It is 84.".into()),
        ],
        10,
        Duration::from_secs(5),
        0,
    )
    .await;
    let outcome = s
        .runtime
        .run(&ask("what is 12 * 7", "s-2"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (outcome.agent.as_str(), outcome.text.as_str()),
        ("math", "It is 84.")
    );
    let requests = s.model.requests();
    let third = requests[2]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let last = third.last().cloned().unwrap_or_default();
    assert_eq!(last["role"], "tool");
    assert_eq!(last["content"], json!({"product": 84}).to_string());
    let fourth = requests[3]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let error = fourth.last().cloned().unwrap_or_default();
    assert!(
        error["content"]
            .as_str()
            .unwrap_or_default()
            .contains("a must be an integer"),
        "tool errors are fed back: {error}"
    );
}

#[tokio::test]
async fn a_follow_up_in_the_same_session_sends_the_earlier_turns() {
    let s = setup(
        vec![
            Reply::ToolCall {
                name: "transfer_to_history".into(),
                arguments: json!({}),
            },
            Reply::Text("William of Normandy won in 1066.".into()),
            Reply::Text("He was crowned on Christmas Day 1066.".into()),
        ],
        10,
        Duration::from_secs(5),
        0,
    )
    .await;
    s.runtime
        .run(&ask("who won the battle of Hastings", "s-3"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut follow_up = ask("when was he crowned?", "s-3");
    follow_up.agent = Some("history".into());
    let outcome = s
        .runtime
        .run(&follow_up)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.agent, "history");

    let third = s.model.requests()[2]["messages"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let roles: Vec<&str> = third.iter().filter_map(|m| m["role"].as_str()).collect();
    assert_eq!(
        roles,
        vec!["system", "user", "assistant", "user"],
        "earlier turns without their handoff exchange"
    );
    assert_eq!(third[1]["content"], "who won the battle of Hastings");
    assert_eq!(third[2]["content"], "William of Normandy won in 1066.");
    assert_eq!(third[3]["content"], "when was he crowned?");

    let stored = s
        .sessions
        .load("s-3", ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(stored.next_seq, 2, "one turn per request");
    let items: Vec<Value> = stored.turns.iter().flat_map(|t| t.items.clone()).collect();
    assert_eq!(items.len(), 6);
    assert_eq!(
        items[1]["agent"], "triage",
        "the session records which agent acted"
    );
    assert_eq!(items[3]["agent"], "history");
    assert_eq!(items[5]["agent"], "history");
}

#[tokio::test]
async fn a_429_is_retried_and_a_400_is_not() {
    let s = setup(
        vec![Reply::Status(429), Reply::Text("after a retry".into())],
        10,
        Duration::from_secs(5),
        2,
    )
    .await;
    let mut request = ask("hello", "s-4");
    request.agent = Some("history".into());
    let outcome = s
        .runtime
        .run(&request)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(outcome.text, "after a retry");
    assert_eq!(s.model.calls(), 2);

    let s = setup(
        vec![Reply::Status(400), Reply::Text("never sent".into())],
        10,
        Duration::from_secs(5),
        2,
    )
    .await;
    let err = s.runtime.run(&ask("hello", "s-5")).await.err();
    assert!(
        matches!(
            err,
            Some(RunError::Model(ModelError::Rejected { status: 400, .. }))
        ),
        "{err:?}"
    );
    assert_eq!(s.model.calls(), 1, "4xx is not retried");
    assert!(
        s.sessions.load("s-5", ALL).await.ok().flatten().is_none(),
        "a failed run saves nothing"
    );
    let api = ak_core::ApiError::from(err.unwrap_or_else(|| unreachable!()));
    assert_eq!(api.status().as_u16(), 502);
    assert!(!api.to_response().body.to_string().contains("sk-test-key"));
}

#[tokio::test]
async fn server_errors_and_hangs_are_retried_then_reported() {
    let s = setup(
        vec![Reply::Status(500), Reply::Status(503), Reply::Status(502)],
        10,
        Duration::from_secs(5),
        2,
    )
    .await;
    let err = s.runtime.run(&ask("hello", "s-6")).await.err();
    assert!(
        matches!(
            err,
            Some(RunError::Model(ModelError::Unavailable {
                status: 502,
                attempts: 3,
                ..
            }))
        ),
        "{err:?}"
    );
    assert_eq!(s.model.calls(), 3);

    let s = setup(
        vec![
            Reply::Hang(Duration::from_secs(3)),
            Reply::Text("on time".into()),
        ],
        10,
        Duration::from_millis(300),
        1,
    )
    .await;
    let outcome = s.runtime.run(&ask("hello", "s-7")).await;
    assert_eq!(
        outcome.map(|o| o.text).ok().as_deref(),
        Some("on time"),
        "a hung call times out and is retried"
    );
}

#[tokio::test]
async fn a_model_that_never_stops_calling_tools_ends_at_max_turns() {
    let replies = (0..5)
        .map(|_| Reply::ToolCall {
            name: "multiply".into(),
            arguments: json!({"a": 1, "b": 1}),
        })
        .collect();
    let s = setup(replies, 3, Duration::from_secs(5), 0).await;
    let mut request = ask("loop forever", "s-8");
    request.agent = Some("math".into());
    let err = s.runtime.run(&request).await.err();
    assert!(matches!(err, Some(RunError::MaxTurns(3))), "{err:?}");
    assert_eq!(s.model.calls(), 3);
    let message = err.map(|e| e.to_string()).unwrap_or_default();
    assert!(message.contains("max_turns = 3"), "{message}");
}

#[tokio::test]
async fn an_unknown_agent_is_a_400_naming_the_choices() {
    let s = setup(vec![], 10, Duration::from_secs(5), 0).await;
    let mut request = ask("hi", "s-9");
    request.agent = Some("poetry".into());
    let err = s
        .runtime
        .run(&request)
        .await
        .err()
        .map(ak_core::ApiError::from);
    let err = err.unwrap_or_else(|| panic!("unknown agent accepted"));
    assert_eq!(err.status().as_u16(), 400);
    assert!(err.to_string().contains("history, math, triage"), "{err}");
    assert_eq!(s.model.calls(), 0);
}

#[tokio::test]
async fn closed_connections_are_retried_then_reported() {
    let s = setup(
        vec![Reply::Drop, Reply::Text("second try".into())],
        10,
        Duration::from_secs(5),
        2,
    )
    .await;
    let outcome = s.runtime.run(&ask("hello", "s-10")).await;
    assert_eq!(outcome.map(|o| o.text).ok().as_deref(), Some("second try"));

    let s = setup(
        vec![Reply::Drop, Reply::Drop, Reply::Drop],
        10,
        Duration::from_secs(5),
        2,
    )
    .await;
    let err = s.runtime.run(&ask("hello", "s-11")).await.err();
    assert!(
        matches!(
            err,
            Some(RunError::Model(ModelError::Connection { attempts: 3, .. }))
        ),
        "{err:?}"
    );
    let api = ak_core::ApiError::from(err.unwrap_or_else(|| unreachable!()));
    assert_eq!(api.status().as_u16(), 502);
    assert!(
        api.to_string().contains("cannot reach the model provider"),
        "{api}"
    );
}
