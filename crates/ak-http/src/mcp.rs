//! The API as an MCP server: `/{API_BASE_PATH}/{API_VERSION}/mcp` speaks the Model Context
//! Protocol's streamable HTTP transport (revision 2025-11-25), stateless (no session to keep
//! between requests, which suits Lambda), through the official Rust SDK (`rmcp`).
//!
//! `tools/list` offers one tool per agent, named after it, described by its handoff description
//! (or its instructions), with the arguments `prompt` (required) and `session_id` (to continue
//! a conversation). `tools/call` runs that agent as a chat request would — in direct mode in
//! the request handler, in the queue modes through the queues, waiting for the answer as a
//! streaming request does (until the invocation's deadline) — and returns the answer's text,
//! with the whole answer (`result`, `agent`, `session_id`, `request_id`, `usage`) as structured
//! content. A failed run, and arguments that are not valid (SEP-1303), are tool results with
//! `isError: true` and a message the calling model can act on. Identity is the chat endpoint's:
//! the principal the front door vouches for is the user of the run.
//!
//! What hosts do beyond the happy path:
//! - **Cancellation.** `initialize` is answered with an `Mcp-Session-Id` (nothing is kept for
//!   it), which names the runs of its calls: request id `mcp-<session>-<JSON-RPC id>`. A host
//!   that aborts a call sends `notifications/cancelled` in a POST of its own (which may reach
//!   another Lambda instance); the run it names is canceled as `CancelTask` does: the model
//!   call is dropped and nothing of the turn is saved. A client that disconnects drops its
//!   direct-mode run, as the chat endpoint's clients do.
//! - **Progress.** A call with a `progressToken` is answered as an SSE stream: a progress
//!   notification at once and every [`PROGRESS_EVERY`] while the run goes on, so hosts whose
//!   request timeout resets on progress (the TypeScript SDK's `resetTimeoutOnProgress`) wait
//!   for long runs; then the result. Without a token, the answer is one JSON response.

use crate::event::Deadline;
use crate::sse::SseBody;
use crate::surface::{Surface, SurfaceContext, SurfaceFuture, SurfaceReply};
use ak_core::events::RunEvent;
use ak_core::request::{Caller, RunRequest};
use ak_runtime::{ChatService, StreamOptions};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use lambda_http::Body;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ProgressNotificationParam, ServerCapabilities,
    ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// How often a call with a progress token is told the run goes on.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(15);

/// The header naming an MCP session (streamable HTTP).
const SESSION_HEADER: &str = "mcp-session-id";

pub use crate::surface::AgentTool;

/// The MCP endpoint of the API.
pub struct McpEndpoint {
    service: StreamableHttpService<AgentsServer, LocalSessionManager>,
    chat: ChatService,
}

impl McpEndpoint {
    /// An endpoint offering `agents`, answering through `chat`. With `loopback_only`, requests
    /// must name a loopback host (what a local server needs against DNS rebinding); a deployed
    /// API answers any host its front door routes.
    pub fn new(chat: ChatService, agents: Vec<AgentTool>, loopback_only: bool) -> Self {
        let server = AgentsServer {
            chat: chat.clone(),
            agents: Arc::new(agents),
        };
        let mut config = StreamableHttpServerConfig::default();
        config.legacy_session_mode = false;
        config.json_response = true;
        if !loopback_only {
            config = config.disable_allowed_hosts();
        }
        Self {
            service: StreamableHttpService::new(
                move || Ok(server.clone()),
                Arc::new(LocalSessionManager::default()),
                config,
            ),
            chat,
        }
    }

