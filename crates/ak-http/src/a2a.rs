//! The agents as Agent2Agent (A2A 1.0) servers over its JSON-RPC binding: the agent card at
//! `…/a2a/.well-known/agent-card.json` and the JSON-RPC endpoint `POST …/a2a` (the default
//! agent; `…/a2a/{agent}` for one agent, with its own card), under the API's base path.
//!
//! A task is a request: its id is the request id (made from the message's `messageId`, so the
//! same message sent again is the same task and does not run the model again), its
//! `contextId` the session. `SendMessage` answers with the task (blocking by default; with
//! `configuration.returnImmediately` the queue modes answer at once with the task
//! `TASK_STATE_SUBMITTED`, direct mode answers within the call anyway); `SendStreamingMessage`
//! streams the task, its status updates and its `answer` artifact as the text is written;
//! `GetTask` reads it from the response store, `SubscribeToTask` follows its event log from
//! any instance (a snapshot of the task first, then the rest); `CancelTask` stores the task
//! as canceled (see [`ChatService::cancel`]). Another user's task is `TaskNotFoundError`.
//! Errors are JSON-RPC error objects with A2A's codes, answered with HTTP 200 (what the
//! clients read).
//!
//! Format: the A2A specification 1.0 (<https://a2a-protocol.org/v1.0.1/specification/>):
//! ProtoJSON (camelCase members, enum names as strings, wrapped results such as `{"task": …}`).

use crate::sse::{EventEncoder, SseBody};
use crate::surface::{AgentTool, Surface, SurfaceContext, SurfaceFuture, SurfaceReply};
use ak_core::answer::Answer;
use ak_core::error::ApiError;
use ak_core::events::{RunEvent, RunStream};
use ak_core::request::{Caller, RunRequest, check_id};
use ak_core::time::now_rfc3339;
use ak_runtime::{CANCELED, ChatService, Progress, StreamOptions};
use http::{HeaderValue, Method};
use lambda_http::{Body, Request};
use serde_json::{Map, Value, json};

/// The protocol version this server speaks (`A2A-Version`, the card's `protocolVersion`).
pub const PROTOCOL_VERSION: &str = "1.0";

/// The card's path under the endpoint.
const CARD_PATH: &str = "/.well-known/agent-card.json";

/// A2A's error codes (specification §5.4) and JSON-RPC's.
mod code {
    pub const PARSE: i64 = -32700;
    pub const INVALID_REQUEST: i64 = -32600;
    pub const METHOD_NOT_FOUND: i64 = -32601;
    pub const INVALID_PARAMS: i64 = -32602;
    pub const INTERNAL: i64 = -32603;
    pub const TASK_NOT_FOUND: i64 = -32001;
    pub const TASK_NOT_CANCELABLE: i64 = -32002;
    pub const PUSH_NOT_SUPPORTED: i64 = -32003;
    pub const UNSUPPORTED_OPERATION: i64 = -32004;
    pub const VERSION_NOT_SUPPORTED: i64 = -32009;
}

/// The A2A surface.
pub struct A2a {
    chat: ChatService,
    agents: Vec<AgentTool>,
    default_agent: String,
    /// Whether the deployment asks for tokens (the card then names a bearer scheme).
    bearer: bool,
}

/// A JSON-RPC error.
#[derive(Debug)]
struct RpcError {
    code: i64,
    message: String,
}

impl RpcError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    fn task_not_found(id: &str) -> Self {
        Self::new(code::TASK_NOT_FOUND, format!("task {id} was not found"))
    }

    /// A refusal of the API as A2A's error: a request that cannot be run is invalid params, an
    /// outage internal.
    fn from_api(error: &ApiError) -> Self {
        let message = error.body()["error"]
            .as_str()
            .map_or_else(|| error.to_string(), str::to_owned);
        let code = match error.status_code() {
            400 | 403 | 404 | 409 | 413 | 422 => code::INVALID_PARAMS,
            _ => code::INTERNAL,
        };
        Self::new(code, message)
    }
}

fn rpc_result(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

fn rpc_error(id: &Value, error: &RpcError) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": error.code, "message": error.message}})
}

