//! The agents as an OpenAI-compatible API: Chat Completions and Models under
//! `/{API_BASE_PATH}/{API_VERSION}/openai/v1`, so an OpenAI client (the `openai` SDKs, the AI
//! SDK's OpenAI-compatible provider, Open WebUI, LibreChat) configured with
//! `base_url = "<API URL>/api/v1/openai/v1"` talks to them unchanged.
//!
//! - `GET …/models`: `{"object": "list", "data": [{"id", "object": "model", "created",
//!   "owned_by"}]}`, one model per agent, the default agent first; `GET …/models/{id}` one.
//! - `POST …/chat/completions`: runs the agent `model` names (`default`: the default agent).
//!   The request's `messages` are the conversation: the last one (a user message) is the
//!   prompt, the earlier ones its history, and nothing is kept server-side — unless the client
//!   names a session with `X-Session-Id`, when the session store holds the conversation and
//!   only the last message is read. The answer is a `chat.completion`, or with `"stream": true`
//!   `chat.completion.chunk` server-sent events ending in `data: [DONE]` (and a usage chunk
//!   first with `stream_options.include_usage`). Our own tool calls and handoffs stay inside
//!   the run: they are never sent as `tool_calls`, which the client would try to run.
//! - Errors: OpenAI's shape `{"error": {"message", "type", "param", "code"}}` with the status
//!   the SDKs map to their exception classes; a failure after a stream started is one
//!   `data: {"error": …}` event.
//!
//! Formats: <https://platform.openai.com/docs/api-reference/chat> and `.../models`.

use crate::response::ErrorResponse;
use crate::sse::{EventEncoder, SseBody, data_event as data};
use crate::surface::{Surface, SurfaceContext, SurfaceFuture, SurfaceReply, early_failure};
use ak_core::error::ApiError;
use ak_core::events::RunEvent;
use ak_core::request::{RunRequest, check_id};
use ak_runtime::{ChatService, StreamOptions};
use http::{HeaderValue, Method, StatusCode};
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};

/// The path of the OpenAI-compatible API under the base path; clients take
/// `<API URL><base path>/openai/v1` as their `base_url`.
pub const PREFIX: &str = "/openai/v1";

/// The model name that stands for the default agent (unless an agent has that name).
pub const DEFAULT_MODEL: &str = "default";

/// Chat Completions parameters we do not honour and accept without effect: the agent's own
/// model settings decide. Listed in the docs; anything not listed here or refused is ignored
/// too, as OpenAI-compatible servers do.
pub const IGNORED_PARAMETERS: &[&str] = &[
    "temperature",
    "top_p",
    "max_tokens",
    "max_completion_tokens",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "user",
    "metadata",
    "store",
    "parallel_tool_calls",
    "reasoning_effort",
    "verbosity",
    "service_tier",
    "prompt_cache_key",
    "safety_identifier",
    "web_search_options",
    "tools (with tool_choice absent, \"auto\" or \"none\")",
];

/// The OpenAI-compatible surface.
pub struct ChatCompletions {
    chat: ChatService,
    /// Agent names, the default first.
    models: Vec<String>,
    /// When the models were listed (their `created`, seconds since the epoch).
    created: u64,
}

impl ChatCompletions {
    /// The surface for the agents `settings` defines, answering through `chat`.
    pub fn new(chat: ChatService, settings: &ak_core::Settings) -> Self {
        let default = settings.agents.default_agent().unwrap_or("assistant");
        let mut models = vec![default.to_owned()];
        models.extend(
            settings
                .agents
                .definitions
                .iter()
                .map(|d| d.name.clone())
                .filter(|name| name != default),
        );
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Self {
            chat,
            models,
            created,
        }
    }

    fn model_entry(&self, id: &str) -> Value {
        json!({"id": id, "object": "model", "created": self.created, "owned_by": "agent-kernel"})
    }

