//! Nothing lost, nothing run twice: request ids as idempotency keys in every mode, sessions
//! without a size cliff, one turn per request however often it is delivered, and two messages
//! on one session at the same time.

use crate::model_interop::reference_settings;
use crate::pipeline::{Store, System, call, event, system};
use crate::session_store::turn;
use agent_app::multiply;
use ak_adapters::dynamodb::DynamoSessionStore;
use ak_adapters::redis::{RedisResponseStore, RedisSessionStore};
use ak_adapters::sqs::SqsQueue;
use ak_agents::offline::OfflineModel;
use ak_agents::openai::{OpenAiConfig, OpenAiProvider};
use ak_agents::{AgentRuntime, ModelProvider, ToolRegistry};
use ak_core::config::{DynamoDbSettings, ExecutionMode};
use ak_core::ports::memory::{MemoryQueue, MemoryResponseStore, MemorySessionStore};
use ak_core::ports::{
    ClaimOutcome, HistoryLimits, LoggedEvent, PortError, Queue, QueueMessage, Registration,
    ResponseRecord, ResponseStore, SessionStore,
};
use ak_core::secret::Secret;
use ak_http::api::Api;
use ak_http::{RoutePaths, Router};
use ak_runtime::service::chat::{ChatService, Execution};
use ak_runtime::service::worker::{AgentRunnerHandler, ResponseHandler, pump};
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::{create_session_table, dynamodb_client, redis_settings, unique_name};
use async_trait::async_trait;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const ALL: HistoryLimits = HistoryLimits {
    max_items: usize::MAX,
    max_bytes: usize::MAX,
};

/// POSTs `body`, playing the event source mappings while a rest_sync request waits.
async fn post(s: &Arc<System>, body: &Value) -> (u16, Value) {
    let api = s.api.clone();
    let text = body.to_string();
    let mut task =
        tokio::spawn(async move { call(&api, event("POST", Some(&text), None, None)).await });
    loop {
        if let Ok(done) = tokio::time::timeout(Duration::from_millis(200), &mut task).await {
            let (status, _, body) = done.unwrap_or_else(|e| panic!("{e}"));
            return (status, body);
        }
        s.run_runner().await;
        s.run_responses().await;
    }
}

/// Pumps the queues until the answer to `id` can be polled.
async fn answer_of(s: &Arc<System>, id: &str) -> Value {
    for _ in 0..20 {
        let (status, _, body) =
            call(&s.api, event("GET", None, Some(("request_id", id)), None)).await;
        if status == 200 {
            return body;
        }
        s.run_runner().await;
        s.run_responses().await;
    }
    panic!("no answer for {id}")
}

async fn a_reused_request_id(mode: ExecutionMode, store: Store) {
    let s = Arc::new(
        system(
            mode,
            store,
            vec![Reply::Text("William of Normandy won in 1066.".into())],
            |_| {},
        )
        .await,
    );
    let id = unique_name("req");
    let first =
        json!({"prompt": "who won the battle of Hastings", "agent": "history", "request_id": id});
    let (status, body) = post(&s, &first).await;
    let answer = if mode == ExecutionMode::RestAsync {
        assert_eq!(
            (status, &body["status"]),
            (202, &json!("ACCEPTED")),
            "{body}"
        );
        answer_of(&s, &id).await
    } else {
        assert_eq!(status, 200, "{mode}: {body}");
        body
    };
    assert_eq!(
        answer["result"], "William of Normandy won in 1066.",
        "{answer}"
    );

    // The same request again: the first answer, and no second model call.
    let (status, again) = post(&s, &first).await;
    if mode == ExecutionMode::RestAsync {
        assert_eq!(status, 202, "{again}");
        assert_eq!(answer_of(&s, &id).await, answer);
    } else {
        assert_eq!((status, &again), (200, &answer), "{mode}");
    }
    assert_eq!(s.model.calls(), 1, "{mode}: the model answered once");

    // The same id with a different request: refused, never someone else's answer.
    let other = json!({"prompt": "what is 12 * 7", "request_id": id});
    let (status, body) = post(&s, &other).await;
    assert_eq!(status, 422, "{mode}: {body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!(
                "request_id {id} was already used for a different request"
            )),
        "{body}"
    );
    assert!(body.get("result").is_none());
    assert_eq!(s.model.calls(), 1);
    let turns = s
        .sessions
        .load(answer["session_id"].as_str().unwrap_or_default(), ALL)
        .await;
    assert_eq!(
        turns.ok().flatten().map(|h| h.next_seq),
        Some(1),
        "{mode}: one turn in the session"
    );
}

