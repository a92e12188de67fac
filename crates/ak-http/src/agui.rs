//! The agents as AG-UI agents (the Agent–User Interaction protocol 1.0 of CopilotKit's
//! `@ag-ui/client`): `POST /{API_BASE_PATH}/{API_VERSION}/agui` (the default agent) or
//! `…/agui/{agent}` with a `RunAgentInput`, answered with the AG-UI event stream as
//! server-sent events (`data: {"type": …}` frames).
//!
//! Input: `threadId` names the conversation (the run's `session_id`), `runId` is the request id
//! (an idempotency key: the same run again does not call the model twice), `messages` is the
//! conversation as the client keeps it (the last user message is the prompt, the earlier ones
//! the history; the session store is not used), `tools` are front-end tools the client runs
//! (offered to the model; a call ends the run with its `TOOL_CALL_*` events and
//! `RUN_FINISHED.outcome.pendingToolCallIds`, and the client sends the result in its next run,
//! whose last message is then the tool message), `context` and `state` reach the agent as
//! request context. `forwardedProps` is not read.
//!
//! Output, in the order the protocol requires: `RUN_STARTED`; per agent a step
//! (`STEP_STARTED`/`STEP_FINISHED` named after it; a handoff closes one and opens the next, with
//! a `CUSTOM` `handoff` event between); the text as `TEXT_MESSAGE_START/CONTENT/END` (named after
//! the agent); each tool call as `TOOL_CALL_START/ARGS/END` and its outcome as
//! `TOOL_CALL_RESULT` (content `{"ok": true|false}`: the payload stays on the server, as on our
//! own stream); then `RUN_FINISHED` with the answer as `result`, or `RUN_ERROR` with the status
//! as `code`. Optional fields are left out, never `null` (the client's schemas refuse nulls).
//!
//! Format: <https://docs.ag-ui.com/concepts/events> (`@ag-ui/core` 1.0's schemas).

use crate::sse::{EventEncoder, SseBody, push_data as frame};
use crate::surface::{
    Surface, SurfaceContext, SurfaceFuture, SurfaceReply, early_failure, failure_response,
};
use ak_core::error::ApiError;
use ak_core::events::RunEvent;
use ak_core::request::{RunRequest, check_agent_name, check_id};
use ak_runtime::{ChatService, StreamOptions};
use http::Method;
use lambda_http::Request;
use serde_json::{Map, Value, json};

/// The AG-UI surface.
pub struct AgUi {
    chat: ChatService,
}

impl AgUi {
    /// The surface, answering through `chat`.
    pub fn new(chat: ChatService) -> Self {
        Self { chat }
    }

    async fn run(
        &self,
        request: &Request,
        context: SurfaceContext,
    ) -> Result<SurfaceReply, ApiError> {
        let input: Value = serde_json::from_slice(request.body().as_ref()).map_err(|e| {
            ApiError::bad_request(format!("the body is not a RunAgentInput (JSON): {e}"))
        })?;
        let Value::Object(input) = input else {
            return Err(ApiError::bad_request(
                "the body must be a RunAgentInput object: {\"threadId\", \"runId\", \"messages\", ...}",
            ));
        };
        let id = |field: &str| -> Result<String, ApiError> {
            let value = input
                .get(field)
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::bad_request(format!("{field} is required (text)")))?;
            check_id(field, value)?;
            Ok(value.to_owned())
        };
        let thread_id = id("threadId")?;
        let run_id = id("runId")?;
        let agent = match context.params.first() {
            Some(agent) => {
                check_agent_name(agent)
                    .map_err(|m| ApiError::bad_request(format!("agent: {m}")))?;
                Some(agent.clone())
            }
            None => None,
        };
        let tools = client_tools(input.get("tools"))?;
        let tool_names: Vec<&str> = tools.iter().filter_map(|t| t["name"].as_str()).collect();
        let (prompt, history) = conversation(input.get("messages"), &tool_names)?;
        let mut body = json!({
            "prompt": if prompt.is_empty() { "-" } else { prompt.as_str() },
            "session_id": thread_id,
            "request_id": run_id,
        });
        if let Some(agent) = &agent {
            body["agent"] = json!(agent);
        }
        let mut run = RunRequest::from_value(body, &context.caller)?;
        run.prompt = prompt;
        run.history = Some(history);
        run.client_tools = tools;
        run.context = request_context(&input);
        run.deadline = context.deadline;
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: false,
        };
        let mut stream = self.chat.post_stream(run, options).await?;
        // Refused before anything happened (a session of another user): its status, which
        // `HttpAgent` reports as the run's failure.
        if let Some(failure) = early_failure(&mut stream).await {
            return Ok(SurfaceReply::Json(failure_response(&failure)));
        }
        let encoder = AgUiEncoder::new(&thread_id, &run_id);
        Ok(SurfaceReply::Events(SseBody::encoded(
            stream,
            context.heartbeat,
            encoder,
        )))
    }
}

