//! Events in the shapes real AWS front doors send (the corpus under `tests/fixtures/events`:
//! REST and HTTP APIs, function URLs, ALB targets, direct invokes, and events of other services),
//! through the request handler in-process and through the built binary; and mutations of every
//! one of them, which must always be answered over HTTP, never with a panic or an invocation
//! error. The same for SQS batches through the agent runner and the response handler.

use ak_agents::AgentRuntime;
use ak_agents::offline::OfflineModel;
use ak_core::answer::{AgentAnswer, AgentFailure};
use ak_core::ports::memory::{MemoryQueue, MemoryResponseStore, MemorySessionStore};
use ak_core::ports::{AgentRunner, Queue, QueueMessage, ResponseStore, sqs_records};
use ak_core::{RunRequest, Settings};
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_runtime::service::worker::{AgentRunnerHandler, ResponseHandler};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use proptest::prelude::*;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One event of the corpus.
struct EventFixture {
    name: String,
    event: Value,
    expect: Value,
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

fn events() -> Vec<EventFixture> {
    let root = fixtures_dir().join("events");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .filter(|d| d.path().is_dir())
        .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten().flatten())
        .map(|f| f.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let v: Value =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            EventFixture {
                name: path
                    .strip_prefix(&root)
                    .unwrap_or(&path)
                    .display()
                    .to_string(),
                event: v["event"].clone(),
                expect: v["expect"].clone(),
            }
        })
        .collect()
}

/// Remembers who each run was for, then runs the offline agents.
struct Recorder {
    runtime: AgentRuntime,
    users: Mutex<Vec<Option<String>>>,
}

#[async_trait::async_trait]
impl AgentRunner for Recorder {
    async fn run(
        &self,
        request: &RunRequest,
        events: Option<&ak_core::events::EventSender>,
    ) -> Result<AgentAnswer, AgentFailure> {
        if let Ok(mut users) = self.users.lock() {
            users.push(request.user_id.clone());
        }
        AgentRunner::run(&self.runtime, request, events).await
    }

    fn provider(&self) -> &'static str {
        "offline"
    }
}

fn repo_settings() -> Settings {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config.yaml");
    let mut settings =
        Settings::load_from(Some(&path), &[]).unwrap_or_else(|e| panic!("config.yaml: {e}"));
    settings
        .execution
        .set_mode(ak_core::config::ExecutionMode::Direct);
    settings
}