    /// The agent a `model` names: an agent, or [`DEFAULT_MODEL`] for the default one.
    fn agent_of(&self, model: &str) -> Option<&str> {
        if let Some(agent) = self.models.iter().find(|m| *m == model) {
            return Some(agent);
        }
        (model == DEFAULT_MODEL).then(|| self.models[0].as_str())
    }

    fn unknown_model(&self, model: &str) -> OpenAiError {
        OpenAiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "The model `{model}` does not exist; the models are the agents: {} (or `{DEFAULT_MODEL}`)",
                self.models.join(", ")
            ),
        )
        .param("model")
        .code("model_not_found")
    }

    async fn completions(
        &self,
        request: &Request,
        context: SurfaceContext,
    ) -> Result<SurfaceReply, OpenAiError> {
        let body: Value = serde_json::from_slice(request.body().as_ref()).map_err(|e| {
            OpenAiError::bad_request(format!("the request body is not valid JSON: {e}"))
        })?;
        let Value::Object(body) = body else {
            return Err(OpenAiError::bad_request(
                "the request body must be a JSON object",
            ));
        };
        let model = match body.get("model") {
            Some(Value::String(model)) if !model.is_empty() => model.clone(),
            None | Some(Value::Null) => {
                return Err(OpenAiError::bad_request(
                    "model is required: the name of an agent (GET …/models lists them)",
                )
                .param("model"));
            }
            Some(_) => {
                return Err(OpenAiError::bad_request(
                    "model must be text: the name of an agent (GET …/models lists them)",
                )
                .param("model"));
            }
        };
        let agent = self
            .agent_of(&model)
            .ok_or_else(|| self.unknown_model(&model))?
            .to_owned();
        let parsed = parse_request(&body, request.headers())?;
        let mut run = json!({"prompt": parsed.prompt, "agent": agent});
        if let Some(session) = &parsed.session_id {
            run["session_id"] = json!(session);
        } else {
            run["history"] = Value::Array(parsed.history);
        }
        if let Some(id) = &parsed.request_id {
            run["request_id"] = json!(id);
        }
        let mut run = RunRequest::from_value(run, &context.caller).map_err(OpenAiError::from)?;
        run.deadline = context.deadline;
        let request_id = run.request_id.clone();
        let session = parsed.session_id.as_deref();
        let streamed = parsed.stream && !context.json_only;
        // One JSON answer where the mode gives one (direct, rest_sync): the model is asked
        // without streaming, so a cut-off reply is retried. rest_async and streams relay the
        // run's events.
        if !streamed && self.chat.mode() != ak_core::config::ExecutionMode::RestAsync {
            let last = match self.chat.post(run).await {
                Ok(answer) => answer.final_event(&request_id),
                Err(error) => RunEvent::error(&error, &request_id),
            };
            return Ok(SurfaceReply::Http(completion(
                Some(last),
                &request_id,
                &agent,
                session,
            )));
        }
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: false,
        };
        let mut stream = self
            .chat
            .post_stream(run, options)
            .await
            .map_err(|e| OpenAiError::from(e).request_id(&request_id))?
            .with_ids(&request_id, session);
        if streamed {
            // Refused before anything was written (a session of another user): its status.
            if let Some(failure) = early_failure(&mut stream).await {
                return Err(OpenAiError::from_event(&failure).request_id(&request_id));
            }
            let encoder = ChunkEncoder::new(&request_id, &agent, parsed.include_usage);
            return Ok(SurfaceReply::Events(
                SseBody::encoded(stream, context.heartbeat, encoder).with_header("x-agent", &agent),
            ));
        }
        let last = stream
            .collect_events()
            .await
            .into_iter()
            .map(|(_, event)| event)
            .rfind(RunEvent::is_last);
        Ok(SurfaceReply::Http(completion(
            last,
            &request_id,
            &agent,
            session,
        )))
    }
}

