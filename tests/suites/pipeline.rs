//! End to end through the real adapters: the request handler's API in each execution mode, the
//! agent runner and the response handler driven as Lambda drives them (SQS event batches built
//! from messages received from moto), Redis and DynamoDB response stores, and the scripted
//! OpenAI-compatible model.

use ak_adapters::redis::RedisResponseStore;
use ak_adapters::sqs::SqsQueue;
use ak_adapters::{self as adapters, AwsConfig};
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, ToolRegistry};
use ak_core::config::{AgentDefinition, ExecutionMode, QueueUrl, Settings, StoreKind};
use ak_core::ports::memory::MemorySessionStore;
use ak_core::ports::{AgentRunner, Queue, QueueMessage, ResponseStore};
use ak_core::secret::Secret;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_runtime::service::worker::{AgentRunnerHandler, ResponseHandler, pump};
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::{create_response_table, redis_settings, unique_name};
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Store {
    Redis,
    DynamoDb,
}

pub(crate) struct System {
    pub(crate) api: Arc<Api>,
    pub(crate) runner: AgentRunnerHandler,
    responses: ResponseHandler,
    pub(crate) input: Arc<dyn Queue>,
    pub(crate) output: Arc<dyn Queue>,
    /// The agents the runner runs.
    pub(crate) runtime: Arc<dyn AgentRunner>,
    pub(crate) store: Arc<dyn ResponseStore>,
    pub(crate) model: ScriptedModel,
    pub(crate) sessions: Arc<MemorySessionStore>,
}

async fn create_queue(visibility_secs: u32) -> String {
    ak_tests::create_queue("pipe", Some(visibility_secs))
        .await
        .unwrap_or_else(|e| panic!("create queue: {e:?}"))
}

fn agents() -> Vec<AgentDefinition> {
    let def = |name: &str, handoffs: &[&str], about: Option<&str>| AgentDefinition {
        name: name.into(),
        instructions: format!("You are {name}."),
        handoff_description: about.map(str::to_owned),
        handoffs: handoffs.iter().map(|s| (*s).to_owned()).collect(),
        tools: vec![],
        model: None,
        mcp_servers: Vec::new(),
        approval: Vec::new(),
    };
    vec![
        def("triage", &["history", "math"], None),
        def("math", &[], Some("Specialist agent for math questions")),
        def(
            "history",
            &[],
            Some("Specialist agent for historical questions"),
        ),
    ]
}