fn json_response(body: &Value) -> http::Response<Body> {
    let mut response = http::Response::new(Body::Text(body.to_string()));
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

impl A2a {
    /// The surface for the agents `settings` defines, answering through `chat`.
    pub fn new(chat: ChatService, settings: &ak_core::Settings) -> Self {
        let bearer = settings.auth.jwt.is_some();
        Self {
            chat,
            agents: AgentTool::from_settings(settings),
            default_agent: settings
                .agents
                .default_agent()
                .unwrap_or("assistant")
                .to_owned(),
            bearer,
        }
    }

    /// The agent a route names (`None`: the default), if it exists.
    fn agent(&self, named: Option<&String>) -> Result<Option<&AgentTool>, ApiError> {
        match named {
            None => Ok(None),
            Some(name) => self
                .agents
                .iter()
                .find(|a| &a.name == name)
                .map(Some)
                .ok_or_else(|| ApiError::RouteNotFound {
                    path: format!("/a2a/{name}"),
                }),
        }
    }

    /// The agent card, with the endpoint's URL as the client reached it (behind a stage or a
    /// custom domain too).
    fn card(&self, request: &Request, agent: Option<&AgentTool>, caller: &Caller) -> Value {
        let path = match request.extensions().get::<crate::event::PublicPath>() {
            Some(public) => public.0.clone(),
            None => request.uri().path().to_owned(),
        };
        let path = path.trim_end_matches('/');
        let endpoint = match path.strip_suffix(CARD_PATH) {
            // The card under the base path itself (where a client that resolves the card
            // relative to an endpoint URL without a trailing slash looks): the default agent's.
            Some(prefix) if agent.is_none() && !prefix.ends_with("/a2a") => format!("{prefix}/a2a"),
            Some(prefix) => prefix.to_owned(),
            None => path.to_owned(),
        };
        let header = |name: &str| {
            request
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(|v| v.split(',').next().unwrap_or(v).trim().to_owned())
        };
        let scheme = header("x-forwarded-proto").unwrap_or_else(|| "http".to_owned());
        let host = header("host").unwrap_or_else(|| "localhost".to_owned());
        let skill = |a: &AgentTool| {
            let mut tags = vec!["agent".to_owned()];
            if a.name == self.default_agent {
                tags.push("default".to_owned());
            }
            json!({"id": a.name, "name": a.name, "description": a.description, "tags": tags})
        };
        let (name, description, skills) = match agent {
            Some(agent) => (
                agent.name.clone(),
                agent.description.clone(),
                vec![skill(agent)],
            ),
            None => (
                self.default_agent.clone(),
                format!(
                    "The agents of this deployment; {} answers first and hands off to the others.",
                    self.default_agent
                ),
                self.agents.iter().map(skill).collect(),
            ),
        };
        let mut card = json!({
            "name": name,
            "description": description,
            "version": env!("CARGO_PKG_VERSION"),
            "supportedInterfaces": [{
                "url": format!("{scheme}://{host}{endpoint}"),
                "protocolBinding": "JSONRPC",
                "protocolVersion": PROTOCOL_VERSION,
            }],
            "capabilities": {"streaming": true, "pushNotifications": false, "extendedAgentCard": false},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": skills,
        });
        if self.bearer || caller.principal().is_some() {
            card["securitySchemes"] = json!({"bearer": {"httpAuthSecurityScheme": {
                "scheme": "Bearer", "bearerFormat": "JWT",
                "description": "A token the deployment's authorizer accepts."
            }}});
            card["securityRequirements"] = json!([{"schemes": {"bearer": {"list": []}}}]);
        }
        card
    }

    async fn rpc(
        &self,
        request: &Request,
        agent: Option<&AgentTool>,
        context: SurfaceContext,
    ) -> SurfaceReply {
        let reply =
            |id: &Value, error: RpcError| SurfaceReply::Http(json_response(&rpc_error(id, &error)));
        // A client that names another major version speaks another protocol.
        if let Some(version) = request
            .headers()
            .get("a2a-version")
            .and_then(|v| v.to_str().ok())
            && !version.trim().is_empty()
            && version.trim().split('.').next() != Some("1")
        {
            return reply(
                &Value::Null,
                RpcError::new(
                    code::VERSION_NOT_SUPPORTED,
                    format!(
                        "A2A version {version} is not supported; this server speaks {PROTOCOL_VERSION}"
                    ),
                ),
            );
        }
        let Ok(envelope) = serde_json::from_slice::<Value>(request.body().as_ref()) else {
            return reply(
                &Value::Null,
                RpcError::new(code::PARSE, "the body is not JSON"),
            );
        };
        let id = envelope.get("id").cloned().unwrap_or(Value::Null);
        let method = envelope.get("method").and_then(Value::as_str);
        let (true, Some(method)) = (envelope.get("jsonrpc") == Some(&json!("2.0")), method) else {
            return reply(
                &id,
                RpcError::new(
                    code::INVALID_REQUEST,
                    "not a JSON-RPC 2.0 request: {\"jsonrpc\": \"2.0\", \"id\", \"method\", \"params\"}",
                ),
            );
        };
        let params = match envelope.get("params") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(params)) => params.clone(),
            Some(_) => {
                return reply(
                    &id,
                    RpcError::new(code::INVALID_PARAMS, "params must be an object"),
                );
            }
        };
        let user = match &context.caller {
            Caller::Authenticated(user) => Some(user.clone()),
            _ => None,
        };
        let outcome = match method {
            "SendMessage" => self.send(&params, agent, &context, &id, false).await,
            "SendStreamingMessage" => self.send(&params, agent, &context, &id, true).await,
            "GetTask" => self
                .get(&params, user.as_deref())
                .await
                .map(|task| SurfaceReply::Http(json_response(&rpc_result(&id, task)))),
            "CancelTask" => self
                .cancel(&params, user.as_deref())
                .await
                .map(|task| SurfaceReply::Http(json_response(&rpc_result(&id, task)))),
            "SubscribeToTask" => {
                self.subscribe(&params, user.as_deref(), &context, &id)
                    .await
            }
            "ListTasks" | "GetExtendedAgentCard" => Err(RpcError::new(
                code::UNSUPPORTED_OPERATION,
                format!("{method} is not supported by this server"),
            )),
            m if m.contains("PushNotificationConfig") => Err(RpcError::new(
                code::PUSH_NOT_SUPPORTED,
                "push notifications are not supported: poll with GetTask or follow with SubscribeToTask",
            )),
            "message/send" | "message/stream" | "tasks/get" | "tasks/cancel"
            | "tasks/resubscribe" => Err(RpcError::new(
                code::VERSION_NOT_SUPPORTED,
                format!(
                    "{method} is A2A 0.3; this server speaks {PROTOCOL_VERSION} (SendMessage, SendStreamingMessage, GetTask, CancelTask, SubscribeToTask)"
                ),
            )),
            other => Err(RpcError::new(
                code::METHOD_NOT_FOUND,
                format!("there is no method {other:?}"),
            )),
        };
        outcome.unwrap_or_else(|error| reply(&id, error))
    }

    async fn send(
        &self,
        params: &Map<String, Value>,
        agent: Option<&AgentTool>,
        context: &SurfaceContext,
        id: &Value,
        streamed: bool,
    ) -> Result<SurfaceReply, RpcError> {
        let invalid = |message: String| RpcError::new(code::INVALID_PARAMS, message);
        let Some(Value::Object(message)) = params.get("message") else {
            return Err(invalid(
                "params.message is required: {\"messageId\", \"role\", \"parts\"}".into(),
            ));
        };
        let message_id = message
            .get("messageId")
            .and_then(Value::as_str)
            .filter(|m| !m.is_empty())
            .ok_or_else(|| invalid("message.messageId is required".into()))?;
        let texts: Vec<&str> = message
            .get("parts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect();
        let prompt = texts.join("\n");
        if prompt.trim().is_empty() {
            return Err(invalid(
                "message.parts must hold text (`{\"text\": \"…\"}`): the agents read text parts"
                    .into(),
            ));
        }
        if let Some(task) = message.get("taskId").and_then(Value::as_str) {
            // Every task ends answered: a message to one cannot continue it.
            return Err(RpcError::new(
                code::UNSUPPORTED_OPERATION,
                format!(
                    "task {task} takes no further messages; send the message without taskId (with its contextId to continue the conversation)"
                ),
            ));
        }
        let mut body = json!({"prompt": prompt, "request_id": task_id(message_id)});
        if let Some(context_id) = message.get("contextId").and_then(Value::as_str) {
            check_id("contextId", context_id).map_err(|e| invalid(e.to_string()))?;
            body["session_id"] = json!(context_id);
        } else {
            // A new context, named after the message: the same message sent again (a retry
            // after a dropped stream) is in the same context, so continuing it keeps the
            // conversation.
            body["session_id"] = json!(context_id_of(message_id));
        }
        let named = agent.map(|a| a.name.clone()).or_else(|| {
            message
                .get("metadata")
                .and_then(|m| m.get("agent"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        });
        if let Some(name) = named {
            body["agent"] = json!(name);
        }
        let mut run =
            RunRequest::from_value(body, &context.caller).map_err(|e| RpcError::from_api(&e))?;
        run.deadline = context.deadline;
        let task = TaskIds {
            id: run.request_id.clone(),
            context: run.session_id.clone(),
            prompt: run.prompt.clone(),
            message: message_id.to_owned(),
        };
        // The task's context, for GetTask and SubscribeToTask before its answer names it.
        if let Some(store) = self.chat.store() {
            // The user's message kept for GetTask's history, within what any store's item holds.
            let mut prompt = task.prompt.as_str();
            if prompt.len() > 32_000 {
                let mut end = 32_000;
                while !prompt.is_char_boundary(end) {
                    end -= 1;
                }
                prompt = &prompt[..end];
            }
            let known = json!({"context": task.context, "prompt": prompt, "message": task.message});
            store
                .set_pointer(
                    &context_pointer(&task.id),
                    &known.to_string(),
                    run.user_id.as_deref(),
                )
                .await
                .map_err(|e| RpcError::from_api(&ApiError::from(e)))?;
        }
        let configuration = params.get("configuration");
        let history = configuration
            .and_then(|c| c.get("historyLength"))
            .and_then(Value::as_u64);
        let immediately = configuration
            .and_then(|c| c.get("returnImmediately"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let mode = self.chat.mode();
        let answers_in_call = mode == ak_core::config::ExecutionMode::Direct
            || (mode == ak_core::config::ExecutionMode::RestSync && !immediately);
        if !streamed && answers_in_call {
            // Blocking where the mode answers in the call (direct, rest_sync).
            let task_json = match self.chat.post(run).await {
                Ok(answer) => task.with_answer(&answer, history),
                Err(ApiError::ResponseTimeout { .. }) => task.pending("TASK_STATE_WORKING"),
                Err(e) => return Err(RpcError::from_api(&e)),
            };
            return Ok(SurfaceReply::Http(json_response(&rpc_result(
                id,
                json!({"task": task_json}),
            ))));
        }
        // A task outlives its streams: a client that drops one subscribes again.
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: true,
        };
        let stream = self
            .chat
            .post_stream(run, options)
            .await
            .map_err(|e| RpcError::from_api(&e))?;
        if streamed {
            let encoder = TaskEncoder::new(id.clone(), task, true);
            return Ok(SurfaceReply::Events(SseBody::encoded(
                stream,
                context.heartbeat,
                encoder,
            )));
        }
        if immediately {
            // The request is on the queue; its relay is not needed.
            drop(stream);
            return Ok(SurfaceReply::Http(json_response(&rpc_result(
                id,
                json!({"task": task.pending("TASK_STATE_SUBMITTED")}),
            ))));
        }
        // Blocking in rest_async: the run's log until its end (or the front door's bound).
        let task_json = match last_event(stream).await {
            Some(last) => task.with_answer(&answer_of(&last), history),
            None => task.pending("TASK_STATE_WORKING"),
        };
        Ok(SurfaceReply::Http(json_response(&rpc_result(
            id,
            json!({"task": task_json}),
        ))))
    }

    async fn get(
        &self,
        params: &Map<String, Value>,
        user: Option<&str>,
    ) -> Result<Value, RpcError> {
        let id = task_param(params)?;
        let history = params.get("historyLength").and_then(Value::as_u64);
        let progress = self
            .chat
            .progress(&id, user)
            .await
            .map_err(|e| RpcError::from_api(&e))?;
        let task = self.known(&id).await;
        match progress {
            Progress::Unknown => Err(RpcError::task_not_found(&id)),
            Progress::Pending { logged: 0 } => Ok(task.pending("TASK_STATE_SUBMITTED")),
            Progress::Pending { .. } => Ok(task.pending("TASK_STATE_WORKING")),
            Progress::Answered(answer) => Ok(task.with_answer(&answer, history)),
        }
    }

    async fn cancel(
        &self,
        params: &Map<String, Value>,
        user: Option<&str>,
    ) -> Result<Value, RpcError> {
        let id = task_param(params)?;
        let before = self
            .chat
            .progress(&id, user)
            .await
            .map_err(|e| RpcError::from_api(&e))?;
        match before {
            Progress::Unknown => return Err(RpcError::task_not_found(&id)),
            Progress::Answered(_) => {
                return Err(RpcError::new(
                    code::TASK_NOT_CANCELABLE,
                    format!("task {id} has ended; it cannot be canceled"),
                ));
            }
            Progress::Pending { .. } => {}
        }
        match self
            .chat
            .cancel(&id, user)
            .await
            .map_err(|e| RpcError::from_api(&e))?
        {
            Progress::Answered(answer) if answer.status == CANCELED => {
                Ok(self.known(&id).await.with_answer(&answer, None))
            }
            // The run's own answer came first.
            _ => Err(RpcError::new(
                code::TASK_NOT_CANCELABLE,
                format!("task {id} ended before it could be canceled"),
            )),
        }
    }

    async fn subscribe(
        &self,
        params: &Map<String, Value>,
        user: Option<&str>,
        context: &SurfaceContext,
        rpc_id: &Value,
    ) -> Result<SurfaceReply, RpcError> {
        let id = task_param(params)?;
        match self
            .chat
            .progress(&id, user)
            .await
            .map_err(|e| RpcError::from_api(&e))?
        {
            Progress::Unknown => return Err(RpcError::task_not_found(&id)),
            Progress::Answered(_) => {
                return Err(RpcError::new(
                    code::UNSUPPORTED_OPERATION,
                    format!("task {id} has ended: read it with GetTask"),
                ));
            }
            Progress::Pending { .. } => {}
        }
        let options = StreamOptions {
            after: 0,
            bound: context.stream_bound,
            durable: false,
        };
        let stream = self
            .chat
            .follow_active(&id, user, context.deadline, options)
            .await
            .map_err(|e| RpcError::from_api(&e))?
            .unwrap_or_else(|| RunStream::of(Vec::new()));
        // The log from its start: the encoder sums what came before into the snapshot.
        let encoder = TaskEncoder::new(rpc_id.clone(), self.known(&id).await, false);
        Ok(SurfaceReply::Events(SseBody::encoded(
            stream,
            context.heartbeat,
            encoder,
        )))
    }
}

impl A2a {
    /// A task known by its id, with its context when the store recorded it.
    async fn known(&self, id: &str) -> TaskIds {
        let mut task = TaskIds::known(id);
        if let Some(store) = self.chat.store()
            && let Ok(Some(pointer)) = store.pointer(&context_pointer(id)).await
        {
            // The context, the user's message and its id (a plain context from before).
            match serde_json::from_str::<Value>(&pointer.target) {
                Ok(Value::Object(known)) => {
                    let field = |name: &str| {
                        known
                            .get(name)
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned()
                    };
                    task.context = field("context");
                    task.prompt = field("prompt");
                    task.message = field("message");
                }
                _ => task.context = pointer.target,
            }
        }
        task
    }
}

/// The pointer name of a task's context.
fn context_pointer(task_id: &str) -> String {
    format!("a2a-task-context:{task_id}")
}

impl Surface for A2a {
    fn name(&self) -> &'static str {
        "a2a"
    }

    fn routes(&self) -> Vec<(Option<Method>, &'static str)> {
        vec![
            (Some(Method::POST), "/a2a"),
            (Some(Method::GET), "/a2a/.well-known/agent-card.json"),
            (Some(Method::POST), "/a2a/{agent}"),
            (
                Some(Method::GET),
                "/a2a/{agent}/.well-known/agent-card.json",
            ),
            (Some(Method::GET), "/.well-known/agent-card.json"),
        ]
    }

    fn handle<'a>(&'a self, request: Request, context: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move {
            let agent = self.agent(context.params.first())?;
            if request.method() == Method::GET {
                let mut response = json_response(&self.card(&request, agent, &context.caller));
                response.headers_mut().insert(
                    http::header::CACHE_CONTROL,
                    HeaderValue::from_static("max-age=300"),
                );
                return Ok(SurfaceReply::Http(response));
            }
            Ok(self.rpc(&request, agent, context).await)
        })
    }
}