    /// Answers one HTTP request to the endpoint (any method: the transport decides), with the
    /// identity and deadline the request carries: one JSON response, or the SSE stream of a
    /// call with progress.
    pub async fn respond(&self, request: lambda_http::Request) -> SurfaceReply {
        let (parts, body) = request.into_parts();
        let bytes = match body {
            Body::Text(text) => Bytes::from(text),
            Body::Binary(data) => Bytes::from(data),
            _ => Bytes::new(),
        };
        let message = serde_json::from_slice::<Value>(&bytes).unwrap_or(Value::Null);
        let method = message["method"].as_str().unwrap_or_default().to_owned();
        if parts.method == http::Method::POST && method == "notifications/cancelled" {
            self.cancel(&parts, &message["params"]["requestId"]).await;
            return SurfaceReply::Http(
                http::Response::builder()
                    .status(http::StatusCode::ACCEPTED)
                    .body(Body::Empty)
                    .unwrap_or_default(),
            );
        }
        let request = http::Request::from_parts(parts, Full::new(bytes));
        let response = self.service.handle(request).await;
        let (mut parts, body) = response.into_parts();
        let content_type = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if parts.status.is_success() && content_type.starts_with("text/event-stream") {
            let stream = body
                .into_data_stream()
                .filter_map(|frame| async move { frame.ok() });
            return SurfaceReply::Events(SseBody::raw(stream));
        }
        let mut bytes = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        if method == "initialize" && parts.status.is_success() {
            // A session id for the host to send back: it names the runs of its calls, so a
            // cancellation can find them (nothing is kept for it).
            if let Ok(value) = http::HeaderValue::from_str(&ak_core::request::new_id()) {
                parts.headers.insert(SESSION_HEADER, value);
            }
        }
        // The transport refuses some requests in plain text (a body that is not JSON-RPC, a
        // wrong Accept or Host); answer those in JSON-RPC's error shape, as clients expect.
        let json = content_type.contains("json") || content_type.contains("event-stream");
        if parts.status.is_client_error() && !json {
            let message = String::from_utf8_lossy(&bytes).trim().to_owned();
            let code = if parts.status == http::StatusCode::UNSUPPORTED_MEDIA_TYPE
                || message.contains("deserialize")
            {
                -32700
            } else {
                -32600
            };
            bytes = Bytes::from(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": code, "message": message}})
                    .to_string(),
            );
            parts.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            parts.headers.remove(http::header::CONTENT_LENGTH);
        }
        let body = match String::from_utf8(bytes.to_vec()) {
            Ok(text) if text.is_empty() => Body::Empty,
            Ok(text) => Body::Text(text),
            Err(e) => Body::Binary(e.into_bytes()),
        };
        SurfaceReply::Http(http::Response::from_parts(parts, body))
    }

    /// A host's `notifications/cancelled` for the call `rpc_id` of its session: the run of
    /// that call is canceled (for its user only), wherever it runs.
    async fn cancel(&self, parts: &http::request::Parts, rpc_id: &Value) {
        let Some(request_id) = run_id(parts, rpc_id) else {
            return;
        };
        let user = parts
            .extensions
            .get::<Caller>()
            .and_then(|caller| caller.principal().map(str::to_owned));
        match self.chat.cancel(&request_id, user.as_deref()).await {
            Ok(progress) => {
                tracing::info!(request_id = %request_id, ?progress, "an MCP host canceled a call");
            }
            Err(e) => {
                tracing::warn!(request_id = %request_id, error = %e, "cannot cancel an MCP call");
            }
        }
    }
}

/// The request id of the run of JSON-RPC call `rpc_id` in the MCP session the request names
/// (`mcp-<session>-<id>`); `None` without a session id of ours.
fn run_id(parts: &http::request::Parts, rpc_id: &Value) -> Option<String> {
    let session = parts.headers.get(SESSION_HEADER)?.to_str().ok()?;
    let ours = !session.is_empty()
        && session.len() <= 64
        && session
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-');
    if !ours {
        return None;
    }
    let call = match rpc_id {
        Value::Number(n) => n.to_string(),
        Value::String(s)
            if !s.is_empty()
                && s.len() <= 32
                && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') =>
        {
            s.clone()
        }
        Value::String(s) => format!("{:016x}", fnv64(s)),
        _ => return None,
    };
    Some(format!("mcp-{session}-{call}"))
}

/// FNV-1a, 64 bits: a short stable name for a long or odd JSON-RPC id.
fn fnv64(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

impl Surface for McpEndpoint {
    fn name(&self) -> &'static str {
        "mcp"
    }

    fn routes(&self) -> Vec<(Option<http::Method>, &'static str)> {
        vec![(None, "/mcp")]
    }

    fn handle<'a>(&'a self, request: lambda_http::Request, _: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move { Ok(self.respond(request).await) })
    }
}

#[derive(Clone)]
struct AgentsServer {
    chat: ChatService,
    agents: Arc<Vec<AgentTool>>,
}

fn input_schema() -> Arc<serde_json::Map<String, Value>> {
    let schema = json!({
        "type": "object",
        "properties": {
            "prompt": {"type": "string", "description": "The message for the agent."},
            "session_id": {"type": "string", "description": "A conversation to continue (the session_id of an earlier answer); omit to start one."}
        },
        "required": ["prompt"]
    });
    Arc::new(schema.as_object().cloned().unwrap_or_default())
}

