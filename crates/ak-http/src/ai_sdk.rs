//! The agents for the Vercel AI SDK's `useChat` (AI SDK 6, its UI message stream protocol):
//! `POST /{API_BASE_PATH}/{API_VERSION}/ai-sdk/chat` takes what `DefaultChatTransport` sends
//! (`{id, messages, trigger, messageId?, ...body}`) and answers with the UI message stream
//! (server-sent `data:` chunks, then `data: [DONE]`, header `x-vercel-ai-ui-message-stream:
//! v1`); `GET …/ai-sdk/chat/{id}/stream` is the transport's resume call: the chat's active
//! stream again from its start (the client replaces the message it had), or `204` when the
//! chat has none.
//!
//! Request: the chat `id` names the conversation (`session_id`); `messages` (UI messages) are
//! the conversation as the client keeps it — the last one, the user's, is the prompt, the text
//! of the earlier ones the history (the session store is not used); an `agent` member of the
//! body (the transport's `body` option) picks the agent; `Idempotency-Key` makes the request id
//! an idempotency key. Each POST points the chat at its request, so a reload finds it.
//!
//! Stream: `start` (the assistant message id, `msg-<request id>`), `start-step`, a `data-agent`
//! part per agent (and handoff), `text-start/delta/end`, each tool call as
//! `tool-input-available` and its outcome as `tool-output-available` (`{"ok": true}`) or
//! `tool-output-error` (dynamic, provider-executed tools: the client does not run them), a
//! `finish-step`/`start-step` pair after tool outputs, then `finish` with the answer's
//! `request_id`, `session_id`, `agent` and `usage` as message metadata; a failure is an `error`
//! chunk.
//!
//! Resuming needs the run's event log: the queue modes keep one; direct mode keeps one when a
//! response store is configured (the run then goes on when its client leaves). Without one the
//! resume call answers `204`.
//!
//! Format: <https://ai-sdk.dev/docs/ai-sdk-ui/stream-protocol> (`ai` 6's `uiMessageChunkSchema`).

use crate::sse::{EventEncoder, SseBody, push_data as chunk};
use crate::surface::{
    Surface, SurfaceContext, SurfaceFuture, SurfaceReply, early_failure, failure_response,
};
use ak_core::error::ApiError;
use ak_core::events::RunEvent;
use ak_core::request::{Caller, RunRequest, check_id};
use ak_runtime::{ChatService, StreamOptions};
use http::Method;
use lambda_http::{Body, Request};
use serde_json::{Value, json};

/// The header that marks a UI message stream.
pub const STREAM_HEADER: &str = "x-vercel-ai-ui-message-stream";

/// The AI SDK surface.
pub struct AiSdkChat {
    chat: ChatService,
}

/// The pointer name of a chat's latest request.
fn pointer_name(user: Option<&str>, chat_id: &str) -> String {
    // Per user: another user's request on the same chat id cannot take over this user's
    // resume (its pointer is its own).
    match user {
        None => format!("ai-sdk-chat:{chat_id}"),
        Some(user) => {
            use sha2::Digest;
            let digest = sha2::Sha256::digest(user.as_bytes());
            let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
            format!("ai-sdk-chat:{hex}:{chat_id}")
        }
    }
}

/// The assistant message id of a request's answer (the same on a resumed stream).
fn message_id(request_id: &str) -> String {
    format!("msg-{request_id}")
}

impl AiSdkChat {
    /// The surface, answering through `chat`.
    pub fn new(chat: ChatService) -> Self {
        Self { chat }
    }