impl Surface for AgUi {
    fn name(&self) -> &'static str {
        "agui"
    }

    fn routes(&self) -> Vec<(Option<Method>, &'static str)> {
        vec![
            (Some(Method::POST), "/agui"),
            (Some(Method::POST), "/agui/{agent}"),
        ]
    }

    fn handle<'a>(&'a self, request: Request, context: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move { self.run(&request, context).await })
    }
}

/// The front-end tools of a `RunAgentInput` (`[{name, description, parameters}]`).
fn client_tools(tools: Option<&Value>) -> Result<Vec<Value>, ApiError> {
    let Some(tools) = tools.filter(|t| !t.is_null()) else {
        return Ok(Vec::new());
    };
    let Value::Array(tools) = tools else {
        return Err(ApiError::bad_request(
            "tools must be an array of {name, description, parameters}",
        ));
    };
    let mut seen: Vec<&str> = Vec::new();
    tools
        .iter()
        .enumerate()
        .map(|(i, tool)| {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or_default();
            let valid = !name.is_empty()
                && name.len() <= 64
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !valid {
                return Err(ApiError::bad_request(format!(
                    "tools[{i}].name must be 1–64 characters of letters, digits, _ and -"
                )));
            }
            if seen.contains(&name) {
                return Err(ApiError::bad_request(format!(
                    "tools[{i}].name {name:?} is given twice: tool names must be unique"
                )));
            }
            seen.push(name);
            let mut spec = json!({
                "name": name,
                "description": tool.get("description").and_then(Value::as_str).unwrap_or_default(),
            });
            // Model APIs take a JSON Schema of an object (the arguments) or nothing.
            match tool.get("parameters") {
                None | Some(Value::Null) => {}
                Some(parameters)
                    if parameters.is_object()
                        && parameters
                            .get("type")
                            .is_none_or(|t| t == "object") =>
                {
                    spec["parameters"] = parameters.clone();
                }
                Some(_) => {
                    return Err(ApiError::bad_request(format!(
                        "tools[{i}].parameters must be a JSON Schema of an object ({{\"type\": \"object\", \"properties\": …}}) or absent"
                    )));
                }
            }
            Ok(spec)
        })
        .collect()
}

/// The text of an AG-UI message's content: text, or its text parts joined.
fn text_of(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .filter(|p| p["type"] == "text")
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The prompt (the last user message's text; empty when the run continues after front-end
/// tool results) and the history before it, from `messages`. Calls of the agents' own tools
/// (which the client saw as events) are left out of the history, like handoffs in a stored
/// session; calls of the front-end tools `client_tools` and their results are kept.
fn conversation(
    messages: Option<&Value>,
    client_tools: &[&str],
) -> Result<(String, Vec<Value>), ApiError> {
    let Some(Value::Array(messages)) = messages else {
        return Err(ApiError::bad_request(
            "messages is required: the conversation, ending with the user's message",
        ));
    };
    let mut history = Vec::with_capacity(messages.len());
    let mut kept_calls: Vec<String> = Vec::new();
    for (i, message) in messages.iter().enumerate() {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("messages[{i}].role is required")))?;
        let text = text_of(message.get("content"));
        match role {
            "user" => history.push(json!({"role": "user", "content": text})),
            "system" | "developer" => history.push(json!({"role": "system", "content": text})),
            "assistant" => {
                let calls: Vec<Value> = message
                    .get("toolCalls")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter(|c| {
                        c["function"]["name"]
                            .as_str()
                            .is_some_and(|n| client_tools.contains(&n))
                    })
                    .filter_map(|c| {
                        let id = c["id"].as_str()?;
                        kept_calls.push(id.to_owned());
                        Some(json!({"id": id, "type": "function", "function": {
                            "name": c["function"]["name"],
                            "arguments": c["function"]["arguments"].as_str().unwrap_or("{}"),
                        }}))
                    })
                    .collect();
                let mut item = json!({"role": "assistant", "content": text});
                if !calls.is_empty() {
                    item["tool_calls"] = Value::Array(calls);
                } else if text.trim().is_empty() {
                    continue;
                }
                history.push(item);
            }
            "tool" => {
                let call = message
                    .get("toolCallId")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                if kept_calls.iter().any(|c| c == call) {
                    let mut content = text;
                    if let Some(error) = message.get("error").and_then(Value::as_str) {
                        content = json!({"error": error}).to_string();
                    }
                    history.push(json!({"role": "tool", "tool_call_id": call, "content": content}));
                }
            }
            // Activity and reasoning messages are the client's display, not conversation.
            _ => {}
        }
    }
    match history.last() {
        Some(last) if last["role"] == "user" => {
            let prompt = last["content"].as_str().unwrap_or_default().to_owned();
            if prompt.trim().is_empty() {
                return Err(ApiError::bad_request("the last user message has no text"));
            }
            history.pop();
            Ok((prompt, history))
        }
        Some(last) if last["role"] == "tool" => Ok((String::new(), history)),
        _ => Err(ApiError::bad_request(
            "messages must end with the user's message (or the results of front-end tool calls)",
        )),
    }
}