pub(crate) async fn system(
    mode: ExecutionMode,
    store_kind: Store,
    replies: Vec<Reply>,
    tweak: impl FnOnce(&mut Settings),
) -> System {
    let model = ScriptedModel::start(replies)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut settings = Settings::default();
    settings.execution.set_mode(mode);
    settings.execution.queues.input.url = Some(QueueUrl::Sqs(create_queue(1).await));
    settings.execution.queues.output.url = Some(QueueUrl::Sqs(create_queue(1).await));
    settings.execution.queues.input.max_receive_count = 3;
    settings.execution.response_store.retry_count = 10;
    settings.execution.response_store.delay = 1.0;
    match store_kind {
        Store::Redis => {
            settings.execution.response_store.kind = Some(StoreKind::Redis);
            settings.execution.response_store.redis = redis_settings(600);
        }
        Store::DynamoDb => {
            let table = unique_name("responses");
            create_response_table(&ak_tests::dynamodb_client().await, &table)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            settings.execution.response_store.kind = Some(StoreKind::DynamoDb);
            settings.execution.response_store.dynamodb.table_name = Some(table);
        }
    }
    settings.agents.default = Some("triage".into());
    settings.agents.definitions = agents();
    settings.model.name = "gpt-e2e".into();
    tweak(&mut settings);

    let aws = AwsConfig::default();
    let sessions = Arc::new(MemorySessionStore::default());
    let provider = OpenAiProvider::new(OpenAiConfig {
        base_url: model.base_url.clone(),
        api_key: Some(Secret::new("sk-e2e")),
        timeout: Duration::from_secs(5),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime: Arc<dyn AgentRunner> = Arc::new(
        AgentRuntime::from_settings(
            &settings,
            &ToolRegistry::new(),
            Arc::new(provider),
            sessions.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let store = adapters::required_response_store(&settings, &aws)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let chat = ChatService::from_settings(&settings, &aws, Some(runtime.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let router = Router::builder(RoutePaths::default())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let input = adapters::queue(
        settings
            .execution
            .queues
            .input
            .url
            .as_ref()
            .unwrap_or_else(|| unreachable!()),
        &aws,
    )
    .await;
    let output = adapters::required_output_queue(&settings, &aws)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    System {
        api: Arc::new(Api::new(router, chat, settings.api.max_body_bytes)),
        runner: AgentRunnerHandler::new(
            runtime.clone(),
            output.clone(),
            store.clone(),
            settings.execution.queues.input.max_receive_count,
        ),
        responses: ResponseHandler::new(store.clone()),
        input,
        output,
        runtime,
        store,
        model,
        sessions,
    }
}

/// A REST API (v1) event for the chat path, as API Gateway would deliver it.
pub(crate) fn event(
    method: &str,
    body: Option<&str>,
    query: Option<(&str, &str)>,
    user: Option<&str>,
) -> Request {
    let authorizer = user.map(|user| json!({"principalId": user, "user_id": user}));
    authorized_event(method, body, query, authorizer)
}

/// The same with the request context an authorizer's answer gives API Gateway (`principalId`
/// and the context entries, flattened).
pub(crate) fn authorized_event(
    method: &str,
    body: Option<&str>,
    query: Option<(&str, &str)>,
    authorizer: Option<Value>,
) -> Request {
    let mut e: Value = serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
        .unwrap_or_default();
    e["httpMethod"] = json!(method);
    e["requestContext"]["httpMethod"] = json!(method);
    e["body"] = body.map_or(Value::Null, |b| json!(b));
    if let Some((k, v)) = query {
        e["queryStringParameters"] = json!({k: v});
        e["multiValueQueryStringParameters"] = json!({k: [v]});
    }
    if let Some(authorizer) = authorizer {
        e["requestContext"]["authorizer"] = authorizer;
    }
    decode(&e)
}

/// A request from an event, as the request handler reads it.
pub(crate) fn decode(event: &Value) -> Request {
    match ak_http::event::decode(event, &ak_http::event::DecodeOptions::default()) {
        ak_http::event::Incoming::Request { request, .. } => *request,
        other => panic!("not a request: {other:?}"),
    }
}

pub(crate) async fn call(api: &Api, request: Request) -> (u16, Option<String>, Value) {
    let response = api.handle(request).await;
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    assert_eq!(
        response.headers().get("content-type").map(|v| v.as_bytes()),
        Some(&b"application/json"[..])
    );
    let body: Value = match response.body() {
        Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
        Body::Binary(b) => serde_json::from_slice(b).unwrap_or(Value::Null),
        _ => Value::Null,
    };
    (status, retry_after, body)
}

impl System {
    pub(crate) async fn run_runner(&self) -> usize {
        pump(self.input.as_ref(), Duration::from_secs(2), |records| {
            self.runner.handle(records, None)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) async fn run_responses(&self) -> usize {
        pump(self.output.as_ref(), Duration::from_secs(2), |records| {
            self.responses.handle(records)
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) async fn poll(&self, id: &str, user: Option<&str>) -> (u16, Option<String>, Value) {
        call(
            &self.api,
            event("GET", None, Some(("request_id", id)), user),
        )
        .await
    }
}

pub(crate) fn handoff_then(text: &str) -> Vec<Reply> {
    vec![
        Reply::ToolCall {
            name: "transfer_to_math".into(),
            arguments: json!({}),
        },
        Reply::Text(text.into()),
    ]
}

#[tokio::test]
async fn direct_mode_answers_with_the_agent_that_answered() {
    let s = system(
        ExecutionMode::Direct,
        Store::Redis,
        handoff_then("84"),
        |_| {},
    )
    .await;
    let (status, _, body) = call(
        &s.api,
        event(
            "POST",
            Some(r#"{"prompt": "what is 12 * 7", "session_id": "user-123"}"#),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "84");
    assert_eq!(body["agent"], "math");
    assert_eq!(body["session_id"], "user-123");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert_eq!(s.model.calls(), 2);
}

async fn rest_sync_round_trip(store: Store) {
    let s = Arc::new(system(ExecutionMode::RestSync, store, handoff_then("84"), |_| {}).await);
    let waiting = {
        let s = s.clone();
        tokio::spawn(async move {
            call(
                &s.api,
                event(
                    "POST",
                    Some(r#"{"prompt": "what is 12 * 7"}"#),
                    None,
                    Some("user-a"),
                ),
            )
            .await
        })
    };
    // Lambda's event source mappings, played by hand: the runner's batch, then the answers'.
    let mut handled = 0;
    for _ in 0..10 {
        handled += s.run_runner().await;
        if handled > 0 {
            break;
        }
    }
    assert_eq!(handled, 1);
    assert_eq!(s.run_responses().await, 1);
    let (status, _, body) = waiting.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["result"].as_str(), body["agent"].as_str()),
        (Some("84"), Some("math"))
    );
    let id = body["request_id"].as_str().unwrap_or_default();
    let stored = s
        .store
        .get(id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("not stored"));
    assert_eq!(
        stored.user_id.as_deref(),
        Some("user-a"),
        "the principal travelled with the message"
    );
}

#[tokio::test]
async fn rest_sync_over_sqs_with_redis() {
    rest_sync_round_trip(Store::Redis).await;
}

#[tokio::test]
async fn rest_sync_over_sqs_with_dynamodb() {
    rest_sync_round_trip(Store::DynamoDb).await;
}

async fn rest_async_poll_before_and_after(store: Store) {
    let s = system(ExecutionMode::RestAsync, store, handoff_then("84"), |_| {}).await;
    let (status, _, accepted) = call(
        &s.api,
        event("POST", Some(r#"{"prompt": "what is 12 * 7"}"#), None, None),
    )
    .await;
    assert_eq!(status, 202);
    assert_eq!(accepted["status"], "ACCEPTED");
    let id = accepted["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let (status, retry_after, body) = s.poll(&id, None).await;
    assert_eq!(
        (status, body.clone()),
        (404, json!({"status": "NOT_FOUND", "request_id": id}))
    );
    assert!(retry_after.is_some(), "NOT_FOUND says when to retry");

    while s.run_runner().await == 0 {}
    assert_eq!(
        s.poll(&id, None).await.0,
        404,
        "answered but not stored yet"
    );
    assert_eq!(s.run_responses().await, 1);

    let (status, _, body) = s.poll(&id, None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "84");
    assert_eq!(body["request_id"], id.as_str());
    let (status, _, again) = s.poll(&id, None).await;
    assert_eq!((status, again), (200, body), "reads are non-destructive");

    // The poll id may also come in a JSON body.
    let by_body = call(
        &s.api,
        event(
            "GET",
            Some(&json!({"request_id": id}).to_string()),
            None,
            None,
        ),
    )
    .await;
    assert_eq!(by_body.0, 200);
}

#[tokio::test]
async fn rest_async_over_sqs_with_redis() {
    rest_async_poll_before_and_after(Store::Redis).await;
}

#[tokio::test]
async fn rest_async_over_sqs_with_dynamodb() {
    rest_async_poll_before_and_after(Store::DynamoDb).await;
}

fn input_message(prompt: &str) -> QueueMessage {
    let session = unique_name("s");
    QueueMessage {
        request_id: unique_name("req"),
        session_id: session.clone(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": prompt, "session_id": session}),
    }
}

#[tokio::test]
async fn a_duplicate_delivery_calls_the_model_once_and_stores_one_answer() {
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        handoff_then("84"),
        |_| {},
    )
    .await;
    let message = input_message("what is 12 * 7");
    s.input
        .send(&message)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    s.input
        .send(&message)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let mut handled = 0;
    for _ in 0..20 {
        handled += s.run_runner().await;
        if handled >= 2 && s.run_responses().await > 0 {
            break;
        }
    }
    // The duplicate was handed back while the first was in flight; deliver it again.
    for _ in 0..10 {
        if s.run_runner().await > 0 {
            break;
        }
    }
    assert_eq!(s.model.calls(), 2, "one run (handoff + answer), not two");
    let mut answers = 0;
    for _ in 0..3 {
        answers += s.run_responses().await;
    }
    assert_eq!(answers, 0, "no second answer was produced");
    let stored = s.store.get(&message.request_id).await.ok().flatten();
    assert_eq!(stored.map(|r| r.body["result"].clone()), Some(json!("84")));
}

#[tokio::test]
async fn a_record_past_max_receive_count_gets_an_error_answer() {
    let s = system(ExecutionMode::RestAsync, Store::Redis, vec![], |settings| {
        settings.execution.queues.input.max_receive_count = 2;
    })
    .await;
    let message = input_message("hello");
    s.input
        .send(&message)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // Two receives that never finish (a crashed runner), then the third reaches the runner.
    for _ in 0..2 {
        let got = s
            .input
            .receive(1, Duration::from_secs(2))
            .await
            .unwrap_or_default();
        assert_eq!(got.len(), 1);
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    while s.run_runner().await == 0 {}
    assert_eq!(
        s.model.calls(),
        0,
        "no model call for a request that failed too often"
    );
    assert_eq!(s.run_responses().await, 1);
    let (status, _, body) = s.poll(&message.request_id, None).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["request_id"], message.request_id.as_str());
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("could not be processed"),
        "{body}"
    );
}

#[tokio::test]
async fn a_record_past_max_receive_count_still_in_work_elsewhere_is_handed_back_not_failed() {
    let s = system(ExecutionMode::RestAsync, Store::Redis, vec![], |settings| {
        settings.execution.queues.input.max_receive_count = 1;
    })
    .await;
    let message = input_message("hello");
    // A run longer than the visibility timeout holds the claim.
    s.store
        .claim(&message.request_id, "a-long-run", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let record = message.to_sqs_record("m-late", "r-late", 2);
    let response = s
        .runner
        .handle(ak_tests::records_json(vec![record]), None)
        .await;
    assert_eq!(response.batch_item_failures.len(), 1, "handed back");
    assert_eq!(
        s.store.get(&message.request_id).await.ok().flatten(),
        None,
        "no error answer in the way of the run's own"
    );
}

#[tokio::test]
async fn a_prompt_too_large_for_the_input_queue_is_a_413_not_a_503() {
    let small = ak_tests::sqs_client()
        .await
        .create_queue()
        .queue_name(unique_name("small"))
        .attributes(
            aws_sdk_sqs::types::QueueAttributeName::MaximumMessageSize,
            "1024",
        )
        .send()
        .await
        .ok()
        .and_then(|o| o.queue_url)
        .unwrap_or_else(|| panic!("cannot create the queue"));
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        vec![],
        move |settings| {
            settings.execution.queues.input.url = Some(QueueUrl::Sqs(small));
        },
    )
    .await;
    let body = json!({"prompt": "x".repeat(4000), "request_id": unique_name("big")}).to_string();
    let (status, _, answer) = call(&s.api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 413, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("bytes") && error.contains("MaximumMessageSize"),
        "{error}"
    );
}

#[tokio::test]
async fn a_poison_record_does_not_fail_the_rest_of_its_batch() {
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        vec![Reply::Text("fine".into())],
        |_| {},
    )
    .await;
    let good = input_message("hello");
    let mut good_record = good.to_sqs_record("good-1", "receipt-1", 1);
    good_record.message_id = Some("good-1".into());
    let mut poison = good.to_sqs_record("poison-1", "receipt-2", 1);
    poison.body = Some("{not json".into());
    let mut nameless = good.to_sqs_record("poison-2", "receipt-3", 1);
    nameless.message_attributes.clear();
    let response = s
        .runner
        .handle(
            ak_tests::records_json(vec![poison, good_record, nameless]),
            None,
        )
        .await;
    let mut failed: Vec<String> = response
        .batch_item_failures
        .into_iter()
        .map(|f| f.item_identifier)
        .collect();
    failed.sort();
    assert_eq!(failed, vec!["poison-1", "poison-2"]);
    assert_eq!(s.model.calls(), 1);
    assert_eq!(s.run_responses().await, 1, "the good record was answered");

    let response = s
        .responses
        .handle(ak_tests::records_json(vec![{
            let mut r = good.to_sqs_record("bad-out", "r", 1);
            r.body = None;
            r
        }]))
        .await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "the response handler reports poison too"
    );
}

#[tokio::test]
async fn rest_sync_gives_up_with_504_and_the_request_id() {
    let s = system(ExecutionMode::RestSync, Store::Redis, vec![], |settings| {
        settings.execution.response_store.retry_count = 1;
        settings.execution.response_store.delay = 0.3;
    })
    .await;
    let (status, retry_after, body) = call(
        &s.api,
        event("POST", Some(r#"{"prompt": "hi"}"#), None, None),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert_eq!(body["status"], "NOT_FOUND");
    assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
    assert!(body["error"].as_str().is_some());
    assert!(retry_after.is_some());
    assert_eq!(
        s.input
            .receive(10, Duration::from_secs(1))
            .await
            .map(|r| r.len())
            .unwrap_or(0),
        1,
        "the request is still queued: the client can poll later"
    );
}

#[tokio::test]
async fn bad_requests_get_400_413_404_and_405() {
    let s = system(ExecutionMode::RestAsync, Store::Redis, vec![], |settings| {
        settings.api.max_body_bytes = 200;
    })
    .await;
    for (body, expected) in [
        ("{not json", "not valid JSON"),
        (r#"{"agent": "math"}"#, "prompt is required"),
        (
            r#"{"prompt": "x", "agent": "poetry"}"#,
            "unknown agent \"poetry\"; available: triage, math, history",
        ),
        (
            r#"{"prompt": "x", "session_id": "has space"}"#,
            "session_id must be",
        ),
    ] {
        let (status, _, response) = call(&s.api, event("POST", Some(body), None, None)).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            response["error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{body}: {response}"
        );
    }
    let (status, _, response) = s.poll("bad id!", None).await;
    assert_eq!(status, 400, "{response}");
    let big = json!({"prompt": "x".repeat(300)}).to_string();
    let (status, _, response) = call(&s.api, event("POST", Some(&big), None, None)).await;
    assert_eq!(status, 413, "{response}");
    assert!(
        response["error"]
            .as_str()
            .unwrap_or_default()
            .contains("limit is 200 bytes")
    );
    assert_eq!(
        s.input
            .receive(10, Duration::from_millis(500))
            .await
            .map(|r| r.len())
            .unwrap_or(0),
        0,
        "nothing was enqueued"
    );

    let mut other = event("POST", Some("{}"), None, None);
    *other.extensions_mut() =
        std::mem::take(other.extensions_mut()).with_raw_http_path("/api/v1/nope");
    assert_eq!(call(&s.api, other).await.0, 404);
    let put = event("PUT", Some("{}"), None, None);
    assert_eq!(call(&s.api, put).await.0, 405);
}

use lambda_http::RequestExt;

#[tokio::test]
async fn a_failing_model_is_a_502_without_secrets() {
    let s = system(
        ExecutionMode::Direct,
        Store::Redis,
        vec![Reply::Status(401)],
        |_| {},
    )
    .await;
    let (status, _, body) = call(
        &s.api,
        event("POST", Some(r#"{"prompt": "hi"}"#), None, None),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("HTTP 401"),
        "{body}"
    );
    assert!(body["request_id"].as_str().is_some());
    assert!(!body.to_string().contains("sk-e2e"));
}

#[tokio::test]
async fn unreachable_queue_or_store_is_a_503_and_nothing_is_accepted() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(1);
    let base = ak_adapters::aws::load_sdk_config().await;
    let config = aws_sdk_sqs::config::Builder::from(&base)
        .endpoint_url(format!("http://127.0.0.1:{closed}"))
        .build();
    let dead_queue: Arc<dyn Queue> = Arc::new(SqsQueue::new(
        aws_sdk_sqs::Client::from_conf(config),
        &format!("http://127.0.0.1:{closed}/123456789012/gone"),
    ));
    let mut redis = redis_settings(60);
    redis.url = ak_core::secret::SecretUrl::new(format!("redis://127.0.0.1:{closed}"));
    let dead_store: Arc<dyn ResponseStore> =
        Arc::new(RedisResponseStore::new(&redis).unwrap_or_else(|e| panic!("{e}")));

    let router = || {
        Router::builder(RoutePaths::default())
            .build()
            .unwrap_or_else(|e| panic!("{e}"))
    };
    let api = Api::new(
        router(),
        ChatService::new(
            Execution::Async { input: dead_queue },
            Some(dead_store.clone()),
            vec![],
        ),
        1 << 20,
    );
    let (status, _, body) =
        call(&api, event("POST", Some(r#"{"prompt": "hi"}"#), None, None)).await;
    assert_eq!(status, 503, "{body}");
    // The request id is registered in the store before the request is queued.
    assert_eq!(body["error"], "Redis is unavailable; try again shortly");
    assert!(body["request_id"].as_str().is_some());
    assert_ne!(body["status"], "ACCEPTED");

    // The store up, the queue down: still nothing accepted.
    let store: Arc<dyn ResponseStore> =
        Arc::new(RedisResponseStore::new(&redis_settings(60)).unwrap_or_else(|e| panic!("{e}")));
    let queue_down = Api::new(
        router(),
        ChatService::new(
            Execution::Async {
                input: Arc::new(SqsQueue::new(
                    aws_sdk_sqs::Client::from_conf(
                        aws_sdk_sqs::config::Builder::from(&base)
                            .endpoint_url(format!("http://127.0.0.1:{closed}"))
                            .build(),
                    ),
                    &format!("http://127.0.0.1:{closed}/123456789012/gone"),
                )),
            },
            Some(store),
            vec![],
        ),
        1 << 20,
    );
    let (status, _, body) = call(
        &queue_down,
        event("POST", Some(r#"{"prompt": "hi"}"#), None, None),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "SQS is unavailable; try again shortly");
    assert_ne!(body["status"], "ACCEPTED");

    let (status, _, body) = call(
        &api,
        event("GET", None, Some(("request_id", "req-1")), None),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "Redis is unavailable; try again shortly");
}

#[tokio::test]
async fn a_corrupt_stored_answer_is_a_500_without_details() {
    let s = system(ExecutionMode::RestAsync, Store::Redis, vec![], |_| {}).await;
    let settings = redis_settings(60);
    let store = RedisResponseStore::new(&settings).unwrap_or_else(|e| panic!("{e}"));
    let mut conn = ak_tests::redis_connection()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let () = redis::cmd("SET")
        .arg(format!("{}{{req-corrupt}}", settings.prefix()))
        .arg("{{{")
        .query_async(&mut conn)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Api::new(
        Router::builder(RoutePaths::default())
            .build()
            .unwrap_or_else(|e| panic!("{e}")),
        ChatService::new(
            Execution::Async {
                input: s.input.clone(),
            },
            Some(Arc::new(store)),
            vec![],
        ),
        1 << 20,
    );
    let (status, _, body) = call(
        &api,
        event("GET", None, Some(("request_id", "req-corrupt")), None),
    )
    .await;
    assert_eq!(
        (status, body),
        (
            500,
            json!({"error": "internal error", "request_id": "req-corrupt"})
        )
    );
}

#[tokio::test]
async fn another_users_answer_is_not_found() {
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        handoff_then("secret of user a"),
        |_| {},
    )
    .await;
    let (_, _, accepted) = call(
        &s.api,
        event(
            "POST",
            Some(r#"{"prompt": "what is 12 * 7"}"#),
            None,
            Some("user-a"),
        ),
    )
    .await;
    let id = accepted["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    while s.run_runner().await == 0 {}
    s.run_responses().await;
    let (status, _, body) = s.poll(&id, Some("user-b")).await;
    assert_eq!(
        (status, body),
        (404, json!({"status": "NOT_FOUND", "request_id": id}))
    );
    assert_eq!(
        s.poll(&id, None).await.0,
        404,
        "anonymous callers cannot read an owned answer"
    );
    assert_eq!(s.poll(&id, Some("user-a")).await.0, 200);
}