impl Surface for ChatCompletions {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn routes(&self) -> Vec<(Option<Method>, &'static str)> {
        vec![
            (Some(Method::GET), "/openai/v1/models"),
            (Some(Method::GET), "/openai/v1/models/{model}"),
            (Some(Method::POST), "/openai/v1/chat/completions"),
        ]
    }

    fn handle<'a>(&'a self, request: Request, context: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move {
            let path = request.uri().path().trim_end_matches('/').to_owned();
            if path.ends_with("/chat/completions") {
                return Ok(self
                    .completions(&request, context)
                    .await
                    .unwrap_or_else(|e| SurfaceReply::Http(e.into_response())));
            }
            Ok(SurfaceReply::Http(match context.params.first() {
                None => json_response(
                    StatusCode::OK,
                    &json!({
                        "object": "list",
                        "data": self.models.iter().map(|m| self.model_entry(m)).collect::<Vec<_>>(),
                    }),
                ),
                Some(model) => match self.agent_of(model) {
                    Some(_) => json_response(StatusCode::OK, &self.model_entry(model)),
                    None => self.unknown_model(model).into_response(),
                },
            }))
        })
    }

    fn error_response(&self, error: &ApiError) -> Option<http::Response<Body>> {
        let mut response = OpenAiError::from(error).into_response();
        // The headers the status calls for (`Allow` on a 405, `Retry-After`).
        for (name, value) in &error.to_response().headers {
            response
                .headers_mut()
                .entry(name)
                .or_insert_with(|| value.clone());
        }
        Some(response)
    }
}

/// What a Chat Completions request asks for, in our terms.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    /// The last user message's text.
    prompt: String,
    /// The messages before it, as `history` messages.
    history: Vec<Value>,
    /// A session named by `X-Session-Id` (the history is then the session's).
    session_id: Option<String>,
    /// An idempotency key (`Idempotency-Key`, else `X-Request-Id`).
    request_id: Option<String>,
    stream: bool,
    include_usage: bool,
}