/// The reference deployment in direct mode with the offline model: the chat endpoint and the
/// `/app` and `/app_info` routes.
fn deployment() -> (Api, Arc<Recorder>) {
    let settings = repo_settings();
    let runtime = AgentRuntime::from_settings(
        &settings,
        &agent_app::tools(),
        Arc::new(OfflineModel),
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let recorder = Arc::new(Recorder {
        runtime,
        users: Mutex::new(Vec::new()),
    });
    let router = agent_app::routes(Router::builder(RoutePaths::default()))
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let chat = ChatService::new(Execution::Direct(recorder.clone()), None, vec![]);
    (Api::new(router, chat, 1 << 20), recorder)
}

/// The status and JSON body of an answer in any door's format: an HTTP envelope
/// (`statusCode`, `body` as text), or a direct invoke's plain JSON (`statusCode` only on errors).
fn read_answer(answer: &Value) -> Result<(u16, Value), String> {
    let Value::Object(map) = answer else {
        return Err(format!("the answer is not a JSON object: {answer}"));
    };
    let Some(status) = map.get("statusCode") else {
        return Ok((200, answer.clone()));
    };
    let status = status
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .ok_or_else(|| format!("statusCode is not a number: {answer}"))?;
    match map.get("body") {
        Some(Value::String(text)) => {
            let body: Value = serde_json::from_str(text)
                .map_err(|e| format!("the body is not JSON ({e}): {answer}"))?;
            if !body.is_object() {
                return Err(format!("the body is not a JSON object: {answer}"));
            }
            Ok((status, body))
        }
        // A direct invoke's error: the JSON body itself, with its status.
        _ if !map.contains_key("headers") && !map.contains_key("multiValueHeaders") => {
            Ok((status, answer.clone()))
        }
        _ => Err(format!("an HTTP answer without a text body: {answer}")),
    }
}

/// Every field of `expected` is in `actual` with the same value.
fn contains(actual: &Value, expected: &Value) -> bool {
    match (actual, expected) {
        (Value::Object(a), Value::Object(e)) => e
            .iter()
            .all(|(k, v)| a.get(k).is_some_and(|av| contains(av, v))),
        _ => actual == expected,
    }
}

fn check_answer(f: &EventFixture, answer: &Value) -> Result<(), String> {
    let (status, body) = read_answer(answer)?;
    let want = f.expect["status"].as_u64().unwrap_or(200);
    if u64::from(status) != want {
        return Err(format!("status {status}, expected {want}: {body}"));
    }
    if let Some(expected) = f.expect.get("body").filter(|b| b.is_object())
        && !contains(&body, expected)
    {
        return Err(format!("body {body} lacks {expected}"));
    }
    let door = f.name.split('/').next().unwrap_or_default();
    let envelope = answer.as_object().cloned().unwrap_or_default();
    let header = |name: &str| {
        envelope
            .get("headers")
            .and_then(|h| h.get(name))
            .or_else(|| {
                envelope
                    .get("multiValueHeaders")
                    .and_then(|h| h.get(name))
                    .and_then(|v| v.get(0))
            })
            .and_then(Value::as_str)
            .map(str::to_owned)
    };
    match door {
        "alb" | "alb_multi" => {
            let description = format!("{status} ");
            if !envelope
                .get("statusDescription")
                .and_then(Value::as_str)
                .is_some_and(|d| d.starts_with(&description))
            {
                return Err(format!("an ALB answer needs statusDescription: {answer}"));
            }
            let multi = envelope.contains_key("multiValueHeaders");
            if multi != (door == "alb_multi") || multi == envelope.contains_key("headers") {
                return Err(format!(
                    "ALB headers must match the target group's setting: {answer}"
                ));
            }
        }
        "rest" | "http" | "function_url" => {}
        _ => return Ok(()),
    }
    if header("content-type").as_deref() != Some("application/json") {
        return Err(format!("no Content-Type: application/json: {answer}"));
    }
    Ok(())
}

#[tokio::test]
async fn every_event_of_the_corpus_gets_the_answer_its_front_door_expects() {
    let fixtures = events();
    assert!(fixtures.len() >= 60, "{} events", fixtures.len());
    let mut failures = Vec::new();
    for f in &fixtures {
        let (api, recorder) = deployment();
        let answer = api.handle_event(f.event.clone()).await;
        let mut result = check_answer(f, &answer);
        if result.is_ok()
            && let Some(user) = f.expect.get("user")
        {
            let seen = recorder.users.lock().map(|u| u.clone()).unwrap_or_default();
            // Only requests that reached an agent show who they ran for.
            if let Some(ran_for) = seen.last()
                && ran_for.as_deref() != user.as_str()
            {
                result = Err(format!("ran for user {ran_for:?}, expected {user}"));
            }
        }
        if let Err(e) = result {
            failures.push(format!("{}: {e}", f.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} events:\n{}",
        failures.len(),
        fixtures.len(),
        failures.join("\n")
    );
}

struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn every_event_of_the_corpus_is_answered_by_the_built_function() {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut failures = Vec::new();
    for f in events() {
        // A fresh function per event, so sessions of one fixture cannot meet another's.
        let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
        let _function = Running(
            spawn_function(
                &binary,
                &api,
                &[
                    ("AK_CONFIG_PATH_OVERRIDE", &config),
                    ("AK_MODEL__PROVIDER", "offline"),
                    ("AK_EXECUTION__MODE", "direct"),
                ],
            )
            .unwrap_or_else(|e| panic!("{e}")),
        );
        let id = api.invoke(f.event.clone());
        let result = match api.outcome(&id, Duration::from_secs(20)).await {
            Some((Outcome::Response(answer), _)) => check_answer(&f, &answer),
            Some((Outcome::Error(e), _)) => Err(format!("invocation error: {e}")),
            Some((other, _)) => Err(format!("unexpected outcome {other:?}")),
            None => Err(format!("no answer; init error {:?}", api.init_error())),
        };
        if let Err(e) = result {
            failures.push(format!("{}: {e}", f.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn fixture(name: &str) -> Value {
    let events = events();
    events
        .into_iter()
        .find(|f| f.name == name)
        .map(|f| f.event)
        .unwrap_or_else(|| panic!("no fixture {name}"))
}

#[tokio::test]
async fn a_custom_domain_base_path_mapping_reaches_the_chat_endpoint() {
    for name in [
        "rest/custom_domain_one_segment.json",
        "rest/custom_domain_two_segments.json",
        "http/custom_domain_mapping_key_in_raw_path.json",
    ] {
        let (api, _) = deployment();
        let (status, body) = read_answer(&api.handle_event(fixture(name)).await)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(status, 200, "{name}: {body}");
        assert!(
            body["result"].as_str().is_some(),
            "{name}: answered by an agent: {body}"
        );
    }
}

#[tokio::test]
async fn characters_a_uri_cannot_hold_get_an_http_answer_not_a_panic() {
    let (api, _) = deployment();
    let mut event = fixture("function_url/get_poll.json");
    event["rawQueryString"] = json!("request_id=abc&q=\"<script> x\"");
    event["headers"]["host"] = json!("bad host@@");
    event["requestContext"]["domainName"] = json!("not a domain");
    let (status, body) =
        read_answer(&api.handle_event(event.clone()).await).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, &body["status"]),
        (404, &json!("NOT_FOUND")),
        "the poll is answered; the odd parts do not matter: {body}"
    );
    event["rawQueryString"] = json!("request_id=\"<x>\"");
    let (status, body) =
        read_answer(&api.handle_event(event).await).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("request_id")
    );

    let mut post = fixture("function_url/post_chat.json");
    post["body"] = json!("this is not base64!");
    post["isBase64Encoded"] = json!(true);
    let (status, body) =
        read_answer(&api.handle_event(post).await).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("base64"),
        "{body}"
    );
}

#[tokio::test]
async fn only_the_two_payload_shapes_are_direct_invokes() {
    let (api, recorder) = deployment();
    let mut rest = fixture("rest/lambda_authorizer.json");
    if let Some(ctx) = rest["requestContext"].as_object_mut() {
        ctx.remove("httpMethod");
    }
    let (status, _) = read_answer(&api.handle_event(rest).await).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "the top-level httpMethod is enough");
    let users = recorder.users.lock().map(|u| u.clone()).unwrap_or_default();
    assert_eq!(
        users.last().cloned().flatten().as_deref(),
        fixture_user("rest/lambda_authorizer.json").as_deref(),
        "identity comes from the authorizer context, not the body"
    );

    let alb = api.handle_event(fixture("alb/unknown_route.json")).await;
    assert_eq!(alb["statusCode"], 404, "{alb}");
    assert!(alb["statusDescription"].as_str().is_some(), "{alb}");

    for name in [
        "other/s3_put.json",
        "other/empty_object.json",
        "other/rest_without_any_method.json",
    ] {
        let answer = api.handle_event(fixture(name)).await;
        let (status, body) = read_answer(&answer).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(status, 400, "{name}: {answer}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains("event"),
            "{name}: the error says what is wrong: {body}"
        );
    }
}

fn fixture_user(name: &str) -> Option<String> {
    events()
        .into_iter()
        .find(|f| f.name == name)
        .and_then(|f| f.expect["user"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn an_alb_request_is_answered_as_an_alb_expects() {
    let (api, _) = deployment();
    let single = api.handle_event(fixture("alb/post_chat.json")).await;
    assert_eq!(single["statusCode"], 200, "{single}");
    assert_eq!(single["statusDescription"], "200 OK");
    assert_eq!(single["headers"]["content-type"], "application/json");
    assert_eq!(single["isBase64Encoded"], false);
    let multi = api.handle_event(fixture("alb_multi/post_chat.json")).await;
    assert_eq!(
        multi["multiValueHeaders"]["content-type"],
        json!(["application/json"]),
        "{multi}"
    );
    assert!(multi.get("headers").is_none());
    let poll = api.handle_event(fixture("alb/get_poll.json")).await;
    let (status, body) = read_answer(&poll).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 404, "{poll}");
    assert!(
        !body["request_id"].as_str().unwrap_or("%").contains('%'),
        "ALB query values arrive encoded and are decoded: {body}"
    );
}

#[tokio::test]
async fn cognito_and_jwt_identities_are_the_user_and_a_body_cannot_override_them() {
    for (name, claim) in [
        ("rest/cognito_authorizer_with_body_user_id.json", "sub"),
        ("http/jwt_authorizer.json", "sub"),
    ] {
        let (api, recorder) = deployment();
        let answer = api.handle_event(fixture(name)).await;
        assert_eq!(
            read_answer(&answer).map(|a| a.0).ok(),
            Some(200),
            "{answer}"
        );
        let users = recorder.users.lock().map(|u| u.clone()).unwrap_or_default();
        let expected = fixture_user(name);
        assert!(expected.is_some(), "{name} names its {claim}");
        assert_eq!(users.last().cloned().flatten(), expected, "{name}");
    }
    // The claim is configurable (auth.principal_claim).
    let (api, recorder) = deployment();
    let api = api.with_principal_claim("email");
    let event = fixture("rest/cognito_authorizer.json");
    let email = event["requestContext"]["authorizer"]["claims"]["email"].clone();
    api.handle_event(event).await;
    let users = recorder.users.lock().map(|u| u.clone()).unwrap_or_default();
    assert_eq!(
        users.last().cloned().flatten().map(Value::from),
        Some(email)
    );
}

// ---------------------------------------------------------------------------------------------
// Mutations

/// What a mutation does to one node of an event.
#[derive(Debug, Clone)]
enum Mutation {
    Remove,
    Text(String),
    Reserved,
    BadBase64,
    Huge,
    Null,
    Number(i64),
    Bool(bool),
    EmptyList,
    EmptyObject,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Remove),
        any::<String>().prop_map(Mutation::Text),
        proptest::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| Mutation::Text(String::from_utf8_lossy(&b).into_owned())),
        Just(Mutation::Reserved),
        Just(Mutation::BadBase64),
        Just(Mutation::Huge),
        Just(Mutation::Null),
        any::<i64>().prop_map(Mutation::Number),
        any::<bool>().prop_map(Mutation::Bool),
        Just(Mutation::EmptyList),
        Just(Mutation::EmptyObject),
    ]
}

/// Every node of `v`, as JSON pointers.
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(child, p, out);
            }
        }
        _ => {}
    }
}