macro_rules! reused_ids {
    ($($name:ident: $mode:ident, $store:ident;)+) => {
        $(#[tokio::test]
        async fn $name() {
            a_reused_request_id(ExecutionMode::$mode, Store::$store).await
        })+
    };
}

reused_ids! {
    a_reused_request_id_in_rest_sync_on_redis: RestSync, Redis;
    a_reused_request_id_in_rest_sync_on_dynamodb: RestSync, DynamoDb;
    a_reused_request_id_in_rest_async_on_redis: RestAsync, Redis;
    a_reused_request_id_in_rest_async_on_dynamodb: RestAsync, DynamoDb;
    a_reused_request_id_in_direct_mode_with_a_redis_store: Direct, Redis;
    a_reused_request_id_in_direct_mode_with_a_dynamodb_store: Direct, DynamoDb;
}

async fn dynamodb_sessions() -> Arc<dyn SessionStore> {
    let client = dynamodb_client().await;
    let table = unique_name("sessions");
    create_session_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let settings = DynamoDbSettings {
        table_name: Some(table),
        ttl: 3600,
    };
    Arc::new(DynamoSessionStore::new(client, &settings).unwrap_or_else(|e| panic!("{e}")))
}

fn redis_sessions() -> Arc<dyn SessionStore> {
    Arc::new(RedisSessionStore::new(&redis_settings(3600)).unwrap_or_else(|e| panic!("{e}")))
}

fn provider(model: &ScriptedModel) -> Arc<dyn ModelProvider> {
    Arc::new(
        OpenAiProvider::new(OpenAiConfig {
            base_url: model.base_url.clone(),
            api_key: Some(Secret::new("sk-once")),
            timeout: Duration::from_secs(10),
            max_retries: 0,
        })
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn runtime(model: Arc<dyn ModelProvider>, sessions: Arc<dyn SessionStore>) -> Arc<AgentRuntime> {
    Arc::new(
        AgentRuntime::from_settings(
            &reference_settings(),
            &ToolRegistry::new().with(multiply()),
            model,
            sessions,
        )
        .unwrap_or_else(|e| panic!("{e}")),
    )
}

fn direct_api(runtime: Arc<AgentRuntime>) -> Api {
    let router = Router::builder(RoutePaths::default())
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    Api::new(
        router,
        ChatService::new(Execution::Direct(runtime), None, vec![]),
        1 << 20,
    )
}

async fn a_long_conversation(sessions: Arc<dyn SessionStore>, answer_bytes: usize, turns: u64) {
    let model = ScriptedModel::constant(Reply::Text("z".repeat(answer_bytes)))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = direct_api(runtime(provider(&model), sessions.clone()));
    let session = unique_name("long");
    for i in 0..turns {
        let body = json!({"prompt": format!("tell me more, part {i}"), "agent": "history", "session_id": session});
        let (status, _, answer) =
            call(&api, event("POST", Some(&body.to_string()), None, None)).await;
        assert_eq!(status, 200, "turn {i}: {answer}");
    }
    let history = sessions
        .load(&session, ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(history.next_seq, turns, "every turn is kept");
    let bound = reference_settings().agents.history_max_bytes;
    assert!(
        model.largest_request() < bound + answer_bytes / 2 + 10_000,
        "what the model gets stays bounded: {} bytes",
        model.largest_request()
    );
}

#[tokio::test]
async fn ten_turns_of_60_kb_answers_on_dynamodb() {
    a_long_conversation(dynamodb_sessions().await, 60_000, 10).await;
}

#[tokio::test]
async fn two_hundred_turns_of_10_kb_answers_on_dynamodb() {
    a_long_conversation(dynamodb_sessions().await, 10_000, 200).await;
}

#[tokio::test]
async fn ten_turns_of_60_kb_answers_on_redis() {
    a_long_conversation(redis_sessions(), 60_000, 10).await;
}

#[tokio::test]
async fn two_hundred_turns_of_10_kb_answers_on_redis() {
    a_long_conversation(redis_sessions(), 10_000, 200).await;
}

/// A queue whose sends fail while `down` is set.
struct FlakyQueue {
    inner: Arc<dyn Queue>,
    down: AtomicBool,
}

#[async_trait]
impl Queue for FlakyQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::unavailable(
                ak_core::ports::Backend::Sqs,
                "down for the test",
            ));
        }
        self.inner.send(message).await
    }
    async fn receive(
        &self,
        max: usize,
        wait: Duration,
    ) -> Result<Vec<aws_lambda_events::sqs::SqsMessage>, PortError> {
        self.inner.receive(max, wait).await
    }
    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        self.inner.delete(receipt).await
    }
}

