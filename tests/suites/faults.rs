//! The faults a real deployment sees, injected on loopback (see `ak_tests::faults`): a
//! function frozen between invocations while its connections die (`SIGSTOP`/`SIGCONT`, then
//! resets), connections silently dropped (black holes), a runner killed mid-run
//! (`SIGKILL`) with a redrive policy, AWS throttling and 500s, answers of earlier attempts
//! arriving late, and one session's messages arriving together on a standard queue. In each,
//! the request gets its own answer on its first delivery after the fault (a killed runner's
//! before the dead-letter queue), the model is called once per request, and no stale answer
//! wins.

use ak_adapters::dynamodb::DynamoResponseStore;
use ak_adapters::redis::RedisResponseStore;
use ak_adapters::sqs::SqsQueue;
use ak_core::config::{DynamoDbSettings, RedisSettings};
use ak_core::ports::memory::{MemoryQueue, MemoryResponseStore, MemorySessionStore};
use ak_core::ports::{
    AgentRunner, HistoryLimits, Queue, QueueMessage, ResponseRecord, ResponseStore, SessionStore,
    now_epoch_secs,
};
use ak_core::secret::SecretUrl;
use ak_runtime::{AgentRunnerHandler, ResponseHandler, pump};
use ak_tests::event_source::{EventSource, depth, queue_with_dlq};
use ak_tests::faults::{HttpFault, HttpFaultProxy, TcpFaultProxy, freeze, kill, thaw};
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use ak_tests::{redis_settings, sqs_client, unique_name};
use serde_json::{Value, json};
use std::process::Child;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(20);

struct Running(Child);

