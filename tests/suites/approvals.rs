//! Human approval of tool calls, through `ak-local` (the whole system in one process) in each
//! execution mode, on Redis and on DynamoDB (moto): a refund above the example's threshold
//! pauses the run; approving runs the tool once and the run answers; rejecting with a reason
//! gives the model the reason; two different decisions racing get one winner and a 409 (the
//! tool runs at most once); a decision after the pause expired is a 409 and the request's
//! answer says expired; another user's decision is not found; the same decision again gets the
//! same answer.

use ak_tests::local::LocalServer;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::{get_streaming, http_json, redis_settings, unique_name};
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Clone, Copy, Debug)]
enum Store {
    Redis,
    DynamoDb,
}

/// A configuration with one agent whose refunds above 100 wait for approval (the tool's own
/// rule, `agent-app`'s `issue_refund`).
fn config() -> std::path::PathBuf {
    let path = std::env::temp_dir()
        .join(unique_name("approvals-config"))
        .with_extension("yaml");
    let _ = std::fs::write(
        &path,
        "agents:\n  default: billing\n  definitions:\n    - name: billing\n      instructions: You handle refunds.\n      tools: [issue_refund, multiply]\n      approval: [multiply]\n",
    );
    path
}

async fn start(mode: &'static str, store: Store, model: &ScriptedModel) -> LocalServer {
    let config = config().display().to_string();
    let mut env: Vec<(String, String)> = LocalServer::mode_env(mode)
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let mut set = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
    set("AK_CONFIG_PATH_OVERRIDE", &config);
    set("AK_MODEL__PROVIDER", "openai");
    set("OPENAI_API_KEY", "sk-approvals");
    set("OPENAI_BASE_URL", &model.base_url);
    set("AK_SESSION__TYPE", "in_memory");
    set("AK_AGENTS__APPROVAL_TIMEOUT", "3");
    match store {
        Store::Redis => {
            let redis = redis_settings(600);
            set("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis");
            set(
                "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
                redis.url.expose(),
            );
            set(
                "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
                redis.prefix(),
            );
        }
        Store::DynamoDb => {
            let table = unique_name("approvals");
            ak_tests::create_response_table(&ak_tests::dynamodb_client().await, &table)
                .await
                .unwrap_or_else(|e| panic!("{e:?}"));
            set("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb");
            set("AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME", &table);
        }
    }
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    LocalServer::start(&env)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

fn refund(amount: f64) -> Reply {
    Reply::ToolCall {
        name: "issue_refund".into(),
        arguments: json!({"order_id": "o-17", "amount": amount}),
    }
}

/// The SSE events of `id`'s log after `after`, up to its last event (`done`, `error` or
/// `approval_required`): (name, data, id).
async fn follow(base: &str, id: &str, user: Option<&str>, after: u64) -> Vec<(String, Value, u64)> {
    let mut url = format!("{base}/api/v1/chat/stream?request_id={id}&after={after}");
    if let Some(user) = user {
        url.push_str(&format!("&user_id={user}"));
    }
    let text: String = get_streaming(&url, &[])
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .chunks()
        .await
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            let mut seq = 0;
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    name = Some(v.to_owned());
                } else if let Some(v) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(v).ok();
                } else if let Some(v) = line.strip_prefix("id: ") {
                    seq = v.trim().parse().unwrap_or(0);
                }
            }
            Some((name?, data?, seq))
        })
        .collect()
}