    async fn post(
        &self,
        request: &Request,
        context: SurfaceContext,
    ) -> Result<SurfaceReply, ApiError> {
        let body: Value = serde_json::from_slice(request.body().as_ref())
            .map_err(|e| ApiError::bad_request(format!("the body is not JSON: {e}")))?;
        let Value::Object(body) = body else {
            return Err(ApiError::bad_request(
                "the body must be an object: {\"id\", \"messages\", \"trigger\"}",
            ));
        };
        let chat_id = body.get("id").and_then(Value::as_str).ok_or_else(|| {
            ApiError::bad_request("id is required: the chat's id (useChat sends it)")
        })?;
        check_id("id", chat_id)?;
        let (prompt, history) = conversation(body.get("messages"))?;
        let mut run = json!({"prompt": prompt, "session_id": chat_id, "history": history});
        match body.get("agent") {
            None | Some(Value::Null) => {}
            Some(agent) => run["agent"] = agent.clone(),
        }
        if let Some(key) = request
            .headers()
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty())
        {
            run["request_id"] = json!(key);
        }
        let mut run = RunRequest::from_value(run, &context.caller)?;
        run.deadline = context.deadline;
        let request_id = run.request_id.clone();
        let user = run.user_id.clone();
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: true,
        };
        let mut stream = self.chat.post_stream(run, options).await?;
        // Refused before anything happened: its status (useChat shows the error).
        if let Some(failure) = early_failure(&mut stream).await {
            return Ok(SurfaceReply::Json(failure_response(&failure)));
        }
        // The chat's active stream is this request's now (what a reload resumes).
        if let Some(store) = self.chat.store() {
            store
                .set_pointer(
                    &pointer_name(user.as_deref(), chat_id),
                    &request_id,
                    user.as_deref(),
                )
                .await
                .map_err(|e| ApiError::from(e).with_request_id(&request_id))?;
        }
        Ok(SurfaceReply::Events(
            SseBody::encoded(
                stream,
                context.heartbeat,
                UiMessageEncoder::new(&message_id(&request_id)),
            )
            .with_header(STREAM_HEADER, "v1"),
        ))
    }

    async fn resume(
        &self,
        chat_id: &str,
        context: SurfaceContext,
    ) -> Result<SurfaceReply, ApiError> {
        check_id("id", chat_id)?;
        let none = || {
            let mut response = http::Response::new(Body::Empty);
            *response.status_mut() = http::StatusCode::NO_CONTENT;
            SurfaceReply::Http(response)
        };
        let Some(store) = self.chat.store() else {
            return Ok(none());
        };
        let user = match &context.caller {
            Caller::Anonymous => None,
            caller => caller.principal(),
        };
        let pointer = store
            .pointer(&pointer_name(user, chat_id))
            .await
            .map_err(ApiError::from)?;
        let Some(pointer) = pointer else {
            return Ok(none());
        };
        if !pointer.visible_to(user) {
            return Err(ApiError::ResponseNotFound {
                request_id: pointer.target,
            });
        }
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: true,
        };
        // A finished run has no active stream: the client has (or reloads) its message.
        match self
            .chat
            .follow_active(
                &pointer.target,
                pointer.user_id.as_deref(),
                context.deadline,
                options,
            )
            .await?
        {
            None => Ok(none()),
            Some(stream) => Ok(SurfaceReply::Events(
                SseBody::encoded(
                    stream,
                    context.heartbeat,
                    UiMessageEncoder::new(&message_id(&pointer.target)),
                )
                .with_header(STREAM_HEADER, "v1"),
            )),
        }
    }
}

impl Surface for AiSdkChat {
    fn name(&self) -> &'static str {
        "ai_sdk"
    }

    fn routes(&self) -> Vec<(Option<Method>, &'static str)> {
        vec![
            (Some(Method::POST), "/ai-sdk/chat"),
            (Some(Method::GET), "/ai-sdk/chat/{id}/stream"),
        ]
    }

    fn handle<'a>(&'a self, request: Request, context: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move {
            match context.params.first().cloned() {
                Some(chat_id) => self.resume(&chat_id, context).await,
                None => self.post(&request, context).await,
            }
        })
    }
}