impl Running {
    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        thaw(self.0.id());
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Redis settings of this run's server, reached through `proxy`.
fn through(proxy: &TcpFaultProxy, ttl: u64) -> RedisSettings {
    RedisSettings {
        url: SecretUrl::new(format!("redis://{}", proxy.addr)),
        ..redis_settings(ttl)
    }
}

/// A proxy in front of this run's Redis.
async fn redis_proxy() -> TcpFaultProxy {
    let url = ak_tests::redis_url();
    let target = url.trim_start_matches("redis://").trim_end_matches('/');
    TcpFaultProxy::start(target)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn invoke(api: &RuntimeApi, event: Value) -> Value {
    let id = api.invoke(event);
    match api.outcome(&id, WAIT).await {
        Some((Outcome::Response(answer), _)) => answer,
        other => panic!("no answer: {other:?}; init error: {:?}", api.init_error()),
    }
}

/// An SQS event with one input record of `request_id` on `session`.
fn input_event(request_id: &str, session: &str, prompt: &str) -> Value {
    let record = QueueMessage {
        request_id: request_id.to_owned(),
        session_id: session.to_owned(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": prompt, "session_id": session}),
    }
    .to_sqs_record(&unique_name("m"), &unique_name("r"), 1);
    json!({"Records": [record]})
}

/// The model calls whose prompt named `marker`.
fn calls_for(model: &ScriptedModel, marker: &str) -> usize {
    model
        .requests()
        .iter()
        .filter(|r| {
            r["messages"]
                .as_array()
                .and_then(|m| m.last())
                .and_then(|m| m["content"].as_str())
                .is_some_and(|c| c.contains(marker))
        })
        .count()
}

async fn queue() -> (String, SqsQueue) {
    let url = ak_tests::create_queue("fault", None)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    (url.clone(), SqsQueue::new(sqs_client().await, &url))
}

/// The agent runner binary against Redis through `proxy`, answering with `model`.
async fn runner_binary(
    proxy: &TcpFaultProxy,
    model: &ScriptedModel,
    input_url: &str,
    output_url: &str,
    extra: &[(&str, &str)],
) -> (RuntimeApi, Running, RedisSettings) {
    let redis = through(proxy, 600);
    let prefix = redis.prefix().to_owned();
    let config = ak_tests::repo_config();
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("agent-runner", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut env = vec![
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_AGENTS__DEFAULT", "history"),
        ("AK_MODEL__PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-faults"),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
        ("AK_EXECUTION__MODE", "rest_async"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", output_url),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
            redis.url.expose(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
            prefix.as_str(),
        ),
    ];
    env.extend_from_slice(extra);
    let child = spawn_function(&binary, &api, &env).unwrap_or_else(|e| panic!("{e}"));
    (api, Running(child), redis)
}

#[tokio::test]
async fn a_frozen_runner_whose_redis_connections_died_answers_its_next_record_once() {
    let proxy = redis_proxy().await;
    let model = ScriptedModel::start(vec![
        Reply::Text("answered".into()),
        Reply::Text("answered".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let (input_url, _) = queue().await;
    let (output_url, output) = queue().await;
    let (api, runner, _) = runner_binary(&proxy, &model, &input_url, &output_url, &[]).await;
    let session = unique_name("s");
    let first = unique_name("first");
    let answer = invoke(&api, input_event(&first, &session, &first)).await;
    assert_eq!(answer, json!({"batchItemFailures": []}));

    // Between invocations Lambda freezes the function; meanwhile its connections die (a NAT
    // gateway's idle timeout, a Redis failover): they look open until they are used.
    freeze(runner.pid());
    proxy.reset_on_next_use();
    tokio::time::sleep(Duration::from_millis(200)).await;
    thaw(runner.pid());

    let second = unique_name("second");
    let answer = invoke(&api, input_event(&second, &session, &second)).await;
    assert_eq!(
        answer,
        json!({"batchItemFailures": []}),
        "answered on its first delivery after the thaw"
    );
    let answered: Vec<String> = output
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|r| QueueMessage::from_sqs_record(r).ok())
        .filter(|d| d.message.status_code == Some(200))
        .map(|d| d.message.request_id)
        .collect();
    assert!(answered.contains(&second), "{answered:?}");
    assert_eq!(calls_for(&model, &second), 1, "the model is called once");
    assert!(
        proxy.accepted() >= 2,
        "fresh connections replaced the dead ones"
    );
}

#[tokio::test]
async fn a_frozen_response_handler_and_request_handler_answer_after_their_connections_reset() {
    let proxy = redis_proxy().await;
    let redis = through(&proxy, 600);
    let prefix = redis.prefix().to_owned();
    let env = [
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
            redis.url.expose(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
            prefix.as_str(),
        ),
    ];
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("response-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let handler = Running(spawn_function(&binary, &api, &env).unwrap_or_else(|e| panic!("{e}")));
    let output_event = |id: &str| {
        let record = QueueMessage {
            request_id: id.to_owned(),
            session_id: "s".into(),
            user_id: None,
            status_code: Some(200),
            attempt: Some(1),
            body: json!({"result": format!("answer of {id}"), "request_id": id}),
        }
        .to_sqs_record(&unique_name("m"), "r", 1);
        json!({"Records": [record]})
    };
    let warm = unique_name("warm");
    assert_eq!(
        invoke(&api, output_event(&warm)).await,
        json!({"batchItemFailures": []})
    );
    freeze(handler.pid());
    proxy.reset_all();
    thaw(handler.pid());
    let after = unique_name("after");
    assert_eq!(
        invoke(&api, output_event(&after)).await,
        json!({"batchItemFailures": []}),
        "no batch item failure after the thaw"
    );

    // The request handler polling in rest_async: warm, frozen, its connection reset, thawed.
    let (input_url, _) = queue().await;
    let config = ak_tests::repo_config();
    let mut env = env.to_vec();
    env.extend([
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_EXECUTION__MODE", "rest_async"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", input_url.as_str()),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", input_url.as_str()),
    ]);
    let poll_api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let request_handler =
        Running(spawn_function(&binary, &poll_api, &env).unwrap_or_else(|e| panic!("{e}")));
    let poll = |id: &str| {
        json!({"version": "2.0", "rawPath": "/api/v1/chat", "rawQueryString": format!("request_id={id}"),
               "queryStringParameters": {"request_id": id}, "headers": {},
               "requestContext": {"http": {"method": "GET", "path": "/api/v1/chat"}, "stage": "$default"}})
    };
    let first = invoke(&poll_api, poll(&warm)).await;
    assert_eq!(first["statusCode"], 200, "{first}");
    freeze(request_handler.pid());
    proxy.reset_on_next_use();
    thaw(request_handler.pid());
    let polled = invoke(&poll_api, poll(&after)).await;
    assert_eq!(
        polled["statusCode"], 200,
        "a poll after the thaw is answered: {polled}"
    );
    assert!(
        polled["body"]
            .as_str()
            .unwrap_or_default()
            .contains(&format!("answer of {after}"))
    );
}

#[tokio::test]
async fn a_silently_dropped_redis_connection_is_replaced_within_the_response_timeout() {
    let proxy = redis_proxy().await;
    let store = RedisResponseStore::new(&through(&proxy, 600)).unwrap_or_else(|e| panic!("{e}"));
    let record = ResponseRecord {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: 200,
        body: json!({"result": "ok"}),
        created_at: now_epoch_secs(),
        attempt: 1,
    };
    store.put(&record).await.unwrap_or_else(|e| panic!("{e}"));
    // The connection's packets now go nowhere, and no reset ever comes.
    proxy.black_hole();
    let mut answered = 0;
    for _ in 0..8 {
        if let Ok(Some(found)) = store.get(&record.request_id).await {
            assert_eq!(found, record);
            answered += 1;
        }
    }
    assert_eq!(answered, 8, "every read after the drop is answered");
}

#[tokio::test]
async fn a_silently_dropped_aws_connection_costs_one_attempt_not_the_request() {
    let moto = ak_tests::aws_endpoint();
    let target = moto.trim_start_matches("http://").trim_end_matches('/');
    let proxy = TcpFaultProxy::start(target)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shared = ak_adapters::aws::load_sdk_config().await;
    let endpoint = format!("http://{}", proxy.addr);
    let dynamo = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&shared)
            .endpoint_url(&endpoint)
            .build(),
    );
    let table = unique_name("responses");
    ak_tests::create_response_table(&dynamo, &table)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = DynamoResponseStore::new(
        dynamo,
        &DynamoDbSettings {
            table_name: Some(table),
            ttl: 600,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&shared)
            .endpoint_url(&endpoint)
            .build(),
    );
    let (url, _) = queue().await;
    let queue = SqsQueue::new(sqs, &url);
    let message = QueueMessage {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": "hi"}),
    };
    queue.send(&message).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get("nothing").await.ok(), Some(None));
    // The pooled connections go silent.
    proxy.black_hole();
    for _ in 0..3 {
        assert_eq!(
            store.get("nothing").await.ok(),
            Some(None),
            "a read after the drop is answered"
        );
        assert!(
            queue.send(&message).await.is_ok(),
            "a send after the drop goes through"
        );
    }
}

#[tokio::test]
async fn a_killed_runner_is_answered_before_the_dead_letter_queue() {
    // The visibility timeout equals the runner's timeout (what Terraform's precondition
    // allows), and the runner is killed in the middle of its first run.
    const TIMEOUT: u32 = 6;
    let (input_url, dlq_url) = queue_with_dlq("killed", TIMEOUT, 3)
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let (output_url, output) = queue().await;
    let model = ScriptedModel::start(vec![
        Reply::Hang(Duration::from_secs(60)),
        Reply::Text("answered after the crash".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let proxy = redis_proxy().await;
    let visibility = TIMEOUT.to_string();
    let extra = [
        ("AK_EXECUTION__QUEUES__INPUT__MAX_RECEIVE_COUNT", "2"),
        (
            "AK_EXECUTION__QUEUES__INPUT__VISIBILITY_TIMEOUT",
            visibility.as_str(),
        ),
    ];
    let (api, runner, redis) = runner_binary(&proxy, &model, &input_url, &output_url, &extra).await;
    let api = Arc::new(api);
    let input: Arc<dyn Queue> = Arc::new(SqsQueue::new(sqs_client().await, &input_url));
    let events = EventSource::start(
        input.clone(),
        api.clone(),
        10,
        Duration::from_secs(u64::from(TIMEOUT)),
    );
    let request_id = unique_name("crash");
    input
        .send(&QueueMessage {
            request_id: request_id.clone(),
            session_id: unique_name("s"),
            user_id: None,
            status_code: None,
            attempt: None,
            body: json!({"prompt": "a question"}),
        })
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..100 {
        if model.calls() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(model.calls(), 1, "the first run reached the model");
    kill(runner.pid());
    drop(runner);
    // Lambda starts a new instance for the next delivery.
    let binary = function_binary("agent-runner", "debug").unwrap_or_else(|e| panic!("{e}"));
    let config = ak_tests::repo_config();
    let prefix = redis.prefix().to_owned();
    let env = [
        ("AK_CONFIG_PATH_OVERRIDE", config.as_str()),
        ("AK_AGENTS__DEFAULT", "history"),
        ("AK_MODEL__PROVIDER", "openai"),
        ("OPENAI_API_KEY", "sk-faults"),
        ("OPENAI_BASE_URL", model.base_url.as_str()),
        ("AK_EXECUTION__MODE", "rest_async"),
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
        extra[0],
        extra[1],
    ];
    let _second = Running(spawn_function(&binary, &api, &env).unwrap_or_else(|e| panic!("{e}")));
    let mut answer = None;
    for _ in 0..40 {
        let records = output
            .receive(10, Duration::from_secs(1))
            .await
            .unwrap_or_default();
        answer = records
            .iter()
            .filter_map(|r| QueueMessage::from_sqs_record(r).ok())
            .find(|d| d.message.request_id == request_id);
        if answer.is_some() {
            break;
        }
    }
    let answer =
        answer.unwrap_or_else(|| panic!("never answered ({} invocations)", events.invocations()));
    assert_eq!(
        answer.message.status_code,
        Some(200),
        "{}",
        answer.message.body
    );
    assert_eq!(answer.message.body["result"], "answered after the crash");
    assert_eq!(
        answer.message.attempt,
        Some(2),
        "the second attempt answered"
    );
    assert_eq!(
        depth(&dlq_url).await.unwrap_or_default(),
        0,
        "nothing reached the dead-letter queue"
    );
}

/// Output records of one request: a failure of attempt 1 and a success of attempt 2.
fn attempts(id: &str) -> (Value, Value) {
    let record = |status: u16, attempt: u64, body: Value| {
        let message = QueueMessage {
            request_id: id.to_owned(),
            session_id: "s".into(),
            user_id: None,
            status_code: Some(status),
            attempt: Some(attempt),
            body,
        };
        serde_json::to_value(message.to_sqs_record(&unique_name("m"), "r", 1)).unwrap_or_default()
    };
    (
        record(
            502,
            1,
            json!({"error": "model provider failed", "request_id": id}),
        ),
        record(
            200,
            2,
            json!({"result": "the rerun's answer", "request_id": id}),
        ),
    )
}

async fn stale_failures_never_beat_the_rerun(store: Arc<dyn ResponseStore>) {
    let handler = ResponseHandler::new(store.clone());
    // Late: the failure arrives after the success.
    let id = unique_name("late");
    let (failure, success) = attempts(&id);
    assert!(
        handler
            .handle(vec![success.clone()])
            .await
            .batch_item_failures
            .is_empty()
    );
    assert!(
        handler
            .handle(vec![failure.clone()])
            .await
            .batch_item_failures
            .is_empty()
    );
    let stored = store
        .get(&id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(stored.status_code, 200, "{}", stored.body);
    // Together, in either order, in one batch.
    for order in [[0, 1], [1, 0]] {
        let id = unique_name("batch");
        let (failure, success) = attempts(&id);
        let records = [failure, success];
        let batch = order.iter().map(|&i| records[i].clone()).collect();
        assert!(handler.handle(batch).await.batch_item_failures.is_empty());
        let stored = store
            .get(&id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("no answer"));
        assert_eq!(stored.status_code, 200, "order {order:?}: {}", stored.body);
    }
    // The failure first, the client sends the request again (the failure is forgotten), the
    // failure's message is delivered once more, then the rerun's success.
    let id = unique_name("resend");
    let (failure, success) = attempts(&id);
    assert!(
        handler
            .handle(vec![failure.clone()])
            .await
            .batch_item_failures
            .is_empty()
    );
    let failed = store
        .get(&id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no failure"));
    store
        .forget(&failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        handler
            .handle(vec![failure])
            .await
            .batch_item_failures
            .is_empty()
    );
    assert_eq!(
        store.get(&id).await.ok().flatten(),
        None,
        "the forgotten failure is not stored again"
    );
    assert!(
        handler
            .handle(vec![success])
            .await
            .batch_item_failures
            .is_empty()
    );
    let stored = store
        .get(&id)
        .await
        .ok()
        .flatten()
        .unwrap_or_else(|| panic!("no answer"));
    assert_eq!(stored.status_code, 200);
}

#[tokio::test]
async fn stale_failures_never_beat_the_rerun_on_redis() {
    let store = RedisResponseStore::new(&redis_settings(600)).unwrap_or_else(|e| panic!("{e}"));
    stale_failures_never_beat_the_rerun(Arc::new(store)).await;
}

#[tokio::test]
async fn stale_failures_never_beat_the_rerun_on_dynamodb() {
    let client = ak_tests::dynamodb_client().await;
    let table = unique_name("responses");
    ak_tests::create_response_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store = DynamoResponseStore::new(
        client,
        &DynamoDbSettings {
            table_name: Some(table),
            ttl: 600,
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    stale_failures_never_beat_the_rerun(Arc::new(store)).await;
}

#[tokio::test]
async fn stale_failures_never_beat_the_rerun_in_memory() {
    stale_failures_never_beat_the_rerun(Arc::new(MemoryResponseStore::default())).await;
}

#[tokio::test]
async fn a_wait_survives_a_redis_restart_and_dynamodb_throttling() {
    // Redis: the waiter's connections are reset, and new ones refused for a while, during the
    // wait; the answer is stored once Redis is back.
    let proxy = redis_proxy().await;
    let settings = through(&proxy, 600);
    let store: Arc<dyn ResponseStore> =
        Arc::new(RedisResponseStore::new(&settings).unwrap_or_else(|e| panic!("{e}")));
    let direct = RedisResponseStore::new(&RedisSettings {
        url: SecretUrl::new(ak_tests::redis_url()),
        ..settings.clone()
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let id = unique_name("wait");
    let waiter = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            ak_runtime::exec::wait_for_answer(store.as_ref(), &id, Duration::from_secs(10)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.refuse_new(true);
    proxy.reset_all();
    tokio::time::sleep(Duration::from_millis(700)).await;
    proxy.refuse_new(false);
    let record = ResponseRecord {
        request_id: id.clone(),
        session_id: "s".into(),
        user_id: None,
        status_code: 200,
        body: json!({"result": "after the restart"}),
        created_at: now_epoch_secs(),
        attempt: 1,
    };
    direct.put(&record).await.unwrap_or_else(|e| panic!("{e}"));
    let found = waiter.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        found.ok().flatten().as_ref(),
        Some(&record),
        "the waiter got the answer"
    );

    // DynamoDB: reads throttled three times during the wait.
    let faults = HttpFaultProxy::start(&ak_tests::aws_endpoint())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shared = ak_adapters::aws::load_sdk_config().await;
    let client = aws_sdk_dynamodb::Client::from_conf(
        aws_sdk_dynamodb::config::Builder::from(&shared)
            .endpoint_url(&faults.url)
            .build(),
    );
    let table = unique_name("responses");
    ak_tests::create_response_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let store: Arc<dyn ResponseStore> = Arc::new(
        DynamoResponseStore::new(
            client,
            &DynamoDbSettings {
                table_name: Some(table),
                ttl: 600,
            },
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let id = unique_name("throttled");
    faults.fail(HttpFault::dynamodb_throttled("GetItem", 6));
    faults.fail(HttpFault::dynamodb_throttled("UpdateItem", 2));
    let waiter = {
        let (store, id) = (store.clone(), id.clone());
        tokio::spawn(async move {
            ak_runtime::exec::wait_for_answer(store.as_ref(), &id, Duration::from_secs(15)).await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let record = ResponseRecord {
        request_id: id.clone(),
        ..record
    };
    store
        .put(&record)
        .await
        .unwrap_or_else(|e| panic!("throttled writes are retried: {e}"));
    let found = waiter.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.ok().flatten(), Some(record));
    assert!(faults.injected() >= 2, "the throttling was injected");
}

#[tokio::test]
async fn sqs_500s_on_send_are_retried_and_the_request_is_accepted() {
    let faults = HttpFaultProxy::start(&ak_tests::aws_endpoint())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let shared = ak_adapters::aws::load_sdk_config().await;
    let sqs = aws_sdk_sqs::Client::from_conf(
        aws_sdk_sqs::config::Builder::from(&shared)
            .endpoint_url(&faults.url)
            .build(),
    );
    let (url, reader) = queue().await;
    let queue = SqsQueue::new(sqs, &url);
    faults.fail(HttpFault::sqs_internal_error("SendMessage", 2));
    let message = QueueMessage {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": "hi"}),
    };
    queue.send(&message).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(faults.injected(), 2);
    let records = reader
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    assert_eq!(records.len(), 1, "sent exactly once");
}

#[tokio::test]
async fn one_sessions_messages_on_a_standard_queue_run_one_after_another() {
    // Ten messages of one session on a standard queue, three runners taking them at once.
    let model = ScriptedModel::start(vec![Reply::Hang(Duration::from_millis(30)); 10])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut settings = ak_core::Settings::default();
    settings.agents.default = Some("assistant".into());
    let sessions = Arc::new(MemorySessionStore::default());
    let provider = ak_agents::openai::OpenAiProvider::new(ak_agents::openai::OpenAiConfig {
        api_key: Some(ak_core::secret::Secret::new("sk-faults")),
        base_url: model.base_url.clone(),
        timeout: Duration::from_secs(10),
        max_retries: 0,
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let runtime: Arc<dyn AgentRunner> = Arc::new(
        ak_agents::AgentRuntime::from_settings(
            &settings,
            &ak_agents::ToolRegistry::new(),
            Arc::new(provider),
            sessions.clone(),
        )
        .unwrap_or_else(|e| panic!("{e}")),
    );
    let input = Arc::new(MemoryQueue::new(false, Duration::from_secs(2)));
    let output = Arc::new(MemoryQueue::new(false, Duration::from_secs(30)));
    let store: Arc<dyn ResponseStore> = Arc::new(MemoryResponseStore::default());
    let session = unique_name("s");
    let ids: Vec<String> = (0..10).map(|i| format!("{session}-req-{i}")).collect();
    for id in &ids {
        input
            .send(&QueueMessage {
                request_id: id.clone(),
                session_id: session.clone(),
                user_id: None,
                status_code: None,
                attempt: None,
                body: json!({"prompt": format!("question {id}"), "session_id": session}),
            })
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // Each runner takes one message at a time, as concurrent Lambda instances would.
    let runners = (0..3).map(|_| {
        let handler = AgentRunnerHandler::new(runtime.clone(), output.clone(), store.clone(), 3)
            .with_session_lock(true);
        let input = input.clone();
        tokio::spawn(async move {
            for _ in 0..200 {
                if input.is_empty() {
                    break;
                }
                let records = input
                    .receive(1, Duration::from_millis(50))
                    .await
                    .unwrap_or_default();
                let receipts: Vec<(String, String)> = records
                    .iter()
                    .map(|r| {
                        (
                            r.message_id.clone().unwrap_or_default(),
                            r.receipt_handle.clone().unwrap_or_default(),
                        )
                    })
                    .collect();
                let failed = handler
                    .handle(ak_tests::records_json(records), None)
                    .await
                    .batch_item_failures;
                for (id, receipt) in receipts {
                    if !failed.iter().any(|f| f.item_identifier == id) {
                        let _ = input.delete(&receipt).await;
                    }
                }
            }
        })
    });
    futures_util::future::join_all(runners).await;
    let responses = ResponseHandler::new(store.clone());
    while !output.is_empty() {
        let _ = pump(output.as_ref(), Duration::ZERO, |r| responses.handle(r)).await;
    }
    for id in &ids {
        let answer = store
            .get(id)
            .await
            .ok()
            .flatten()
            .unwrap_or_else(|| panic!("{id} has no answer"));
        assert_eq!(answer.status_code, 200, "{id}: {}", answer.body);
        assert_eq!(calls_for(&model, id), 1, "{id}: the model is called once");
    }
    let history = sessions
        .load(
            &session,
            HistoryLimits {
                max_items: 1000,
                max_bytes: 1 << 20,
            },
        )
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let mut turns: Vec<String> = history.turns.iter().map(|t| t.request_id.clone()).collect();
    turns.sort();
    let mut expected = ids.clone();
    expected.sort();
    assert_eq!(turns, expected, "every turn once");
}