/// Reads a Chat Completions body (and the headers that name a session or an idempotency key),
/// refusing what we cannot honour with the parameter it is about.
fn parse_request(
    body: &Map<String, Value>,
    headers: &http::HeaderMap,
) -> Result<Parsed, OpenAiError> {
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(OpenAiError::bad_request("stream must be true or false").param("stream"));
        }
    };
    let include_usage = match body.get("stream_options") {
        None | Some(Value::Null) => false,
        Some(Value::Object(options)) => match options.get("include_usage") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(OpenAiError::bad_request(
                    "stream_options.include_usage must be true or false",
                )
                .param("stream_options"));
            }
        },
        Some(_) => {
            return Err(OpenAiError::bad_request("stream_options must be an object")
                .param("stream_options"));
        }
    };
    match body.get("n") {
        None | Some(Value::Null) => {}
        Some(n) if n.as_f64() == Some(1.0) => {}
        Some(_) => {
            return Err(OpenAiError::bad_request(
                "n must be the number 1: an agent writes one answer",
            )
            .param("n"));
        }
    }
    match body.get("logprobs") {
        None | Some(Value::Null | Value::Bool(false)) => {}
        Some(Value::Bool(true)) => {}
        Some(_) => {
            return Err(
                OpenAiError::bad_request("logprobs must be true or false").param("logprobs")
            );
        }
    }
    if body.get("logprobs").and_then(Value::as_bool) == Some(true) {
        return Err(
            OpenAiError::bad_request("logprobs are not available from an agent").param("logprobs"),
        );
    }
    let modalities = match body.get("modalities") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) if items.iter().all(Value::is_string) => items.clone(),
        Some(_) => {
            return Err(OpenAiError::bad_request(
                "modalities must be an array of text, like [\"text\"]",
            )
            .param("modalities"));
        }
    };
    let audio =
        body.get("audio").is_some_and(|a| !a.is_null()) || modalities.iter().any(|x| x != "text");
    if audio {
        return Err(OpenAiError::bad_request(
            "only text answers are available (modalities: [\"text\"])",
        )
        .param("modalities"));
    }
    if let Some(format) = body.get("response_format").filter(|f| !f.is_null()) {
        match format.get("type").and_then(Value::as_str) {
            Some("text") => {}
            Some(kind) => {
                return Err(OpenAiError::bad_request(format!(
                    "response_format {kind:?} is not available: an agent answers in text (its instructions can ask for JSON)"
                ))
                .param("response_format"));
            }
            None => {
                return Err(OpenAiError::bad_request(
                    "response_format must be an object like {\"type\": \"text\"} (the only type an agent answers in)",
                )
                .param("response_format"));
            }
        }
    }
    // Client-side tools: the agent has its own. Tools the model may use (`auto`) are accepted
    // and not offered (Open WebUI sends its built-in ones with every chat); a request that
    // requires one cannot be answered.
    for param in ["tool_choice", "function_call"] {
        match body.get(param) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if matches!(s.as_str(), "auto" | "none") => {}
            Some(Value::String(s)) if !matches!(s.as_str(), "required" | "any") => {
                return Err(OpenAiError::bad_request(format!(
                    "{param} must be \"auto\", \"none\", \"required\" or a named function, not {s:?}"
                ))
                .param(param));
            }
            Some(_) => {
                return Err(OpenAiError::bad_request(format!(
                    "{param} cannot require a client-side tool: the agent answers with its own tools, and client tools are not offered to it"
                ))
                .param(param));
            }
        }
    }
    let Some(Value::Array(messages)) = body.get("messages") else {
        return Err(OpenAiError::bad_request(
            "messages is required: an array of messages ending with the user's",
        )
        .param("messages"));
    };
    let Some((last, earlier)) = messages.split_last() else {
        return Err(OpenAiError::bad_request("messages must not be empty").param("messages"));
    };
    let last_index = messages.len() - 1;
    if role_of(last, last_index)? != "user" {
        return Err(OpenAiError::bad_request(format!(
            "messages[{last_index}] must be the user's message: the last message is the prompt"
        ))
        .param("messages"));
    }
    let prompt = text_of(last, last_index, true)?;
    if prompt.trim().is_empty() {
        return Err(OpenAiError::bad_request(format!(
            "messages[{last_index}].content must not be empty"
        ))
        .param("messages"));
    }
    let mut history = Vec::with_capacity(earlier.len());
    for (i, message) in earlier.iter().enumerate() {
        let role = role_of(message, i)?;
        let text = text_of(message, i, false)?;
        let role = match role {
            "system" | "developer" => "system",
            "user" => "user",
            "assistant" => "assistant",
            // Tool calls and results of the client's own tools (from another backend) are
            // not conversation the agent can continue.
            _ => continue,
        };
        if !text.trim().is_empty() {
            history.push(json!({"role": role, "content": text}));
        }
    }
    let header = |name: &str| -> Result<Option<String>, OpenAiError> {
        match headers.get(name).map(HeaderValue::to_str) {
            None => Ok(None),
            Some(Ok(v)) if v.trim().is_empty() => Ok(None),
            Some(Ok(v)) => {
                let v = v.trim().to_owned();
                check_id(name, &v).map_err(OpenAiError::from)?;
                Ok(Some(v))
            }
            Some(Err(_)) => Err(OpenAiError::bad_request(format!("{name} must be text"))),
        }
    };
    let session_id = header("x-session-id")?;
    // Only `Idempotency-Key`: proxies pass an `X-Request-Id` of their own along, often on
    // several calls, which would make distinct requests repeats of one.
    let request_id = header("idempotency-key")?;
    Ok(Parsed {
        prompt,
        history,
        session_id,
        request_id,
        stream,
        include_usage,
    })
}

/// The roles a Chat Completions message may have.
const ROLES: &[&str] = &[
    "system",
    "developer",
    "user",
    "assistant",
    "tool",
    "function",
];

