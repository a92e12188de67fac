//! Protocol surfaces: the edge modules that speak another protocol than our chat API (MCP,
//! Chat Completions, AG-UI, the AI SDK's UI message stream, A2A). A surface
//! names the paths it answers under the API's base path and answers requests there by mapping
//! them onto the same [`ChatService`](ak_runtime::ChatService) runs and encoding the same run
//! events; the [`Api`](crate::Api) routes to it, logs the request and contains its panics.
//!
//! Adding one is a module implementing [`Surface`], one line in
//! [`Api::from_settings`](crate::Api::from_settings) (`.with_surface(...)`), and its first path
//! segment in [`RESERVED`].

use crate::response::ApiResponse;
use crate::sse::SseBody;
use ak_core::error::ApiError;
use ak_core::request::Caller;
use http::Method;
use lambda_http::{Body, Request};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

/// How long a surface waits for a run's first event before it starts its stream, so a request
/// refused before anything happened (a session of another user) gets its status, not a stream.
pub const FIRST_EVENT_WAIT: Duration = Duration::from_secs(2);

/// The `error` a run's stream begins with, if its first event (within [`FIRST_EVENT_WAIT`]) is
/// one: its data (`{"status", "error", "request_id"}`). The event stays first in the stream.
pub async fn early_failure(stream: &mut ak_core::events::RunStream) -> Option<serde_json::Value> {
    match stream.peek(FIRST_EVENT_WAIT).await {
        Some(ak_core::events::RunEvent::Error(data)) => Some(data.clone()),
        _ => None,
    }
}

/// An `error` event's data as our JSON error answer (its status, and the headers the status
/// calls for).
pub fn failure_response(data: &serde_json::Value) -> ApiResponse {
    let status = data["status"]
        .as_u64()
        .and_then(|s| u16::try_from(s).ok())
        .unwrap_or(500);
    let mut body = data.clone();
    if let Some(map) = body.as_object_mut() {
        map.remove("status");
    }
    let mut response = ApiResponse::from(ak_core::answer::Answer::new(status, body));
    response.outcome = "refused";
    response
}

/// The first path segments under the base path that belong to protocol surfaces: custom
/// routes cannot use them.
pub const RESERVED: &[&str] = &["mcp", "openai", "agui", "ai-sdk", "a2a", ".well-known"];

/// The cargo feature of the protocol surface whose first path segment is `segment`, when this
/// build was made without it (`None` when built in, or no surface's). A request there answers
/// 404 like any unknown path; the log names the feature.
pub fn left_out(segment: &str) -> Option<&'static str> {
    let (feature, built) = match segment {
        "mcp" => ("mcp-endpoint", cfg!(feature = "mcp")),
        "openai" => ("openai", cfg!(feature = "openai")),
        "agui" => ("agui", cfg!(feature = "agui")),
        "ai-sdk" => ("ai-sdk", cfg!(feature = "ai-sdk")),
        "a2a" | ".well-known" => ("a2a", cfg!(feature = "a2a")),
        _ => return None,
    };
    (!built).then_some(feature)
}

/// What a surface answers with.
pub enum SurfaceReply {
    /// One JSON answer (our error shape and `Content-Type: application/json`).
    Json(ApiResponse),
    /// A response the surface made whole (its own content type and error shape).
    Http(http::Response<Body>),
    /// A stream of the run's events in the surface's encoding.
    Events(SseBody),
}

/// What the edge knows of a request beyond the request itself.
#[derive(Debug, Clone)]
pub struct SurfaceContext {
    /// Who is calling, as the front door vouched for it.
    pub caller: Caller,
    /// When the run must have answered (the invocation's deadline less the answer margin).
    pub deadline: Option<tokio::time::Instant>,
    /// The longest a stream may last on this front door (API Gateway answers a buffered
    /// response within 29 s), besides the deadline.
    pub stream_bound: Option<Duration>,
    /// The caller reads one JSON answer only (a direct invoke): never answer with a stream.
    pub json_only: bool,
    /// The heartbeat interval of streams (`api.stream_heartbeat`).
    pub heartbeat: Duration,
    /// The values of the route's `{name}` segments, in order.
    pub params: Vec<String>,
}

/// The future a surface's handler returns.
pub type SurfaceFuture<'a> =
    Pin<Box<dyn Future<Output = Result<SurfaceReply, ApiError>> + Send + 'a>>;

/// One protocol surface at the edge.
pub trait Surface: Send + Sync {
    /// Its name, for the request log (`mcp`, `openai`).
    fn name(&self) -> &'static str;

    /// The paths it answers, relative to the base path (`/mcp`, `/openai/v1/models`), with the
    /// methods each takes (`None`: any method; the surface decides). A segment `{name}` matches
    /// any one segment, handed over in [`SurfaceContext::params`].
    fn routes(&self) -> Vec<(Option<Method>, &'static str)>;

    /// Answers one request on one of its routes. An error is answered in our JSON error shape;
    /// a surface with its own error shape answers [`SurfaceReply::Http`] instead.
    fn handle<'a>(&'a self, request: Request, context: SurfaceContext) -> SurfaceFuture<'a>;

    /// The response to a request on one of its routes that the edge refused before handing it
    /// over (a body over `api.max_body_bytes`, one the front door could not decode), in the
    /// surface's own error shape; `None`: our JSON error shape.
    fn error_response(&self, _error: &ApiError) -> Option<http::Response<Body>> {
        None
    }
}

/// An agent as the surfaces present it (an MCP tool, an A2A skill): its name and what it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentTool {
    /// The agent's name (the tool's).
    pub name: String,
    /// What the agent is for.
    pub description: String,
}

impl AgentTool {
    /// The agents `settings` defines (or the one default agent), each described by its
    /// handoff description, else the start of its instructions.
    pub fn from_settings(settings: &ak_core::Settings) -> Vec<AgentTool> {
        let definitions = &settings.agents.definitions;
        if definitions.is_empty() {
            let name = settings.agents.default_agent().unwrap_or("assistant");
            return vec![AgentTool {
                name: name.to_owned(),
                description: "A general assistant.".to_owned(),
            }];
        }
        definitions
            .iter()
            .map(|d| {
                let about = d
                    .handoff_description
                    .clone()
                    .filter(|h| !h.trim().is_empty())
                    .unwrap_or_else(|| d.instructions.chars().take(300).collect());
                AgentTool {
                    name: d.name.clone(),
                    description: if about.trim().is_empty() {
                        format!("The {} agent.", d.name)
                    } else {
                        about
                    },
                }
            })
            .collect()
    }
}
