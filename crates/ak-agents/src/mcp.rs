//! Tools from MCP servers (Model Context Protocol, streamable HTTP), through the official Rust
//! SDK (`rmcp`). Each server of `mcp.servers` is connected on first use per process; its tools
//! are listed then and offered to the agents that name the server in `mcp_servers`, as
//! `<server>__<tool>` (kept to what function names allow, 64 characters at most), with the
//! server's descriptions and JSON schemas. A call goes to the server and its result — every
//! content type, see [`content`] — back to the model.
//!
//! Nothing a server does fails a run: a server that is down, slow (past its `timeout`) or
//! answers an error gives the model an error tool result (`{"error": ...}`), and its tools are
//! left out of a model call when they cannot be listed. A call naming a tool the server no
//! longer has re-reads the list once. A connection that timed out, failed, or was answered
//! in a way no call can be matched to is dropped: the next use initialises a new session
//! (a listing that fails drops the tools too), so a restarted server costs at most the one call that was under way
//! (a server answering a stale session with `404` or with `400`, see [`transport`]). Tools a
//! server offers only as tasks (`execution.taskSupport: "required"`) are not offered to the
//! model, which could not call them.

#[cfg(feature = "mcp")]
mod client;
#[cfg(feature = "mcp")]
pub mod content;
#[cfg(feature = "mcp")]
mod transport;

#[cfg(feature = "mcp")]
pub use client::{McpServer, McpServers, redact};
#[cfg(feature = "mcp")]
pub use content::MAX_RESULT_BYTES;

use serde_json::Value;

use crate::model::ToolSpec;

/// A tool result for the model: its value and the images to attach after it
/// (`{"type": "image", "mime_type", "data"}`, data in base64).
#[derive(Debug, Clone, PartialEq)]
pub struct ToolOutput {
    /// `{"result": ...}` or `{"error": ...}`.
    pub value: Value,
    /// Images for the model, in the result's order.
    pub attachments: Vec<Value>,
}

/// A server's configuration cannot work (a header's source is missing).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mcp.servers {server}: {problem}")]
pub struct McpConfigError {
    pub(crate) server: String,
    pub(crate) problem: String,
}

/// A tool of an MCP server, as offered to the model.
#[derive(Debug, Clone, PartialEq)]
pub struct McpTool {
    /// The name the model sees: `<server>__<tool>`, kept valid.
    pub exposed: String,
    /// The server's own name for it.
    pub name: String,
    /// Its server (`mcp.servers[].name`).
    pub server: String,
    /// The server's description.
    pub description: String,
    /// The server's JSON schema of its arguments.
    pub schema: Value,
}

impl McpTool {
    /// The tool as a model sees it.
    pub fn spec(&self) -> ToolSpec {
        ToolSpec {
            name: self.exposed.clone(),
            description: self.description.clone(),
            parameters: self.schema.clone(),
        }
    }
}

/// This build has no MCP client (the `mcp` feature is off, as `deploy.sh` builds for a
/// `config.yaml` without `mcp.servers`): a configuration naming servers stops the start-up,
/// saying so; there are never tools to offer.
#[cfg(not(feature = "mcp"))]
#[derive(Default)]
pub struct McpServers {
    _none: (),
}

#[cfg(not(feature = "mcp"))]
impl McpServers {
    /// No servers; an error naming the first one `settings` defines.
    pub fn from_settings(
        settings: &ak_core::config::McpSettings,
        _lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, McpConfigError> {
        match settings.servers.first() {
            None => Ok(Self::default()),
            Some(server) => Err(McpConfigError {
                server: server.name.clone(),
                problem: "this build has no MCP client: build the functions with the `mcp` feature (deploy.sh adds it when config.yaml lists mcp.servers)".to_owned(),
            }),
        }
    }

    /// None.
    pub async fn tools(&self, _names: &[String]) -> Vec<McpTool> {
        Vec::new()
    }

    /// An error result (never called: no tool is offered).
    pub async fn call(&self, tool: &McpTool, _arguments: Value) -> ToolOutput {
        ToolOutput {
            value: serde_json::json!({"error": format!("there is no MCP server {}", tool.server)}),
            attachments: Vec::new(),
        }
    }
}

#[cfg(all(test, not(feature = "mcp")))]
mod without_the_feature {
    use super::*;

    #[test]
    fn a_configuration_naming_servers_stops_the_start_up_saying_which_feature() {
        let settings: ak_core::config::McpSettings = serde_json::from_value(serde_json::json!({
            "servers": [{"name": "github", "url": "https://example.com/mcp"}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let error = McpServers::from_settings(&settings, &|_| None)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            error.contains("github") && error.contains("`mcp` feature"),
            "{error}"
        );
        let none = ak_core::config::McpSettings::default();
        assert!(McpServers::from_settings(&none, &|_| None).is_ok());
    }
}