fn role_of(message: &Value, index: usize) -> Result<&str, OpenAiError> {
    message
        .get("role")
        .and_then(Value::as_str)
        .filter(|role| ROLES.contains(role))
        .ok_or_else(|| {
            OpenAiError::bad_request(format!(
                "messages[{index}].role must be one of {}",
                ROLES.join(", ")
            ))
            .param("messages")
        })
}

/// The text of a message: its content as text, or its text parts joined. Other parts (images,
/// audio, files) are refused in the prompt and left out of earlier messages.
fn text_of(message: &Value, index: usize, prompt: bool) -> Result<String, OpenAiError> {
    match message.get("content") {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = Vec::new();
            for (j, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => match part.get("text").and_then(Value::as_str) {
                        Some(piece) => text.push(piece),
                        None => {
                            return Err(OpenAiError::bad_request(format!(
                                "messages[{index}].content[{j}].text must be text"
                            ))
                            .param("messages"));
                        }
                    },
                    None => {
                        return Err(OpenAiError::bad_request(format!(
                            "messages[{index}].content[{j}] must be a content part with a type, like {{\"type\": \"text\", \"text\": \"Hello\"}}"
                        ))
                        .param("messages"));
                    }
                    Some(other) if prompt => {
                        return Err(OpenAiError::bad_request(format!(
                            "messages[{index}].content[{j}] is a part of type {other}; the agents read text parts only"
                        ))
                        .param("messages"));
                    }
                    _ => {}
                }
            }
            Ok(text.join("\n"))
        }
        Some(_) => Err(OpenAiError::bad_request(format!(
            "messages[{index}].content must be text or an array of content parts"
        ))
        .param("messages")),
    }
}

/// A non-streamed answer: the run's last event (`done` or `error`) as a `chat.completion`, or
/// its error.
fn completion(
    last: Option<RunEvent>,
    request_id: &str,
    agent: &str,
    session: Option<&str>,
) -> http::Response<Body> {
    match last {
        Some(RunEvent::Done(answer)) => {
            let agent = answer["agent"].as_str().unwrap_or(agent).to_owned();
            let body = json!({
                "id": completion_id(request_id),
                "object": "chat.completion",
                "created": now(),
                "model": agent,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": answer["result"].as_str().unwrap_or_default()},
                    "finish_reason": finish_reason(&answer),
                    "logprobs": null,
                }],
                "usage": usage(&answer),
            });
            let mut response = json_response(StatusCode::OK, &body);
            insert_header(&mut response, "x-request-id", request_id);
            insert_header(&mut response, "x-agent", &agent);
            if let Some(session) = session {
                insert_header(&mut response, "x-session-id", session);
            }
            response
        }
        Some(RunEvent::Error(data)) => OpenAiError::from_event(&data)
            .request_id(request_id)
            .into_response(),
        _ => OpenAiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "the run ended without an answer",
        )
        .request_id(request_id)
        .into_response(),
    }
}

fn completion_id(request_id: &str) -> String {
    format!("chatcmpl-{request_id}")
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn finish_reason(answer: &Value) -> &'static str {
    if answer["truncated"] == true {
        "length"
    } else {
        "stop"
    }
}

fn usage(answer: &Value) -> Value {
    let count = |name: &str| answer["usage"][name].as_u64().unwrap_or(0);
    json!({
        "prompt_tokens": count("prompt_tokens"),
        "completion_tokens": count("completion_tokens"),
        "total_tokens": count("total_tokens"),
    })
}

/// Run events as `chat.completion.chunk` server-sent events: a first chunk with the role, one
/// per piece of text, one with the finish reason, a usage chunk when asked for, `[DONE]`.
/// A run that starts over (a retried attempt, relayed from the queues) continues the text
/// where the client has it when the new text begins the same way; otherwise its answer
/// follows what was sent after a blank line.
pub struct ChunkEncoder {
    id: String,
    created: u64,
    model: String,
    include_usage: bool,
    started: bool,
    /// The text the client has of the current segment (since the last tool call or handoff:
    /// the answer in `done` is the last segment's).
    sent: String,
    /// Whether any text was sent; the next segment is then set apart by a blank line.
    wrote: bool,
    /// A segment ended after text: the next text starts with a blank line.
    separate: bool,
    /// After a retry marker: the new attempt's text so far.
    attempt: Option<String>,
    /// An `error` held back until it is known not to be followed by a retry.
    failed: Option<Value>,
    ended: bool,
}

