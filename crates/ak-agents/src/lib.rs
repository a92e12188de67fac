//! Agents, handoffs, tools, conversation sessions and model providers.
//!
//! - [`agent`]: [`Agent`] (built in Rust or from `config.yaml`) and the validated [`AgentSet`].
//! - [`tool`]: Rust tools the model can call ([`Tool`], [`FnTool`], [`ToolRegistry`]).
//! - [`model`]: the [`ModelProvider`] port; [`openai`] for any OpenAI-compatible endpoint and
//!   [`offline`] for deterministic local answers.
//! - [`runtime`]: [`AgentRuntime`], the run loop with handoffs, tools, sessions and `max_turns`.

//!
//! Features (both on by default; `deploy.sh` builds the functions with only those the
//! deployment's `config.yaml` uses): `bedrock` — Amazon Bedrock as a model provider; `mcp` —
//! tools from MCP servers. A configuration that needs one a build lacks stops the start-up,
//! saying which feature to build with.

pub mod agent;
#[cfg(feature = "bedrock")]
pub mod bedrock;
pub mod mcp;
pub mod model;
pub mod offline;
pub mod openai;
pub mod runtime;
pub mod telemetry;
pub mod tool;

pub use agent::{Agent, AgentError, AgentSet, handoff_tool_name};
pub use model::{ModelError, ModelProvider, Usage};
pub use runtime::{AgentRuntime, LoadError, ProviderError, RunError, RunOutcome, model_provider};
pub use tool::{FnTool, Tool, ToolContext, ToolError, ToolRegistry};
