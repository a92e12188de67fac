//! Faults, load and bad input: what the system guarantees when things go wrong.

use crate::pipeline::{Store, authorized_event, call, event, system};
use ak_core::config::ExecutionMode;
use ak_core::ports::{ClaimOutcome, Queue, QueueMessage, ResponseStore};
use ak_core::secret::SecretUrl;
use ak_tests::PrivateRedis;
use ak_tests::model_server::{Reply, ScriptedModel};
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function_with_log};
use ak_tests::unique_name;
use lambda_http::{Body, Request};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

fn message(session: &str) -> QueueMessage {
    QueueMessage {
        request_id: unique_name("req"),
        session_id: session.to_owned(),
        user_id: None,
        status_code: None,
        attempt: None,
        body: json!({"prompt": "hello", "agent": "history", "session_id": session}),
    }
}

#[tokio::test]
async fn a_runner_that_died_after_the_model_call_leaves_a_claim_that_lapses() {
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        vec![Reply::Text("the one answer".into())],
        |_| {},
    )
    .await;
    let m = message(&unique_name("s"));
    // The dead runner claimed the request, called the model, and never sent its answer.
    let claim = s
        .store_claim(&m.request_id, "dead-runner", Duration::from_secs(1))
        .await;
    assert_eq!(claim, ClaimOutcome::Acquired { attempt: 1 });
    s.input().send(&m).await.unwrap_or_else(|e| panic!("{e}"));
    while s.run_runner().await == 0 {}
    assert_eq!(
        s.model.calls(),
        0,
        "while the claim holds, nobody else runs the request"
    );
    tokio::time::sleep(Duration::from_millis(1200)).await;
    while s.run_runner().await == 0 {}
    assert_eq!(
        s.model.calls(),
        1,
        "after the claim lapsed, the redelivery ran it"
    );
    assert_eq!(s.run_responses().await, 1);
    assert_eq!(
        s.run_runner().await + s.run_responses().await,
        0,
        "nothing more is pending"
    );
    let stored = s.store().get(&m.request_id).await.ok().flatten();
    assert_eq!(
        stored.map(|r| r.body["result"].clone()),
        Some(json!("the one answer"))
    );
}

#[tokio::test]
async fn a_batch_near_the_deadline_hands_back_what_it_cannot_finish() {
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        vec![Reply::Hang(Duration::from_millis(2500))],
        |_| {},
    )
    .await;
    let session = unique_name("s");
    let (first, second) = (message(&session), message(&session));
    let records = vec![
        first.to_sqs_record("m-1", "r-1", 1),
        second.to_sqs_record("m-2", "r-2", 1),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let response = s
        .runner
        .handle(ak_tests::records_json(records.clone()), Some(deadline))
        .await;
    let failed: Vec<String> = response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone())
        .collect();
    assert_eq!(
        failed,
        vec!["m-2"],
        "the first ran; the second would have run past the deadline"
    );
    assert_eq!(s.model.calls(), 1);

    let soon = tokio::time::Instant::now() + Duration::from_secs(2);
    let response = s
        .runner
        .handle(
            ak_tests::records_json(vec![message("x").to_sqs_record("m-3", "r-3", 1)]),
            Some(soon),
        )
        .await;
    assert_eq!(
        response.batch_item_failures.len(),
        1,
        "too close to the deadline to start anything"
    );
    assert_eq!(s.model.calls(), 1);
}