fn apply(event: &mut Value, pointer: &str, m: &Mutation) {
    if let Mutation::Remove = m {
        let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
        let key = key.replace("~1", "/").replace("~0", "~");
        match event.pointer_mut(parent) {
            Some(Value::Object(map)) => {
                map.remove(&key);
            }
            Some(Value::Array(items)) => {
                if let Ok(i) = key.parse::<usize>()
                    && i < items.len()
                {
                    items.remove(i);
                }
            }
            _ => {}
        }
        return;
    }
    let Some(node) = event.pointer_mut(pointer) else {
        return;
    };
    *node = match m {
        Mutation::Remove => return,
        Mutation::Text(t) => json!(t),
        Mutation::Reserved => json!("\"<>{}|\\^`% \t\n\r#?&=+;/\u{0}\u{7f}é"),
        Mutation::BadBase64 => json!("!!not*base64=="),
        Mutation::Huge => json!("x".repeat(300_000)),
        Mutation::Null => Value::Null,
        Mutation::Number(n) => json!(n),
        Mutation::Bool(b) => json!(b),
        Mutation::EmptyList => json!([]),
        Mutation::EmptyObject => json!({}),
    };
}

fn mutated(base: &Value, picks: &[(prop::sample::Index, Mutation)]) -> Value {
    let mut event = base.clone();
    for (index, m) in picks {
        let mut all = Vec::new();
        pointers(&event, String::new(), &mut all);
        if all.is_empty() {
            break;
        }
        apply(&mut event, &all[index.index(all.len())], m);
    }
    event
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn mutated_events_always_get_an_http_answer(
        which in any::<prop::sample::Index>(),
        picks in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..4),
    ) {
        let corpus = EVENTS.with(|e| e.clone());
        let base = &corpus[which.index(corpus.len())];
        let event = mutated(base, &picks);
        let (api, _) = deployment();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let answer = rt.block_on(api.handle_event(event.clone()));
        let (status, _) = read_answer(&answer).map_err(TestCaseError::fail)?;
        prop_assert!(
            (200..500).contains(&status),
            "status {} for {}", status, serde_json::to_string(&event).unwrap_or_default().chars().take(2000).collect::<String>()
        );
    }

    #[test]
    fn mutated_events_to_custom_routes_always_get_an_http_answer(
        which in any::<prop::sample::Index>(),
        route in prop_oneof![Just(("GET", "/api/v1/app")), Just(("POST", "/api/v1/app_info"))],
        picks in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..4),
    ) {
        // The corpus's events, sent to the custom routes with query parameters in every shape
        // a front door carries them, then mutated.
        let corpus = EVENTS.with(|e| e.clone());
        let mut base = corpus[which.index(corpus.len())].clone();
        let (method, path) = route;
        for pointer in ["/path", "/rawPath", "/requestContext/http/path", "/requestContext/path"] {
            if let Some(node) = base.pointer_mut(pointer) {
                *node = json!(path);
            }
        }
        for pointer in ["/httpMethod", "/requestContext/http/method", "/requestContext/httpMethod"] {
            if let Some(node) = base.pointer_mut(pointer) {
                *node = json!(method);
            }
        }
        if let Value::Object(map) = &mut base {
            map.insert("queryStringParameters".into(), json!({"q": "1", "e": ""}));
            map.insert("multiValueQueryStringParameters".into(), json!({"q": ["1", "2"], "e": [""], "x": []}));
            map.insert("rawQueryString".into(), json!("q=1&q=2&e="));
        }
        let event = mutated(&base, &picks);
        let (api, _) = deployment();
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let answer = rt.block_on(api.handle_event(event.clone()));
        let (status, _) = read_answer(&answer).map_err(TestCaseError::fail)?;
        prop_assert!(
            (200..500).contains(&status),
            "status {} for {}", status, serde_json::to_string(&event).unwrap_or_default().chars().take(2000).collect::<String>()
        );
    }

    #[test]
    fn mutated_sqs_batches_are_processed_or_reported_record_by_record(
        picks in proptest::collection::vec((any::<prop::sample::Index>(), mutation()), 1..5),
        output_side in any::<bool>(),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let name = if output_side { "sqs_output_event.json" } else { "sqs_input_event.json" };
        let text = std::fs::read_to_string(fixtures_dir().join(name))
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let mut base: Value = serde_json::from_str(&text).map_err(|e| TestCaseError::fail(e.to_string()))?;
        // Three records with ids of their own, so each can be told apart.
        let record = base["Records"][0].clone();
        let records: Vec<Value> = (0..3).map(|i| {
            let mut r = record.clone();
            r["messageId"] = json!(format!("m-{i}"));
            r["messageAttributes"]["request_id"]["stringValue"] = json!(format!("req-{i}"));
            r
        }).collect();
        base["Records"] = json!(records);
        let event = mutated(&base, &picks);
        let (reported, records) = rt.block_on(run_batch(event.clone(), output_side));
        for record in &records {
            let Some(id) = record.get("messageId").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
                continue; // cannot be reported; logged and dropped (see pipeline::reportable)
            };
            let handled = QueueMessage::from_record(record).is_ok();
            prop_assert!(
                reported.contains(&id.to_owned()) || handled,
                "record {} neither processed nor reported: {}", id, record
            );
            if !handled {
                prop_assert!(reported.contains(&id.to_owned()), "unreadable {} must be reported", id);
            }
        }
    }
}