impl ChunkEncoder {
    /// An encoder for the answer of `request_id` by `model` (the agent asked for).
    pub fn new(request_id: &str, model: &str, include_usage: bool) -> Self {
        Self {
            id: completion_id(request_id),
            created: now(),
            model: model.to_owned(),
            include_usage,
            started: false,
            sent: String::new(),
            wrote: false,
            separate: false,
            attempt: None,
            failed: None,
            ended: false,
        }
    }

    fn chunk(&self, delta: Value, finish: Option<&str>) -> String {
        data(&json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}],
        }))
    }

    /// The role chunk once, then `text` (if any) as a content chunk.
    fn text(&mut self, text: &str) -> String {
        let mut out = String::new();
        if !self.started {
            self.started = true;
            out.push_str(&self.chunk(json!({"role": "assistant", "content": ""}), None));
        }
        if !text.is_empty() {
            self.sent.push_str(text);
            let content = if std::mem::take(&mut self.separate) {
                format!("\n\n{text}")
            } else {
                text.to_owned()
            };
            self.wrote = true;
            out.push_str(&self.chunk(json!({"content": content}), None));
        }
        out
    }

    /// A tool call or handoff ends the text segment.
    fn boundary(&mut self) {
        if !self.sent.is_empty() || self.wrote {
            self.separate = self.wrote;
        }
        self.sent.clear();
        self.attempt = None;
    }

    fn done(&mut self, answer: &Value) -> String {
        self.ended = true;
        let result = answer["result"].as_str().unwrap_or_default();
        let rest = match result.strip_prefix(self.sent.as_str()) {
            Some(rest) => rest.to_owned(),
            None => {
                self.separate = true;
                result.to_owned()
            }
        };
        let mut out = self.text(&rest);
        if let Some(agent) = answer["agent"].as_str() {
            agent.clone_into(&mut self.model);
        }
        out.push_str(&self.chunk(json!({}), Some(finish_reason(answer))));
        if self.include_usage {
            out.push_str(&data(&json!({
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": self.model,
                "choices": [],
                "usage": usage(answer),
            })));
        }
        out.push_str("data: [DONE]\n\n");
        out
    }

    fn error(&mut self, data_: &Value) -> String {
        self.ended = true;
        data(&OpenAiError::from_event(data_).body())
    }
}

impl EventEncoder for ChunkEncoder {
    fn encode(&mut self, _id: Option<u64>, event: &RunEvent) -> String {
        if self.ended {
            return String::new();
        }
        // An error followed by something else was an attempt the runner started over.
        if !matches!(event, RunEvent::Retry { .. })
            && let Some(failed) = self.failed.take()
        {
            return self.error(&failed);
        }
        match event {
            RunEvent::Agent { agent } => {
                if *agent != self.model {
                    self.boundary();
                }
                agent.clone_into(&mut self.model);
                self.text("")
            }
            RunEvent::Retry { agent } => {
                self.failed = None;
                agent.clone_into(&mut self.model);
                self.attempt = Some(String::new());
                String::new()
            }
            RunEvent::Delta { text } => match &mut self.attempt {
                None => self.text(text),
                Some(attempt) => {
                    attempt.push_str(text);
                    let attempt = attempt.clone();
                    match attempt.strip_prefix(self.sent.as_str()) {
                        Some(rest) if !rest.is_empty() => self.text(rest),
                        _ => String::new(),
                    }
                }
            },
            RunEvent::ToolCall { .. } | RunEvent::ToolResult { .. } => {
                self.boundary();
                String::new()
            }
            // A decision on a paused call: the resumed run's events follow.
            RunEvent::Approval(_) => String::new(),
            RunEvent::Done(answer) => self.done(answer),
            RunEvent::Error(data_) => {
                self.failed = Some(data_.clone());
                String::new()
            }
        }
    }

