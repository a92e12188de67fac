//! Tools from MCP servers (Model Context Protocol, streamable HTTP), through the official Rust
//! SDK (`rmcp`). Each server of `mcp.servers` is connected on first use per process; its tools
//! are listed then and offered to the agents that name the server in `mcp_servers`, as
//! `<server>__<tool>` (kept to what function names allow, 64 characters at most), with the
//! server's descriptions and JSON schemas. A call goes to the server and its result — text and
//! structured content — back to the model.
//!
//! Nothing a server does fails a run: a server that is down, slow (past its `timeout`) or
//! answers an error gives the model an error tool result (`{"error": ...}`), and its tools are
//! left out of a model call when they cannot be listed. A call naming a tool the server no
//! longer has re-reads the list once; a broken connection is dropped and made anew on the
//! next use.

use ak_core::config::{McpServerSettings, McpSettings};
use ak_core::secret::Secret;
use rmcp::ServiceExt;
use rmcp::model::{CallToolRequestParams, CallToolResult, ContentBlock};
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

use crate::model::ToolSpec;

/// Longest function name model APIs accept.
const MAX_NAME: usize = 64;

/// A server's configuration cannot work (a header's source is missing).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("mcp.servers {server}: {problem}")]
pub struct McpConfigError {
    server: String,
    problem: String,
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

/// The MCP servers of a deployment, connected on first use.
#[derive(Default)]
pub struct McpServers {
    servers: BTreeMap<String, Arc<McpServer>>,
}

impl McpServers {
    /// The servers `settings` defines, their headers read through `lookup` (environment
    /// variables) and from their files now, so a missing one stops the start-up.
    pub fn from_settings(
        settings: &McpSettings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, McpConfigError> {
        let mut servers = BTreeMap::new();
        for server in &settings.servers {
            servers.insert(
                server.name.clone(),
                Arc::new(McpServer::new(server, lookup)?),
            );
        }
        Ok(Self { servers })
    }

    /// The tools of these servers, listed (once per process) where they are not yet; a server
    /// that cannot be reached offers none this time.
    pub async fn tools(&self, names: &[String]) -> Vec<McpTool> {
        let mut tools = Vec::new();
        for name in names {
            if let Some(server) = self.servers.get(name) {
                match server.tools(false).await {
                    Ok(listed) => tools.extend(listed),
                    Err(e) => {
                        tracing::warn!(mcp_server = %name, error = %e, "MCP server's tools are not offered this time");
                    }
                }
            }
        }
        tools
    }

    /// Calls `tool` with `arguments`: the result for the model, `{"error": ...}` on failure.
    pub async fn call(&self, tool: &McpTool, arguments: Value) -> Value {
        let Some(server) = self.servers.get(&tool.server) else {
            return json!({"error": format!("there is no MCP server {}", tool.server)});
        };
        match server.call(&tool.name, arguments).await {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(mcp_server = %tool.server, tool = %tool.name, error = %e, "MCP tool call failed");
                json!({"error": e})
            }
        }
    }
}

type Client = RunningService<RoleClient, ()>;

/// One MCP server.
pub struct McpServer {
    name: String,
    url: String,
    headers: Vec<(String, Secret)>,
    allowed: Option<Vec<String>>,
    timeout: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    client: Option<Arc<Client>>,
    tools: Option<Vec<McpTool>>,
    /// After a failed listing, the server is left alone until then (so a server that is down
    /// does not cost every model call its timeout).
    failed_until: Option<tokio::time::Instant>,
}

/// How long a server whose tools could not be listed is left alone.
const RETRY_LISTING_AFTER: Duration = Duration::from_secs(30);

/// Most bytes of a tool result sent to the model; a larger one is cut, saying so.
pub const MAX_RESULT_BYTES: usize = 100_000;

impl McpServer {
    fn new(
        settings: &McpServerSettings,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, McpConfigError> {
        let headers = settings
            .headers
            .iter()
            .map(|(name, source)| {
                source
                    .resolve(lookup)
                    .map(|v| (name.clone(), v))
                    .map_err(|problem| McpConfigError {
                        server: settings.name.clone(),
                        problem: format!("header {name}: {problem}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: settings.name.clone(),
            url: settings.url.clone(),
            headers,
            allowed: settings.allowed_tools.clone(),
            timeout: Duration::from_secs_f64(settings.timeout.clamp(0.1, 900.0)),
            state: Mutex::new(State::default()),
        })
    }

    /// A connected client: the one kept, or a new one (initialised within the timeout).
    async fn client(&self) -> Result<Arc<Client>, String> {
        let mut state = self.state.lock().await;
        if let Some(client) = &state.client
            && !client.is_transport_closed()
        {
            return Ok(client.clone());
        }
        ak_core::https::install_crypto_provider();
        let mut headers = HashMap::new();
        for (name, value) in &self.headers {
            let (Ok(name), Ok(value)) = (
                http::HeaderName::from_bytes(name.as_bytes()),
                http::HeaderValue::from_str(value.expose()),
            ) else {
                return Err(format!("header {name} cannot be sent"));
            };
            headers.insert(name, value);
        }
        let config = StreamableHttpClientTransportConfig::with_uri(self.url.as_str())
            .custom_headers(headers);
        let transport = StreamableHttpClientTransport::from_config(config);
        let client = tokio::time::timeout(self.timeout, ().serve(transport))
            .await
            .map_err(|_| {
                format!(
                    "the MCP server {} did not answer within {} s",
                    self.name,
                    self.timeout.as_secs_f64()
                )
            })?
            .map_err(|e| self.failure("could not be connected", &e.to_string()))?;
        let client = Arc::new(client);
        state.client = Some(client.clone());
        Ok(client)
    }

    async fn forget_connection(&self) {
        let mut state = self.state.lock().await;
        state.client = None;
        state.tools = None;
    }

    /// The server's tools (those allowed), listed once and kept; `again` lists anew.
    async fn tools(&self, again: bool) -> Result<Vec<McpTool>, String> {
        {
            let state = self.state.lock().await;
            if !again && let Some(tools) = &state.tools {
                return Ok(tools.clone());
            }
            if state
                .failed_until
                .is_some_and(|until| tokio::time::Instant::now() < until)
            {
                return Err(format!(
                    "the MCP server {} failed recently; it is asked again later",
                    self.name
                ));
            }
        }
        let listed = match self.client().await {
            Err(e) => Err(e),
            Ok(client) => match tokio::time::timeout(self.timeout, client.list_all_tools()).await {
                Err(_) => Err(format!(
                    "the MCP server {} did not list its tools within {} s",
                    self.name,
                    self.timeout.as_secs_f64()
                )),
                Ok(Err(e)) => Err(self.failure("could not list its tools", &e.to_string())),
                Ok(Ok(listed)) => Ok(listed),
            },
        };
        let listed = match listed {
            Ok(listed) => listed,
            Err(e) => {
                self.forget_connection().await;
                self.state.lock().await.failed_until =
                    Some(tokio::time::Instant::now() + RETRY_LISTING_AFTER);
                return Err(e);
            }
        };
        let mut tools: Vec<McpTool> = Vec::new();
        for tool in listed {
            if self
                .allowed
                .as_ref()
                .is_some_and(|allowed| !allowed.iter().any(|a| a == tool.name.as_ref()))
            {
                continue;
            }
            let exposed = exposed_name(&self.name, &tool.name, &tools);
            tools.push(McpTool {
                exposed,
                name: tool.name.to_string(),
                server: self.name.clone(),
                description: tool
                    .description
                    .as_deref()
                    .or(tool.title.as_deref())
                    .unwrap_or(tool.name.as_ref())
                    .to_owned(),
                schema: Value::Object((*tool.input_schema).clone()),
            });
        }
        let mut state = self.state.lock().await;
        state.tools = Some(tools.clone());
        state.failed_until = None;
        Ok(tools)
    }

    /// What failed, for the model and the log: which server and what it was doing, with the
    /// transport's own text only in the log, its URL cut to the host (URLs may carry keys).
    fn failure(&self, doing: &str, detail: &str) -> String {
        tracing::warn!(mcp_server = %self.name, detail = %redact(detail, &self.url), "an MCP server {doing}");
        format!(
            "the MCP server {} {doing}: it cannot be reached or answered an error",
            self.name
        )
    }

    /// Whether the server, listed anew, still has a tool `name`.
    async fn still_has(&self, name: &str) -> Result<bool, String> {
        Ok(self.tools(true).await?.iter().any(|t| t.name == name))
    }

    /// Calls the server's tool `name`; the result for the model, or why it failed.
    async fn call(&self, name: &str, arguments: Value) -> Result<Value, String> {
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("the arguments must be a JSON object, got {other}")),
        };
        let mut relisted = false;
        loop {
            let client = self.client().await?;
            let mut params = CallToolRequestParams::new(name.to_owned());
            params.arguments = Some(arguments.clone());
            let Ok(called) = tokio::time::timeout(self.timeout, client.call_tool(params)).await
            else {
                return Err(format!(
                    "the MCP server {} did not answer within {} s",
                    self.name,
                    self.timeout.as_secs_f64()
                ));
            };
            // A tool the server no longer has — told by an error, or (some servers) by an
            // error result — makes the list be read again, once.
            let unknown = match &called {
                Err(rmcp::ServiceError::McpError(error)) => names_unknown_tool(&error.message),
                Ok(result) => result.is_error == Some(true) && names_unknown_tool(&text_of(result)),
                Err(_) => false,
            };
            if unknown && !relisted {
                relisted = true;
                if self.still_has(name).await? {
                    continue;
                }
                return Err(format!(
                    "the MCP server {} no longer has a tool {name}",
                    self.name
                ));
            }
            return match called {
                Ok(result) => Ok(result_for_model(&result)),
                // The server's own JSON-RPC error is its answer; anything else is the
                // connection's, and stays in the log.
                Err(rmcp::ServiceError::McpError(error)) => Err(format!(
                    "the MCP server {} answered an error: {}",
                    self.name, error.message
                )),
                Err(e) => {
                    if client.is_transport_closed() {
                        self.forget_connection().await;
                    }
                    Err(self.failure("failed during the call", &e.to_string()))
                }
            };
        }
    }
}

/// Whether an error's text says the tool does not exist.
fn names_unknown_tool(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("unknown tool") || (text.contains("tool") && text.contains("not found"))
}

/// The text of a result's text blocks.
fn text_of(result: &CallToolResult) -> String {
    result
        .content
        .iter()
        .filter_map(|block| match block {
            ContentBlock::Text(text) => Some(text.text.as_str()),
            _ => None,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool result as the model reads it: `{"result": ...}` — the structured content when the
/// server gave one (its text blocks then say the same), else the text (read as JSON when it
/// is JSON) — or `{"error": ...}` when the tool reported one. A result over
/// [`MAX_RESULT_BYTES`] is cut, with `"truncated": true` and its full size.
fn result_for_model(result: &CallToolResult) -> Value {
    let text = text_of(result);
    if result.is_error == Some(true) {
        let message = if text.is_empty() {
            "the tool failed".to_owned()
        } else {
            text
        };
        return json!({"error": cut(&message)});
    }
    let value = match &result.structured_content {
        Some(structured) => structured.clone(),
        None => serde_json::from_str::<Value>(&text).unwrap_or(Value::String(text)),
    };
    let size = value.to_string().len();
    if size <= MAX_RESULT_BYTES {
        return json!({"result": value});
    }
    let text = match value {
        Value::String(text) => text,
        other => other.to_string(),
    };
    json!({"result": cut(&text), "truncated": true, "bytes": size})
}

/// `text` cut to [`MAX_RESULT_BYTES`] at a character boundary.
fn cut(text: &str) -> String {
    if text.len() <= MAX_RESULT_BYTES {
        return text.to_owned();
    }
    let mut end = MAX_RESULT_BYTES;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// `text` with `url` replaced by [`ak_core::secret::redacted_url`]: transport errors quote the URL, which may
/// carry a key in its credentials, path or query.
pub fn redact(text: &str, url: &str) -> String {
    text.replace(url, &ak_core::secret::redacted_url(url))
}

/// `<server>__<tool>` as a function name: letters, digits, `_` and `-` only, at most 64
/// characters (a long name keeps its start and gets a short hash), unique among `taken`.
fn exposed_name(server: &str, tool: &str, taken: &[McpTool]) -> String {
    let clean: String = format!("{server}__{tool}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut name = if clean.len() <= MAX_NAME {
        clean.clone()
    } else {
        format!("{}_{:08x}", &clean[..MAX_NAME - 9], fnv(&clean))
    };
    let mut n = 2;
    while taken.iter().any(|t| t.exposed == name) {
        let suffix = format!("_{n}");
        let keep = name.len().min(MAX_NAME - suffix.len());
        name = format!("{}{suffix}", &clean[..keep.min(clean.len())]);
        n += 1;
    }
    name
}

/// A small stable hash (FNV-1a) for shortened names.
fn fnv(text: &str) -> u32 {
    text.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposed_names_are_valid_unique_and_short() {
        assert_eq!(exposed_name("tools", "add", &[]), "tools__add");
        assert_eq!(
            exposed_name("gh", "repo.search/v2", &[]),
            "gh__repo_search_v2"
        );
        let long = exposed_name("server", &"x".repeat(100), &[]);
        assert_eq!(long.len(), MAX_NAME);
        let taken = vec![McpTool {
            exposed: "gh__repo_search".into(),
            name: "repo search".into(),
            server: "gh".into(),
            description: String::new(),
            schema: json!({}),
        }];
        assert_eq!(
            exposed_name("gh", "repo.search", &taken),
            "gh__repo_search_2"
        );
    }

    #[test]
    fn results_carry_text_json_structured_content_and_errors() {
        let ok: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "{\"sum\": 5}"}],
            "structuredContent": {"sum": 5}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(result_for_model(&ok), json!({"result": {"sum": 5}}), "once");
        let huge: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "é".repeat(MAX_RESULT_BYTES)}]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let cut = result_for_model(&huge);
        assert_eq!(cut["truncated"], true);
        assert!(
            cut["result"]
                .as_str()
                .is_some_and(|t| t.len() <= MAX_RESULT_BYTES)
        );
        assert_eq!(
            redact(
                "error sending request for url (https://u:p@mcp.example.com/s/sk-1?key=k)",
                "https://u:p@mcp.example.com/s/sk-1?key=k"
            ),
            "error sending request for url (https://mcp.example.com/…)"
        );
        let failed: CallToolResult = serde_json::from_value(json!({
            "content": [{"type": "text", "text": "division by zero"}], "isError": true
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            result_for_model(&failed),
            json!({"error": "division by zero"})
        );
    }
}