#[tokio::test]
async fn after_a_redis_outage_every_accepted_request_is_answered() {
    let mut redis = PrivateRedis::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = redis.url.clone();
    let replies = (0..3).map(|i| Reply::Text(format!("answer {i}"))).collect();
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        replies,
        move |settings| {
            settings.execution.response_store.redis.url = SecretUrl::new(&url);
        },
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (status, _, body) = call(
            &s.api,
            event(
                "POST",
                Some(r#"{"prompt": "hi", "agent": "history"}"#),
                None,
                None,
            ),
        )
        .await;
        assert_eq!(status, 202);
        ids.push(body["request_id"].as_str().unwrap_or_default().to_owned());
    }

    redis.stop();
    let started = Instant::now();
    let (status, _, body) = s.poll_api(&ids[0]).await;
    assert_eq!(status, 503, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "answered within the timeout, no hang"
    );
    while s.run_runner().await == 0 {}
    assert_eq!(
        s.model.calls(),
        0,
        "without the store no claim, so no model call"
    );

    redis.restart().await.unwrap_or_else(|e| panic!("{e}"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut answered = 0;
    while answered < ids.len() && Instant::now() < deadline {
        s.run_runner().await;
        s.run_responses().await;
        answered = 0;
        for id in &ids {
            if s.poll_api(id).await.0 == 200 {
                answered += 1;
            }
        }
    }
    assert_eq!(
        answered, 3,
        "every accepted request was answered after Redis came back"
    );
    assert_eq!(s.model.calls(), 3);
}

#[tokio::test]
async fn concurrent_clients_get_exactly_their_own_answers() {
    const REQUESTS: usize = 60;
    const CLIENTS: usize = 12;
    let replies = (0..REQUESTS)
        .map(|i| Reply::Text(format!("answer {i}")))
        .collect();
    let s = Arc::new(system(ExecutionMode::RestAsync, Store::Redis, replies, |_| {}).await);
    let stop = Arc::new(AtomicBool::new(false));
    let mut pumps = Vec::new();
    for _ in 0..2 {
        let (s, stop) = (s.clone(), stop.clone());
        pumps.push(tokio::spawn(async move {
            while !stop.load(Ordering::SeqCst) {
                s.run_runner().await;
                s.run_responses().await;
            }
        }));
    }
    let started = Instant::now();
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let s = s.clone();
        clients.push(tokio::spawn(async move {
            let user = format!("user-{}", c % 4);
            let identity = json!({"principalId": user, "user_id": user});
            let mut mine = Vec::new();
            for _ in 0..REQUESTS / CLIENTS {
                let (status, _, body) = call(
                    &s.api,
                    authorized_event(
                        "POST",
                        Some(r#"{"prompt": "hi", "agent": "history"}"#),
                        None,
                        Some(identity.clone()),
                    ),
                )
                .await;
                assert_eq!(status, 202, "{body}");
                mine.push(body["request_id"].as_str().unwrap_or_default().to_owned());
            }
            let mut results = Vec::new();
            for id in mine {
                let deadline = Instant::now() + Duration::from_secs(60);
                loop {
                    let (status, _, body) = call(
                        &s.api,
                        authorized_event(
                            "GET",
                            None,
                            Some(("request_id", &id)),
                            Some(identity.clone()),
                        ),
                    )
                    .await;
                    if status == 200 {
                        assert_eq!(body["request_id"], id.as_str());
                        results.push((
                            user.clone(),
                            id,
                            body["result"].as_str().unwrap_or_default().to_owned(),
                        ));
                        break;
                    }
                    assert_eq!(status, 404, "{body}");
                    assert!(Instant::now() < deadline, "request {id} was never answered");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            results
        }));
    }
    let mut results = Vec::new();
    for c in clients {
        results.extend(c.await.unwrap_or_else(|e| panic!("{e}")));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::SeqCst);
    for p in pumps {
        let _ = p.await;
    }
    let answers: std::collections::HashSet<&String> =
        results.iter().map(|(_, _, answer)| answer).collect();
    assert_eq!(results.len(), REQUESTS, "none lost");
    assert_eq!(answers.len(), REQUESTS, "no answer given twice");
    assert_eq!(s.model.calls(), REQUESTS, "no request ran twice");
    for (user, id, _) in results.iter().take(8) {
        let other = if user == "user-0" { "user-1" } else { "user-0" };
        let identity = json!({"principalId": other, "user_id": other});
        let (status, _, _) = call(
            &s.api,
            authorized_event("GET", None, Some(("request_id", id)), Some(identity)),
        )
        .await;
        assert_eq!(status, 404, "another user cannot read {id}");
    }
    eprintln!(
        "load: {REQUESTS} requests from {CLIENTS} clients over moto SQS + Redis answered in {:.2} s ({:.1}/s); lost 0, duplicated 0, cross-user reads 0",
        elapsed.as_secs_f64(),
        REQUESTS as f64 / elapsed.as_secs_f64()
    );
}

fn raw_event(body: Body, content_type: &str) -> Request {
    let mut request = event("POST", Some("{}"), None, None);
    *request.body_mut() = body;
    if let Ok(v) = lambda_http::http::HeaderValue::from_str(content_type) {
        request
            .headers_mut()
            .insert(lambda_http::http::header::CONTENT_TYPE, v);
    }
    request
}

#[tokio::test]
async fn bad_input_gets_the_right_4xx_with_a_clear_message() {
    let s = system(ExecutionMode::RestAsync, Store::Redis, vec![], |settings| {
        settings.api.max_body_bytes = 64 * 1024;
    })
    .await;
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_prompt = format!(r#"{{"prompt": "x", "extra": {deep}}}"#);
    let huge = json!({"prompt": "y".repeat(100_000)}).to_string();
    let cases: Vec<(&str, Request, u16, &str)> = vec![
        (
            "invalid UTF-8",
            raw_event(
                Body::Binary(vec![b'{', 0xff, 0xfe, b'}']),
                "application/json",
            ),
            400,
            "UTF-8",
        ),
        (
            "deeply nested JSON",
            raw_event(Body::Text(deep_prompt), "application/json"),
            400,
            "not valid JSON",
        ),
        (
            "plain text",
            raw_event(Body::Text("what is 12 * 7".into()), "text/plain"),
            400,
            "not valid JSON",
        ),
        (
            "form data",
            raw_event(
                Body::Text("prompt=hi".into()),
                "application/x-www-form-urlencoded",
            ),
            400,
            "not valid JSON",
        ),
        (
            "huge prompt",
            raw_event(Body::Text(huge), "application/json"),
            413,
            "limit is 65536 bytes",
        ),
        (
            "JSON array",
            raw_event(Body::Text("[1]".into()), "application/json"),
            400,
            "JSON object",
        ),
        (
            "null prompt",
            raw_event(Body::Text(r#"{"prompt": null}"#.into()), "application/json"),
            400,
            "prompt is required",
        ),
    ];
    for (name, request, status, expected) in cases {
        let (got, _, body) = call(&s.api, request).await;
        assert_eq!(got, status, "{name}: {body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap_or_default()
                .contains(expected),
            "{name}: {body}"
        );
    }
    let unknown = raw_event(
        Body::Text(r#"{"prompt": "hi", "colour": "blue", "nested": {"a": [1]}}"#.into()),
        "application/json",
    );
    let (status, _, body) = call(&s.api, unknown).await;
    assert_eq!(status, 202, "unknown fields are kept as context: {body}");
    let records = s
        .input()
        .receive(10, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    let queued = QueueMessage::from_sqs_record(&records[0]).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(queued.message.body["colour"], "blue");
}

#[tokio::test]
async fn no_secret_reaches_the_logs() {
    let model = ScriptedModel::start(vec![Reply::Text("fine".into()), Reply::Status(401)])
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("ak-fn")));
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    const KEY: &str = "sk-live-do-not-log-0123456789";
    const JWT_SECRET: &str = "jwt-secret-do-not-log";
    const REDIS_PASSWORD: &str = "redis-password-do-not-log";
    let redis_url = format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1");
    let binary = function_binary("request-handler", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut child = spawn_function_with_log(
        &binary,
        &api,
        &[
            ("AK_CONFIG_PATH_OVERRIDE", &config),
            ("AK_LOG__LEVEL", "debug"),
            ("OPENAI_API_KEY", KEY),
            ("OPENAI_BASE_URL", &model.base_url),
            ("AK_AUTH__JWT__SECRET", JWT_SECRET),
            ("AK_SESSION__REDIS__URL", &redis_url),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__URL", &redis_url),
        ],
        Some(&log),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let token = format!(
        "Bearer {}",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1In0.c2lnbmF0dXJl"
    );
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
            .unwrap_or_default();
    event["headers"]["Authorization"] = json!(token);
    event["body"] = json!(r#"{"prompt": "hello", "agent": "history"}"#);
    for expected in [200, 502] {
        let id = api.invoke(event.clone());
        let outcome = api
            .outcome(&id, Duration::from_secs(20))
            .await
            .map(|(o, _)| o);
        let Some(Outcome::Response(response)) = outcome else {
            panic!("{outcome:?} {:?}", api.init_error())
        };
        assert_eq!(response["statusCode"], expected, "{response}");
        assert!(!response.to_string().contains(KEY));
    }
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    assert!(
        text.contains("\"request\"") || text.contains("request"),
        "the handler logged: {text}"
    );
    assert!(text.contains("\"_aws\""), "metrics were emitted: {text}");
    for secret in [KEY, JWT_SECRET, REDIS_PASSWORD, "c2lnbmF0dXJl"] {
        assert!(
            !text.contains(secret),
            "{secret} leaked into the log:\n{text}"
        );
    }
}

impl crate::pipeline::System {
    fn input(&self) -> &Arc<dyn Queue> {
        &self.input
    }

    fn store(&self) -> &Arc<dyn ResponseStore> {
        &self.store
    }

    async fn store_claim(&self, id: &str, owner: &str, ttl: Duration) -> ClaimOutcome {
        self.store
            .claim(id, owner, ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn poll_api(&self, id: &str) -> (u16, Option<String>, Value) {
        call(
            &self.api,
            event("GET", None, Some(("request_id", id)), None),
        )
        .await
    }
}