impl ServerHandler for AgentsServer {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("agent-kernel", env!("CARGO_PKG_VERSION")))
            .with_instructions(
                "Each tool is an agent. Call one with a prompt; pass the session_id of its answer to continue the conversation.",
            )
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items(
            self.agents
                .iter()
                .map(|a| Tool::new(a.name.clone(), a.description.clone(), input_schema()))
                .collect(),
        ))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // Arguments that cannot run are the calling model's to correct: tool results with
        // `isError` (SEP-1303), not protocol errors.
        let refused =
            |message: String| Ok(CallToolResult::error(vec![ContentBlock::text(message)]).into());
        let name = request.name.to_string();
        if !self.agents.iter().any(|a| a.name == name) {
            let known: Vec<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
            return refused(format!(
                "there is no agent {name:?}; the tools are {}",
                known.join(", ")
            ));
        }
        let arguments = request.arguments.unwrap_or_default();
        let Some(prompt) = arguments.get("prompt").and_then(Value::as_str) else {
            return refused("prompt is required: the message for the agent, as text".to_owned());
        };
        let mut body = json!({"prompt": prompt, "agent": name});
        match arguments.get("session_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) => body["session_id"] = json!(id),
            Some(_) => return refused("session_id must be text".to_owned()),
        }
        let parts = context.extensions.get::<http::request::Parts>();
        if let Some(id) = parts.and_then(|p| run_id(p, &json!(context.id))) {
            body["request_id"] = json!(id);
        }
        let caller = parts
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .unwrap_or(Caller::Anonymous);
        let deadline = parts.and_then(|p| p.extensions.get::<Deadline>().copied());
        let mut run = match RunRequest::from_value(body, &caller) {
            Ok(run) => run,
            Err(e) => return refused(e.to_string()),
        };
        run.deadline = deadline.map(|d| d.0 - ak_runtime::exec::ANSWER_MARGIN);
        let request_id = run.request_id.clone();
        let user = run.user_id.clone();
        let progress = context.meta.get_progress_token();
        let tell = |n: u32| {
            let peer = context.peer.clone();
            let token = progress.clone();
            async move {
                if let Some(token) = token {
                    let note = ProgressNotificationParam::new(token, f64::from(n))
                        .with_message("the agent is working");
                    if let Err(e) = peer.notify_progress(note).await {
                        tracing::debug!(error = %e, "cannot send an MCP progress notification");
                    }
                }
            }
        };
        // At once, so the answer becomes a stream and the host hears the call was taken.
        tell(0).await;
        // The run as a streaming request makes it: direct, or relayed from the queues until
        // its answer or the deadline; the last event is the answer.
        let answer = match self.chat.post_stream(run, StreamOptions::default()).await {
            Err(error) => RunEvent::error(&error, &request_id),
            Ok(mut stream) => {
                let mut last = None;
                let mut ticks = tokio::time::interval_at(
                    tokio::time::Instant::now() + PROGRESS_EVERY,
                    PROGRESS_EVERY,
                );
                let mut n = 0;
                loop {
                    tokio::select! {
                        // The host left (or canceled by closing the request, as the Python
                        // SDK does without a session): the call is abandoned and nothing can
                        // pick it up again, so its run is canceled — dropped with the stream
                        // here, and through the store where a runner has it.
                        () = context.ct.cancelled() => {
                            tracing::info!(request_id = %request_id, "the MCP host left before the answer: the run is canceled");
                            let chat = self.chat.clone();
                            let id = request_id.clone();
                            tokio::spawn(async move {
                                if let Err(e) = chat.cancel(&id, user.as_deref()).await {
                                    tracing::warn!(request_id = %id, error = %e, "cannot cancel an abandoned MCP call");
                                }
                            });
                            return Err(McpError::internal_error("the call was canceled", None));
                        }
                        event = stream.next() => match event {
                            Some((_, event)) if event.is_last() => last = Some(event),
                            Some(_) => {}
                            None => break,
                        },
                        _ = ticks.tick(), if progress.is_some() => {
                            n += 1;
                            tell(n).await;
                        }
                    }
                }
                last.unwrap_or_else(|| {
                    RunEvent::Error(
                        json!({"error": "the run ended without an answer", "request_id": request_id}),
                    )
                })
            }
        };
        Ok(match answer {
            RunEvent::Done(data) => {
                let text = data["result"].as_str().unwrap_or_default().to_owned();
                let mut result = CallToolResult::success(vec![ContentBlock::text(text)]);
                result.structured_content = Some(data);
                result
            }
            other => {
                let data = other.data();
                let message = data["error"]
                    .as_str()
                    .map_or_else(|| data.to_string(), str::to_owned);
                let mut result = CallToolResult::error(vec![ContentBlock::text(message)]);
                result.structured_content = Some(data);
                result
            }
        }
        .into())
    }
}