/// The task id of the message `message_id`: the message's own id (so the same message again
/// is the same task), or its digest when it is not a usable id.
fn task_id(message_id: &str) -> String {
    id_of("task", message_id)
}

/// The context a message that names none starts: `ctx-<message id>` (or its digest).
fn context_id_of(message_id: &str) -> String {
    id_of("ctx", message_id)
}

fn id_of(prefix: &str, message_id: &str) -> String {
    let id = format!("{prefix}-{message_id}");
    if check_id("id", &id).is_ok() {
        return id;
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(message_id.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{prefix}-{hex}")
}

fn task_param(params: &Map<String, Value>) -> Result<String, RpcError> {
    params
        .get("id")
        .and_then(Value::as_str)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .ok_or_else(|| RpcError::new(code::INVALID_PARAMS, "params.id is required: the task's id"))
}

async fn last_event(stream: RunStream) -> Option<RunEvent> {
    stream
        .collect_events()
        .await
        .into_iter()
        .map(|(_, event)| event)
        .rfind(RunEvent::is_last)
}

/// A `done` or `error` event as the answer it reports.
fn answer_of(last: &RunEvent) -> Answer {
    match last {
        RunEvent::Done(body) => Answer::ok(body.clone()),
        RunEvent::Error(data) => Answer::new(
            data["status"]
                .as_u64()
                .and_then(|s| u16::try_from(s).ok())
                .unwrap_or(500),
            data.clone(),
        ),
        _ => Answer::new(500, json!({"error": "the run ended without an answer"})),
    }
}

/// What a task is known by.
struct TaskIds {
    id: String,
    /// Its context (session); empty when not known (a task read back before its answer).
    context: String,
    /// The user's message, when this request carried it.
    prompt: String,
    message: String,
}

impl TaskIds {
    fn known(id: &str) -> Self {
        Self {
            id: id.to_owned(),
            context: String::new(),
            prompt: String::new(),
            message: String::new(),
        }
    }

    fn base(&self, state: &str, context: &str) -> Value {
        let mut task =
            json!({"id": self.id, "status": {"state": state, "timestamp": now_rfc3339()}});
        if !context.is_empty() {
            task["contextId"] = json!(context);
        }
        task
    }

    /// A task not answered yet.
    fn pending(&self, state: &str) -> Value {
        let mut task = self.base(state, &self.context);
        if !self.prompt.is_empty() {
            task["history"] = json!([self.user_message()]);
        }
        task
    }

    fn user_message(&self) -> Value {
        let mut message = json!({"messageId": self.message, "role": "ROLE_USER", "parts": [{"text": self.prompt}], "taskId": self.id});
        if !self.context.is_empty() {
            message["contextId"] = json!(self.context);
        }
        message
    }

    /// An answered task: completed with its `answer` artifact, canceled, or failed with the
    /// error as its status message; `history` the last `history_length` messages.
    fn with_answer(&self, answer: &Answer, history_length: Option<u64>) -> Value {
        let body = &answer.body;
        let context = body["session_id"]
            .as_str()
            .unwrap_or(&self.context)
            .to_owned();
        let (state, text) = match answer.status {
            200..=299 => (
                "TASK_STATE_COMPLETED",
                body["result"].as_str().unwrap_or_default(),
            ),
            CANCELED => ("TASK_STATE_CANCELED", "the task was canceled"),
            _ => (
                "TASK_STATE_FAILED",
                body["error"].as_str().unwrap_or("the task failed"),
            ),
        };
        let mut reply = json!({
            "messageId": format!("{}-reply", self.id),
            "role": "ROLE_AGENT",
            "parts": [{"text": text}],
            "taskId": self.id,
        });
        if !context.is_empty() {
            reply["contextId"] = json!(context);
        }
        let mut task = self.base(state, &context);
        task["status"]["message"] = reply.clone();
        if state == "TASK_STATE_COMPLETED" {
            task["artifacts"] =
                json!([{"artifactId": "answer", "name": "answer", "parts": [{"text": text}]}]);
            let mut metadata = json!({});
            for field in ["agent", "usage"] {
                if let Some(value) = body.get(field) {
                    metadata[field] = value.clone();
                }
            }
            task["metadata"] = metadata;
        }
        let mut messages = Vec::new();
        if !self.prompt.is_empty() {
            messages.push(self.user_message());
        }
        messages.push(reply);
        let keep =
            history_length.map_or(messages.len(), |n| usize::try_from(n).unwrap_or(usize::MAX));
        let history: Vec<Value> = messages.into_iter().rev().take(keep).rev().collect();
        if !history.is_empty() {
            task["history"] = Value::Array(history);
        }
        task
    }
}

/// Run events as A2A stream responses (JSON-RPC results, one `data:` line each): the task
/// first (`TASK_STATE_SUBMITTED` for a new message; for a subscription the snapshot, with the
/// text written so far as its artifact), `TASK_STATE_WORKING` (with the agent in `metadata`,
/// again on each handoff and tool call), the text as `answer` artifact chunks, then the final
/// status. Text written before a tool call or a handoff stays in the artifact, set apart from
/// what follows by a blank line.
pub struct TaskEncoder {
    rpc_id: Value,
    task: TaskIds,
    /// A new message (the task starts `SUBMITTED`); else a subscription (a snapshot first).
    fresh: bool,
    started: bool,
    /// Whether any artifact chunk was sent (the next one appends).
    chunks: bool,
    /// Text of the current segment (since the last tool call or handoff).
    segment: String,
    /// Whether the next text starts a new segment after earlier text.
    separate: bool,
    agent: Option<String>,
    attempt: Option<String>,
    failed: Option<Value>,
    ended: bool,
}

impl TaskEncoder {
    fn new(rpc_id: Value, task: TaskIds, fresh: bool) -> Self {
        Self {
            rpc_id,
            task,
            fresh,
            started: false,
            chunks: false,
            segment: String::new(),
            separate: false,
            agent: None,
            attempt: None,
            failed: None,
            ended: false,
        }
    }

    fn frame(&self, result: Value, out: &mut String) {
        crate::sse::push_data(out, &rpc_result(&self.rpc_id, result));
    }

    fn context(&self) -> &str {
        &self.task.context
    }

    fn status(
        &self,
        state: &str,
        metadata: Option<Value>,
        message: Option<Value>,
        out: &mut String,
    ) {
        let mut status = json!({"state": state, "timestamp": now_rfc3339()});
        if let Some(message) = message {
            status["message"] = message;
        }
        let mut update =
            json!({"taskId": self.task.id, "contextId": self.context(), "status": status});
        if let Some(metadata) = metadata {
            update["metadata"] = metadata;
        }
        self.frame(json!({"statusUpdate": update}), out);
    }

    fn start(&mut self, out: &mut String) {
        if self.started {
            return;
        }
        self.started = true;
        let task = if self.fresh {
            self.task.pending("TASK_STATE_SUBMITTED")
        } else {
            self.task.pending("TASK_STATE_WORKING")
        };
        self.frame(json!({"task": task}), out);
    }

    fn text(&mut self, delta: &str, last: bool, out: &mut String) {
        if delta.is_empty() && !last {
            return;
        }
        self.segment.push_str(delta);
        let text = if std::mem::take(&mut self.separate) && !delta.is_empty() {
            format!("\n\n{delta}")
        } else {
            delta.to_owned()
        };
        let update = json!({
            "taskId": self.task.id,
            "contextId": self.context(),
            "artifact": {"artifactId": "answer", "name": "answer", "parts": [{"text": text}]},
            "append": self.chunks,
            "lastChunk": last,
        });
        self.chunks = true;
        self.frame(json!({"artifactUpdate": update}), out);
    }

    fn boundary(&mut self) {
        if self.chunks {
            self.separate = true;
        }
        self.segment.clear();
        self.attempt = None;
    }

    fn end(&mut self, last: &Value, failed: bool, out: &mut String) {
        self.ended = true;
        if failed {
            let status = last["status"].as_u64().unwrap_or(500);
            let state = if status == u64::from(CANCELED) {
                "TASK_STATE_CANCELED"
            } else {
                "TASK_STATE_FAILED"
            };
            let text = last["error"].as_str().unwrap_or("the task failed");
            let message = json!({"messageId": format!("{}-reply", self.task.id), "role": "ROLE_AGENT", "parts": [{"text": text}], "taskId": self.task.id});
            self.status(state, None, Some(message), out);
            return;
        }
        let result = last["result"].as_str().unwrap_or_default();
        let rest = match result.strip_prefix(self.segment.as_str()) {
            Some(rest) => rest.to_owned(),
            None => {
                self.separate = self.chunks;
                result.to_owned()
            }
        };
        self.text(&rest, true, out);
        let mut metadata = json!({});
        for field in ["agent", "usage"] {
            if let Some(value) = last.get(field) {
                metadata[field] = value.clone();
            }
        }
        let message = json!({"messageId": format!("{}-reply", self.task.id), "role": "ROLE_AGENT", "parts": [{"text": result}], "taskId": self.task.id, "contextId": self.context()});
        self.status("TASK_STATE_COMPLETED", Some(metadata), Some(message), out);
    }
}

impl EventEncoder for TaskEncoder {
    fn encode(&mut self, _id: Option<u64>, event: &RunEvent) -> String {
        let mut out = String::new();
        if self.ended {
            return out;
        }
        if let RunEvent::Done(answer) = event
            && self.task.context.is_empty()
            && let Some(session) = answer["session_id"].as_str()
        {
            session.clone_into(&mut self.task.context);
        }
        self.start(&mut out);
        if !matches!(event, RunEvent::Retry { .. })
            && let Some(failed) = self.failed.take()
        {
            self.end(&failed, true, &mut out);
            return out;
        }
        match event {
            RunEvent::Agent { agent } | RunEvent::Retry { agent } => {
                let retry = matches!(event, RunEvent::Retry { .. });
                if retry {
                    self.failed = None;
                    self.attempt = Some(String::new());
                } else if self.agent.as_deref() != Some(agent.as_str()) {
                    if self.agent.is_some() {
                        self.boundary();
                    }
                    self.agent = Some(agent.clone());
                } else {
                    return out;
                }
                let mut metadata = json!({"agent": agent});
                if retry {
                    metadata["retry"] = json!(true);
                }
                self.status("TASK_STATE_WORKING", Some(metadata), None, &mut out);
            }
            RunEvent::Delta { text } => match &mut self.attempt {
                None => self.text(text, false, &mut out),
                Some(attempt) => {
                    attempt.push_str(text);
                    let attempt = attempt.clone();
                    if let Some(rest) = attempt.strip_prefix(self.segment.as_str()) {
                        let rest = rest.to_owned();
                        self.text(&rest, false, &mut out);
                    }
                }
            },
            RunEvent::ToolCall { name, .. } => {
                self.boundary();
                let metadata = json!({"agent": self.agent, "toolCall": name});
                self.status("TASK_STATE_WORKING", Some(metadata), None, &mut out);
            }
            RunEvent::ToolResult { .. } => self.boundary(),
            // A decision on a paused call: the resumed run's events follow.
            RunEvent::Approval(_) => {}
            RunEvent::Done(answer) => self.end(answer, false, &mut out),
            RunEvent::Error(data) => self.failed = Some(data.clone()),
        }
        out
    }

    fn finish(&mut self, _last: Option<&RunEvent>) -> String {
        let mut out = String::new();
        if self.ended {
            return out;
        }
        self.start(&mut out);
        // Without a failure the relay's bound came before the answer: the task goes on, and
        // the client follows it again.
        if let Some(failed) = self.failed.take() {
            self.end(&failed, true, &mut out);
        }
        out
    }
}

#[cfg(test)]
mod tests;
