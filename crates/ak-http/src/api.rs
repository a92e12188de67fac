//! The HTTP API of the request handler: size limit, routing, identity, the chat endpoint and
//! custom routes, and the one place where errors become responses. The Lambda function and the
//! local server both call [`Api::handle`].

use crate::event::{self, DecodeOptions, Incoming, Problem};
use crate::response::{ApiResponse, ErrorResponse};
use crate::router::{Route, Router};
use crate::sse::SseBody;
use crate::surface::{Surface, SurfaceContext, SurfaceReply};
use ak_core::error::ApiError;
use ak_core::events::RunEvent;
use ak_core::request::{Caller, RunRequest, poll_request_id};
use ak_runtime::ChatService;
pub use ak_runtime::exec::{ANSWER_MARGIN, panic_text};
use http::Method;
use lambda_http::{Body, Request, RequestExt};
use serde_json::Value;
use std::time::Instant;

pub use crate::event::Deadline;

/// Marks a request whose caller can only read one JSON answer (a direct invoke): it is never
/// answered with a stream.
#[derive(Debug, Clone, Copy)]
struct JsonOnly;

/// The request handler's HTTP API.
pub struct Api {
    router: Router,
    chat: ChatService,
    max_body_bytes: usize,
    decode: DecodeOptions,
    heartbeat: std::time::Duration,
    streaming_doors: bool,
    surfaces: Vec<std::sync::Arc<dyn Surface>>,
}

/// What the API answers a request with.
// One per request, moved once: boxing the larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    /// One JSON response.
    Json(http::Response<Body>),
    /// Server-sent events (a chat request that asked for a stream): `200`,
    /// `Content-Type: text/event-stream`, this body.
    Events(SseBody),
}

/// What the API answers a Lambda event with: the Runtime API loop's reply.
pub use ak_lambda::Reply as EventReply;

/// What a dispatched request produced.
enum Answer {
    Json(ApiResponse),
    Events(SseBody),
    /// A response made whole elsewhere (a protocol surface), passed on as it is, with the
    /// outcome the request log names.
    Http(http::Response<Body>, &'static str),
}

/// What the request log line says about a request, filled in as it is understood.
#[derive(Default)]
struct LogFields {
    request_id: Option<String>,
    session_id: Option<String>,
    user_id: Option<String>,
}

/// The one log line (and the metrics) of a request, written when its outcome is known.
struct RequestLine {
    method: String,
    path: String,
    mode: &'static str,
    started: Instant,
    fields: LogFields,
}

impl RequestLine {
    /// Logs the request with its final status and outcome; ids missing from what was
    /// understood of the request are taken from the answer's `body`.
    fn emit(&self, status: u16, outcome: &str, body: &Value) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let field = |name: &str| body.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let or_body = |known: &Option<String>, name: &str| {
            known.clone().unwrap_or_else(|| field(name).to_owned())
        };
        tracing::info!(
            method = %self.method,
            path = %self.path,
            status,
            outcome,
            mode = self.mode,
            request_id = or_body(&self.fields.request_id, "request_id"),
            session_id = or_body(&self.fields.session_id, "session_id"),
            agent = field("agent"),
            user_id = self.fields.user_id.as_deref().unwrap_or(""),
            duration_ms,
            "request"
        );
        let errors = if status >= 500 { 1.0 } else { 0.0 };
        ak_core::metrics::emit(
            &[
                ("Function", &ak_core::metrics::function_name()),
                ("Mode", self.mode),
            ],
            &[
                ("Requests", 1.0, ak_core::metrics::Unit::Count),
                ("ServerErrors", errors, ak_core::metrics::Unit::Count),
                ("Latency", duration_ms, ak_core::metrics::Unit::Milliseconds),
            ],
            &[("status", status.into()), ("outcome", outcome.into())],
        );
    }
}

impl Api {
    /// An API serving `router`'s routes with `chat` behind the chat path.
    pub fn new(router: Router, chat: ChatService, max_body_bytes: usize) -> Self {
        let decode = DecodeOptions {
            chat_path: router.paths().chat().to_owned(),
            ..DecodeOptions::default()
        };
        Self {
            router,
            chat,
            max_body_bytes,
            decode,
            heartbeat: crate::sse::DEFAULT_HEARTBEAT,
            streaming_doors: false,
            surfaces: Vec::new(),
        }
    }