/// Asks for a refund of `amount` as `user`; the pause the client gets (after following the
/// run's events in rest_async) and the event number it ends at.
async fn ask(base: &str, mode: &str, amount: f64, user: Option<&str>) -> (Value, u64) {
    let mut body = json!({"prompt": format!("refund {amount} for order o-17"), "session_id": unique_name("s")});
    if let Some(user) = user {
        body["user_id"] = json!(user);
    }
    let (status, answer) = http_json(base, "POST", "/api/v1/chat", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if mode != "rest_async" {
        assert_eq!(status, 200, "{answer}");
        return (answer, 0);
    }
    assert_eq!(status, 202, "{answer}");
    let id = answer["request_id"].as_str().unwrap_or_default();
    let events = follow(base, id, user, 0).await;
    let (name, data, seq) = events.last().cloned().unwrap_or_default();
    assert_eq!(name, "approval_required", "{events:?}");
    (data, seq)
}

/// Posts a decision; its status and answer.
async fn decide(base: &str, id: &str, decisions: Value, user: Option<&str>) -> (u16, Value) {
    let mut body = json!({"request_id": id, "decisions": decisions});
    if let Some(user) = user {
        body["user_id"] = json!(user);
    }
    http_json(base, "POST", "/api/v1/chat/approvals", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// The request's final answer after a decision answered `(status, answer)`: that answer, or in
/// rest_async (202) the run's last event after the pause.
async fn settled(
    base: &str,
    mode: &str,
    (status, answer): (u16, Value),
    id: &str,
    user: Option<&str>,
    after: u64,
) -> Value {
    if mode != "rest_async" {
        assert_eq!(status, 200, "{answer}");
        return answer;
    }
    assert_eq!(status, 202, "{answer}");
    let events = follow(base, id, user, after).await;
    let (name, data, _) = events.last().cloned().unwrap_or_default();
    assert!(
        name == "done" || name == "error",
        "the run's last event after {after}: {events:?}"
    );
    // The decision is in the run's event log, with who took it and when.
    let decided = events
        .iter()
        .find(|(n, _, _)| n == "approval")
        .map(|(_, d, _)| d);
    assert!(
        decided.is_some_and(|d| d["approved"].is_boolean()
            && d["at"].is_u64()
            && d.get("by").is_some()),
        "{events:?}"
    );
    data
}

/// The model calls after a tool result containing `needle`.
fn tool_results_with(model: &ScriptedModel, needle: &str) -> usize {
    model
        .requests()
        .iter()
        .filter(|r| {
            r["messages"].as_array().is_some_and(|m| {
                m.iter().any(|m| {
                    m["role"] == "tool" && m["content"].as_str().is_some_and(|c| c.contains(needle))
                })
            })
        })
        .count()
}

async fn lifecycle(mode: &'static str, store: Store) {
    let model = ScriptedModel::start(vec![
        // Approved.
        refund(250.0),
        Reply::Text("refunded 250".into()),
        // Rejected with a reason.
        refund(300.0),
        Reply::Text("not refunded".into()),
        // Two decisions racing.
        refund(400.0),
        Reply::Text("decided".into()),
        // Expired.
        refund(500.0),
        // Another user's decision, then the owner's.
        refund(600.0),
        Reply::Text("refunded 600".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let server = start(mode, store, &model).await;
    let base = server.base.as_str();
    let ctx = format!("{mode} on {store:?}");

    // Approve: the tool runs once, the model gets its result, the answer follows.
    let (paused, seq) = ask(base, mode, 250.0, None).await;
    assert_eq!(paused["status"], "PAUSED", "{ctx}: {paused}");
    let approvals = paused["approvals"].as_array().cloned().unwrap_or_default();
    assert_eq!(approvals.len(), 1, "{ctx}: {paused}");
    assert_eq!(approvals[0]["tool"], "issue_refund");
    assert_eq!(approvals[0]["agent"], "billing");
    assert_eq!(
        approvals[0]["arguments"],
        json!({"order_id": "o-17", "amount": 250.0})
    );
    assert!(paused["expires_at"].as_u64().is_some(), "{ctx}: {paused}");
    assert_eq!(
        tool_results_with(&model, "refunded"),
        0,
        "{ctx}: nothing ran yet"
    );
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    let call = approvals[0]["id"].clone();
    let decision = json!([{"id": call, "approve": true}]);
    let first = decide(base, &id, decision.clone(), None).await;
    let answer = settled(base, mode, first.clone(), &id, None, seq).await;
    assert_eq!(answer["result"], "refunded 250", "{ctx}: {answer}");
    assert_eq!(
        tool_results_with(&model, "\"refunded\":250"),
        1,
        "{ctx}: the tool ran once"
    );
    // The same decision again: the same answer, nothing runs again.
    let (status, again) = decide(base, &id, decision, None).await;
    assert_eq!(status, 200, "{ctx}: {again}");
    assert_eq!(again["result"], "refunded 250", "{ctx}: {again}");
    assert_eq!(tool_results_with(&model, "\"refunded\":250"), 1, "{ctx}");

    // Reject with a reason: the model reads it as the tool's result.
    let (paused, seq) = ask(base, mode, 300.0, None).await;
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    let call = paused["approvals"][0]["id"].clone();
    let rejected = decide(
        base,
        &id,
        json!([{"id": call, "approve": false, "reason": "order already refunded"}]),
        None,
    )
    .await;
    let answer = settled(base, mode, rejected, &id, None, seq).await;
    assert_eq!(answer["result"], "not refunded", "{ctx}: {answer}");
    assert_eq!(
        tool_results_with(
            &model,
            "the user rejected this tool call: order already refunded"
        ),
        1,
        "{ctx}: the model sees the rejection and its reason"
    );
    assert_eq!(
        tool_results_with(&model, "\"refunded\":300"),
        0,
        "{ctx}: the tool did not run"
    );

    // Two different decisions at once: one wins, the other is a 409; the tool ran at most once.
    let (paused, seq) = ask(base, mode, 400.0, None).await;
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    let call = paused["approvals"][0]["id"].clone();
    let (a, b) = tokio::join!(
        decide(base, &id, json!([{"id": call, "approve": true}]), None),
        decide(base, &id, json!([{"id": call, "approve": false}]), None)
    );
    let mut statuses = [a.0, b.0];
    statuses.sort_unstable();
    let winner_status = if mode == "rest_async" { 202 } else { 200 };
    assert_eq!(statuses, [winner_status, 409], "{ctx}: {a:?} {b:?}");
    let loser = if a.0 == 409 { &a.1 } else { &b.1 };
    assert!(
        loser["error"]
            .as_str()
            .unwrap_or_default()
            .contains("already decided"),
        "{ctx}: {loser}"
    );
    let winner = if a.0 == 409 { b } else { a };
    let answer = settled(base, mode, winner, &id, None, seq).await;
    assert_eq!(answer["result"], "decided", "{ctx}: {answer}");
    assert!(tool_results_with(&model, "\"refunded\":400") <= 1, "{ctx}");

    // Expired: no decision within agents.approval_timeout (3 s).
    let (paused, _) = ask(base, mode, 500.0, None).await;
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    let call = paused["approvals"][0]["id"].clone();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    let (status, late) = decide(base, &id, json!([{"id": call, "approve": true}]), None).await;
    assert_eq!(status, 409, "{ctx}: {late}");
    assert!(
        late["error"]
            .as_str()
            .unwrap_or_default()
            .contains("expired"),
        "{ctx}: {late}"
    );
    let (status, polled) = http_json(base, "GET", &format!("/api/v1/chat?request_id={id}"), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 410, "{ctx}: {polled}");
    assert_eq!(polled["status"], "EXPIRED", "{ctx}: {polled}");
    assert_eq!(tool_results_with(&model, "\"refunded\":500"), 0, "{ctx}");

    // Another user's decision is not found; the owner's goes through.
    let (paused, seq) = ask(base, mode, 600.0, Some("alice")).await;
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    let call = paused["approvals"][0]["id"].clone();
    let (status, other) = decide(
        base,
        &id,
        json!([{"id": call, "approve": true}]),
        Some("mallory"),
    )
    .await;
    assert_eq!(status, 404, "{ctx}: {other}");
    let (status, anonymous) = decide(base, &id, json!([{"id": call, "approve": true}]), None).await;
    assert_eq!(status, 404, "{ctx}: {anonymous}");
    let owner = decide(
        base,
        &id,
        json!([{"id": call, "approve": true}]),
        Some("alice"),
    )
    .await;
    let answer = settled(base, mode, owner, &id, Some("alice"), seq).await;
    assert_eq!(answer["result"], "refunded 600", "{ctx}: {answer}");
    assert_eq!(tool_results_with(&model, "\"refunded\":600"), 1, "{ctx}");
}

#[tokio::test]
async fn approvals_in_direct_mode_on_redis() {
    lifecycle("direct", Store::Redis).await;
}

#[tokio::test]
async fn approvals_in_direct_mode_on_dynamodb() {
    lifecycle("direct", Store::DynamoDb).await;
}

#[tokio::test]
async fn approvals_in_rest_sync_on_redis() {
    lifecycle("rest_sync", Store::Redis).await;
}

#[tokio::test]
async fn approvals_in_rest_sync_on_dynamodb() {
    lifecycle("rest_sync", Store::DynamoDb).await;
}

#[tokio::test]
async fn approvals_in_rest_async_on_redis() {
    lifecycle("rest_async", Store::Redis).await;
}

#[tokio::test]
async fn approvals_in_rest_async_on_dynamodb() {
    lifecycle("rest_async", Store::DynamoDb).await;
}

#[tokio::test]
async fn a_small_refund_runs_at_once_and_bad_decisions_are_refused_naming_the_field() {
    let model = ScriptedModel::start(vec![
        refund(20.0),
        Reply::Text("refunded 20".into()),
        refund(700.0),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let server = start("direct", Store::Redis, &model).await;
    let base = server.base.as_str();
    let body = json!({"prompt": "refund 20 for order o-17"});
    let (status, answer) = http_json(base, "POST", "/api/v1/chat", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, &answer["result"]),
        (200, &json!("refunded 20")),
        "{answer}"
    );

    let (paused, _) = ask(base, "direct", 700.0, None).await;
    let id = paused["request_id"].as_str().unwrap_or_default().to_owned();
    for (decisions, says) in [
        (json!([]), "undecided"),
        (
            json!([{"id": "nope", "approve": true}]),
            "not a waiting call",
        ),
        (
            json!([{"id": paused["approvals"][0]["id"], "approve": "yes"}]),
            "must be true or false",
        ),
        (
            json!([{"id": paused["approvals"][0]["id"]}]),
            "approve is required",
        ),
        (json!("approve"), "decisions is required"),
    ] {
        let (status, refused) = decide(base, &id, decisions, None).await;
        assert_eq!(status, 400, "{refused}");
        assert!(
            refused["error"].as_str().unwrap_or_default().contains(says),
            "{refused}"
        );
    }
    let (status, no_id) = http_json(
        base,
        "POST",
        "/api/v1/chat/approvals",
        Some(&json!({"decisions": []})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 400, "{no_id}");
    assert!(
        no_id["error"]
            .as_str()
            .unwrap_or_default()
            .starts_with("request_id is required"),
        "{no_id}"
    );
    let (status, unknown) = decide(
        base,
        "never-paused-1",
        json!([{"id": "c", "approve": true}]),
        None,
    )
    .await;
    assert_eq!(status, 404, "{unknown}");
    // The pause still waits after refused decisions.
    let (status, polled) = http_json(base, "GET", &format!("/api/v1/chat?request_id={id}"), None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (status, &polled["status"]),
        (200, &json!("PAUSED")),
        "{polled}"
    );
}

/// A resumed run that fails (the model refuses) is not kept, as no failed run is: the request
/// sent again runs anew and pauses again under a new pause number, which can be decided; a
/// decision on the old pause is a 409 saying why, not a 400.
#[tokio::test]
async fn a_resumed_run_that_failed_runs_anew_when_sent_again_and_pauses_under_a_new_number() {
    let model = ScriptedModel::start(vec![
        refund(800.0),
        Reply::Status(400),
        refund(800.0),
        Reply::Text("refunded 800".into()),
    ])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let server = start("direct", Store::Redis, &model).await;
    let base = server.base.as_str();
    let id = unique_name("req");
    let body = json!({"prompt": "refund 800 for order o-17", "request_id": id});
    let (_, first) = http_json(base, "POST", "/api/v1/chat", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&first["status"], &first["pause"]),
        (&json!("PAUSED"), &json!(1)),
        "{first}"
    );
    let approve = json!([{"id": first["approvals"][0]["id"], "approve": true}]);
    let (status, failed) = decide(base, &id, approve, None).await;
    assert_eq!(status, 502, "{failed}");
    let (status, other) = decide(base, &id, json!([{"id": "x", "approve": true}]), None).await;
    assert_eq!(status, 409, "{other}");
    let (_, second) = http_json(base, "POST", "/api/v1/chat", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        (&second["status"], &second["pause"]),
        (&json!("PAUSED"), &json!(2)),
        "{second}"
    );
    let decided = decide(
        base,
        &id,
        json!([{"id": second["approvals"][0]["id"], "approve": true}]),
        None,
    )
    .await;
    assert_eq!(decided.0, 200, "{decided:?}");
    assert_eq!(decided.1["result"], "refunded 800");
}

mod functions {
    //! The built Lambda functions under local Runtime APIs, over moto SQS: the pause outlives
    //! the functions that made it (all killed, fresh ones decide and finish), and a redelivered
    //! resume message runs nothing again.

    use super::{Store, refund, tool_results_with};
    use ak_adapters::sqs::SqsQueue;
    use ak_core::ports::Queue;
    use ak_tests::model_server::{Reply, ScriptedModel};
    use ak_tests::runtime_api::{Killed, Outcome, RuntimeApi, function_binary, spawn_function};
    use ak_tests::{redis_settings, sqs_client, unique_name};
    use serde_json::{Value, json};
    use std::time::Duration;

    const WAIT: Duration = Duration::from_secs(30);

    /// The three functions, each under its own Runtime API.
    struct Functions {
        handler: RuntimeApi,
        runner: RuntimeApi,
        responses: RuntimeApi,
        _running: Vec<Killed>,
    }

    async fn functions(env: &[(String, String)]) -> Functions {
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut apis = Vec::new();
        let mut children = Vec::new();
        for name in ["request-handler", "agent-runner", "response-handler"] {
            let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
            let binary = function_binary(name, "debug").unwrap_or_else(|e| panic!("{e}"));
            children.push(Killed(
                spawn_function(&binary, &api, &env).unwrap_or_else(|e| panic!("{e}")),
            ));
            apis.push(api);
        }
        let responses = apis.pop().unwrap_or_else(|| panic!("three APIs"));
        let runner = apis.pop().unwrap_or_else(|| panic!("three APIs"));
        let handler = apis.pop().unwrap_or_else(|| panic!("three APIs"));
        Functions {
            handler,
            runner,
            responses,
            _running: children,
        }
    }

    async fn invoke(api: &RuntimeApi, event: Value) -> Value {
        let id = api.invoke(event);
        match api.outcome(&id, WAIT).await {
            Some((Outcome::Response(answer), _)) => answer,
            other => panic!("no answer: {other:?}; init error: {:?}", api.init_error()),
        }
    }

    /// An HTTP API (payload 2.0) event.
    fn http(method: &str, path: &str, query: &str, body: Option<Value>) -> Value {
        json!({"version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": query,
               "headers": {"content-type": "application/json"},
               "queryStringParameters": query.split_once('=').map(|(k, v)| json!({k: v})),
               "requestContext": {"http": {"method": method, "path": path}, "stage": "$default"},
               "body": body.map(|b| b.to_string()), "isBase64Encoded": false})
    }

    fn body(answer: &Value) -> Value {
        serde_json::from_str(answer["body"].as_str().unwrap_or_default()).unwrap_or_default()
    }

    /// One message from `queue`, as the SQS event the event source mapping would invoke with;
    /// taken off the queue (a redelivery is played by invoking with it again).
    async fn next_event(queue: &SqsQueue) -> Value {
        for _ in 0..20 {
            let records = queue
                .receive(1, Duration::from_secs(1))
                .await
                .unwrap_or_default();
            for record in &records {
                let _ = queue
                    .delete(record.receipt_handle.as_deref().unwrap_or_default())
                    .await;
            }
            if !records.is_empty() {
                return json!({"Records": records});
            }
        }
        panic!("no message arrived");
    }

    /// A queue on moto with a visibility timeout of 1 s; FIFO (`.fifo`) when asked.
    async fn queue(prefix: &str, fifo: bool) -> String {
        use aws_sdk_sqs::types::QueueAttributeName;
        let name = unique_name(prefix) + if fifo { ".fifo" } else { "" };
        let mut request = sqs_client()
            .await
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "1");
        if fifo {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e:?}"))
            .queue_url
            .unwrap_or_default()
    }

    /// On FIFO queues, the resume message is the same request sent again within SQS's
    /// five-minute deduplication window, and the resumed run's answer the same request's second
    /// answer: each carries a deduplication id of its own (moto does not drop duplicates, so
    /// the ids are checked by `ak_core::ports`' unit tests; here, the FIFO queues' groups).
    async fn redelivery_and_restart(store: Store, fifo: bool) {
        let model = ScriptedModel::start(vec![refund(250.0), Reply::Text("refunded 250".into())])
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let input_url = queue("approve-in", fifo).await;
        let output_url = queue("approve-out", fifo).await;
        let sqs = sqs_client().await;
        let (input, output) = (
            SqsQueue::new(sqs.clone(), &input_url),
            SqsQueue::new(sqs, &output_url),
        );
        let mut env: Vec<(String, String)> = vec![
            (
                "AK_CONFIG_PATH_OVERRIDE".into(),
                super::config().display().to_string(),
            ),
            ("AK_EXECUTION__MODE".into(), "rest_async".into()),
            ("AK_EXECUTION__QUEUES__INPUT__URL".into(), input_url.clone()),
            (
                "AK_EXECUTION__QUEUES__OUTPUT__URL".into(),
                output_url.clone(),
            ),
            ("AK_MODEL__PROVIDER".into(), "openai".into()),
            ("OPENAI_API_KEY".into(), "sk-approvals".into()),
            ("OPENAI_BASE_URL".into(), model.base_url.clone()),
        ];
        match store {
            Store::Redis => {
                let redis = redis_settings(600);
                env.push(("AK_EXECUTION__RESPONSE_STORE__TYPE".into(), "redis".into()));
                env.push((
                    "AK_EXECUTION__RESPONSE_STORE__REDIS__URL".into(),
                    redis.url.expose().to_owned(),
                ));
                env.push((
                    "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX".into(),
                    redis.prefix().to_owned(),
                ));
                env.push(("AK_SESSION__TYPE".into(), "redis".into()));
                env.push((
                    "AK_SESSION__REDIS__URL".into(),
                    redis.url.expose().to_owned(),
                ));
                env.push((
                    "AK_SESSION__REDIS__PREFIX".into(),
                    format!("{}sessions:", redis.prefix()),
                ));
            }
            Store::DynamoDb => {
                let client = ak_tests::dynamodb_client().await;
                let (answers, sessions) = (unique_name("approve"), unique_name("approve-s"));
                ak_tests::create_response_table(&client, &answers)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                ak_tests::create_session_table(&client, &sessions)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}"));
                env.push((
                    "AK_EXECUTION__RESPONSE_STORE__TYPE".into(),
                    "dynamodb".into(),
                ));
                env.push((
                    "AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME".into(),
                    answers,
                ));
                env.push(("AK_SESSION__TYPE".into(), "dynamodb".into()));
                env.push(("AK_SESSION__DYNAMODB__TABLE_NAME".into(), sessions));
            }
        }

        // The request: accepted, run by the runner until the refund waits, the pause stored.
        let first = functions(&env).await;
        let accepted = invoke(
            &first.handler,
            http(
                "POST",
                "/api/v1/chat",
                "",
                Some(json!({"prompt": "refund 250 for order o-17"})),
            ),
        )
        .await;
        assert_eq!(accepted["statusCode"], 202, "{accepted}");
        let id = body(&accepted)["request_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let run = invoke(&first.runner, next_event(&input).await).await;
        assert_eq!(run, json!({"batchItemFailures": []}));
        let stored = invoke(&first.responses, next_event(&output).await).await;
        assert_eq!(stored, json!({"batchItemFailures": []}));
        let polled = invoke(
            &first.handler,
            http("GET", "/api/v1/chat", &format!("request_id={id}"), None),
        )
        .await;
        let paused = body(&polled);
        assert_eq!(paused["status"], "PAUSED", "{polled}");
        let call = paused["approvals"][0]["id"].clone();

        // Every function is killed; fresh ones take the decision and finish the run.
        drop(first);
        let fresh = functions(&env).await;
        let decided = invoke(
            &fresh.handler,
            http(
                "POST",
                "/api/v1/chat/approvals",
                "",
                Some(json!({"request_id": id, "decisions": [{"id": call, "approve": true}]})),
            ),
        )
        .await;
        assert_eq!(decided["statusCode"], 202, "{decided}");
        let resume = next_event(&input).await;
        assert_eq!(
            invoke(&fresh.runner, resume.clone()).await,
            json!({"batchItemFailures": []})
        );
        invoke(&fresh.responses, next_event(&output).await).await;
        let polled = invoke(
            &fresh.handler,
            http("GET", "/api/v1/chat", &format!("request_id={id}"), None),
        )
        .await;
        assert_eq!(body(&polled)["result"], "refunded 250", "{polled}");
        assert_eq!(tool_results_with(&model, "\"refunded\":250"), 1);

        // SQS delivers the resume message again: nothing runs again.
        let calls = model.calls();
        assert_eq!(
            invoke(&fresh.runner, resume).await,
            json!({"batchItemFailures": []})
        );
        assert_eq!(model.calls(), calls, "the model is not called again");
        assert_eq!(
            tool_results_with(&model, "\"refunded\":250"),
            1,
            "the tool ran once"
        );
        let polled = invoke(
            &fresh.handler,
            http("GET", "/api/v1/chat", &format!("request_id={id}"), None),
        )
        .await;
        assert_eq!(body(&polled)["result"], "refunded 250", "{polled}");
    }

    #[tokio::test]
    async fn a_pause_outlives_killed_functions_and_a_redelivered_resume_runs_nothing_on_redis_and_fifo_queues()
     {
        redelivery_and_restart(Store::Redis, true).await;
    }

    #[tokio::test]
    async fn a_pause_outlives_killed_functions_and_a_redelivered_resume_runs_nothing_on_dynamodb() {
        redelivery_and_restart(Store::DynamoDb, false).await;
    }
}