/// A response store whose `put` fails while `down` is set (claims still work), and whose
/// claims last at most `max_claim` (a runner that dies leaves a claim that lapses soon).
pub(crate) struct FlakyStore {
    pub(crate) inner: Arc<dyn ResponseStore>,
    pub(crate) down: AtomicBool,
    pub(crate) max_claim: Option<Duration>,
}

#[async_trait]
impl ResponseStore for FlakyStore {
    async fn register(
        &self,
        id: &str,
        fingerprint: &str,
        user: Option<&str>,
    ) -> Result<Registration, PortError> {
        self.inner.register(id, fingerprint, user).await
    }
    async fn registered_user(&self, id: &str) -> Result<Option<Option<String>>, PortError> {
        self.inner.registered_user(id).await
    }
    async fn append_events(&self, id: &str, events: &[LoggedEvent]) -> Result<(), PortError> {
        self.inner.append_events(id, events).await
    }
    async fn events_after(
        &self,
        id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        self.inner.events_after(id, after, wait).await
    }
    async fn last_event_seq(&self, id: &str) -> Result<u64, PortError> {
        self.inner.last_event_seq(id).await
    }
    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(PortError::unavailable(
                ak_core::ports::Backend::Redis,
                "down for the test",
            ));
        }
        self.inner.put(record).await
    }
    async fn get(&self, id: &str) -> Result<Option<ResponseRecord>, PortError> {
        self.inner.get(id).await
    }
    async fn wait_for(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError> {
        self.inner.wait_for(id, timeout).await
    }
    async fn claim(&self, id: &str, owner: &str, ttl: Duration) -> Result<ClaimOutcome, PortError> {
        let ttl = self.max_claim.map_or(ttl, |max| ttl.min(max));
        self.inner.claim(id, owner, ttl).await
    }
    async fn release(&self, id: &str, owner: &str) -> Result<(), PortError> {
        self.inner.release(id, owner).await
    }
    async fn set_pointer(
        &self,
        name: &str,
        target: &str,
        user_id: Option<&str>,
    ) -> Result<(), PortError> {
        self.inner.set_pointer(name, target, user_id).await
    }
    async fn pointer(&self, name: &str) -> Result<Option<ak_core::ports::Pointer>, PortError> {
        self.inner.pointer(name).await
    }
    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError> {
        self.inner.forget(answer).await
    }
}