thread_local! {
    static EVENTS: Vec<Value> = events().into_iter().map(|f| f.event).collect();
}

/// Runs an SQS event through the agent runner (or the response handler) on in-memory adapters;
/// returns the reported message ids and the event's records.
async fn run_batch(event: Value, output_side: bool) -> (Vec<String>, Vec<Value>) {
    let records = sqs_records(&event.to_string());
    let store: Arc<dyn ResponseStore> = Arc::new(MemoryResponseStore::default());
    let response = if output_side {
        ResponseHandler::new(store).handle(records.clone()).await
    } else {
        let settings = repo_settings();
        let runtime = AgentRuntime::from_settings(
            &settings,
            &agent_app::tools(),
            Arc::new(OfflineModel),
            Arc::new(MemorySessionStore::default()),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let output: Arc<dyn Queue> = Arc::new(MemoryQueue::new(false, Duration::from_secs(30)));
        AgentRunnerHandler::new(Arc::new(runtime), output, store, 3)
            .handle(records.clone(), None)
            .await
    };
    let reported = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    (reported, records)
}

#[tokio::test]
async fn one_odd_record_does_not_fail_its_batch_in_the_built_functions() {
    let text = std::fs::read_to_string(fixtures_dir().join("sqs_output_event.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let mut event: Value = serde_json::from_str(&text).unwrap_or_default();
    let good = event["Records"][0].clone();
    let mut odd = good.clone();
    odd["messageId"] = json!("odd-binary");
    odd["messageAttributes"]["request_id"]["stringValue"] = json!(ak_tests::unique_name("req"));
    odd["messageAttributes"]["trace"] =
        json!({"binaryValue": "*** not base64 ***", "dataType": "Binary"});
    let mut broken = good.clone();
    broken["messageId"] = json!("broken-body");
    broken["body"] = json!("{not json");
    let mut fine = good;
    fine["messageId"] = json!("fine");
    fine["messageAttributes"]["request_id"]["stringValue"] = json!(ak_tests::unique_name("req"));
    event["Records"] = json!([odd, broken, fine]);

    let redis = ak_tests::redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("response-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let _function = Running(
        spawn_function(
            &binary,
            &api,
            &[
                ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
                (
                    "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                    redis.url.expose(),
                ),
                ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let id = api.invoke(event);
    let Some((Outcome::Response(answer), _)) = api.outcome(&id, Duration::from_secs(20)).await
    else {
        panic!(
            "the response handler failed the whole invocation: {:?}",
            api.init_error()
        );
    };
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "broken-body"}]}),
        "only the unreadable record is handed back"
    );
}

// ---------------------------------------------------------------------------------------------
// Found by trying it as a user would

/// A tool whose code panics, standing for any bug in a user's tool.
fn boom() -> ak_agents::FnTool {
    ak_agents::FnTool::new(
        "boom",
        "Fails",
        json!({"type": "object"}),
        |_args: Value, _ctx| async move {
            let empty: Vec<u8> = Vec::new();
            #[allow(clippy::indexing_slicing)]
            let byte = empty[usize::MAX / 2];
            Ok(json!({"byte": byte}))
        },
    )
}

/// The offline model calls the first tool the math agent offers when the prompt names it.
struct CallsBoom;

#[async_trait::async_trait]
impl ak_agents::ModelProvider for CallsBoom {
    fn name(&self) -> &'static str {
        "calls-boom"
    }

    async fn complete(
        &self,
        request: &ak_agents::model::ModelRequest,
    ) -> Result<ak_agents::model::ModelReply, ak_agents::ModelError> {
        let asked = request.messages.iter().any(|m| {
            m["role"] == "user" && m["content"].as_str().is_some_and(|c| c.contains("boom"))
        });
        let called = request.messages.iter().any(|m| m["role"] == "tool");
        if asked && !called && request.tools.iter().any(|t| t.name == "boom") {
            return Ok(ak_agents::model::ModelReply {
                tool_calls: vec![ak_agents::model::ToolCall {
                    id: "c1".into(),
                    name: "boom".into(),
                    arguments: "{}".into(),
                    extra: None,
                }],
                ..Default::default()
            });
        }
        OfflineModel.complete(request).await
    }
}