    fn finish(&mut self, _last: Option<&RunEvent>) -> String {
        if let Some(failed) = self.failed.take() {
            return self.error(&failed);
        }
        if self.ended {
            return String::new();
        }
        self.error(&json!({"status": 504, "error": "the stream ended before the answer"}))
    }
}

/// An error in OpenAI's shape.
#[derive(Debug, Clone)]
pub struct OpenAiError {
    status: StatusCode,
    message: String,
    param: Option<&'static str>,
    code: Option<String>,
    request_id: Option<String>,
}

impl OpenAiError {
    /// An error with this status and message.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            request_id: None,
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn param(mut self, param: &'static str) -> Self {
        self.param = Some(param);
        self
    }

    fn code(mut self, code: &str) -> Self {
        self.code = Some(code.to_owned());
        self
    }

    fn request_id(mut self, id: &str) -> Self {
        self.request_id.get_or_insert_with(|| id.to_owned());
        self
    }

    /// An `error` event's data (`{"status", "error", "request_id"}`) as an OpenAI error.
    fn from_event(data: &Value) -> Self {
        let status = data["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let message = data["error"].as_str().unwrap_or("the run failed");
        let mut error = Self::new(status, message);
        error.request_id = data["request_id"].as_str().map(str::to_owned);
        if data["reason"] == "content_filter" {
            error.code = Some("content_filter".to_owned());
        }
        error
    }

    /// OpenAI's `type` for the status.
    fn kind(&self) -> &'static str {
        match self.status.as_u16() {
            401 => "authentication_error",
            403 => "permission_error",
            429 => "rate_limit_error",
            s if s >= 500 => "server_error",
            _ => "invalid_request_error",
        }
    }

    /// The body: `{"error": {"message", "type", "param", "code"}}`.
    pub fn body(&self) -> Value {
        let code = self.code.clone().or_else(|| match self.status.as_u16() {
            409 => Some("conflict".to_owned()),
            413 => Some("request_too_large".to_owned()),
            429 => Some("rate_limit_exceeded".to_owned()),
            504 => Some("timeout".to_owned()),
            _ => None,
        });
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": code,
        }})
    }

    /// The HTTP response: the body, `X-Request-Id` when the request has one, `Retry-After`
    /// on 429 and 503, and `X-Should-Retry: false` on a 504 (the run goes on: a retry without
    /// an idempotency key would start a second one).
    pub fn into_response(self) -> http::Response<Body> {
        let mut response = json_response(self.status, &self.body());
        if let Some(id) = &self.request_id {
            insert_header(&mut response, "x-request-id", id);
        }
        if matches!(self.status.as_u16(), 429 | 503) {
            insert_header(
                &mut response,
                "retry-after",
                &crate::response::POLL_RETRY_AFTER_SECS.to_string(),
            );
        }
        if self.status == StatusCode::GATEWAY_TIMEOUT {
            insert_header(&mut response, "x-should-retry", "false");
        }
        response
    }
}

impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        Self::from(&error)
    }
}

impl From<&ApiError> for OpenAiError {
    fn from(error: &ApiError) -> Self {
        let body = error.body();
        let mut out = Self::new(
            error.status(),
            body["error"]
                .as_str()
                .unwrap_or("the request failed")
                .to_owned(),
        );
        out.request_id = body["request_id"].as_str().map(str::to_owned);
        out
    }
}

fn json_response(status: StatusCode, body: &Value) -> http::Response<Body> {
    let mut response = http::Response::new(Body::Text(body.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn insert_header(response: &mut http::Response<Body>, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        response.headers_mut().insert(name, value);
    }
}

#[cfg(test)]
mod tests;