async fn a_runner_dies_between_the_session_save_and_the_output_send(
    sessions: Arc<dyn SessionStore>,
) {
    let model = ScriptedModel::start(vec![Reply::Text("the one answer".into())])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let runtime = runtime(provider(&model), sessions.clone());
    let output_url = ak_tests::create_queue("out", Some(1))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let output: Arc<dyn Queue> = Arc::new(SqsQueue::new(ak_tests::sqs_client().await, &output_url));
    let store: Arc<dyn ResponseStore> =
        Arc::new(RedisResponseStore::new(&redis_settings(600)).unwrap_or_else(|e| panic!("{e}")));
    let flaky_output = Arc::new(FlakyQueue {
        inner: output.clone(),
        down: AtomicBool::new(true),
    });
    let flaky_store = Arc::new(FlakyStore {
        inner: store.clone(),
        down: AtomicBool::new(true),
        max_claim: None,
    });
    let runner = AgentRunnerHandler::new(runtime, flaky_output.clone(), flaky_store.clone(), 3);
    let (request_id, session_id) = (unique_name("req"), unique_name("s"));
    let message = QueueMessage {
        request_id: request_id.clone(),
        session_id: session_id.clone(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": "who won the battle of Hastings", "agent": "history", "session_id": session_id}),
    };
    // First delivery: the run succeeds and the turn is saved, but neither the output queue nor
    // the store takes the answer: the runner hands the record back (as a crash would leave it).
    let first = runner
        .handle(
            ak_tests::records_json(vec![message.to_sqs_record("m-1", "r-1", 1)]),
            None,
        )
        .await;
    assert_eq!(
        first.batch_item_failures.len(),
        1,
        "handed back for redelivery"
    );
    assert_eq!(model.calls(), 1);
    // The redelivery, with everything up again.
    flaky_output.down.store(false, Ordering::SeqCst);
    flaky_store.down.store(false, Ordering::SeqCst);
    let second = runner
        .handle(
            ak_tests::records_json(vec![message.to_sqs_record("m-1", "r-2", 2)]),
            None,
        )
        .await;
    assert!(second.batch_item_failures.is_empty());
    assert_eq!(
        model.calls(),
        1,
        "answered from the session, not by the model again"
    );
    let sent = output
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    assert_eq!(sent.len(), 1);
    let answer = QueueMessage::from_sqs_record(&sent[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(answer.message.body["result"], "the one answer");
    let history = sessions
        .load(&session_id, ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let ids: Vec<&str> = history
        .turns
        .iter()
        .map(|t| t.request_id.as_str())
        .collect();
    assert_eq!(ids, [request_id.as_str()], "one copy of the turn");
}

#[tokio::test]
async fn a_runner_dying_after_the_session_save_leaves_one_turn_on_redis() {
    a_runner_dies_between_the_session_save_and_the_output_send(redis_sessions()).await;
}

#[tokio::test]
async fn a_runner_dying_after_the_session_save_leaves_one_turn_on_dynamodb() {
    a_runner_dies_between_the_session_save_and_the_output_send(dynamodb_sessions().await).await;
}

async fn double_texting_in_direct_mode(sessions: Arc<dyn SessionStore>) {
    let slow = Reply::Hang(Duration::from_millis(400));
    let model = ScriptedModel::start(vec![slow.clone(), slow])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = Arc::new(direct_api(runtime(provider(&model), sessions.clone())));
    let session = unique_name("s");
    let ask = |prompt: &str| {
        let api = api.clone();
        let body = json!({"prompt": prompt, "agent": "history", "session_id": session}).to_string();
        tokio::spawn(async move { call(&api, event("POST", Some(&body), None, None)).await })
    };
    let a = ask("first message");
    // Not at the same instant: moto does not make two simultaneous conditional writes atomic
    // (DynamoDB does); 50 ms apart, both runs still overlap for most of their 400 ms.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let b = ask("second message");
    let (a, b) = (
        a.await.unwrap_or_else(|e| panic!("{e}")),
        b.await.unwrap_or_else(|e| panic!("{e}")),
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 409], "{a:?} {b:?}");
    let refused = if a.0 == 409 { &a.2 } else { &b.2 };
    assert!(
        refused["error"]
            .as_str()
            .unwrap_or_default()
            .contains("answering another message"),
        "{refused}"
    );
    let answered = if a.0 == 200 { &a.2 } else { &b.2 };
    let history = sessions
        .load(&session, ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let ids: Vec<&str> = history
        .turns
        .iter()
        .map(|t| t.request_id.as_str())
        .collect();
    assert_eq!(ids, [answered["request_id"].as_str().unwrap_or_default()]);
}

#[tokio::test]
async fn double_texting_in_direct_mode_is_a_409_on_redis() {
    double_texting_in_direct_mode(redis_sessions()).await;
}

#[tokio::test]
async fn double_texting_in_direct_mode_is_a_409_on_dynamodb() {
    double_texting_in_direct_mode(dynamodb_sessions().await).await;
}

#[tokio::test]
async fn double_texting_through_a_standard_queue_answers_both_one_after_the_other() {
    let slow = Reply::Hang(Duration::from_millis(400));
    let s = Arc::new(
        system(
            ExecutionMode::RestAsync,
            Store::Redis,
            vec![slow.clone(), slow, Reply::Text("the second, again".into())],
            |_| {},
        )
        .await,
    );
    let session = unique_name("s");
    let mut ids = Vec::new();
    for prompt in ["first message", "second message"] {
        let body = json!({"prompt": prompt, "agent": "history", "session_id": session});
        let (status, accepted) = post(&s, &body).await;
        assert_eq!(status, 202);
        ids.push(
            accepted["request_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
        );
    }
    // Two runner invocations at once, one record each, as two Lambda instances would run them.
    let mut records = Vec::new();
    while records.len() < 2 {
        records.extend(
            s.input
                .receive(10, Duration::from_secs(2))
                .await
                .unwrap_or_default(),
        );
    }
    let (one, two) = (records[0].clone(), records[1].clone());
    let (r1, r2) = tokio::join!(
        s.runner
            .handle(ak_tests::records_json(vec![one.clone()]), None),
        s.runner
            .handle(ak_tests::records_json(vec![two.clone()]), None),
    );
    let retried = r1.batch_item_failures.len() + r2.batch_item_failures.len();
    assert_eq!(retried, 1, "the later append conflicts and is handed back");
    for (record, response) in [(&one, &r1), (&two, &r2)] {
        if response.batch_item_failures.is_empty() {
            let receipt = record.receipt_handle.clone().unwrap_or_default();
            s.input
                .delete(&receipt)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
        }
    }
    for id in &ids {
        assert_eq!(answer_of(&s, id).await["request_id"], json!(id));
    }
    let history = s
        .sessions
        .load(&session, ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut turns: Vec<String> = history.turns.iter().map(|t| t.request_id.clone()).collect();
    assert_eq!(turns.len(), 2, "both turns kept: {turns:?}");
    turns.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(turns, expected, "each request once");
    assert_eq!(
        s.model.calls(),
        3,
        "the conflicting run ran again on the new history"
    );
}

// ---------------------------------------------------------------------------------------------
// Random interleavings

#[derive(Debug, Clone)]
enum Step {
    /// The request handler enqueues request `i` (again, if it did already).
    Send(usize),
    /// One runner invocation; the output queue and/or the store may be down.
    Runner { output_down: bool, store_down: bool },
    /// One response-handler invocation; the store may be down.
    Responses { store_down: bool },
}

fn step(requests: usize) -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..requests).prop_map(Step::Send),
        (any::<bool>(), any::<bool>()).prop_map(|(output_down, store_down)| Step::Runner {
            output_down,
            store_down
        }),
        any::<bool>().prop_map(|store_down| Step::Responses { store_down }),
    ]
}

async fn interleaving(sessions_of: Vec<usize>, steps: Vec<Step>) -> Result<(), String> {
    let sessions = Arc::new(MemorySessionStore::default());
    let store: Arc<dyn ResponseStore> = Arc::new(MemoryResponseStore::default());
    // Zero visibility: whatever is not deleted is delivered again at the next receive.
    let input = Arc::new(MemoryQueue::new(false, Duration::ZERO));
    let output = Arc::new(MemoryQueue::new(false, Duration::ZERO));
    let flaky_output = Arc::new(FlakyQueue {
        inner: output.clone(),
        down: AtomicBool::new(false),
    });
    let flaky_store = Arc::new(FlakyStore {
        inner: store.clone(),
        down: AtomicBool::new(false),
        max_claim: None,
    });
    let settings = reference_settings();
    let agents = AgentRuntime::from_settings(
        &settings,
        &ToolRegistry::new().with(multiply()),
        Arc::new(OfflineModel),
        sessions.clone(),
    )
    .map_err(|e| e.to_string())?;
    let runner = AgentRunnerHandler::new(
        Arc::new(agents),
        flaky_output.clone(),
        flaky_store.clone(),
        1000,
    );
    let responses = ResponseHandler::new(flaky_store.clone());
    let message = |i: usize| QueueMessage {
        request_id: format!("req-{i}"),
        session_id: format!("s-{}", sessions_of[i]),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": format!("what is {i} * 7"), "agent": "math", "session_id": format!("s-{}", sessions_of[i])}),
    };
    let mut sent_order: Vec<usize> = Vec::new();
    let set = |output_down: bool, store_down: bool| {
        flaky_output.down.store(output_down, Ordering::SeqCst);
        flaky_store.down.store(store_down, Ordering::SeqCst);
    };
    for s in steps {
        match s {
            Step::Send(i) => {
                input.send(&message(i)).await.map_err(|e| e.to_string())?;
                if !sent_order.contains(&i) {
                    sent_order.push(i);
                }
            }
            Step::Runner {
                output_down,
                store_down,
            } => {
                set(output_down, store_down);
                pump(input.as_ref(), Duration::ZERO, |r| runner.handle(r, None))
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Step::Responses { store_down } => {
                set(false, store_down);
                pump(output.as_ref(), Duration::ZERO, |r| responses.handle(r))
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
    }
    set(false, false);
    for _ in 0..50 {
        if input.is_empty() && output.is_empty() {
            break;
        }
        pump(input.as_ref(), Duration::ZERO, |r| runner.handle(r, None))
            .await
            .map_err(|e| e.to_string())?;
        pump(output.as_ref(), Duration::ZERO, |r| responses.handle(r))
            .await
            .map_err(|e| e.to_string())?;
    }
    if !(input.is_empty() && output.is_empty()) {
        return Err("the queues did not drain".into());
    }
    for &i in &sent_order {
        let answer = store
            .get(&format!("req-{i}"))
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("request {i} has no answer"))?;
        let expected = format!("[offline model] math: {i} * 7 = {}", i * 7);
        if answer.body["result"] != json!(expected) || answer.status_code != 200 {
            return Err(format!("request {i} answered {}", answer.body));
        }
    }
    let session_ids: std::collections::BTreeSet<usize> = sessions_of.iter().copied().collect();
    for session in session_ids {
        let history = sessions
            .load(&format!("s-{session}"), ALL)
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        let turns: Vec<String> = history.turns.iter().map(|t| t.request_id.clone()).collect();
        let expected: Vec<String> = sent_order
            .iter()
            .filter(|&&i| sessions_of[i] == session)
            .map(|i| format!("req-{i}"))
            .collect();
        if turns != expected {
            return Err(format!(
                "session s-{session} holds {turns:?}, expected {expected:?}"
            ));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_of_duplicates_retries_and_redeliveries_leaves_one_answer_and_one_turn_per_request(
        (sessions_of, steps) in (2usize..7).prop_flat_map(|n| (
            proptest::collection::vec(0usize..3, n),
            proptest::collection::vec(step(n), 5..40),
        )),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        rt.block_on(interleaving(sessions_of, steps)).map_err(TestCaseError::fail)?;
    }
}

#[tokio::test]
async fn a_session_holds_each_request_once_even_when_it_is_older_than_the_window() {
    let sessions = Arc::new(MemorySessionStore::default());
    let limits = HistoryLimits {
        max_items: 4,
        max_bytes: usize::MAX,
    };
    for (seq, id) in ["r0", "r1", "r2", "r3"].iter().enumerate() {
        sessions
            .append("s", seq as u64, &turn(id, None, "answer"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let loaded = sessions
        .load("s", limits)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(
        loaded.turns.iter().all(|t| t.request_id != "r0"),
        "r0 is outside the window"
    );
    let again = sessions
        .append("s", loaded.next_seq, &turn("r0", None, "x"))
        .await;
    assert_eq!(again.ok(), Some(ak_core::ports::Appended::Duplicate));
}

#[tokio::test]
async fn turns_over_350_kb_in_a_row_keep_a_dynamodb_session_usable() {
    // Turns split in parts: the history limit stops the read inside an older turn, which must
    // not be read as a broken turn.
    a_long_conversation(dynamodb_sessions().await, 360_000, 3).await;
}

#[tokio::test]
async fn turns_over_350_kb_in_a_row_keep_a_redis_session_usable() {
    a_long_conversation(redis_sessions(), 360_000, 3).await;
}

async fn a_repeat_of_a_request_outside_the_window(sessions: Arc<dyn SessionStore>) {
    // An answer larger than history_max_bytes: its turn is never in the window a load returns.
    let big = "y".repeat(250_000);
    let model = ScriptedModel::constant(Reply::Text(big.clone()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = direct_api(runtime(provider(&model), sessions));
    let body = json!({"prompt": "a long essay", "agent": "history",
        "session_id": unique_name("window"), "request_id": unique_name("big")})
    .to_string();
    let (status, _, first) = call(&api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 200, "{}", first["error"]);
    let (status, _, again) = call(&api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 200, "{}", again["error"]);
    assert_eq!(again["result"], first["result"]);
    assert_eq!(
        model.calls(),
        1,
        "the repeat is answered from the session's turn"
    );
}

#[tokio::test]
async fn a_repeat_of_a_request_whose_turn_is_outside_the_window_calls_the_model_once_on_redis() {
    a_repeat_of_a_request_outside_the_window(redis_sessions()).await;
}

#[tokio::test]
async fn a_repeat_of_a_request_whose_turn_is_outside_the_window_calls_the_model_once_on_dynamodb() {
    a_repeat_of_a_request_outside_the_window(dynamodb_sessions().await).await;
}

async fn a_failed_request_sent_again(mode: ExecutionMode, store: Store) {
    // The model refuses the first call (a bad key the operator then fixes): 502, stored as
    // the answer in the queue modes; the same request again must run again, not get the 502.
    let s = Arc::new(
        system(
            mode,
            store,
            vec![Reply::Status(401), Reply::Text("fixed now".into())],
            |_| {},
        )
        .await,
    );
    let id = unique_name("fail");
    let request = json!({"prompt": "hello", "agent": "history", "request_id": id});
    let first = match post(&s, &request).await {
        (202, _) => {
            let mut polled = (0, Value::Null);
            for _ in 0..20 {
                s.run_runner().await;
                s.run_responses().await;
                let (status, _, body) =
                    call(&s.api, event("GET", None, Some(("request_id", &id)), None)).await;
                polled = (status, body);
                if status != 404 {
                    break;
                }
            }
            polled
        }
        other => other,
    };
    assert_eq!(first.0, 502, "{mode}: {}", first.1);
    assert_eq!(first.1["request_id"], id.as_str());
    let (status, body) = post(&s, &request).await;
    let answer = if status == 202 {
        answer_of(&s, &id).await
    } else {
        assert_eq!(status, 200, "{mode}: {body}");
        body
    };
    assert_eq!(answer["result"], "fixed now", "{mode}");
    assert_eq!(s.model.calls(), 2, "{mode}");
    // And now that it succeeded, the answer is kept: a third send calls no model.
    let (status, _) = post(&s, &request).await;
    assert!(matches!(status, 200 | 202), "{mode}: {status}");
    assert_eq!(s.model.calls(), 2, "{mode}");
}

macro_rules! failed_requests {
    ($($name:ident: $mode:ident, $store:ident;)+) => {
        $(#[tokio::test]
        async fn $name() {
            a_failed_request_sent_again(ExecutionMode::$mode, Store::$store).await
        })+
    };
}

failed_requests! {
    a_failed_request_sent_again_runs_again_in_rest_sync_on_redis: RestSync, Redis;
    a_failed_request_sent_again_runs_again_in_rest_sync_on_dynamodb: RestSync, DynamoDb;
    a_failed_request_sent_again_runs_again_in_rest_async_on_redis: RestAsync, Redis;
    a_failed_request_sent_again_runs_again_in_direct_mode_with_a_dynamodb_store: Direct, DynamoDb;
}

#[tokio::test]
async fn naming_the_default_agent_or_spelling_numbers_differently_is_the_same_request() {
    let s = Arc::new(
        system(
            ExecutionMode::RestSync,
            Store::Redis,
            vec![Reply::Text("one answer".into())],
            |_| {},
        )
        .await,
    );
    let id = unique_name("same");
    let (status, first) = post(&s, &json!({"prompt": "hi", "request_id": id, "n": 1})).await;
    assert_eq!(status, 200, "{first}");
    for again in [
        json!({"prompt": "hi", "request_id": id, "agent": "triage", "n": 1}),
        json!({"prompt": "hi", "request_id": id, "n": 1.0, "x": null}),
    ] {
        let (status, body) = post(&s, &again).await;
        assert_eq!((status, &body), (200, &first), "{again}");
    }
    assert_eq!(s.model.calls(), 1);
}
