//! The API as an MCP server: `/{API_BASE_PATH}/{API_VERSION}/mcp` speaks the Model Context
//! Protocol's streamable HTTP transport, stateless (no session to keep between requests, which
//! suits Lambda), through the official Rust SDK (`rmcp`).
//!
//! `tools/list` offers one tool per agent, named after it, described by its handoff description
//! (or its instructions), with the arguments `prompt` (required) and `session_id` (to continue
//! a conversation). `tools/call` runs that agent as a chat request would — in direct mode in
//! the request handler, in the queue modes through the queues, waiting for the answer as a
//! streaming request does (until the invocation's deadline) — and returns the answer's text,
//! with the whole answer (`result`, `agent`, `session_id`, `request_id`, `usage`) as structured
//! content. A failed run is a tool result with `isError: true` and the error's message, as a
//! chat client would get it. Identity is the chat endpoint's: the principal the front door
//! vouches for is the user of the run.

use crate::event::Deadline;
use crate::surface::{Surface, SurfaceContext, SurfaceFuture, SurfaceReply};
use ak_core::events::RunEvent;
use ak_core::request::{Caller, RunRequest};
use ak_runtime::{ChatService, StreamOptions};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use lambda_http::Body;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::local::LocalSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use rmcp::{ErrorData as McpError, ServerHandler};
use serde_json::{Value, json};
use std::sync::Arc;

pub use crate::surface::AgentTool;

/// The MCP endpoint of the API.
pub struct McpEndpoint {
    service: StreamableHttpService<AgentsServer, LocalSessionManager>,
}

impl McpEndpoint {
    /// An endpoint offering `agents`, answering through `chat`. With `loopback_only`, requests
    /// must name a loopback host (what a local server needs against DNS rebinding); a deployed
    /// API answers any host its front door routes.
    pub fn new(chat: ChatService, agents: Vec<AgentTool>, loopback_only: bool) -> Self {
        let server = AgentsServer {
            chat,
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
        }
    }

    /// Answers one HTTP request to the endpoint (any method: the transport decides), with the
    /// identity and deadline the request carries.
    pub async fn respond(&self, request: lambda_http::Request) -> http::Response<Body> {
        let (parts, body) = request.into_parts();
        let bytes = match body {
            Body::Text(text) => Bytes::from(text),
            Body::Binary(data) => Bytes::from(data),
            _ => Bytes::new(),
        };
        let request = http::Request::from_parts(parts, Full::new(bytes));
        let response = self.service.handle(request).await;
        let (mut parts, body) = response.into_parts();
        let mut bytes = body
            .collect()
            .await
            .map(http_body_util::Collected::to_bytes)
            .unwrap_or_default();
        // The transport refuses some requests in plain text (a body that is not JSON-RPC, a
        // wrong Accept or Host); answer those in JSON-RPC's error shape, as clients expect.
        let json = parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json") || v.contains("event-stream"));
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
        http::Response::from_parts(parts, body)
    }
}

impl Surface for McpEndpoint {
    fn name(&self) -> &'static str {
        "mcp"
    }

    fn routes(&self) -> Vec<(Option<http::Method>, &'static str)> {
        vec![(None, "/mcp")]
    }

    fn handle<'a>(&'a self, request: lambda_http::Request, _: SurfaceContext) -> SurfaceFuture<'a> {
        Box::pin(async move { Ok(SurfaceReply::Http(self.respond(request).await)) })
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
        let name = request.name.to_string();
        if !self.agents.iter().any(|a| a.name == name) {
            let known: Vec<&str> = self.agents.iter().map(|a| a.name.as_str()).collect();
            return Err(McpError::invalid_params(
                format!(
                    "there is no agent {name:?}; the tools are {}",
                    known.join(", ")
                ),
                None,
            ));
        }
        let arguments = request.arguments.unwrap_or_default();
        let Some(prompt) = arguments.get("prompt").and_then(Value::as_str) else {
            return Err(McpError::invalid_params(
                "prompt is required: the message for the agent, as text",
                None,
            ));
        };
        let mut body = json!({"prompt": prompt, "agent": name});
        match arguments.get("session_id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) => body["session_id"] = json!(id),
            Some(_) => {
                return Err(McpError::invalid_params("session_id must be text", None));
            }
        }
        let parts = context.extensions.get::<http::request::Parts>();
        let caller = parts
            .and_then(|p| p.extensions.get::<Caller>().cloned())
            .unwrap_or(Caller::Anonymous);
        let deadline = parts.and_then(|p| p.extensions.get::<Deadline>().copied());
        let mut run = match RunRequest::from_value(body, &caller) {
            Ok(run) => run,
            Err(e) => return Err(McpError::invalid_params(e.to_string(), None)),
        };
        run.deadline = deadline.map(|d| d.0 - ak_runtime::exec::ANSWER_MARGIN);
        let request_id = run.request_id.clone();
        // The run as a streaming request makes it: direct, or relayed from the queues until
        // its answer or the deadline; the last event is the answer.
        let answer = match self.chat.post_stream(run, StreamOptions::default()).await {
            Err(error) => RunEvent::error(&error, &request_id),
            Ok(stream) => {
                let last = stream
                    .collect_events()
                    .await
                    .into_iter()
                    .map(|(_, event)| event)
                    .rfind(RunEvent::is_last);
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
