//! A scripted Amazon Bedrock Runtime on loopback: `POST /model/{modelId}/converse` answers the
//! next scripted reply as Converse JSON, `POST /model/{modelId}/converse-stream` as an AWS event
//! stream (`application/vnd.amazon.eventstream`: `messageStart`, `contentBlockStart`,
//! `contentBlockDelta`, `contentBlockStop`, `messageStop`, `metadata`), and errors the way the
//! service does (status, `x-amzn-errortype`, `{"message"}`). Every request is recorded — path,
//! JSON body and whether it was SigV4-signed — so tests check the shape the SDK sent.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::net::TcpListener;

/// One scripted answer.
#[derive(Debug, Clone)]
pub enum Converse {
    /// An assistant message with this text (`stopReason: end_turn`).
    Text(String),
    /// An assistant message calling one tool (`stopReason: tool_use`).
    ToolUse {
        /// The tool's name, e.g. `transfer_to_math`.
        name: String,
        /// Its input.
        input: Value,
    },
    /// An error: HTTP status and the exception's name (`ThrottlingException`).
    Error(u16, &'static str),
}

/// A request as received.
#[derive(Debug, Clone)]
pub struct Received {
    /// `/model/{modelId}/converse` or `.../converse-stream` (the model id percent-encoded).
    pub path: String,
    /// The JSON body.
    pub body: Value,
    /// Whether it carried a SigV4 `Authorization` header for the `bedrock` service.
    pub signed: bool,
}

#[derive(Default)]
struct Script {
    replies: VecDeque<Converse>,
    received: Vec<Received>,
}

fn lock(script: &Mutex<Script>) -> MutexGuard<'_, Script> {
    script.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running scripted Bedrock Runtime; stops when dropped.
pub struct ConverseServer {
    /// Its endpoint URL, for `AWS_ENDPOINT_URL_BEDROCK_RUNTIME` or `model.base_url`.
    pub url: String,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ConverseServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ConverseServer {
    /// Starts a server answering `replies` in order (then 500).
    pub async fn start(replies: Vec<Converse>) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
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
        Ok(Self { url, script, task })
    }

    /// The requests received so far.
    pub fn received(&self) -> Vec<Received> {
        lock(&self.script).received.clone()
    }
}

fn error(status: u16, code: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(
        json!({"message": format!("{code} (scripted)")}).to_string(),
    )));
    *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
    let headers = response.headers_mut();
    headers.insert(
        "content-type",
        "application/json"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    if let Ok(v) = code.parse() {
        headers.insert("x-amzn-errortype", v);
    }
    response
}

/// The role of the last message of the request just recorded.
fn received_last_role(script: &Mutex<Script>) -> Option<String> {
    lock(script).received.last().and_then(|r| {
        r.body["messages"].as_array()?.last()?["role"]
            .as_str()
            .map(str::to_owned)
    })
}

fn usage() -> Value {
    json!({"inputTokens": 11, "outputTokens": 7, "totalTokens": 18})
}

async fn answer(
    script: Arc<Mutex<Script>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = request.uri().path().to_owned();
    let signed = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("AWS4-HMAC-SHA256") && v.contains("/bedrock/aws4_request"));
    let body = request
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let reply = {
        let mut script = lock(&script);
        script.received.push(Received {
            path: path.clone(),
            body,
            signed,
        });
        script.replies.pop_front()
    };
    let Some(reply) = reply else {
        return Ok(error(500, "InternalServerException"));
    };
    // As Bedrock does: a conversation must end with a user turn (text or tool results).
    let last_role = received_last_role(&script);
    if last_role.as_deref() != Some("user") {
        return Ok(error(400, "ValidationException"));
    }
    let (content, stop) = match reply {
        Converse::Error(status, code) => return Ok(error(status, code)),
        Converse::Text(text) => (json!({"text": text}), "end_turn"),
        Converse::ToolUse { name, input } => (
            json!({"toolUse": {"toolUseId": format!("tooluse_{}", uuid::Uuid::new_v4().simple()), "name": name, "input": input}}),
            "tool_use",
        ),
    };
    // Models such as Claude write a line before they use a tool.
    let aside = json!({"text": "Let me use a tool."});
    if !path.ends_with("/converse-stream") {
        let blocks = if content.get("toolUse").is_some() {
            vec![aside, content]
        } else {
            vec![content]
        };
        let body = json!({
            "output": {"message": {"role": "assistant", "content": blocks}},
            "stopReason": stop,
            "usage": usage(),
            "metrics": {"latencyMs": 5},
        });
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        response.headers_mut().insert(
            "content-type",
            "application/json"
                .parse()
                .unwrap_or_else(|_| unreachable!()),
        );
        return Ok(response);
    }
    let mut events = vec![("messageStart", json!({"role": "assistant"}))];
    if let Some(text) = content.get("text").and_then(Value::as_str) {
        let words: Vec<&str> = text.split_inclusive(' ').collect();
        for word in words {
            events.push((
                "contentBlockDelta",
                json!({"contentBlockIndex": 0, "delta": {"text": word}}),
            ));
        }
        events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
    } else {
        let call = &content["toolUse"];
        events.push((
            "contentBlockDelta",
            json!({"contentBlockIndex": 0, "delta": {"text": aside["text"]}}),
        ));
        events.push(("contentBlockStop", json!({"contentBlockIndex": 0})));
        events.push((
            "contentBlockStart",
            json!({"contentBlockIndex": 1, "start": {"toolUse": {"toolUseId": call["toolUseId"], "name": call["name"]}}}),
        ));
        // The input arrives as JSON text, cut anywhere.
        let input = call["input"].to_string();
        let (a, b) = input.split_at(input.len() / 2);
        for piece in [a, b] {
            events.push((
                "contentBlockDelta",
                json!({"contentBlockIndex": 1, "delta": {"toolUse": {"input": piece}}}),
            ));
        }
        events.push(("contentBlockStop", json!({"contentBlockIndex": 1})));
    }
    events.push(("messageStop", json!({"stopReason": stop})));
    events.push((
        "metadata",
        json!({"usage": usage(), "metrics": {"latencyMs": 5}}),
    ));
    let mut stream = Vec::new();
    for (name, payload) in events {
        use aws_smithy_types::event_stream::{Header, HeaderValue, Message};
        let message = Message::new(Bytes::from(payload.to_string()))
            .add_header(Header::new(":event-type", HeaderValue::String(name.into())))
            .add_header(Header::new(
                ":content-type",
                HeaderValue::String("application/json".into()),
            ))
            .add_header(Header::new(
                ":message-type",
                HeaderValue::String("event".into()),
            ));
        let _ = aws_smithy_eventstream::frame::write_message_to(&message, &mut stream);
    }
    let mut response = Response::new(Full::new(Bytes::from(stream)));
    response.headers_mut().insert(
        "content-type",
        "application/vnd.amazon.eventstream"
            .parse()
            .unwrap_or_else(|_| unreachable!()),
    );
    Ok(response)
}