fn boom_runtime() -> AgentRuntime {
    let mut settings = repo_settings();
    for def in &mut settings.agents.definitions {
        if def.name == "math" {
            def.tools = vec!["boom".into()];
        }
    }
    AgentRuntime::from_settings(
        &settings,
        &agent_app::tools().with(boom()),
        Arc::new(CallsBoom),
        Arc::new(MemorySessionStore::default()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_panic_in_a_tool_costs_its_request_a_500_and_nothing_else() {
    let router = Router::builder(RoutePaths::default())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Api::new(
        router,
        ChatService::new(Execution::Direct(Arc::new(boom_runtime())), None, vec![]),
        1 << 20,
    );
    let ask = |prompt: &str| json!({"prompt": prompt, "agent": "math", "request_id": ak_tests::unique_name("r")});
    let (status, body) =
        read_answer(&api.handle_event(ask("boom please")).await).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["error"], "internal error");
    assert!(body["request_id"].is_string());
    let (status, body) = read_answer(&api.handle_event(ask("what is 12 * 7")).await)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "the next request is served: {body}");

    // In the agent runner: the record is answered with the 500, the rest of the batch runs.
    let output = Arc::new(MemoryQueue::new(false, Duration::from_secs(30)));
    let runner = AgentRunnerHandler::new(
        Arc::new(boom_runtime()),
        output.clone(),
        Arc::new(MemoryResponseStore::default()),
        3,
    );
    let message = |id: &str, session: &str, prompt: &str| {
        QueueMessage {
            request_id: id.into(),
            session_id: session.into(),
            user_id: None,
            status_code: None,
            attempt: None,
            body: json!({"prompt": prompt, "agent": "math", "session_id": session}),
        }
        .to_sqs_record(id, id, 1)
    };
    let response = runner
        .handle(
            ak_tests::records_json(vec![
                message("boom-1", "s1", "boom please"),
                message("fine-1", "s2", "what is 12 * 7"),
            ]),
            None,
        )
        .await;
    assert!(response.batch_item_failures.is_empty());
    let mut answers: Vec<(String, Option<u16>)> = output
        .receive(10, Duration::ZERO)
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| QueueMessage::from_sqs_record(r).ok())
        .map(|d| (d.message.request_id, d.message.status_code))
        .collect();
    answers.sort();
    assert_eq!(
        answers,
        [
            ("boom-1".to_owned(), Some(500)),
            ("fine-1".to_owned(), Some(200))
        ]
    );
}