    /// The API `settings` describe: the chat service of the configured execution mode (agents
    /// run by `runner` in direct mode), `router`'s routes, every protocol surface, and the
    /// `api` and `auth` options. With `loopback_only` (a local server listening on loopback),
    /// the MCP endpoint answers loopback hosts only, against DNS rebinding from a browser.
    pub async fn from_settings(
        settings: &ak_core::Settings,
        aws: &ak_adapters::AwsConfig,
        runner: Option<std::sync::Arc<dyn ak_core::ports::AgentRunner>>,
        router: Router,
        loopback_only: bool,
    ) -> Result<Self, ak_adapters::SetupError> {
        let chat = ChatService::from_settings(settings, aws, runner).await?;
        let api = Self::new(router, chat.clone(), settings.api.max_body_bytes);
        #[cfg(feature = "mcp")]
        let api = api.with_surface(crate::mcp::McpEndpoint::new(
            chat.clone(),
            crate::surface::AgentTool::from_settings(settings),
            loopback_only,
        ));
        #[cfg(not(feature = "mcp"))]
        let _ = loopback_only;
        #[cfg(feature = "openai")]
        let api = api.with_surface(crate::openai::ChatCompletions::new(chat.clone(), settings));
        #[cfg(feature = "agui")]
        let api = api.with_surface(crate::agui::AgUi::new(chat.clone()));
        #[cfg(feature = "ai-sdk")]
        let api = api.with_surface(crate::ai_sdk::AiSdkChat::new(chat.clone()));
        #[cfg(feature = "a2a")]
        let api = api.with_surface(crate::a2a::A2a::new(chat.clone(), settings));
        let _ = chat;
        Ok(api
            .with_principal_claim(&settings.auth.principal_claim)
            .with_alb_oidc_identity(settings.auth.trust_alb_oidc_identity)
            .with_response_streaming(settings.api.response_streaming)
            .with_heartbeat(settings.api.heartbeat()))
    }

    /// The refusal of `request` in the error shape of the protocol surface whose paths it is
    /// under, if any (see [`Surface::error_response`]).
    fn surface_refusal(&self, request: &Request, error: &ApiError) -> Option<http::Response<Body>> {
        let index = self.router.surface_of(request)?;
        self.surfaces.get(index)?.error_response(error)
    }

    /// The answer to a request refused before the API could read it (the local server's body
    /// over `api.max_body_bytes`): in the error shape of the protocol surface whose paths it is
    /// under, else ours.
    pub fn refusal(&self, request: &Request, error: ApiError) -> http::Response<Body> {
        self.surface_refusal(request, &error)
            .unwrap_or_else(|| ApiResponse::from(error).into_http())
    }

    /// Serves a protocol surface on its routes (see [`crate::surface`]).
    pub fn with_surface(mut self, surface: impl Surface + 'static) -> Self {
        self.router
            .add_surface(self.surfaces.len(), &surface.routes());
        self.surfaces.push(std::sync::Arc::new(surface));
        self
    }

    /// Serves the MCP endpoint (`/{API_BASE_PATH}/{API_VERSION}/mcp`); without one that path
    /// is a 404.
    #[cfg(feature = "mcp")]
    pub fn with_mcp(self, endpoint: crate::mcp::McpEndpoint) -> Self {
        self.with_surface(endpoint)
    }

    /// The heartbeat interval of streams (`api.stream_heartbeat`).
    pub fn heartbeat(&self) -> std::time::Duration {
        self.heartbeat
    }

    /// Answers the front doors that can stream (function URLs, REST APIs) through Lambda
    /// response streaming, every request alike (`api.response_streaming`: the function URL's
    /// invoke mode is `RESPONSE_STREAM`, the REST integrations' transfer mode `STREAM`).
    pub fn with_response_streaming(mut self, on: bool) -> Self {
        self.streaming_doors = on;
        self
    }

    /// Sends an SSE comment after this much silence (`api.stream_heartbeat`).
    pub fn with_heartbeat(mut self, every: std::time::Duration) -> Self {
        self.heartbeat = every.max(std::time::Duration::from_millis(10));
        self
    }

    /// Reads the user from this claim of Cognito, JWT and Lambda authorizers
    /// (`auth.principal_claim`, default `sub`).
    pub fn with_principal_claim(mut self, claim: &str) -> Self {
        claim.clone_into(&mut self.decode.principal_claim);
        self
    }