/// What of the input reaches the agent as request context: `context` and a non-empty `state`.
fn request_context(input: &Map<String, Value>) -> Map<String, Value> {
    let mut context = Map::new();
    if let Some(items) = input
        .get("context")
        .and_then(Value::as_array)
        .filter(|c| !c.is_empty())
    {
        context.insert("context".into(), Value::Array(items.clone()));
    }
    if let Some(state) = input
        .get("state")
        .filter(|s| s.as_object().is_some_and(|o| !o.is_empty()))
    {
        context.insert("state".into(), state.clone());
    }
    context
}

/// Run events as AG-UI events (see the module documentation).
pub struct AgUiEncoder {
    thread_id: String,
    run_id: String,
    started: bool,
    /// The agent whose step is open.
    step: Option<String>,
    /// The open text message.
    message: Option<String>,
    /// The last text message (the parent of the tool calls that follow it).
    last_message: Option<String>,
    messages: u32,
    /// Text sent since the last agent or tool event (to complete an answer from `done`).
    text: String,
    /// After a retry marker: the new attempt's text so far.
    attempt: Option<String>,
    /// An `error` held back until it is known not to be followed by a retry.
    failed: Option<Value>,
    ended: bool,
}

impl AgUiEncoder {
    /// An encoder for run `run_id` of thread `thread_id`.
    pub fn new(thread_id: &str, run_id: &str) -> Self {
        Self {
            thread_id: thread_id.to_owned(),
            run_id: run_id.to_owned(),
            started: false,
            step: None,
            message: None,
            last_message: None,
            messages: 0,
            text: String::new(),
            attempt: None,
            failed: None,
            ended: false,
        }
    }

    fn close_message(&mut self, out: &mut String) {
        if let Some(id) = self.message.take() {
            frame(out, &json!({"type": "TEXT_MESSAGE_END", "messageId": id}));
        }
    }

    fn close_step(&mut self, out: &mut String) {
        self.close_message(out);
        if let Some(step) = self.step.take() {
            frame(out, &json!({"type": "STEP_FINISHED", "stepName": step}));
        }
    }

    fn open_step(&mut self, agent: &str, out: &mut String) {
        frame(out, &json!({"type": "STEP_STARTED", "stepName": agent}));
        self.step = Some(agent.to_owned());
    }

    fn write_text(&mut self, delta: &str, out: &mut String) {
        if delta.is_empty() {
            return;
        }
        let id = match &self.message {
            Some(id) => id.clone(),
            None => {
                self.messages += 1;
                let id = format!("{}-m{}", self.run_id, self.messages);
                let mut start =
                    json!({"type": "TEXT_MESSAGE_START", "messageId": id, "role": "assistant"});
                if let Some(agent) = &self.step {
                    start["name"] = json!(agent);
                }
                frame(out, &start);
                self.message = Some(id.clone());
                self.last_message = Some(id.clone());
                id
            }
        };
        self.text.push_str(delta);
        frame(
            out,
            &json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": id, "delta": delta}),
        );
    }

