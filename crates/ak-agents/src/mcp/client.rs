//! The MCP client: servers connected on first use through rmcp (see the parent module).

use super::content::{result_for_model, text_of};
use super::transport::McpHttp;
use super::{McpConfigError, McpTool, ToolOutput};
use ak_core::config::{McpServerSettings, McpSettings};
use ak_core::secret::Secret;
use rmcp::ServiceExt;
use rmcp::model::CallToolRequestParams;
use rmcp::service::{RoleClient, RunningService};
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Longest function name model APIs accept.
const MAX_NAME: usize = 64;

/// The MCP servers of a deployment, connected on first use.
#[derive(Default)]
pub struct McpServers {
    servers: BTreeMap<String, Arc<McpServer>>,
    /// Whether images in results go to the model (`mcp.attach_images`).
    attach_images: bool,
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
        Ok(Self {
            servers,
            attach_images: settings.attach_images,
        })
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

    /// Calls `tool` with `arguments`: the result for the model (with the images to attach),
    /// `{"error": ...}` on failure.
    pub async fn call(&self, tool: &McpTool, arguments: Value) -> ToolOutput {
        let failed = |e: String| ToolOutput {
            value: json!({"error": e}),
            attachments: Vec::new(),
        };
        let Some(server) = self.servers.get(&tool.server) else {
            return failed(format!("there is no MCP server {}", tool.server));
        };
        match server.call(&tool.name, arguments, self.attach_images).await {
            Ok(result) => result,
            Err(e) => {
                tracing::warn!(mcp_server = %tool.server, tool = %tool.name, error = %e, "MCP tool call failed");
                failed(e)
            }
        }
    }
}

type Client = RunningService<RoleClient, ()>;

/// A connection: the client, and the HTTP client under it (which notes task-only tools).
#[derive(Clone)]
struct Connection {
    client: Arc<Client>,
    http: McpHttp,
}

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
    connection: Option<Connection>,
    tools: Option<Vec<McpTool>>,
    /// Tools found callable only as tasks, left out of later listings.
    task_only: HashSet<String>,
    /// After a failed listing, the server is left alone until then (so a server that is down
    /// does not cost every model call its timeout).
    failed_until: Option<tokio::time::Instant>,
}

/// How long a server whose tools could not be listed is left alone.
const RETRY_LISTING_AFTER: Duration = Duration::from_secs(30);

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
    async fn connection(&self) -> Result<Connection, String> {
        let mut state = self.state.lock().await;
        if let Some(connection) = &state.connection
            && !connection.client.is_transport_closed()
        {
            return Ok(connection.clone());
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
        let http = McpHttp::new()?;
        let transport = StreamableHttpClientTransport::with_client(http.clone(), config);
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
        let connection = Connection {
            client: Arc::new(client),
            http,
        };
        state.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Drops the connection (ending its session with the server): the next use connects
    /// anew, in a new session. The tools listed stay offered (a run's later turns keep the
    /// same tools; a tool the server no longer has is found by its call).
    async fn drop_connection(&self) {
        if let Some(connection) = self.state.lock().await.connection.take() {
            connection.client.cancellation_token().cancel();
        }
    }

    /// Drops the connection and the tools listed through it: the next use connects anew and
    /// lists again.
    async fn forget_connection(&self) {
        self.drop_connection().await;
        self.state.lock().await.tools = None;
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
        let connection = self.connection().await;
        let listed = match &connection {
            Err(e) => Err(e.clone()),
            Ok(connection) => {
                match tokio::time::timeout(self.timeout, connection.client.list_all_tools()).await {
                    Err(_) => Err(format!(
                        "the MCP server {} did not list its tools within {} s",
                        self.name,
                        self.timeout.as_secs_f64()
                    )),
                    Ok(Err(e)) => Err(self.failure("could not list its tools", &e.to_string())),
                    Ok(Ok(listed)) => Ok(listed),
                }
            }
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
        let mut task_only = self.state.lock().await.task_only.clone();
        if let Ok(connection) = &connection {
            task_only.extend(connection.http.task_only());
        }
        let mut tools: Vec<McpTool> = Vec::new();
        for tool in listed {
            if task_only.contains(tool.name.as_ref()) {
                tracing::info!(mcp_server = %self.name, tool = %tool.name, "an MCP tool callable only as a task is not offered (tasks are not supported)");
                continue;
            }
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
        state.task_only = task_only;
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
    async fn call(
        &self,
        name: &str,
        arguments: Value,
        attach_images: bool,
    ) -> Result<ToolOutput, String> {
        let arguments = match arguments {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            other => return Err(format!("the arguments must be a JSON object, got {other}")),
        };
        let mut relisted = false;
        loop {
            let connection = self.connection().await?;
            let mut params = CallToolRequestParams::new(name.to_owned());
            params.arguments = Some(arguments.clone());
            // Dropped at the timeout, the call tells the server (`notifications/cancelled`).
            let Ok(called) =
                tokio::time::timeout(self.timeout, connection.client.call_tool(params)).await
            else {
                // No answer may mean a session the server lost (a restart) answered in a way
                // no call can be matched to: the next use starts a new one.
                self.drop_connection().await;
                return Err(format!(
                    "the MCP server {} did not answer within {} s",
                    self.name,
                    self.timeout.as_secs_f64()
                ));
            };
            // A tool callable only as a task (a server answering -32601, or an error result
            // saying so): never offered again.
            let task_only = match &called {
                Err(rmcp::ServiceError::McpError(error)) => {
                    error.code == rmcp::model::ErrorCode::METHOD_NOT_FOUND
                        || names_task_only(&error.message)
                }
                Ok(result) => result.is_error == Some(true) && names_task_only(&text_of(result)),
                Err(_) => false,
            };
            if task_only {
                let mut state = self.state.lock().await;
                state.task_only.insert(name.to_owned());
                if let Some(tools) = &mut state.tools {
                    tools.retain(|t| t.name != name);
                }
                tracing::info!(mcp_server = %self.name, tool = %name, "an MCP tool callable only as a task is not offered any more (tasks are not supported)");
                return Err(format!(
                    "the MCP tool {name} of {} can only be run as a task, which is not supported here; use another tool",
                    self.name
                ));
            }
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
                Ok(result) => Ok(result_for_model(&result, attach_images)),
                // The server's own JSON-RPC error is its answer; anything else is the
                // connection's, and stays in the log.
                Err(rmcp::ServiceError::McpError(error)) => Err(format!(
                    "the MCP server {} answered an error: {}",
                    self.name, error.message
                )),
                Err(e) => {
                    self.drop_connection().await;
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

/// Whether an error's text says the tool must be called as a task (the TypeScript SDK's
/// "requires task augmentation").
fn names_task_only(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("task augmentation") || text.contains("-32601")
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
    fn urls_in_transport_errors_are_redacted() {
        assert_eq!(
            redact(
                "error sending request for url (https://u:p@mcp.example.com/s/sk-1?key=k)",
                "https://u:p@mcp.example.com/s/sk-1?key=k"
            ),
            "error sending request for url (https://mcp.example.com/…)"
        );
    }
}