    /// Takes an ALB's `x-amzn-oidc-identity` as the user (`auth.trust_alb_oidc_identity`).
    pub fn with_alb_oidc_identity(mut self, trust: bool) -> Self {
        self.decode.trust_alb_oidc = trust;
        self
    }

    /// Answers one Lambda event from any front door, in that door's format (see
    /// [`crate::event`]). Never fails: an event that cannot be read is answered 400.
    pub async fn handle_event(&self, event: Value) -> Value {
        self.handle_event_until(event, None).await
    }

    /// Answers the raw JSON of a Lambda event (what the function receives), before `deadline`:
    /// an event serde cannot read as a JSON tree (a lone surrogate escape, nesting deeper than
    /// 128) is a 400 too, not an invocation error.
    pub async fn handle_raw_event(
        &self,
        event: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> Value {
        match serde_json::from_str(event) {
            Ok(event) => self.handle_event_until(event, deadline).await,
            Err(e) => {
                tracing::warn!(error = %e, "an event that is not readable JSON");
                event::unrecognised_answer(&format!(
                    "the event is not JSON this function can read ({e})"
                ))
            }
        }
    }

    /// Answers the raw JSON of a Lambda event before `deadline`: streamed when the deployment
    /// streams ([`Api::with_response_streaming`]) and the front door can (function URLs and
    /// REST APIs; HTTP APIs, ALB and direct invokes cannot), else buffered as
    /// [`Api::handle_raw_event`] does.
    pub async fn respond_raw_event(
        &self,
        event: &str,
        deadline: Option<tokio::time::Instant>,
    ) -> EventReply {
        // An HTTP API's payload format 1.0 reads like a REST API event but says `"version":
        // "1.0"`; HTTP APIs invoke without streaming, so it is answered in one piece.
        let decoded = serde_json::from_str::<Value>(event).map(|event| {
            let http_api = event.get("version").and_then(Value::as_str) == Some("1.0");
            (event::decode(&event, &self.decode), http_api)
        });
        let (door, mut request) = match decoded {
            Ok((Incoming::Request { door, request }, false))
                if self.streaming_doors
                    && matches!(
                        door,
                        event::FrontDoor::RestApi | event::FrontDoor::FunctionUrl
                    ) =>
            {
                (door, request)
            }
            _ => return EventReply::Buffered(self.handle_raw_event(event, deadline).await),
        };
        if let Some(deadline) = deadline {
            request.extensions_mut().insert(Deadline(deadline));
        }
        tracing::debug!(door = door.as_str(), "answering through response streaming");
        match self.respond(*request).await {
            Reply::Json(response) => {
                let (parts, body) = response.into_parts();
                let bytes = match body {
                    Body::Text(text) => bytes::Bytes::from(text),
                    Body::Binary(data) => bytes::Bytes::from(data),
                    _ => bytes::Bytes::new(),
                };
                EventReply::Streamed {
                    status: parts.status,
                    headers: parts.headers,
                    body: Box::pin(futures_util::stream::once(async move { Ok(bytes) })),
                }
            }
            Reply::Events(body) => EventReply::Streamed {
                status: http::StatusCode::OK,
                headers: body.headers(),
                body: Box::pin(body),
            },
        }
    }

    /// [`Api::handle_event`], with the invocation's deadline: model calls end in time for the
    /// answer, and rest_sync waits no longer than the invocation may run.
    pub async fn handle_event_until(
        &self,
        event: Value,
        deadline: Option<tokio::time::Instant>,
    ) -> Value {
        match event::decode(&event, &self.decode) {
            Incoming::Request { door, mut request } => {
                if let Some(deadline) = deadline {
                    request.extensions_mut().insert(Deadline(deadline));
                }
                if door == event::FrontDoor::DirectInvoke {
                    // An invoker reads one JSON answer; a stream request gets that too.
                    request.extensions_mut().insert(JsonOnly);
                }
                if matches!(door, event::FrontDoor::RestApi | event::FrontDoor::HttpApi) {
                    request.extensions_mut().insert(GatewayLimited);
                }
                event::encode(door, self.handle(*request).await)
            }
            Incoming::KeepWarm => serde_json::json!({"status": "warm"}),
            Incoming::Malformed { door, problem } => {
                tracing::warn!(door = door.as_str(), problem = %problem, "malformed event");
                event::encode(
                    door,
                    ApiError::bad_request(problem).to_response().into_http(),
                )
            }
            Incoming::Unrecognised(problem) => {
                tracing::warn!(problem = %problem, "unrecognised event");
                event::unrecognised_answer(&problem)
            }
        }
    }

    /// Every route the API serves (see [`Router::routes`]).
    pub fn routes(&self) -> Vec<(Option<Method>, String)> {
        self.router.routes()
    }

    /// The chat service.
    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    /// Answers one request in one piece: a stream is collected whole (`text/event-stream`).
    pub async fn handle(&self, request: Request) -> http::Response<Body> {
        match self.respond(request).await {
            Reply::Json(response) => response,
            Reply::Events(body) => {
                let headers = body.headers();
                let mut response = http::Response::new(Body::Text(body.collect().await));
                *response.headers_mut() = headers;
                response
            }
        }
    }

    /// Answers one request; never fails, never panics on input. Logs one line per request
    /// (request and session ids, user, mode, status, outcome, duration) and emits its metrics.
    pub async fn respond(&self, request: Request) -> Reply {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let mut log = LogFields {
            user_id: principal(&request),
            ..LogFields::default()
        };
        let span = server_span(&request, &self.router);
        // A panic in a route handler or an agent is a bug: it costs this request a 500, never
        // the connection or the invocation.
        let dispatched = {
            use futures_util::FutureExt;
            use tracing::Instrument as _;
            std::panic::AssertUnwindSafe(self.dispatch(request, &mut log).instrument(span.clone()))
                .catch_unwind()
                .await
                .unwrap_or_else(|panic| {
                    Err(ApiError::internal(
                        log.request_id.as_deref(),
                        format!("the request handler panicked: {}", panic_text(&*panic)),
                    ))
                })
        };
        let mode = self.chat.mode().as_str();
        let line = RequestLine {
            method: method.to_string(),
            path,
            mode,
            started,
            fields: log,
        };
        match dispatched {
            Ok(Answer::Json(response)) => {
                end_server_span(&span, response.status.as_u16());
                line.emit(response.status.as_u16(), response.outcome, &response.body);
                Reply::Json(response.into_http())
            }
            Ok(Answer::Http(response, outcome)) => {
                end_server_span(&span, response.status().as_u16());
                line.emit(response.status().as_u16(), outcome, &Value::Null);
                Reply::Json(response)
            }
            // A stream is logged when it ends, with the status its last event carries.
            Ok(Answer::Events(body)) => Reply::Events(body.on_end(move |last| {
                let (status, outcome, data) = match last {
                    Some(RunEvent::Done(data)) => (200, "ok", data.clone()),
                    Some(RunEvent::Error(data)) => (
                        data.get("status")
                            .and_then(Value::as_u64)
                            .and_then(|s| u16::try_from(s).ok())
                            .unwrap_or(500),
                        "stream_error",
                        data.clone(),
                    ),
                    // Nginx's "client closed request": the stream ended before its answer.
                    _ => (499, "stream_cut", Value::Null),
                };
                end_server_span(&span, status);
                drop(span);
                line.emit(status, outcome, &data);
            })),
            Err(error) => {
                match &error {
                    ApiError::Internal { detail, .. }
                    | ApiError::ServiceUnavailable { detail, .. } => {
                        tracing::error!(class = error.class(), detail = %detail, "request failed");
                    }
                    _ => tracing::info!(class = error.class(), error = %error, "request refused"),
                }
                ak_core::metrics::error_class(error.class());
                let mut response = error.to_response();
                response.outcome = error.class();
                // Every error about a known request names it, whichever step refused it.
                if let (Some(id), Value::Object(body)) =
                    (&line.fields.request_id, &mut response.body)
                {
                    body.entry("request_id")
                        .or_insert_with(|| Value::String(id.clone()));
                }
                end_server_span(&span, response.status.as_u16());
                line.emit(response.status.as_u16(), response.outcome, &response.body);
                Reply::Json(response.into_http())
            }
        }
    }

    async fn dispatch(&self, request: Request, log: &mut LogFields) -> Result<Answer, ApiError> {
        let size = request.body().len();
        let too_large = (size > self.max_body_bytes).then_some(ApiError::PayloadTooLarge {
            size,
            limit: self.max_body_bytes,
        });
        // A body the event could not deliver (bad base64) matters only where a body is read.
        let body_problem = request.extensions().get::<Problem>().cloned();
        let route = match self.router.resolve(&request) {
            Ok(route) => route,
            Err(e) => {
                // Under a surface's paths (an unknown one, a method it does not take): its shape.
                let error = too_large.unwrap_or(e);
                return match self.surface_refusal(&request, &error) {
                    Some(response) => Ok(Answer::Http(response, error.class())),
                    None => Err(error),
                };
            }
        };
        // A surface answers what the edge refuses on its routes in its own error shape.
        let refusal = too_large.or_else(|| match (&route, &body_problem) {
            (Route::Surface(..), Some(Problem(problem))) => {
                Some(ApiError::bad_request(problem.clone()))
            }
            _ => None,
        });
        if let Some(error) = refusal {
            if let Route::Surface(index, _) = &route
                && let Some(surface) = self.surfaces.get(*index)
                && let Some(response) = surface.error_response(&error)
            {
                return Ok(Answer::Http(response, error.class()));
            }
            return Err(error);
        }
        let reads_body = |has_query_id: bool| {
            !matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::DELETE
            ) || !has_query_id
        };
        match route {
            Route::Surface(index, params) => {
                let Some(surface) = self.surfaces.get(index).cloned() else {
                    return Err(ApiError::RouteNotFound {
                        path: request.uri().path().to_owned(),
                    });
                };
                let context = SurfaceContext {
                    caller: caller(&request),
                    deadline: request
                        .extensions()
                        .get::<Deadline>()
                        .map(|d| d.0 - ANSWER_MARGIN),
                    stream_bound: request
                        .extensions()
                        .get::<GatewayLimited>()
                        .map(|_| GATEWAY_BUFFER_LIMIT),
                    json_only: request.extensions().get::<JsonOnly>().is_some(),
                    heartbeat: self.heartbeat,
                    params,
                };
                Ok(match surface.handle(request, context).await? {
                    SurfaceReply::Json(response) => Answer::Json(response),
                    SurfaceReply::Http(response) => Answer::Http(response, surface.name()),
                    SurfaceReply::Events(body) => Answer::Events(body),
                })
            }
            Route::ChatStream => {
                let caller = caller(&request);
                let query_id = query_param(&request, "request_id").ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "request_id is required: GET {}?request_id=<id>",
                        self.router.paths().stream()
                    ))
                })?;
                let id = poll_request_id(Some(&query_id), b"")?;
                log.request_id = Some(id.clone());
                let options = self.stream_options(&request)?;
                let deadline = request
                    .extensions()
                    .get::<Deadline>()
                    .map(|d| d.0 - ANSWER_MARGIN);
                // Without an authorizer the user is who the request says (`?user_id=`), as a
                // body `user_id` names the user of a chat POST.
                let claimed = query_param(&request, "user_id");
                let user = match &caller {
                    Caller::Anonymous => claimed.as_deref(),
                    _ => caller.principal(),
                };
                match self.chat.follow(&id, user, deadline, options).await? {
                    Some(stream) => Ok(Answer::Events(SseBody::new(stream, self.heartbeat))),
                    None => {
                        let mut done = http::Response::new(Body::Empty);
                        *done.status_mut() = http::StatusCode::NO_CONTENT;
                        Ok(Answer::Http(done, "stream_complete"))
                    }
                }
            }
            Route::ChatApprovals => {
                if let Some(Problem(problem)) = body_problem {
                    return Err(ApiError::bad_request(problem));
                }
                let caller = caller(&request);
                let body: Value = serde_json::from_slice(request.body().as_ref()).map_err(|e| {
                    ApiError::bad_request(format!(
                        "the body must be JSON like {{\"request_id\": \"...\", \"decisions\": [{{\"id\": \"call_1\", \"approve\": true}}]}}: {e}"
                    ))
                })?;
                let Some(id) = body["request_id"].as_str() else {
                    return Err(ApiError::bad_request(
                        "request_id is required: the id of the paused request (its PAUSED answer names it)",
                    ));
                };
                let id = poll_request_id(Some(id), b"")?;
                log.request_id = Some(id.clone());
                let decisions = body["decisions"].as_array().ok_or_else(|| {
                    ApiError::bad_request(
                        "decisions is required: [{\"id\": \"<call id>\", \"approve\": true | false, \"reason\": \"...\"}]",
                    )
                })?;
                // Without an authorizer the user is who the body says, as for a chat POST.
                let user = match &caller {
                    Caller::Anonymous => body["user_id"].as_str(),
                    _ => caller.principal(),
                };
                log.user_id = user.map(str::to_owned);
                let deadline = request
                    .extensions()
                    .get::<Deadline>()
                    .map(|d| d.0 - ANSWER_MARGIN);
                let stream = match &body["stream"] {
                    Value::Bool(b) => Some(*b),
                    _ => None,
                };
                let json_only = request.extensions().get::<JsonOnly>().is_some();
                if wants_stream(stream, request.headers()) && !json_only {
                    let options = self.stream_options(&request)?;
                    self.chat
                        .decide_stream(&id, user, decisions, deadline, options)
                        .await
                        .map(|stream| Answer::Events(SseBody::new(stream, self.heartbeat)))
                } else {
                    self.chat
                        .decide(&id, user, decisions, deadline)
                        .await
                        .map(|answer| Answer::Json(answer.into()))
                }
            }
            Route::Custom(handler) => {
                if let Some(Problem(problem)) = body_problem.filter(|_| reads_body(true)) {
                    return Err(ApiError::bad_request(problem));
                }
                handler.call(request).await.map(Answer::Json)
            }
            Route::Chat => {
                let caller = caller(&request);
                let query_id = query_param(&request, "request_id");
                if let Some(Problem(problem)) =
                    body_problem.filter(|_| reads_body(query_id.is_some()))
                {
                    return Err(ApiError::bad_request(problem));
                }
                if request.method() == Method::GET {
                    let id = poll_request_id(query_id.as_deref(), request.body().as_ref())?;
                    log.request_id = Some(id.clone());
                    self.chat
                        .poll(&id, caller.principal())
                        .await
                        .map(|answer| Answer::Json(answer.into()))
                } else {
                    let mut run = RunRequest::from_json(request.body().as_ref(), &caller)?;
                    log.request_id = Some(run.request_id.clone());
                    log.session_id = Some(run.session_id.clone());
                    log.user_id.clone_from(&run.user_id);
                    run.deadline = request
                        .extensions()
                        .get::<Deadline>()
                        .map(|d| d.0 - ANSWER_MARGIN);
                    let json_only = request.extensions().get::<JsonOnly>().is_some();
                    if wants_stream(run.stream, request.headers()) && !json_only {
                        let options = self.stream_options(&request)?;
                        self.chat
                            .post_stream(run, options)
                            .await
                            .map(|stream| Answer::Events(SseBody::new(stream, self.heartbeat)))
                    } else {
                        self.chat
                            .post(run)
                            .await
                            .map(|answer| Answer::Json(answer.into()))
                    }
                }
            }
        }
    }
}

