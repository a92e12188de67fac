//! The HTTP edge of the agent runtime: Lambda events of every front door in and out
//! ([`event`]), routing ([`router`]), the HTTP API ([`api`]), JSON answers and the mapping of
//! failures to HTTP ([`response`]), run events as server-sent events ([`sse`]), and the
//! protocol surfaces ([`surface`]): MCP ([`mcp`]), Chat Completions ([`openai`]), AG-UI
//! ([`agui`]), the AI SDK's UI message stream ([`ai_sdk`]) and A2A ([`a2a`]), each behind the
//! cargo feature of its name (`mcp`, `openai`, `agui`, `ai-sdk`, `a2a`; all on by default):
//! a deployment's request handler is built with those it routes, and the paths of the others
//! answer 404 as any unknown path.
//!
//! Layer: edge. Uses the services of `ak-runtime` and the foundations of `ak-core`; nothing
//! below depends on it. A protocol surface is one module here that maps its requests onto
//! [`ChatService`](ak_runtime::ChatService) and encodes the same run events
//! ([`sse::EventEncoder`]).

#[cfg(feature = "a2a")]
pub mod a2a;
#[cfg(feature = "agui")]
pub mod agui;
#[cfg(feature = "ai-sdk")]
pub mod ai_sdk;
pub mod api;
pub mod event;
#[cfg(feature = "mcp")]
pub mod mcp;
#[cfg(feature = "openai")]
pub mod openai;
pub mod response;
pub mod router;
pub mod sse;
pub mod surface;

pub use api::Api;
pub use response::{ApiResponse, ErrorResponse};
pub use router::{Route, RoutePaths, Router};
