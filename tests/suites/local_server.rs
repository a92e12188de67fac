//! `ak-local serve`, the binary `scripts/dev.sh` starts: the whole pipeline in one process with
//! in-memory queues and stores and the offline model, and the same code over moto and Redis.

use ak_tests::local::{DEV_ENV, LocalServer};
use ak_tests::{create_queue, http_json, redis_url, unique_name};
use serde_json::{Value, json};
use std::time::Duration;

async fn serve(env: &[(&str, &str)]) -> LocalServer {
    LocalServer::start(env)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

async fn post(server: &LocalServer, body: Value) -> (u16, Value) {
    http_json(&server.base, "POST", "/api/v1/chat", Some(&body))
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn dev_defaults_answer_from_the_offline_model_through_the_queues() {
    let server = serve(DEV_ENV).await;
    let (status, body) = post(&server, json!({"prompt": "what is 12 * 7"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "[offline model] math: 12 * 7 = 84");
    assert_eq!(body["agent"], "math");

    let session = body["session_id"].as_str().unwrap_or_default().to_owned();
    let (status, body) = post(
        &server,
        json!({"prompt": "who won the battle of Hastings", "session_id": session}),
    )
    .await;
    assert_eq!(
        (status, body["agent"].as_str()),
        (200, Some("history")),
        "{body}"
    );
    assert_eq!(body["session_id"], session.as_str());

    let (status, _) = http_json(&server.base, "GET", "/api/v1/app", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200);
}

#[tokio::test]
async fn the_example_routes_echo_what_they_received_locally_too() {
    let server = serve(DEV_ENV).await;
    let (status, body) = http_json(
        &server.base,
        "POST",
        "/api/v1/app_info?color=blue&n=1",
        Some(&json!({"k": "v"})),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["receivedEventPayload"]["query"],
        json!({"color": "blue", "n": "1"}),
        "{body}"
    );
}

#[tokio::test]
async fn rest_async_locally_accepts_then_answers_the_poll() {
    let mut env = DEV_ENV.to_vec();
    env.push(("AK_EXECUTION__MODE", "rest_async"));
    let server = serve(&env).await;
    let (status, accepted) = post(&server, json!({"prompt": "what is 6 * 7"})).await;
    assert_eq!(
        (status, accepted["status"].as_str()),
        (202, Some("ACCEPTED"))
    );
    let id = accepted["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let path = format!("/api/v1/chat?request_id={id}");
    let mut answer = (0, Value::Null);
    for _ in 0..100 {
        answer = http_json(&server.base, "GET", &path, None)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        if answer.0 == 200 {
            break;
        }
        assert_eq!(answer.0, 404, "{}", answer.1);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(answer.0, 200);
    assert_eq!(answer.1["result"], "[offline model] math: 6 * 7 = 42");
}

#[tokio::test]
async fn the_local_server_drives_real_sqs_and_redis() {
    let mut urls = Vec::new();
    for _ in 0..2 {
        urls.push(
            create_queue("local", None)
                .await
                .unwrap_or_else(|e| panic!("{e:?}")),
        );
    }
    let redis = redis_url();
    let prefix = format!("{}:", unique_name("local"));
    let server = serve(&[
        ("AK_EXECUTION__MODE", "rest_sync"),
        ("AK_EXECUTION__QUEUES__INPUT__URL", &urls[0]),
        ("AK_EXECUTION__QUEUES__OUTPUT__URL", &urls[1]),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
        ("AK_EXECUTION__RESPONSE_STORE__REDIS__URL", &redis),
        ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
        ("AK_SESSION__TYPE", "redis"),
        ("AK_SESSION__REDIS__URL", &redis),
        ("AK_SESSION__REDIS__PREFIX", &prefix),
    ])
    .await;
    let (status, body) = post(&server, json!({"prompt": "what is 12 * 7"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["result"], "[offline model] math: 12 * 7 = 84");
}

#[tokio::test]
async fn ak_local_under_load_answers_every_request_once_over_moto_and_redis() {
    use ak_tests::model_server::{Reply, ScriptedModel};
    const REQUESTS: usize = 80;
    const CLIENTS: usize = 16;
    let model = ScriptedModel::constant(Reply::Text("ok".into()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let redis = redis_url();
    let prefix = format!("{}:", unique_name("load"));
    for mode in ["rest_sync", "rest_async"] {
        // Queues of its own for each mode: a long poll the first server left waiting when it was
        // stopped would take a message of the second and hide it for the visibility timeout
        // (30 s), as SQS does with any consumer that goes away.
        let mut urls = Vec::new();
        for _ in 0..2 {
            urls.push(
                create_queue("load", None)
                    .await
                    .unwrap_or_else(|e| panic!("{e:?}")),
            );
        }
        let server = serve(&[
            ("AK_EXECUTION__MODE", mode),
            ("AK_EXECUTION__QUEUES__INPUT__URL", &urls[0]),
            ("AK_EXECUTION__QUEUES__OUTPUT__URL", &urls[1]),
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__URL", &redis),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", &prefix),
            ("AK_LOG__LEVEL", "warn"),
            ("OPENAI_BASE_URL", &model.base_url),
            ("OPENAI_API_KEY", "sk-load"),
        ])
        .await;
        let calls_before = model.calls();
        let started = std::time::Instant::now();
        let next = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut clients = Vec::new();
        for _ in 0..CLIENTS {
            let (base, next) = (server.base.clone(), next.clone());
            let mode = mode.to_owned();
            clients.push(tokio::spawn(async move {
                let mut answered = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= REQUESTS {
                        return answered;
                    }
                    let id = format!("{mode}-{i}-{}", unique_name("r"));
                    let body =
                        json!({"request_id": id, "body": {"prompt": "hi", "agent": "history"}});
                    let (status, reply) = http_json(&base, "POST", "/api/v1/chat", Some(&body))
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    let reply = if mode == "rest_async" {
                        assert_eq!(status, 202, "{reply}");
                        let path = format!("/api/v1/chat?request_id={id}");
                        let deadline = std::time::Instant::now() + Duration::from_secs(60);
                        loop {
                            let (status, reply) = http_json(&base, "GET", &path, None)
                                .await
                                .unwrap_or_else(|e| panic!("{e}"));
                            if status == 200 {
                                break reply;
                            }
                            assert_eq!(status, 404, "{reply}");
                            assert!(std::time::Instant::now() < deadline, "{id} never answered");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                    } else {
                        assert_eq!(status, 200, "{reply}");
                        reply
                    };
                    assert_eq!(
                        reply["request_id"],
                        id.as_str(),
                        "an answer for another request"
                    );
                    answered.push(id);
                }
            }));
        }
        let mut answered = std::collections::HashSet::new();
        for client in clients {
            for id in client.await.unwrap_or_else(|e| panic!("{e}")) {
                assert!(answered.insert(id), "an answer came twice");
            }
        }
        let elapsed = started.elapsed();
        assert_eq!(answered.len(), REQUESTS, "{mode}: requests lost");
        assert_eq!(
            model.calls() - calls_before,
            REQUESTS,
            "{mode}: a request ran twice"
        );
        eprintln!(
            "load through ak-local ({mode}, moto SQS + Redis): {REQUESTS} requests, {CLIENTS} clients, {:.2} s ({:.1}/s), lost 0, duplicated 0",
            elapsed.as_secs_f64(),
            REQUESTS as f64 / elapsed.as_secs_f64()
        );
    }
}
