//! Resumable streams through the queue modes: the agent runner writes each run's events to the
//! response store, and `GET /api/v1/chat/stream` relays them to any number of followers, from
//! the start or after the last event a client received — over moto SQS with Redis and with
//! DynamoDB, and over the in-memory backends of `scripts/dev.sh`.

use crate::exactly_once::FlakyStore;
use crate::pipeline::{Store, System, event, system};
use ak_core::config::ExecutionMode;
use ak_http::api::{Api, Reply};
use ak_runtime::service::worker::AgentRunnerHandler;
use ak_tests::model_server::Reply as Model;
use ak_tests::runtime_api::function_binary;
use ak_tests::unique_name;
use futures_util::StreamExt;
use lambda_http::Request;
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

const ANSWER: &str = "The Normans crossed the Channel in September 1066; at Hastings, on the \
    14th of October, William's archers and cavalry wore down Harold's shield wall, and by \
    evening Harold was dead and the English line broken.";

const FIRST_ATTEMPT: &str = "the first attempt never finishes this sentence, because";

/// One event as a client receives it, and when.
#[derive(Debug, Clone)]
struct Seen {
    id: u64,
    name: String,
    data: Value,
    at: Instant,
}

impl PartialEq for Seen {
    fn eq(&self, other: &Self) -> bool {
        (self.id, &self.name, &self.data) == (other.id, &other.name, &other.data)
    }
}

/// A client reading an SSE body as it comes.
struct Follower {
    body: ak_http::sse::SseBody,
    buffer: String,
}

impl Follower {
    /// Sends `request`; the stream, or the JSON answer (status, body) when it is refused.
    async fn open(api: &Api, request: Request) -> Result<Follower, (u16, Value)> {
        match api.respond(request).await {
            Reply::Events(body) => Ok(Follower {
                body,
                buffer: String::new(),
            }),
            Reply::Json(response) => {
                let status = response.status().as_u16();
                let body = match response.body() {
                    lambda_http::Body::Text(t) => serde_json::from_str(t).unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                Err((status, body))
            }
        }
    }

    /// The next event (comments skipped); `None` at the end of the stream.
    async fn next(&mut self) -> Option<Seen> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let parsed = ak_http::sse::parse_sse(&block);
                if let Some((id, name, data)) = parsed.into_iter().next() {
                    return Some(Seen {
                        id: id.unwrap_or_default(),
                        name,
                        data,
                        at: Instant::now(),
                    });
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.body.next())
                .await
                .unwrap_or_else(|_| panic!("no event for 30 s"))?
                .ok()?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// `n` events.
    async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut seen = Vec::new();
        while seen.len() < n {
            match self.next().await {
                Some(event) => seen.push(event),
                None => break,
            }
        }
        seen
    }

    /// Every event to the end.
    async fn rest(mut self) -> Vec<Seen> {
        let mut seen = Vec::new();
        while let Some(event) = self.next().await {
            seen.push(event);
        }
        seen
    }
}

/// A REST API event for `GET /api/v1/chat/stream` with these query parameters and headers.
fn stream_request(query: &[(&str, &str)], headers: &[(&str, &str)], user: Option<&str>) -> Request {
    let mut e: Value = serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
        .unwrap_or_default();
    e["httpMethod"] = json!("GET");
    e["requestContext"]["httpMethod"] = json!("GET");
    e["path"] = json!("/api/v1/chat/stream");
    e["requestContext"]["path"] = json!("/prod/api/v1/chat/stream");
    e["resource"] = json!("/api/v1/chat/stream");
    e["body"] = Value::Null;
    let params: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    let multi: serde_json::Map<String, Value> = query
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!([v])))
        .collect();
    e["queryStringParameters"] = Value::Object(params);
    e["multiValueQueryStringParameters"] = Value::Object(multi);
    for (name, value) in headers {
        e["headers"][*name] = json!(value);
        e["multiValueHeaders"][*name] = json!([value]);
    }
    if let Some(user) = user {
        e["requestContext"]["authorizer"] = json!({"principalId": user, "user_id": user});
    }
    crate::pipeline::decode(&e)
}

