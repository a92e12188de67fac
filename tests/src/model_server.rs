//! A scripted OpenAI-compatible Chat Completions server on 127.0.0.1, one per test: it answers
//! `POST /v1/chat/completions` (or `/chat/completions`) with the next scripted reply and records
//! every request body, so a test can check exactly what the project sent.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A final assistant message.
    Text(String),
    /// An assistant message calling one function tool with these JSON arguments.
    ToolCall {
        /// Function name, e.g. `transfer_to_math`.
        name: String,
        /// Arguments object.
        arguments: Value,
    },
    /// An HTTP error with an OpenAI-style error body.
    Status(u16),
    /// No answer for this long (to exercise client timeouts), then a text reply.
    Hang(Duration),
    /// The connection is closed without an answer.
    Drop,
    /// `echo: <the last message's text>` after this pause (soaks check each request gets its
    /// own answer).
    Echo(Duration),
    /// A streamed answer: these pieces of `text/event-stream` body, one every `pause` (the
    /// first at once). The server notes when each piece went out, and whether its client left
    /// before the end.
    Stream {
        /// The body, piece by piece (see [`Reply::text_stream`]).
        chunks: Vec<String>,
        /// The wait before each piece after the first.
        pause: Duration,
    },
    /// Exactly this answer: status, content type and body bytes (a reply in the shape some
    /// server really sends, from the conformance corpus).
    Raw {
        /// HTTP status.
        status: u16,
        /// `Content-Type` header.
        content_type: String,
        /// The body as sent.
        body: String,
    },
}