    fn done(&mut self, answer: &Value, out: &mut String) {
        let result = answer["result"].as_str().unwrap_or_default();
        let rest = match result.strip_prefix(self.text.as_str()) {
            Some(rest) => rest.to_owned(),
            None if self.text.is_empty() => result.to_owned(),
            None => format!("\n\n{result}"),
        };
        self.write_text(&rest, out);
        self.close_step(out);
        let pending: Vec<&str> = answer["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str())
            .collect();
        let mut outcome = json!({"type": "success"});
        if !pending.is_empty() {
            outcome["pendingToolCallIds"] = json!(pending);
        }
        let mut finished = json!({
            "type": "RUN_FINISHED",
            "threadId": self.thread_id,
            "runId": self.run_id,
            "result": answer,
            "outcome": outcome,
        });
        if let Some(usage) = answer.get("usage").filter(|u| u.is_object()) {
            finished["usage"] = json!([{
                "inputTokens": usage["prompt_tokens"].as_u64().unwrap_or(0),
                "outputTokens": usage["completion_tokens"].as_u64().unwrap_or(0),
                "totalTokens": usage["total_tokens"].as_u64().unwrap_or(0),
            }]);
        }
        frame(out, &finished);
        self.ended = true;
    }

    fn error(&mut self, data: &Value, out: &mut String) {
        let message = data["error"].as_str().unwrap_or("the run failed");
        let code = data["status"].as_u64().unwrap_or(500).to_string();
        frame(
            out,
            &json!({"type": "RUN_ERROR", "message": message, "code": code}),
        );
        self.ended = true;
    }
}

impl EventEncoder for AgUiEncoder {
    fn encode(&mut self, _id: Option<u64>, event: &RunEvent) -> String {
        let mut out = String::new();
        if self.ended {
            return out;
        }
        if !self.started {
            self.started = true;
            frame(
                &mut out,
                &json!({"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}),
            );
        }
        // An error followed by anything but a retry marker was the run's end.
        if !matches!(event, RunEvent::Retry { .. })
            && let Some(failed) = self.failed.take()
        {
            self.error(&failed, &mut out);
            return out;
        }
        match event {
            RunEvent::Agent { agent } => {
                if self.step.as_deref() != Some(agent.as_str()) {
                    let from = self.step.clone();
                    self.close_step(&mut out);
                    if let Some(from) = from {
                        frame(
                            &mut out,
                            &json!({"type": "CUSTOM", "name": "handoff", "value": {"from": from, "to": agent}}),
                        );
                    }
                    self.open_step(agent, &mut out);
                }
                self.text.clear();
            }
            RunEvent::Retry { agent } => {
                // The runner started over: the client keeps what it has, and the new attempt's
                // text continues the open message where it begins the same way.
                self.failed = None;
                frame(
                    &mut out,
                    &json!({"type": "CUSTOM", "name": "retry", "value": {"agent": agent}}),
                );
                if self.step.as_deref() != Some(agent.as_str()) {
                    self.close_step(&mut out);
                    self.open_step(agent, &mut out);
                    self.text.clear();
                }
                self.attempt = Some(String::new());
            }
            RunEvent::Delta { text } => match &mut self.attempt {
                None => self.write_text(text, &mut out),
                // A retried attempt: its text continues what the client has when it begins the
                // same way (the answer in `done` completes it otherwise).
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
                self.close_message(&mut out);
                let arguments = match arguments {
                    Value::String(text) => text.clone(),
                    other => other.to_string(),
                };
                let mut start =
                    json!({"type": "TOOL_CALL_START", "toolCallId": id, "toolCallName": name});
                if let Some(parent) = &self.last_message {
                    start["parentMessageId"] = json!(parent);
                }
                frame(&mut out, &start);
                frame(
                    &mut out,
                    &json!({"type": "TOOL_CALL_ARGS", "toolCallId": id, "delta": arguments}),
                );
                frame(
                    &mut out,
                    &json!({"type": "TOOL_CALL_END", "toolCallId": id}),
                );
                self.text.clear();
                self.attempt = None;
            }
            RunEvent::ToolResult { id, ok, .. } => {
                frame(
                    &mut out,
                    &json!({
                        "type": "TOOL_CALL_RESULT",
                        "messageId": format!("{id}-result"),
                        "toolCallId": id,
                        "content": json!({"ok": ok}).to_string(),
                        "role": "tool",
                    }),
                );
                self.text.clear();
            }
            // A decision on a paused call: the resumed run's events follow.
            RunEvent::Approval(_) => {}
            RunEvent::Done(answer) => self.done(answer, &mut out),
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
            self.started = true;
            frame(
                &mut out,
                &json!({"type": "RUN_STARTED", "threadId": self.thread_id, "runId": self.run_id}),
            );
        }
        let failed = self.failed.take().unwrap_or_else(
            || json!({"status": 504, "error": "the stream ended before the answer"}),
        );
        self.error(&failed, &mut out);
        out
    }
}

#[cfg(test)]
mod tests;