/// The text of a UI message: its text parts joined.
fn text_of(message: &Value) -> String {
    message["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["type"] == "text")
        .filter_map(|p| p["text"].as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The prompt (the last message, the user's) and the history (the text of the earlier
/// messages) of `messages`.
fn conversation(messages: Option<&Value>) -> Result<(String, Vec<Value>), ApiError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(ApiError::bad_request(
            "messages is required: the chat's UI messages, ending with the user's",
        ));
    };
    let Some((last, earlier)) = messages.split_last() else {
        return Err(ApiError::bad_request("messages must not be empty"));
    };
    if last["role"] != "user" {
        return Err(ApiError::bad_request(
            "the last message must be the user's: it is the prompt",
        ));
    }
    let prompt = text_of(last);
    if prompt.trim().is_empty() {
        return Err(ApiError::bad_request("the user's message has no text part"));
    }
    let history = earlier
        .iter()
        .filter_map(|m| {
            let role = match m["role"].as_str()? {
                "user" => "user",
                "assistant" => "assistant",
                "system" => "system",
                _ => return None,
            };
            let text = text_of(m);
            (!text.trim().is_empty()).then(|| json!({"role": role, "content": text}))
        })
        .collect();
    Ok((prompt, history))
}

/// Run events as UI message stream chunks (see the module documentation).
pub struct UiMessageEncoder {
    message_id: String,
    started: bool,
    /// The open text part.
    text_part: Option<String>,
    parts: u32,
    /// Text sent since the last agent or tool event (to complete an answer from `done`).
    text: String,
    /// Whether a tool output was sent since the last step began.
    after_tool: bool,
    /// After a retry marker: the new attempt's text so far.
    attempt: Option<String>,
    failed: Option<Value>,
    ended: bool,
}

impl UiMessageEncoder {
    /// An encoder for the assistant message `message_id`.
    pub fn new(message_id: &str) -> Self {
        Self {
            message_id: message_id.to_owned(),
            started: false,
            text_part: None,
            parts: 0,
            text: String::new(),
            after_tool: false,
            attempt: None,
            failed: None,
            ended: false,
        }
    }

    fn close_text(&mut self, out: &mut String) {
        if let Some(id) = self.text_part.take() {
            chunk(out, &json!({"type": "text-end", "id": id}));
        }
    }

    /// A new step after tool outputs, so the client sees the text that follows as its own
    /// step (and never takes the finished tool calls for ones it must answer).
    fn next_step(&mut self, out: &mut String) {
        if self.after_tool {
            self.close_text(out);
            chunk(out, &json!({"type": "finish-step"}));
            chunk(out, &json!({"type": "start-step"}));
            self.after_tool = false;
        }
    }

    fn write_text(&mut self, delta: &str, out: &mut String) {
        if delta.is_empty() {
            return;
        }
        self.next_step(out);
        let id = match &self.text_part {
            Some(id) => id.clone(),
            None => {
                self.parts += 1;
                let id = format!("text-{}", self.parts);
                chunk(out, &json!({"type": "text-start", "id": id}));
                self.text_part = Some(id.clone());
                id
            }
        };
        self.text.push_str(delta);
        chunk(
            out,
            &json!({"type": "text-delta", "id": id, "delta": delta}),
        );
    }

    fn end(&mut self, out: &mut String) {
        out.push_str("data: [DONE]\n\n");
        self.ended = true;
    }
}

impl EventEncoder for UiMessageEncoder {
    fn encode(&mut self, _id: Option<u64>, event: &RunEvent) -> String {
        let mut out = String::new();
        if self.ended {
            return out;
        }
        if !self.started {
            self.started = true;
            chunk(
                &mut out,
                &json!({"type": "start", "messageId": self.message_id}),
            );
            chunk(&mut out, &json!({"type": "start-step"}));
        }
        if !matches!(event, RunEvent::Retry { .. })
            && let Some(failed) = self.failed.take()
        {
            self.close_text(&mut out);
            let text = failed["error"].as_str().unwrap_or("the run failed");
            chunk(&mut out, &json!({"type": "error", "errorText": text}));
            self.end(&mut out);
            return out;
        }
        match event {
            RunEvent::Agent { agent } => {
                self.close_text(&mut out);
                self.next_step(&mut out);
                chunk(
                    &mut out,
                    &json!({"type": "data-agent", "data": {"agent": agent}}),
                );
                self.text.clear();
            }
            // The runner started over: the open text continues where the new attempt's text
            // begins the same way.
            RunEvent::Retry { agent } => {
                self.failed = None;
                self.attempt = Some(String::new());
                chunk(
                    &mut out,
                    &json!({"type": "data-agent", "data": {"agent": agent, "retry": true}}),
                );
            }
            RunEvent::Delta { text } => match &mut self.attempt {
                None => self.write_text(text, &mut out),
                Some(attempt) => {
                    attempt.push_str(text);
                    let attempt = attempt.clone();
                    if let Some(rest) = attempt.strip_prefix(self.text.as_str()) {
                        let rest = rest.to_owned();
                        self.write_text(&rest, &mut out);
                    }
                }
            },
            RunEvent::ToolCall {
                id,
                name,
                arguments,
            } => {
                self.close_text(&mut out);
                self.next_step(&mut out);
                chunk(
                    &mut out,
                    &json!({
                        "type": "tool-input-available",
                        "toolCallId": id,
                        "toolName": name,
                        "input": arguments,
                        "dynamic": true,
                        "providerExecuted": true,
                    }),
                );
                self.text.clear();
                self.attempt = None;
            }
            RunEvent::ToolResult { id, ok, .. } => {
                let output = if *ok {
                    json!({"type": "tool-output-available", "toolCallId": id, "output": {"ok": true},
                        "dynamic": true, "providerExecuted": true})
                } else {
                    json!({"type": "tool-output-error", "toolCallId": id, "errorText": "the tool failed",
                        "dynamic": true, "providerExecuted": true})
                };
                chunk(&mut out, &output);
                self.after_tool = true;
                self.text.clear();
            }
            // A decision on a paused call: the resumed run's events follow.
            RunEvent::Approval(_) => {}
            RunEvent::Done(answer) => {
                let result = answer["result"].as_str().unwrap_or_default();
                let rest = match result.strip_prefix(self.text.as_str()) {
                    Some(rest) => rest.to_owned(),
                    None if self.text.is_empty() => result.to_owned(),
                    None => format!("\n\n{result}"),
                };
                self.write_text(&rest, &mut out);
                self.close_text(&mut out);
                chunk(&mut out, &json!({"type": "finish-step"}));
                let reason = if answer["truncated"] == true {
                    "length"
                } else {
                    "stop"
                };
                let mut metadata = json!({});
                for field in ["request_id", "session_id", "agent", "usage"] {
                    if let Some(value) = answer.get(field) {
                        metadata[field] = value.clone();
                    }
                }
                chunk(
                    &mut out,
                    &json!({"type": "finish", "finishReason": reason, "messageMetadata": metadata}),
                );
                self.end(&mut out);
            }
            RunEvent::Error(data) => self.failed = Some(data.clone()),
        }
        out
    }

    fn finish(&mut self, _last: Option<&RunEvent>) -> String {
        let mut out = String::new();
        if self.ended {
            return out;
        }
        if !self.started {
            chunk(
                &mut out,
                &json!({"type": "start", "messageId": self.message_id}),
            );
        }
        self.close_text(&mut out);
        let failed = self.failed.take();
        let text = failed
            .as_ref()
            .and_then(|f| f["error"].as_str())
            .unwrap_or("the stream ended before the answer");
        chunk(&mut out, &json!({"type": "error", "errorText": text}));
        self.end(&mut out);
        out
    }
}

#[cfg(test)]
mod tests;