/// Whether a chat POST asked for a stream: `"stream"` in the body when given (`false` wins over
/// any header), else an `Accept` header that accepts `text/event-stream` (media types compared
/// without case; a `q=0` range does not accept).
fn wants_stream(stream: Option<bool>, headers: &http::HeaderMap) -> bool {
    if let Some(explicit) = stream {
        return explicit;
    }
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|range| {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim();
            let refused = parts.any(|p| {
                p.trim()
                    .strip_prefix("q=")
                    .and_then(|q| q.trim().parse::<f64>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            media.eq_ignore_ascii_case("text/event-stream") && !refused
        })
}

/// The largest event number a client may name (far beyond any log, and safe to count from).
pub const MAX_EVENT_ID: u64 = 1_000_000_000_000;

/// Where a follower resumes: after the event numbered by the `Last-Event-ID` header (what an
/// `EventSource` sends when it reconnects) or else by `?after=`; 0 (from the start) without
/// either.
fn resume_point(request: &Request) -> Result<u64, ApiError> {
    let parse = |name: &str, value: &str| {
        value
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= MAX_EVENT_ID)
            .ok_or_else(|| {
                ApiError::bad_request(format!(
                    "{name} must be the number of the last event received (0 to {MAX_EVENT_ID}), got {value:?}"
                ))
            })
    };
    // Both are checked, whichever wins: a bad one is a 400 either way.
    let after = match query_param(request, "after") {
        Some(after) if !after.trim().is_empty() => Some(parse("after", &after)?),
        _ => None,
    };
    if let Some(value) = request.headers().get("last-event-id") {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Last-Event-ID must be a number"))?;
        if !text.trim().is_empty() {
            return parse("Last-Event-ID", text);
        }
    }
    Ok(after.unwrap_or(0))
}

/// How long API Gateway waits for a buffered answer (29 s, less a margin): a relayed stream
/// answered in one piece ends by then, so the client gets what arrived and can resume.
pub const GATEWAY_BUFFER_LIMIT: std::time::Duration = std::time::Duration::from_secs(27);

/// Marks a request from a front door that answers in one piece within API Gateway's limit
/// (a REST API without response streaming, an HTTP API).
#[derive(Debug, Clone, Copy)]
struct GatewayLimited;

impl Api {
    /// The stream options of a request: the heartbeat, where it resumes, and the gateway's
    /// bound when it answers in one piece.
    fn stream_options(&self, request: &Request) -> Result<ak_runtime::StreamOptions, ApiError> {
        Ok(ak_runtime::StreamOptions {
            after: resume_point(request)?,
            bound: request
                .extensions()
                .get::<GatewayLimited>()
                .map(|_| GATEWAY_BUFFER_LIMIT),
            durable: false,
        })
    }
}

/// The request's SERVER span (OpenTelemetry HTTP conventions), continuing the caller's
/// `traceparent` header, else the Lambda invocation's X-Ray trace; disabled when tracing is
/// off.
fn server_span(request: &Request, router: &Router) -> tracing::Span {
    let method = request.method().as_str();
    let path = request.uri().path();
    // `{method} {route}`, or the method alone for a path no route takes (the HTTP
    // conventions' names); worked out only when traces are on.
    let route = tracing::enabled!(target: ak_core::otel::TARGET, tracing::Level::INFO)
        .then(|| router.resolve(request).ok())
        .flatten()
        .map(|route| route_template(request, &route));
    let name = match &route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    let span = tracing::info_span!(
        target: ak_core::otel::TARGET,
        "http",
        otel.name = %name,
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        url.path = %path,
        url.scheme = "https",
        http.route = route.as_deref(),
        http.response.status_code = tracing::field::Empty,
        error.type = tracing::field::Empty,
        user_agent.original = request
            .headers()
            .get(http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok()),
        faas.trigger = "http",
    );
    if !span.is_disabled() {
        let xray = std::env::var("_X_AMZN_TRACE_ID").ok();
        let carrier = ak_core::otel::Carrier {
            traceparent: request
                .headers()
                .get("traceparent")
                .and_then(|v| v.to_str().ok()),
            xray: xray.as_deref(),
        };
        ak_core::otel::set_parent(&span, carrier);
    }
    span
}

/// The route `request` takes, for its span's name: its path, with a protocol surface's
/// variable segments (ids) as `{param}` so names stay few.
fn route_template(request: &Request, route: &Route) -> String {
    let path = request.uri().path();
    match route {
        Route::Surface(_, params) if !params.is_empty() => path
            .split('/')
            .map(|segment| {
                if params.iter().any(|p| p == segment) {
                    "{param}"
                } else {
                    segment
                }
            })
            .collect::<Vec<_>>()
            .join("/"),
        _ => path.to_owned(),
    }
}

/// Records the answer's status on a [`server_span`]; 5xx are errors.
fn end_server_span(span: &tracing::Span, status: u16) {
    // As i64: the OpenTelemetry bridge takes unsigned fields for text.
    span.record("http.response.status_code", i64::from(status));
    if status >= 500 {
        span.record("otel.status_code", "error");
        span.record("error.type", status.to_string());
    }
}

/// Who is calling, as the event's front door vouched for it ([`crate::event`] puts it in the
/// request's extensions); anonymous for requests that carry none (the local server).
pub fn caller(request: &Request) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// The authenticated user of this request, if any.
pub fn principal(request: &Request) -> Option<String> {
    caller(request).principal().map(str::to_owned)
}

/// A query parameter, from the event's parsed parameters or, for plain HTTP requests (the local
/// server), from the URI.
fn query_param(request: &Request, name: &str) -> Option<String> {
    if let Some(params) = request.query_string_parameters_ref() {
        return params.first(name).map(str::to_owned);
    }
    let query = event::parse_query(request.uri().query()?);
    query.get(name)?.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::percent_decode;

    #[test]
    fn query_parameters_come_from_the_uri_when_not_parsed() {
        let request: Request = http::Request::builder()
            .uri("/api/v1/chat?x=1&request_id=req%3A1&y")
            .body(Body::Empty)
            .unwrap_or_default();
        assert_eq!(
            query_param(&request, "request_id").as_deref(),
            Some("req:1")
        );
        assert_eq!(query_param(&request, "y").as_deref(), Some(""));
        assert_eq!(query_param(&request, "z"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_decode("%a\u{e9}"),
            "%a\u{e9}",
            "no panic inside a multi-byte char"
        );
    }

    #[test]
    fn accept_headers_are_read_as_media_ranges_and_an_explicit_stream_wins() {
        let with = |accept: &str| {
            let mut headers = http::HeaderMap::new();
            if let Ok(v) = http::HeaderValue::from_str(accept) {
                headers.insert(http::header::ACCEPT, v);
            }
            headers
        };
        for (accept, stream) in [
            ("text/event-stream", true),
            ("TEXT/Event-Stream", true),
            ("application/json, text/event-stream;q=0.5", true),
            ("application/json, text/event-stream;q=0", false),
            ("application/json", false),
            ("*/*", false),
            ("", false),
        ] {
            assert_eq!(wants_stream(None, &with(accept)), stream, "{accept:?}");
        }
        assert!(!wants_stream(Some(false), &with("text/event-stream")));
        assert!(wants_stream(Some(true), &with("application/json")));
    }

    /// A request handler is built with the protocol surfaces its deployment routes (deploy.sh
    /// picks them from `protocol_endpoints`); the paths of the others answer 404 like any
    /// unknown path, and those built in answer. Runs in each feature combination of
    /// scripts/test.sh.
    #[tokio::test]
    async fn surfaces_left_out_of_the_build_are_unknown_paths() {
        // rest_async over in-process queues: no agents needed in the request handler.
        let mut settings = ak_core::Settings::default();
        settings
            .execution
            .set_mode(ak_core::config::ExecutionMode::RestAsync);
        settings.execution.queues.input.url =
            ak_core::config::QueueUrl::parse("memory://surfaces").ok();
        settings.execution.response_store.kind = Some(ak_core::config::StoreKind::Memory);
        let router = match Router::builder(crate::RoutePaths::default()).build() {
            Ok(router) => router,
            Err(e) => panic!("{e}"),
        };
        let api = match Api::from_settings(
            &settings,
            &ak_adapters::AwsConfig::default(),
            None,
            router,
            false,
        )
        .await
        {
            Ok(api) => api,
            Err(e) => panic!("{e}"),
        };
        for (path, built) in [
            ("/api/v1/openai/v1/models", cfg!(feature = "openai")),
            ("/api/v1/agui", cfg!(feature = "agui")),
            ("/api/v1/ai-sdk/chat", cfg!(feature = "ai-sdk")),
            (
                "/api/v1/a2a/.well-known/agent-card.json",
                cfg!(feature = "a2a"),
            ),
            ("/api/v1/mcp", cfg!(feature = "mcp")),
        ] {
            let request: Request = http::Request::builder()
                .uri(path)
                .body(Body::Empty)
                .unwrap_or_default();
            let status = api.handle(request).await.status();
            assert_eq!(
                status == http::StatusCode::NOT_FOUND,
                !built,
                "{path}: {status} (built in: {built})"
            );
            let segment = path.split('/').nth(3).unwrap_or_default();
            assert_eq!(
                crate::surface::left_out(segment).is_some(),
                !built,
                "the log names a left-out surface: {path}"
            );
        }
        assert_eq!(crate::surface::left_out("chat"), None);
    }

    fn decoded(fixture: &str) -> Request {
        let event: Value = serde_json::from_str(fixture).unwrap_or_default();
        match event::decode(&event, &DecodeOptions::default()) {
            Incoming::Request { request, .. } => *request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn principals_come_from_the_authorizer_context() {
        let v1 = decoded(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat_authorized.json"
        ));
        assert_eq!(principal(&v1).as_deref(), Some("user-a"));
        let v2 = decoded(include_str!(
            "../../../tests/fixtures/apigw_v2_post_chat.json"
        ));
        assert_eq!(principal(&v2).as_deref(), Some("user-b"));
        let public = decoded(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat.json"
        ));
        assert_eq!(principal(&public), None);
    }
}