/// Plays the event source mappings until dropped.
struct Pumping(tokio::task::JoinHandle<()>);

impl Drop for Pumping {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn pumping(s: &Arc<System>) -> Pumping {
    let s = s.clone();
    Pumping(tokio::spawn(async move {
        loop {
            s.run_runner().await;
            s.run_responses().await;
        }
    }))
}

fn names(seen: &[Seen]) -> Vec<&str> {
    seen.iter().map(|e| e.name.as_str()).collect()
}

fn text_of(seen: &[Seen]) -> String {
    seen.iter()
        .filter(|e| e.name == "delta")
        .filter_map(|e| e.data["text"].as_str())
        .collect()
}

fn assert_gapless(seen: &[Seen]) {
    let ids: Vec<u64> = seen.iter().map(|e| e.id).collect();
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(
        ids,
        expected,
        "ids from 1 with no gap and no repeat: {:?}",
        names(seen)
    );
}

async fn queue_system(mode: ExecutionMode, store: Store, replies: Vec<Model>) -> Arc<System> {
    Arc::new(system(mode, store, replies, |_| {}).await)
}

/// A streaming POST in rest_sync relays the log as the runner writes it: every delta in order,
/// while the model is still writing, and a `done` equal to the stored answer.
async fn a_streaming_post_relays_the_run(store: Store) {
    let s = queue_system(
        ExecutionMode::RestSync,
        store,
        vec![Model::text_stream(ANSWER, 24, Duration::from_millis(40))],
    )
    .await;
    let _pump = pumping(&s);
    let id = unique_name("live");
    let body = json!({"prompt": "tell me about Hastings", "agent": "history",
        "stream": true, "request_id": id})
    .to_string();
    let follower = Follower::open(&s.api, event("POST", Some(&body), None, None))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    let seen = follower.rest().await;
    let names = names(&seen);
    assert_eq!(names.first(), Some(&"agent"), "{names:?}");
    assert_eq!(names.last(), Some(&"done"), "{names:?}");
    assert!(
        names.iter().filter(|n| **n == "delta").count() >= 5,
        "{names:?}"
    );
    assert_gapless(&seen);
    assert_eq!(text_of(&seen), ANSWER, "every delta, in order");
    let done = &seen[seen.len() - 1].data;
    assert_eq!(done["result"], ANSWER);
    // The response handler stores the answer soon after the runner logged `done`.
    let mut stored = s.poll(&id, None).await;
    for _ in 0..50 {
        if stored.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        stored = s.poll(&id, None).await;
    }
    assert_eq!(
        (stored.0, &stored.2),
        (200, done),
        "done is the stored answer"
    );

    let first_delta = seen
        .iter()
        .find(|e| e.name == "delta")
        .map_or_else(Instant::now, |e| e.at);
    let model_done = s
        .model
        .sent_chunks()
        .last()
        .copied()
        .unwrap_or_else(Instant::now);
    assert!(
        first_delta + Duration::from_millis(300) < model_done,
        "the first delta came {:?} before the model's last piece: streamed, not replayed",
        model_done.saturating_duration_since(first_delta)
    );
}

/// A follower that drops after three events and comes back with `Last-Event-ID` gets exactly
/// the rest; `?after=` does the same; a replay after the end is the same log; two followers at
/// once see the same events.
async fn followers_resume_and_agree(store: Store) {
    let s = queue_system(
        ExecutionMode::RestAsync,
        store,
        vec![Model::text_stream(ANSWER, 16, Duration::from_millis(60))],
    )
    .await;
    let id = unique_name("resume");
    let body = json!({"prompt": "tell me about Hastings", "agent": "history", "request_id": id})
        .to_string();
    let (status, _, accepted) =
        crate::pipeline::call(&s.api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 202, "{accepted}");

    // Followers can join before the run starts.
    let open = |query: Vec<(&'static str, String)>, headers: Vec<(&'static str, String)>| {
        let api = s.api.clone();
        async move {
            let query: Vec<(&str, &str)> = query.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            Follower::open(&api, stream_request(&query, &headers, None))
                .await
                .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
        }
    };
    let mut leaving = open(vec![("request_id", id.clone())], vec![]).await;
    let one = open(vec![("request_id", id.clone())], vec![]).await;
    let two = open(vec![("request_id", id.clone())], vec![]).await;
    let both = tokio::spawn(async move { (one.rest().await, two.rest().await) });
    let _pump = pumping(&s);

    let first = leaving.take(3).await;
    drop(leaving);
    let last_id = first[2].id.to_string();
    let rest = open(
        vec![("request_id", id.clone())],
        vec![("Last-Event-ID", last_id.clone())],
    )
    .await
    .rest()
    .await;
    let mut joined = first.clone();
    joined.extend(rest.iter().cloned());
    assert_gapless(&joined);
    assert_eq!(joined.last().map(|e| e.name.as_str()), Some("done"));
    assert_eq!(text_of(&joined), ANSWER);

    let (one, two) = both.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(one, two, "two followers, the same events");
    assert_eq!(one, joined, "and the same as the one that came back");

    let replay = open(vec![("request_id", id.clone())], vec![])
        .await
        .rest()
        .await;
    assert_eq!(replay, joined, "after the end: a replay of the same log");
    let after = open(vec![("request_id", id.clone()), ("after", last_id)], vec![])
        .await
        .rest()
        .await;
    assert_eq!(after, rest, "?after= resumes like Last-Event-ID");
}

/// Ownership as for polls: another user's (or an anonymous caller's) follow of a signed-in
/// user's request is NOT_FOUND, like an unknown id; bad resume points are 400.
async fn another_user_gets_not_found(store: Store) {
    let s = queue_system(
        ExecutionMode::RestAsync,
        store,
        vec![Model::Text("mine".into())],
    )
    .await;
    let id = unique_name("owned");
    let body = json!({"prompt": "private", "agent": "history", "request_id": id}).to_string();
    let (status, _, _) =
        crate::pipeline::call(&s.api, event("POST", Some(&body), None, Some("user-a"))).await;
    assert_eq!(status, 202);
    for (user, target) in [
        (Some("user-b"), id.as_str()),
        (None, id.as_str()),
        (Some("user-a"), "nobody"),
    ] {
        let refused =
            Follower::open(&s.api, stream_request(&[("request_id", target)], &[], user)).await;
        let (status, body) = refused
            .err()
            .unwrap_or_else(|| panic!("{user:?} may not follow {target}"));
        assert_eq!(
            (status, &body["status"]),
            (404, &json!("NOT_FOUND")),
            "{user:?}: {body}"
        );
        assert_eq!(body["request_id"], target);
    }
    let _pump = pumping(&s);
    let mine = Follower::open(
        &s.api,
        stream_request(&[("request_id", &id)], &[], Some("user-a")),
    )
    .await
    .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
    .rest()
    .await;
    assert_eq!(
        mine.last().map(|e| e.data["result"].clone()),
        Some(json!("mine"))
    );

    for (query, headers, field) in [
        (
            vec![("request_id", id.as_str())],
            vec![("Last-Event-ID", "18446744073709551615")],
            "Last-Event-ID",
        ),
        (
            vec![("request_id", id.as_str()), ("after", "three")],
            vec![],
            "after",
        ),
        (
            vec![("request_id", id.as_str())],
            vec![("Last-Event-ID", "-1")],
            "Last-Event-ID",
        ),
        (vec![], vec![], "request_id"),
    ] {
        let refused =
            Follower::open(&s.api, stream_request(&query, &headers, Some("user-a"))).await;
        let (status, body) = refused.err().unwrap_or_else(|| panic!("{field} accepted"));
        assert_eq!(status, 400, "{body}");
        assert!(
            body["error"].as_str().unwrap_or_default().contains(field),
            "{body}"
        );
    }
}

/// A runner that dies mid-run: the message comes back, the next attempt continues the same log
/// after an `agent` event marked `"retry": true`, and a follower sees one run after the marker,
/// never two interleaved.
async fn a_redelivery_restarts_after_a_retry_marker(store: Store) {
    let s = queue_system(
        ExecutionMode::RestAsync,
        store,
        vec![
            Model::text_stream(FIRST_ATTEMPT, 30, Duration::from_millis(100)),
            Model::text_stream(ANSWER, 8, Duration::from_millis(10)),
        ],
    )
    .await;
    let id = unique_name("redeliver");
    let body = json!({"prompt": "tell me about Hastings", "agent": "history", "request_id": id})
        .to_string();
    let (status, _, _) =
        crate::pipeline::call(&s.api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 202);
    let follower = Follower::open(&s.api, stream_request(&[("request_id", &id)], &[], None))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"));
    let following = tokio::spawn(follower.rest());

    // The first runner's claim lapses quickly once it is gone.
    let short_lived = AgentRunnerHandler::new(
        s.runtime.clone(),
        s.output.clone(),
        Arc::new(FlakyStore {
            inner: s.store.clone(),
            down: AtomicBool::new(false),
            max_claim: Some(Duration::from_millis(300)),
        }),
        3,
    );
    let records = s
        .input
        .receive(1, Duration::from_secs(2))
        .await
        .unwrap_or_default();
    assert_eq!(records.len(), 1);
    let records = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    let first_attempt = tokio::spawn(async move { short_lived.handle(records, None).await });
    while s.store.last_event_seq(&id).await.unwrap_or_default() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first_attempt.abort();
    let _pump = pumping(&s);

    let seen = tokio::time::timeout(Duration::from_secs(60), following)
        .await
        .unwrap_or_else(|_| panic!("the follower never got done"))
        .unwrap_or_else(|e| panic!("{e}"));
    assert_gapless(&seen);
    let markers: Vec<usize> = seen
        .iter()
        .enumerate()
        .filter(|(_, e)| e.name == "agent" && e.data["retry"] == true)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(markers.len(), 1, "one retry marker: {:?}", names(&seen));
    let marker = markers[0];
    let before = text_of(&seen[..marker]);
    assert!(
        !before.is_empty() && FIRST_ATTEMPT.starts_with(&before),
        "the failed attempt's text comes before the marker: {seen:?}"
    );
    assert_eq!(
        text_of(&seen[marker..]),
        ANSWER,
        "after the marker: one whole run"
    );
    assert_eq!(
        seen.last().map(|e| e.data["result"].clone()),
        Some(json!(ANSWER))
    );
    assert_eq!(s.model.calls(), 2);
}

/// Coming back after the last event gets 204 (an `EventSource` stops reconnecting), never a
/// repeated `done`; a request sent again after it failed continues its log after a retry
/// marker, so a replay shows the failure, the marker and the new run, numbered without a gap.
async fn a_finished_log_is_final_and_a_resent_failure_continues_it(store: Store) {
    let s = queue_system(
        ExecutionMode::RestAsync,
        store,
        vec![
            Model::Status(401),
            Model::text_stream(ANSWER, 6, Duration::from_millis(5)),
        ],
    )
    .await;
    let _pump = pumping(&s);
    let id = unique_name("resent");
    let body = json!({"prompt": "tell me about Hastings", "agent": "history", "request_id": id})
        .to_string();
    let (status, _, _) =
        crate::pipeline::call(&s.api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 202);
    let failed = Follower::open(&s.api, stream_request(&[("request_id", &id)], &[], None))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
        .rest()
        .await;
    assert_eq!(
        failed.last().map(|e| e.name.as_str()),
        Some("error"),
        "{failed:?}"
    );
    let last = failed.last().map_or(0, |e| e.id).to_string();
    let done = s
        .api
        .respond(stream_request(
            &[("request_id", &id)],
            &[("Last-Event-ID", &last)],
            None,
        ))
        .await;
    match done {
        Reply::Json(response) => assert_eq!(response.status().as_u16(), 204),
        Reply::Events(_) => panic!("a finished log is not streamed again"),
    }
    let beyond = (failed.last().map_or(0, |e| e.id) + 5).to_string();
    match s
        .api
        .respond(stream_request(
            &[("request_id", &id)],
            &[("Last-Event-ID", &beyond)],
            None,
        ))
        .await
    {
        Reply::Json(response) => assert_eq!(
            response.status().as_u16(),
            204,
            "a client past the end has it all"
        ),
        Reply::Events(_) => panic!("a number past a finished log's end is not streamed"),
    }

    // Once the client has the failure (a poll answers 502), it sends the request again: it
    // runs again, and its log goes on.
    for _ in 0..100 {
        if s.poll(&id, None).await.0 == 502 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (status, _, _) =
        crate::pipeline::call(&s.api, event("POST", Some(&body), None, None)).await;
    assert_eq!(status, 202);
    let resumed = Follower::open(
        &s.api,
        stream_request(&[("request_id", &id)], &[("Last-Event-ID", &last)], None),
    )
    .await
    .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
    .rest()
    .await;
    assert_eq!(
        resumed.first().map(|e| e.data["retry"].clone()),
        Some(json!(true)),
        "{resumed:?}"
    );
    assert_eq!(resumed.first().map(|e| e.id), Some(failed.len() as u64 + 1));
    assert_eq!(text_of(&resumed), ANSWER);
    let replay = Follower::open(&s.api, stream_request(&[("request_id", &id)], &[], None))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
        .rest()
        .await;
    assert_gapless(&replay);
    let names = names(&replay);
    assert!(
        names.contains(&"error"),
        "the failed run is kept: {names:?}"
    );
    assert_eq!(
        names.last(),
        Some(&"done"),
        "the replay goes past the failure: {names:?}"
    );
}

/// A streaming POST sent again (the same request id, no session named) names the session of
/// the first answer, not one made up for the repeat.
async fn a_repeated_streaming_post_names_the_first_answers_session(store: Store) {
    let s = queue_system(
        ExecutionMode::RestAsync,
        store,
        vec![Model::text_stream(ANSWER, 4, Duration::from_millis(5))],
    )
    .await;
    let _pump = pumping(&s);
    let id = unique_name("again");
    let body = json!({"prompt": "tell me about Hastings", "agent": "history", "stream": true,
        "request_id": id})
    .to_string();
    let first = Follower::open(&s.api, event("POST", Some(&body), None, None))
        .await
        .unwrap_or_else(|(status, body)| panic!("{status} {body}"))
        .rest()
        .await;
    let session = first
        .last()
        .map(|e| e.data["session_id"].clone())
        .unwrap_or_default();
    assert!(session.is_string(), "{first:?}");
    for _ in 0..100 {
        if s.poll(&id, None).await.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    match s.api.respond(event("POST", Some(&body), None, None)).await {
        Reply::Events(repeat) => assert_eq!(
            repeat
                .headers()
                .get("x-session-id")
                .and_then(|v| v.to_str().ok()),
            session.as_str(),
            "the repeat names the first answer's session"
        ),
        Reply::Json(response) => panic!("{}", response.status()),
    }
}

macro_rules! on_each_store {
    ($($name:ident),+) => {
        mod redis {
            use super::*;
            $(#[tokio::test]
            async fn $name() { super::$name(Store::Redis).await })+
        }
        mod dynamodb {
            use super::*;
            $(#[tokio::test]
            async fn $name() { super::$name(Store::DynamoDb).await })+
        }
    };
}

on_each_store!(
    a_repeated_streaming_post_names_the_first_answers_session,
    a_finished_log_is_final_and_a_resent_failure_continues_it,
    a_streaming_post_relays_the_run,
    followers_resume_and_agree,
    another_user_gets_not_found,
    a_redelivery_restarts_after_a_retry_marker
);

/// `scripts/dev.sh`'s setup (in-memory queues and store, rest_async) over real HTTP: POST, then
/// follow with a browser's `EventSource` headers, drop, and come back with `Last-Event-ID`.
#[tokio::test]
async fn ak_local_with_in_memory_backends_serves_resumable_streams() {
    let model = ak_tests::model_server::ScriptedModel::start(vec![Model::text_stream(
        ANSWER,
        12,
        Duration::from_millis(50),
    )])
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("ak-local", "debug").unwrap_or_else(|e| panic!("{e}"));
    let mut child = std::process::Command::new(binary)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AK_EXECUTION__MODE", "rest_async")
        .env("AK_EXECUTION__QUEUES__INPUT__URL", "memory://input")
        .env("AK_EXECUTION__QUEUES__OUTPUT__URL", "memory://output")
        .env("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory")
        .env("AK_MODEL__PROVIDER", "openai")
        .env("OPENAI_API_KEY", "sk-local")
        .env("OPENAI_BASE_URL", &model.base_url)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "ak-local did not start");

    let id = unique_name("local");
    let posted = ak_tests::post_streaming(
        &format!("{base}/api/v1/chat"),
        &json!({"prompt": "tell me about Hastings", "agent": "history", "request_id": id}),
        "application/json",
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(posted.status, 202);
    let url = format!("{base}/api/v1/chat/stream?request_id={id}");
    let headers = [
        ("accept", "text/event-stream"),
        ("cache-control", "no-cache"),
    ];
    let mut first = ak_tests::get_streaming(&url, &headers)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(first.status, 200);
    assert_eq!(
        first.headers.get("content-type").map(|v| v.as_bytes()),
        Some(&b"text/event-stream"[..])
    );
    let mut text = String::new();
    while ak_http::sse::parse_sse(&text).len() < 2 {
        let (_, chunk) = first
            .next_chunk()
            .await
            .unwrap_or_else(|| panic!("ended early: {text}"));
        text.push_str(&chunk);
    }
    drop(first);
    let before = ak_http::sse::parse_sse(&text);
    let last = before
        .last()
        .and_then(|e| e.0)
        .unwrap_or_default()
        .to_string();
    let mut headers = headers.to_vec();
    headers.push(("last-event-id", &last));
    let again = ak_tests::get_streaming(&url, &headers)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rest: String = again.chunks().await.into_iter().map(|(_, c)| c).collect();
    let mut all = before;
    all.extend(ak_http::sse::parse_sse(&rest));
    let ids: Vec<u64> = all.iter().filter_map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=all.len() as u64).collect::<Vec<_>>(),
        "{text}{rest}"
    );
    let deltas: String = all
        .iter()
        .filter(|e| e.1 == "delta")
        .filter_map(|e| e.2["text"].as_str())
        .collect();
    assert_eq!(deltas, ANSWER);
    assert_eq!(all.last().map(|e| e.1.as_str()), Some("done"));
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn direct_mode_says_its_stream_is_the_posts() {
    let s = Arc::new(system(ExecutionMode::Direct, Store::Redis, vec![], |_| {}).await);
    let refused = Follower::open(&s.api, stream_request(&[("request_id", "r-1")], &[], None)).await;
    let (status, body) = refused
        .err()
        .unwrap_or_else(|| panic!("direct mode has no logs"));
    assert_eq!(status, 404, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap_or_default()
            .contains("direct mode"),
        "{body}"
    );
}

#[tokio::test]
async fn a_streaming_post_at_its_deadline_ends_with_a_notice_outside_the_log() {
    // No runner: nothing is logged before the invocation's deadline.
    let s = queue_system(ExecutionMode::RestSync, Store::Redis, vec![]).await;
    let mut e: Value = serde_json::from_str(include_str!("../fixtures/apigw_v1_post_chat.json"))
        .unwrap_or_default();
    e["body"] = json!(json!({"prompt": "hello", "agent": "history", "stream": true}).to_string());
    let answer = s
        .api
        .handle_event_until(
            e,
            Some(tokio::time::Instant::now() + Duration::from_millis(1500)),
        )
        .await;
    let text = answer["body"].as_str().unwrap_or_default().to_owned();
    let last = text
        .trim_end()
        .rsplit("\n\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(last.starts_with("event: error"), "no id: line: {text}");
    assert!(
        last.contains("504") && last.contains("chat/stream"),
        "{last}"
    );
}