#[tokio::test]
async fn events_serde_cannot_read_get_a_400_from_the_built_function_and_one_bad_record_is_reported_alone()
 {
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let _handler = Running(
        spawn_function(
            &binary,
            &api,
            &[
                ("AK_CONFIG_PATH_OVERRIDE", &config),
                ("AK_MODEL__PROVIDER", "offline"),
                ("AK_EXECUTION__MODE", "direct"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let deep = format!(
        r#"{{"prompt": "x", "ctx": {}{}}}"#,
        "[".repeat(300),
        "]".repeat(300)
    );
    for payload in [r#"{"prompt": "hi \ud800"}"#.to_owned(), deep] {
        let id = api.invoke_raw(&payload, Duration::from_secs(30));
        match api.outcome(&id, Duration::from_secs(20)).await {
            Some((Outcome::Response(answer), _)) => {
                assert_eq!(answer["statusCode"], 400, "{answer}");
            }
            other => panic!("{other:?}"),
        }
    }

    let redis = ak_tests::redis_settings(600);
    let prefix = redis.prefix().to_owned();
    let responses = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("response-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let _function = Running(
        spawn_function(
            &binary,
            &responses,
            &[
                ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
                (
                    "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                    redis.url.expose(),
                ),
                ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let text = std::fs::read_to_string(fixtures_dir().join("sqs_output_event.json"))
        .unwrap_or_else(|e| panic!("{e}"));
    let event: Value = serde_json::from_str(&text).unwrap_or_default();
    let mut good = event["Records"][0].clone();
    good["messageAttributes"]["request_id"]["stringValue"] = json!(ak_tests::unique_name("req"));
    let good = good.to_string();
    let bad = r#"{"messageId": "lone-surrogate", "body": "{\"result\": \"\ud800\"}"}"#;
    let payload = format!(r#"{{"Records": [{bad}, {good}]}}"#);
    let id = responses.invoke_raw(&payload, Duration::from_secs(30));
    let Some((Outcome::Response(answer), _)) =
        responses.outcome(&id, Duration::from_secs(20)).await
    else {
        panic!("the whole invocation failed");
    };
    assert_eq!(
        answer,
        json!({"batchItemFailures": [{"itemIdentifier": "lone-surrogate"}]})
    );
}

#[tokio::test]
async fn an_anonymous_session_stays_open_and_an_owned_one_stays_its_owners() {
    let (api, _) = deployment();
    let anonymous = |session: &str| {
        let mut e = fixture("function_url/post_chat.json");
        e["body"] = json!(json!({"prompt": "what is 12 * 7", "session_id": session}).to_string());
        e["isBase64Encoded"] = json!(false);
        e
    };
    let as_user = |session: &str, user: &str| {
        let mut e = fixture("http/jwt_authorizer.json");
        e["body"] = json!(json!({"prompt": "what is 12 * 7", "session_id": session}).to_string());
        e["isBase64Encoded"] = json!(false);
        e["requestContext"]["authorizer"]["jwt"]["claims"]["sub"] = json!(user);
        e
    };
    let status = |answer: Value| read_answer(&answer).map(|a| a.0).unwrap_or_default();
    assert_eq!(status(api.handle_event(anonymous("open")).await), 200);
    assert_eq!(
        status(api.handle_event(as_user("open", "mallory")).await),
        200
    );
    assert_eq!(
        status(api.handle_event(anonymous("open")).await),
        200,
        "a later user does not take an anonymous session over"
    );
    assert_eq!(
        status(api.handle_event(as_user("owned", "alice")).await),
        200
    );
    assert_eq!(status(api.handle_event(anonymous("owned")).await), 403);
    assert_eq!(
        status(api.handle_event(as_user("owned", "mallory")).await),
        403
    );
    assert_eq!(
        status(api.handle_event(as_user("owned", "alice")).await),
        200
    );
}

#[tokio::test]
async fn a_poll_in_direct_mode_without_a_store_says_there_is_nothing_to_poll() {
    let (api, _) = deployment();
    let answer = api.handle_event(fixture("rest/get_poll.json")).await;
    let (status, body) = read_answer(&answer).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, &body["status"]),
        (404, &json!("NOT_FOUND")),
        "{body}"
    );
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("comes with the POST"),
        "{body}"
    );
    assert!(
        answer["headers"].get("retry-after").is_none(),
        "no invitation to poll again: {answer}"
    );
}

#[tokio::test]
async fn the_built_function_answers_before_its_deadline_when_the_model_is_slow() {
    let model = ak_tests::model_server::ScriptedModel::constant(
        ak_tests::model_server::Reply::Hang(Duration::from_secs(40)),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let _function = Running(
        spawn_function(
            &binary,
            &api,
            &[
                ("AK_CONFIG_PATH_OVERRIDE", &config),
                ("AK_MODEL__PROVIDER", "openai"),
                ("OPENAI_API_KEY", "sk-slow"),
                ("OPENAI_BASE_URL", &model.base_url),
                ("AK_EXECUTION__MODE", "direct"),
            ],
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let started = std::time::Instant::now();
    let event = fixture("function_url/post_chat.json");
    let id = api.invoke_raw(&event.to_string(), Duration::from_secs(4));
    let Some((Outcome::Response(answer), _)) = api.outcome(&id, Duration::from_secs(20)).await
    else {
        panic!("no answer");
    };
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "answered within the invocation's 4 s: {:?}",
        started.elapsed()
    );
    let (status, body) = read_answer(&answer).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline"),
        "{body}"
    );
}