impl Reply {
    /// `text` streamed as OpenAI does: a role chunk, `pieces` content deltas, a finish chunk, a
    /// usage chunk (`choices: []`) and `[DONE]`, one every `pause`.
    pub fn text_stream(text: &str, pieces: usize, pause: Duration) -> Reply {
        let chars: Vec<char> = text.chars().collect();
        let size = chars.len().div_ceil(pieces.max(1)).max(1);
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1,
                    "model": "scripted", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let mut chunks = vec![chunk(
            json!({"role": "assistant", "content": ""}),
            Value::Null,
        )];
        for piece in chars.chunks(size) {
            let piece: String = piece.iter().collect();
            chunks.push(chunk(json!({"content": piece}), Value::Null));
        }
        chunks.push(chunk(json!({}), json!("stop")));
        chunks.push(format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "choices": [],
                "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})
        ));
        Reply::Stream { chunks, pause }
    }

    /// A call to function `name` streamed as OpenAI does: the call's id and name first, then
    /// its arguments in two fragments.
    pub fn tool_call_stream(name: &str, arguments: &Value) -> Reply {
        let text = arguments.to_string();
        let (a, b) = text.split_at(text.len() / 2);
        let chunk = |delta: Value, finish: Value| {
            format!(
                "data: {}\n\n",
                json!({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
            )
        };
        let call = |v: Value| json!({"tool_calls": [v]});
        Reply::Stream {
            chunks: vec![
                chunk(
                    call(
                        json!({"index": 0, "id": format!("call_{}", uuid::Uuid::new_v4().simple()), "type": "function", "function": {"name": name, "arguments": ""}}),
                    ),
                    Value::Null,
                ),
                chunk(
                    call(json!({"index": 0, "function": {"arguments": a}})),
                    Value::Null,
                ),
                chunk(
                    call(json!({"index": 0, "function": {"arguments": b}})),
                    Value::Null,
                ),
                chunk(json!({}), json!("tool_calls")),
                "data: [DONE]\n\n".to_owned(),
            ],
            pause: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct Script {
    /// Answer with this once the scripted replies run out (benchmarks), instead of failing.
    fallback: Option<Reply>,
    replies: VecDeque<Reply>,
    requests: Vec<Value>,
    calls: usize,
    largest_request: usize,
    sent_chunks: Vec<std::time::Instant>,
    abandoned: usize,
    /// Completed answers per text of the last message.
    answered: std::collections::HashMap<String, usize>,
}

/// The shipped example's path to an answer: triage hands off to math, math calls `multiply`
/// with `a` and `b`, then answers "`a` * `b` = product".
pub fn triage_to_multiply(a: i64, b: i64) -> Vec<Reply> {
    vec![
        Reply::ToolCall {
            name: "transfer_to_math".into(),
            arguments: serde_json::json!({}),
        },
        Reply::ToolCall {
            name: "multiply".into(),
            arguments: serde_json::json!({"a": a, "b": b}),
        },
        Reply::Text(format!("{a} * {b} = {}", a * b)),
    ]
}

/// A running scripted model; stops when dropped.
pub struct ScriptedModel {
    /// Base URL to give an OpenAI client, e.g. `http://127.0.0.1:PORT/v1`.
    pub base_url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedModel {
    /// Starts a server that answers with `replies` in order, then with HTTP 500 saying the
    /// script ran out.
    pub async fn start(replies: Vec<Reply>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let base_url = format!("http://{}/v1", listener.local_addr()?);
        let script = Arc::new(Mutex::new(Script {
            replies: replies.into(),
            ..Script::default()
        }));
        let shared = script.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let script = shared.clone();
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| answer(script.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            base_url,
            script,
            task,
        })
    }

    /// Starts a server that answers every call with `reply` (for benchmarks and load tests;
    /// requests are counted, not recorded).
    pub async fn constant(reply: Reply) -> anyhow::Result<Self> {
        let model = Self::start(Vec::new()).await?;
        if let Ok(mut script) = model.script.lock() {
            script.fallback = Some(reply);
        }
        Ok(model)
    }

    /// The JSON bodies received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        self.script
            .lock()
            .map(|s| s.requests.clone())
            .unwrap_or_default()
    }

    /// How many completion calls arrived.
    pub fn calls(&self) -> usize {
        self.script.lock().map(|s| s.calls).unwrap_or_default()
    }

    /// When each streamed piece went out, in order.
    pub fn sent_chunks(&self) -> Vec<std::time::Instant> {
        self.script
            .lock()
            .map(|s| s.sent_chunks.clone())
            .unwrap_or_default()
    }

    /// How many answers were completed for each text of the last message (counted for every
    /// reply, also for [`ScriptedModel::constant`] servers).
    pub fn answered_prompts(&self) -> std::collections::HashMap<String, usize> {
        self.script
            .lock()
            .map(|s| s.answered.clone())
            .unwrap_or_default()
    }

    /// How many streamed answers lost their client before the last piece.
    pub fn abandoned(&self) -> usize {
        self.script.lock().map(|s| s.abandoned).unwrap_or_default()
    }

    /// The size in bytes of the largest request body received.
    pub fn largest_request(&self) -> usize {
        self.script
            .lock()
            .map(|s| s.largest_request)
            .unwrap_or_default()
    }
}

impl Drop for ScriptedModel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response body: whole, or streamed.
type Out = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

fn whole(bytes: impl Into<Bytes>) -> Out {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, body: &Value) -> Response<Out> {
    let mut response = Response::new(whole(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

async fn answer(
    script: Arc<Mutex<Script>>,
    req: Request<Incoming>,
) -> Result<Response<Out>, std::io::Error> {
    let path = req.uri().path().to_owned();
    if !path.ends_with("/chat/completions") {
        return Ok(json_response(
            StatusCode::NOT_FOUND,
            &json!({"error": {"message": format!("no route {path}"), "type": "invalid_request_error"}}),
        ));
    }
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let model = request["model"].as_str().unwrap_or("scripted").to_owned();
    let last = request["messages"]
        .as_array()
        .and_then(|m| m.last())
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_owned();
    let reply = {
        let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
        script.calls += 1;
        script.largest_request = script.largest_request.max(body.len());
        match script.replies.pop_front() {
            Some(reply) => {
                script.requests.push(request);
                Some(reply)
            }
            None => script.fallback.clone(),
        }
    };
    let message = match reply {
        None => {
            return Ok(json_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                &json!({"error": {"message": "the scripted model has no reply left", "type": "server_error"}}),
            ));
        }
        Some(Reply::Status(code)) => {
            let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            return Ok(json_response(
                status,
                &json!({"error": {"message": format!("scripted status {code}"), "type": "scripted_error", "code": code}}),
            ));
        }
        Some(Reply::Stream { chunks, pause }) => {
            let (tx, rx) =
                tokio::sync::mpsc::channel::<Result<hyper::body::Frame<Bytes>, std::io::Error>>(1);
            let script = script.clone();
            tokio::spawn(async move {
                let count = chunks.len();
                for (i, chunk) in chunks.into_iter().enumerate() {
                    if i > 0 {
                        tokio::time::sleep(pause).await;
                    }
                    let sent = tx
                        .send(Ok(hyper::body::Frame::data(Bytes::from(chunk))))
                        .await;
                    let mut script = script.lock().unwrap_or_else(|p| p.into_inner());
                    if sent.is_err() {
                        script.abandoned += 1;
                        return;
                    }
                    script.sent_chunks.push(std::time::Instant::now());
                    drop(script);
                    if i + 1 == count {
                        break;
                    }
                }
                // Dropping the sender ends the body.
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|item| (item, rx))
            });
            let mut response =
                Response::new(http_body_util::StreamBody::new(stream).boxed_unsync());
            response.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/event-stream"),
            );
            return Ok(response);
        }
        Some(Reply::Raw {
            status,
            content_type,
            body,
        }) => {
            let mut response = Response::new(whole(body));
            *response.status_mut() =
                StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            if let Ok(v) = hyper::header::HeaderValue::from_str(&content_type) {
                response
                    .headers_mut()
                    .insert(hyper::header::CONTENT_TYPE, v);
            }
            return Ok(response);
        }
        Some(Reply::Drop) => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "scripted drop",
            ));
        }
        Some(Reply::Hang(pause)) => {
            tokio::time::sleep(pause).await;
            json!({"role": "assistant", "content": "late answer"})
        }
        Some(Reply::Echo(pause)) => {
            tokio::time::sleep(pause).await;
            json!({"role": "assistant", "content": format!("echo: {last}")})
        }
        Some(Reply::Text(text)) => json!({"role": "assistant", "content": text}),
        Some(Reply::ToolCall { name, arguments }) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": format!("call_{}", uuid::Uuid::new_v4().simple()),
                "type": "function",
                "function": {"name": name, "arguments": arguments.to_string()},
            }],
        }),
    };
    *script
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .answered
        .entry(last)
        .or_default() += 1;
    let finish = if message.get("tool_calls").is_some() {
        "tool_calls"
    } else {
        "stop"
    };
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "id": format!("chatcmpl-{}", uuid::Uuid::new_v4().simple()),
            "object": "chat.completion",
            "created": ak_core::ports::now_epoch_secs(),
            "model": model,
            "choices": [{"index": 0, "message": message, "finish_reason": finish}],
            "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
        }),
    ))
}
