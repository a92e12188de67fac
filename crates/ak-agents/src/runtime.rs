//! The run loop: start at the requested agent, call the model with the agent's instructions,
//! the session history and the new message; execute tool calls and follow handoffs until an
//! agent answers in text or `max_turns` model calls are used up. The session is saved only after
//! a successful run.

use crate::agent::{Agent, AgentError, AgentSet, handoff_tool_name};
use crate::mcp::{McpServers, McpTool};
use crate::model::{
    FinishReason, ModelError, ModelProvider, ModelRequest, TextSink, ToolCall, ToolSpec, Usage,
};
use crate::offline::OfflineModel;
use crate::openai::{OPENAI_BASE_URL, OpenAiConfig, OpenAiProvider};
use crate::telemetry;
use crate::tool::{ToolContext, ToolRegistry};
use ak_core::config::{ModelProvider as ProviderKind, ModelSettings, Settings};
use ak_core::events::{EventSender, RunEvent};
use ak_core::ports::{
    Appended, HistoryLimits, PortError, SessionHistory, SessionStore, Turn, now_epoch_secs,
};
use ak_core::secret::Secret;
use ak_core::{ApiError, RunRequest};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The result of a successful run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutcome {
    /// The final text.
    pub text: String,
    /// The agent that wrote it (after handoffs).
    pub agent: String,
    /// Tokens used over all model calls.
    pub usage: Usage,
    /// Model calls made.
    pub turns: u32,
    /// Time spent waiting for the model, over all calls.
    pub model_ms: f64,
    /// The model declined; `text` is its refusal.
    pub refusal: bool,
    /// The token limit cut the answer off (`finish_reason: length`); `text` is what was written.
    pub truncated: bool,
    /// The session already held this request's turn (a redelivery or a retry): this is its
    /// answer, and the model was not called.
    pub repeated: bool,
    /// Calls of the client's tools the run stopped at: `[{"id", "name", "arguments"}]`.
    pub tool_calls: Vec<Value>,
    /// The run paused: calls wait for a person's approval. Its state, to store and resume
    /// from: `{"agent", "items", "calls", "approvals": [{"id", "agent", "tool",
    /// "arguments"}], "usage", "turns", "expires_in"}`.
    pub pause: Option<Value>,
}

impl RunOutcome {
    /// A run that stopped before its answer (at client tool calls, or a pause): `text` so far,
    /// by `agent`, after `turns` model calls.
    fn stopped(text: String, agent: &str, usage: Usage, turns: u32, model_ms: f64) -> Self {
        RunOutcome {
            text,
            agent: agent.to_owned(),
            usage,
            turns,
            model_ms,
            refusal: false,
            truncated: false,
            repeated: false,
            tool_calls: Vec::new(),
            pause: None,
        }
    }
}

/// A run that did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The request named an agent that does not exist.
    #[error("unknown agent {name:?}; available: {known}")]
    UnknownAgent {
        /// The name asked for.
        name: String,
        /// The names that exist.
        known: String,
    },
    /// A model call failed.
    #[error(transparent)]
    Model(#[from] ModelError),
    /// The agents kept calling tools past the limit.
    #[error("the agent did not finish within max_turns = {0} model calls")]
    MaxTurns(u32),
    /// The provider's content filter stopped the answer (or refused the prompt).
    #[error(
        "the model provider's content filter blocked this {0}; rephrase the message (finish_reason content_filter)"
    )]
    Filtered(&'static str),
    /// The provider failed while writing the answer (`finish_reason: error`).
    #[error("the model provider failed while writing its answer (finish_reason error)")]
    BrokenAnswer,
    /// The model answered with no text, no refusal and no tool call.
    #[error("{}", if *cut_off {
        "the model reached its token limit before writing any answer (finish_reason length); raise the model's output limit or shorten the conversation"
    } else {
        "the model answered with no text and no tool call"
    })]
    EmptyAnswer {
        /// It stopped at the token limit (while reasoning, typically).
        cut_off: bool,
    },
    /// The session belongs to another user.
    #[error("session {0} belongs to another user; start a new session (omit session_id)")]
    SessionOwned(String),
    /// The session holds a turn of this request id for a different request.
    #[error("request_id {0} was already used for a different request")]
    RequestIdReused(String),
    /// The session store failed or another request changed the session meanwhile.
    #[error(transparent)]
    Session(#[from] PortError),
    /// A paused run's stored state cannot be resumed (its agent is gone, the state is not
    /// one this runtime wrote).
    #[error("the paused run cannot be resumed: {0}")]
    BadResume(String),
}

impl RunError {
    /// A low-cardinality name of the failure (a trace's `error.type`).
    pub fn kind(&self) -> &'static str {
        match self {
            RunError::UnknownAgent { .. } => "unknown_agent",
            RunError::Model(_) => "model",
            RunError::MaxTurns(_) => "max_turns",
            RunError::Filtered(_) => "content_filter",
            RunError::BrokenAnswer => "broken_answer",
            RunError::EmptyAnswer { .. } => "empty_answer",
            RunError::SessionOwned(_) => "session_owned",
            RunError::RequestIdReused(_) => "request_id_reused",
            RunError::Session(_) => "session_store",
            RunError::BadResume(_) => "bad_resume",
        }
    }

    /// Whether running the same request again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            RunError::Session(e) => e.is_transient(),
            RunError::Model(
                ModelError::Rejected { .. }
                | ModelError::InvalidResponse(_)
                | ModelError::Refused { .. },
            ) => false,
            RunError::Model(_) | RunError::BrokenAnswer => true,
            RunError::UnknownAgent { .. }
            | RunError::MaxTurns(_)
            | RunError::SessionOwned(_)
            | RunError::RequestIdReused(_)
            | RunError::Filtered(_)
            | RunError::EmptyAnswer { .. }
            | RunError::BadResume(_) => false,
        }
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> Self {
        match e {
            RunError::UnknownAgent { .. } => ApiError::BadRequest(e.to_string()),
            RunError::SessionOwned(_) => ApiError::Forbidden(e.to_string()),
            RunError::RequestIdReused(request_id) => ApiError::RequestIdReused { request_id },
            RunError::Filtered(_) => ApiError::ContentFiltered {
                request_id: None,
                message: e.to_string(),
            },
            RunError::Model(model) if model.is_content_filter() => ApiError::ContentFiltered {
                request_id: None,
                message: RunError::Filtered("request").to_string(),
            },
            // Rate limited through every retry: the client may try again later. An exhausted
            // quota is the operator's to fix, not the client's to retry (a 502 below).
            RunError::Model(ModelError::Unavailable {
                status: 429,
                ref detail,
                ..
            }) if detail.as_deref() != Some("insufficient_quota") => ApiError::RateLimited {
                request_id: None,
                message: e.to_string(),
            },
            RunError::Model(_)
            | RunError::MaxTurns(_)
            | RunError::EmptyAnswer { .. }
            | RunError::BrokenAnswer => ApiError::ModelProvider {
                request_id: None,
                message: e.to_string(),
            },
            RunError::Session(port) => port.into(),
            RunError::BadResume(_) => ApiError::internal(None, e.to_string()),
        }
    }
}

/// A model provider configuration that cannot work.
#[derive(Debug, thiserror::Error)]
#[error("model configuration: {0}")]
pub struct ProviderError(pub String);

/// The model provider the settings call for. `lookup` reads plain environment variables
/// (`OPENAI_API_KEY`, `OPENAI_BASE_URL`). With no provider configured: OpenAI-compatible when a
/// key is set, else the offline model if `offline_fallback` (local runs), else an error — a
/// deployed function must not answer canned text because a key is missing.
pub fn model_provider(
    settings: &ModelSettings,
    lookup: &dyn Fn(&str) -> Option<String>,
    offline_fallback: bool,
    aws: &ak_adapters::AwsConfig,
) -> Result<Arc<dyn ModelProvider>, ProviderError> {
    let var = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
    let api_key = settings
        .api_key
        .clone()
        .or_else(|| var("OPENAI_API_KEY").map(Secret::new));
    let kind = match settings.provider {
        Some(kind) => kind,
        None if api_key.is_some() => ProviderKind::OpenAi,
        None if offline_fallback => ProviderKind::Offline,
        None => {
            return Err(ProviderError(
                "OPENAI_API_KEY is not set (nor model.api_key); set it, or set model.provider \
                 to offline to serve canned answers on purpose"
                    .to_owned(),
            ));
        }
    };
    match kind {
        ProviderKind::Offline => Ok(Arc::new(OfflineModel)),
        #[cfg(feature = "bedrock")]
        ProviderKind::Bedrock => Ok(Arc::new(crate::bedrock::BedrockProvider::new(
            aws.clone(),
            crate::bedrock::BedrockConfig {
                timeout: Duration::from_secs_f64(settings.timeout.max(0.001)),
                max_retries: settings.max_retries,
                endpoint: settings.base_url.clone(),
            },
        ))),
        #[cfg(not(feature = "bedrock"))]
        ProviderKind::Bedrock => {
            let _ = aws;
            Err(ProviderError(
                "model.provider is bedrock, but this build has no Bedrock provider: build the functions with the `bedrock` feature (deploy.sh adds it when the Terraform variables name bedrock: model_provider)".to_owned(),
            ))
        }
        ProviderKind::OpenAi => {
            let base_url = settings
                .base_url
                .clone()
                .or_else(|| var("OPENAI_BASE_URL"))
                .unwrap_or_else(|| OPENAI_BASE_URL.to_owned());
            let provider = OpenAiProvider::new(OpenAiConfig {
                base_url,
                api_key,
                timeout: Duration::from_secs_f64(settings.timeout.max(0.001)),
                max_retries: settings.max_retries,
            })
            .map_err(ProviderError)?;
            Ok(Arc::new(provider))
        }
    }
}

/// Agents, a model and a session store: everything needed to answer a [`RunRequest`].
pub struct AgentRuntime {
    agents: AgentSet,
    model: Arc<dyn ModelProvider>,
    sessions: Arc<dyn SessionStore>,
    model_name: String,
    max_turns: u32,
    limits: HistoryLimits,
    mcp: Arc<McpServers>,
    /// Seconds a pause waits for a decision (`agents.approval_timeout`).
    approval_timeout: f64,
    /// MCP tools whose calls wait for approval: server → its tool names (`"*"`: all).
    mcp_approval: std::collections::BTreeMap<String, Vec<String>>,
}

impl AgentRuntime {
    /// A runtime from its parts.
    pub fn new(
        agents: AgentSet,
        model: Arc<dyn ModelProvider>,
        sessions: Arc<dyn SessionStore>,
        settings: &Settings,
    ) -> Self {
        Self {
            agents,
            model,
            sessions,
            model_name: settings.model.name.clone(),
            max_turns: settings.agents.max_turns.max(1),
            limits: HistoryLimits {
                max_items: usize::try_from(settings.agents.history_window).unwrap_or(usize::MAX),
                max_bytes: settings.agents.history_max_bytes,
            },
            mcp: Arc::new(McpServers::default()),
            approval_timeout: settings.agents.approval_timeout,
            mcp_approval: settings
                .mcp
                .servers
                .iter()
                .filter(|s| !s.approval.is_empty())
                .map(|s| (s.name.clone(), s.approval.clone()))
                .collect(),
        }
    }

    /// Whether `call` must wait for a person's approval: the agent's `approval` list names the
    /// tool, the tool's code says so for these arguments, or its MCP server's `approval` list
    /// names it. Handoffs and the client's own tools never wait.
    fn needs_approval(
        &self,
        agent: &Agent,
        call: &ToolCall,
        mcp_tools: &[McpTool],
        context: &ToolContext,
    ) -> bool {
        if let Some(tool) = agent.tools.iter().find(|t| t.name() == call.name) {
            let arguments = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
            let context = ToolContext {
                call_id: call.id.clone(),
                ..context.clone()
            };
            return agent.approval.contains(&call.name)
                || tool.needs_approval(&arguments, &context);
        }
        mcp_tools
            .iter()
            .find(|t| t.exposed == call.name)
            .and_then(|t| Some((t, self.mcp_approval.get(&t.server)?)))
            .is_some_and(|(t, names)| names.iter().any(|n| n == "*" || *n == t.name))
    }

    /// Gives the agents the tools of these MCP servers (see [`crate::mcp`]).
    pub fn with_mcp(mut self, servers: McpServers) -> Self {
        self.mcp = Arc::new(servers);
        self
    }

    /// The agents from `settings` with `tools`, and the given model and session store.
    pub fn from_settings(
        settings: &Settings,
        tools: &ToolRegistry,
        model: Arc<dyn ModelProvider>,
        sessions: Arc<dyn SessionStore>,
    ) -> Result<Self, AgentError> {
        let agents = AgentSet::from_settings(&settings.agents, tools)?;
        let mcp = McpServers::from_settings(&settings.mcp, &|name| std::env::var(name).ok())?;
        Ok(Self::new(agents, model, sessions, settings).with_mcp(mcp))
    }

    /// The agents served.
    pub fn agents(&self) -> &AgentSet {
        &self.agents
    }

    /// Which model provider answers (`openai`, `offline`).
    pub fn provider_name(&self) -> &'static str {
        self.model.name()
    }

    /// Runs one chat turn.
    pub async fn run(&self, request: &RunRequest) -> Result<RunOutcome, RunError> {
        self.run_with_events(request, None).await
    }

    /// Runs one chat turn, reporting it to `events` as it happens: `agent` at the start and on
    /// each handoff, `delta` for the text the model writes (the model is asked to stream),
    /// `tool_call` and `tool_result` for each tool. `done` and `error` are the caller's.
    ///
    /// Traced as an `invoke_agent {agent}` span (see [`crate::telemetry`]).
    pub async fn run_with_events(
        &self,
        request: &RunRequest,
        events: Option<&EventSender>,
    ) -> Result<RunOutcome, RunError> {
        use tracing::Instrument as _;
        let entry = request
            .agent
            .clone()
            .unwrap_or_else(|| self.agents.default_agent().name.clone());
        let span = telemetry::agent_span(
            None,
            &entry,
            &request.session_id,
            telemetry::provider_name(self.model.name()),
            &self.model_name,
        );
        let result = self
            .run_traced(request, events, &span)
            .instrument(span.clone())
            .await;
        match &result {
            Ok(outcome) => telemetry::record_usage(&span, &outcome.usage),
            Err(e) => ak_core::otel::record_error(&span, e.kind()),
        }
        result
    }

    async fn run_traced(
        &self,
        request: &RunRequest,
        events: Option<&EventSender>,
        run_span: &tracing::Span,
    ) -> Result<RunOutcome, RunError> {
        use tracing::Instrument as _;
        let provider = telemetry::provider_name(self.model.name());
        // The span of the agent now answering: the run's, then each handoff's child.
        let mut agent_span = run_span.clone();
        let emit = |event: RunEvent| {
            if let Some(events) = events {
                events.send(event);
            }
        };
        let mut agent = match &request.agent {
            None => self.agents.default_agent(),
            Some(name) => self
                .agents
                .get(name)
                .ok_or_else(|| RunError::UnknownAgent {
                    name: name.clone(),
                    known: self.agents.names().join(", "),
                })?,
        };
        // The request's own turn is looked up by id, not only in the loaded window: a turn the
        // limits leave out (a large one, or one pushed out by later turns) is still this
        // request's answer.
        // A conversation the client keeps (`history`) stands in for the session: nothing is
        // read from or written to the session store.
        let keeps_session = request.history.is_none();
        let (history, own_turn) = match &request.history {
            Some(messages) => (client_history(messages, self.limits), None),
            None => {
                let (history, own_turn) = tokio::join!(
                    self.sessions.load(&request.session_id, self.limits),
                    self.sessions.find(&request.session_id, &request.request_id)
                );
                (history?.unwrap_or_default(), own_turn?)
            }
        };
        // A session started by a known user stays theirs; sessions started anonymously stay open.
        if let Some(owner) = &history.user_id
            && request.user_id.as_deref() != Some(owner.as_str())
        {
            return Err(RunError::SessionOwned(request.session_id.clone()));
        }
        let fingerprint = request.fingerprint();
        // The same request again (a redelivery after a crash, a client's retry): the session's
        // turn is the answer; the model is not called and nothing is appended.
        if let Some(turn) = &own_turn {
            let outcome = answer_of(turn, &fingerprint)?;
            emit(RunEvent::Agent {
                agent: outcome.agent.clone(),
            });
            emit(RunEvent::Delta {
                text: outcome.text.clone(),
            });
            return Ok(outcome);
        }
        emit(RunEvent::Agent {
            agent: agent.name.clone(),
        });
        let on_text = events.map(|events| {
            let events = events.clone();
            TextSink(Arc::new(move |text: &str| {
                events.send(RunEvent::Delta {
                    text: text.to_owned(),
                });
            }))
        });
        let tool_context = ToolContext {
            request_id: request.request_id.clone(),
            session_id: request.session_id.clone(),
            user_id: request.user_id.clone(),
            context: request.context.clone(),
            call_id: String::new(),
        };
        // A continuation (the client's tool results at the end of its history) has no prompt.
        let mut new_items = if request.prompt.is_empty() && request.history.is_some() {
            Vec::new()
        } else {
            vec![json!({"role": "user", "content": request.prompt})]
        };
        // The client's own tools, offered beside the agent's (whose names win), only where
        // the client keeps the conversation (it sends their results back in it).
        let client_tools: Vec<ToolSpec> = if request.history.is_some() {
            request
                .client_tools
                .iter()
                .filter_map(|t| {
                    Some(ToolSpec {
                        name: t["name"].as_str()?.to_owned(),
                        description: t["description"].as_str().unwrap_or_default().to_owned(),
                        parameters: t
                            .get("parameters")
                            .filter(|p| p.is_object())
                            .cloned()
                            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                    })
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut usage = Usage::default();
        let mut model_ms = 0.0;
        // A run resumed after a person decided on its paused calls: the state it paused with,
        // then those calls run (or go back to the model refused) before the model is asked
        // again.
        let mut resumed: Option<(Vec<ToolCall>, Vec<Value>)> = None;
        let mut first_turn = 1;
        if let Some(resume) = &request.resume {
            let state = &resume["state"];
            let bad = |what: String| RunError::BadResume(what);
            agent = state["agent"]
                .as_str()
                .and_then(|name| self.agents.get(name))
                .ok_or_else(|| bad(format!("agent {} is not defined", state["agent"])))?;
            new_items = serde_json::from_value(state["items"].clone())
                .map_err(|e| bad(format!("items: {e}")))?;
            usage = serde_json::from_value(state["usage"].clone()).unwrap_or_default();
            first_turn = state["turns"]
                .as_u64()
                .and_then(|t| u32::try_from(t).ok())
                .unwrap_or(1);
            let calls: Vec<ToolCall> = serde_json::from_value(state["calls"].clone())
                .map_err(|e| bad(format!("calls: {e}")))?;
            let decisions = resume["decisions"].as_array().cloned().unwrap_or_default();
            resumed = Some((calls, decisions));
        }

        for turn_count in first_turn..=self.max_turns {
            let mcp_tools = self.mcp.tools(&agent.mcp_servers).await;
            let mut tools = tool_specs(agent, &self.agents);
            tools.extend(mcp_tools.iter().map(McpTool::spec));
            let offered: Vec<String> = tools.iter().map(|t| t.name.clone()).collect();
            let client_tool_names: Vec<&str> = client_tools
                .iter()
                .filter(|t| !offered.contains(&t.name))
                .map(|t| t.name.as_str())
                .collect();
            tools.extend(
                client_tools
                    .iter()
                    .filter(|t| client_tool_names.contains(&t.name.as_str()))
                    .cloned(),
            );
            let (calls, decisions) = if let Some(resumed) = resumed.take() {
                resumed
            } else {
                let model_request = ModelRequest {
                    model: agent
                        .model
                        .clone()
                        .unwrap_or_else(|| self.model_name.clone()),
                    agent: agent.name.clone(),
                    messages: self.messages(
                        agent,
                        &request.context,
                        &history.turns,
                        &new_items,
                        !tools.is_empty(),
                    ),
                    tools,
                    deadline: request.deadline,
                    on_text: on_text.clone(),
                };
                let called = std::time::Instant::now();
                let chat = telemetry::chat_span(
                    &agent_span,
                    provider,
                    &model_request.model,
                    &model_request.messages,
                );
                let reply = self
                    .model
                    .complete(&model_request)
                    .instrument(chat.clone())
                    .await;
                telemetry::record_reply(&chat, &reply);
                drop(chat);
                let reply = reply?;
                model_ms += called.elapsed().as_secs_f64() * 1000.0;
                usage += reply.usage;

                if reply.finish == FinishReason::ContentFilter {
                    tracing::warn!(request_id = %request.request_id, agent = %agent.name, "the model provider's content filter blocked the answer");
                    return Err(RunError::Filtered("answer"));
                }
                if reply.finish == FinishReason::Error {
                    tracing::warn!(request_id = %request.request_id, agent = %agent.name, "the model provider failed while writing its answer");
                    return Err(RunError::BrokenAnswer);
                }
                if reply.tool_calls.is_empty() {
                    let truncated = reply.finish == FinishReason::Length;
                    let (text, refusal) = match (reply.refusal, reply.content) {
                        (Some(refusal), _) => (refusal, true),
                        (None, Some(text)) => (text, reply.finish == FinishReason::Refusal),
                        (None, None) => return Err(RunError::EmptyAnswer { cut_off: truncated }),
                    };
                    let truncated = truncated && !refusal;
                    let mut answer =
                        json!({"role": "assistant", "content": text, "agent": agent.name});
                    if refusal {
                        tracing::warn!(request_id = %request.request_id, agent = %agent.name, "the model refused to answer");
                        answer["outcome"] = json!("refusal");
                    } else if truncated {
                        tracing::warn!(request_id = %request.request_id, agent = %agent.name, "the answer was cut off at the model's token limit");
                        answer["outcome"] = json!("cut_off");
                    }
                    new_items.push(answer);
                    // Reasoning and tool results' images served their purpose within this run;
                    // the session never keeps them (the results' text names the images).
                    for item in &mut new_items {
                        if let Value::Object(map) = item {
                            map.remove("reasoning_content");
                            if map.remove("attachments").is_some()
                                && let Some(Value::String(content)) = map.get_mut("content")
                            {
                                // Later turns are told the image was shown, not that it follows.
                                *content = content.replace(
                                    "attached after the tool results]",
                                    "shown to the model then, not kept]",
                                );
                            }
                        }
                    }
                    let turn = Turn {
                        request_id: request.request_id.clone(),
                        fingerprint,
                        // The session's owner is its first user, carried on every turn: an
                        // anonymous session stays open, an owned one stays its owner's.
                        user_id: if history.has_turns {
                            history.user_id.clone()
                        } else {
                            request.user_id.clone()
                        },
                        items: new_items,
                        created_at: now_epoch_secs(),
                    };
                    let appended = if keeps_session {
                        self.sessions
                            .append(&request.session_id, history.next_seq, &turn)
                            .await?
                    } else {
                        Appended::Stored
                    };
                    if appended == Appended::Duplicate {
                        // Another delivery of this request stored its turn first: that one is the
                        // answer, and this run's is dropped, so the session holds the turn once.
                        tracing::info!(request_id = %request.request_id, "the session already holds this request's turn");
                        if let Some(stored) = self
                            .sessions
                            .find(&request.session_id, &request.request_id)
                            .await?
                        {
                            return answer_of(&stored, &turn.fingerprint);
                        }
                    }
                    return Ok(RunOutcome {
                        text,
                        agent: agent.name.clone(),
                        usage,
                        turns: turn_count,
                        model_ms,
                        refusal,
                        truncated,
                        repeated: false,
                        tool_calls: Vec::new(),
                        pause: None,
                    });
                }

                // A call of a client's tool ends the run: the client runs it and sends the result
                // in its next request (its `history`). Server tools the same reply called are not
                // run; the model calls them again when it continues.
                let client_calls: Vec<&ToolCall> = reply
                    .tool_calls
                    .iter()
                    .filter(|c| client_tool_names.contains(&c.name.as_str()))
                    .collect();
                if !client_calls.is_empty() {
                    let mut pending = Vec::with_capacity(client_calls.len());
                    for call in client_calls {
                        emit(RunEvent::ToolCall {
                            id: call.id.clone(),
                            name: call.name.clone(),
                            arguments: serde_json::from_str(&call.arguments)
                                .unwrap_or_else(|_| Value::String(call.arguments.clone())),
                        });
                        pending.push(
                            json!({"id": call.id, "name": call.name, "arguments": call.arguments}),
                        );
                    }
                    return Ok(RunOutcome {
                        tool_calls: pending,
                        ..RunOutcome::stopped(
                            reply.content.unwrap_or_default(),
                            &agent.name,
                            usage,
                            turn_count,
                            model_ms,
                        )
                    });
                }

                let calls: Vec<Value> = reply
                .tool_calls
                .iter()
                .map(|c| {
                    let mut call = json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}});
                    if let Some(extra) = &c.extra {
                        call["extra_content"] = extra.clone();
                    }
                    call
                })
                .collect();
                // No `content: null` beside tool calls: the field is optional there, and some strict
                // servers refuse null.
                let mut call_message =
                    json!({"role": "assistant", "tool_calls": calls, "agent": agent.name});
                if let Some(text) = reply.content {
                    call_message["content"] = json!(text);
                }
                if let Some(reasoning) = reply.reasoning {
                    call_message["reasoning_content"] = json!(reasoning);
                }
                let text = call_message["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                new_items.push(call_message);
                // Calls that wait for a person: the run pauses here, its state handed back to be
                // stored; nothing of this reply runs until the decision.
                let waiting: Vec<&ToolCall> = reply
                    .tool_calls
                    .iter()
                    .filter(|c| self.needs_approval(agent, c, &mcp_tools, &tool_context))
                    .collect();
                if !waiting.is_empty() {
                    let approvals: Vec<Value> = waiting
                        .iter()
                        .map(|c| {
                            json!({"id": c.id, "agent": agent.name, "tool": c.name,
                                    "arguments": serde_json::from_str::<Value>(&c.arguments)
                                        .unwrap_or_else(|_| Value::String(c.arguments.clone()))})
                        })
                        .collect();
                    for call in &reply.tool_calls {
                        if !self.agents.is_handoff_tool(&call.name) {
                            emit(RunEvent::ToolCall {
                                id: call.id.clone(),
                                name: call.name.clone(),
                                arguments: serde_json::from_str(&call.arguments)
                                    .unwrap_or_else(|_| Value::String(call.arguments.clone())),
                            });
                        }
                    }
                    tracing::info!(request_id = %request.request_id, agent = %agent.name, calls = approvals.len(), "the run pauses for approval");
                    return Ok(RunOutcome {
                        pause: Some(json!({
                            "agent": agent.name,
                            "items": new_items,
                            "calls": reply.tool_calls,
                            "approvals": approvals,
                            "usage": usage,
                            "turns": turn_count,
                            "expires_in": self.approval_timeout,
                        })),
                        ..RunOutcome::stopped(text, &agent.name, usage, turn_count, model_ms)
                    });
                }
                (reply.tool_calls, Vec::new())
            };
            let mut next: Option<&Agent> = None;
            for call in &calls {
                let decision = decisions.iter().find(|d| d["id"] == call.id.as_str());
                let target = agent
                    .handoffs
                    .iter()
                    .find(|t| handoff_tool_name(t) == call.name)
                    .and_then(|t| self.agents.get(t));
                if let Some(decision) = decision {
                    emit(RunEvent::Approval(decision.clone()));
                }
                if target.is_none() && decision.is_none() {
                    // Every tool call is reported, one the agent does not have too, so each
                    // `tool_result` follows its `tool_call` (a paused call's was, at the pause).
                    emit(RunEvent::ToolCall {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        arguments: serde_json::from_str(&call.arguments)
                            .unwrap_or_else(|_| Value::String(call.arguments.clone())),
                    });
                }
                let mut attachments = Vec::new();
                let tool_span = if target.is_none() {
                    let extension = !agent.tools.iter().any(|t| t.name() == call.name)
                        && mcp_tools.iter().any(|t| t.exposed == call.name);
                    telemetry::tool_span(
                        &agent_span,
                        &call.name,
                        &call.id,
                        extension,
                        &call.arguments,
                    )
                } else {
                    tracing::Span::none()
                };
                let result = if let Some(target) = target {
                    if next.is_none() {
                        tracing::debug!(from = %agent.name, to = %target.name, "handoff");
                        agent_span = telemetry::agent_span(
                            Some(&agent_span),
                            &target.name,
                            &request.session_id,
                            provider,
                            target.model.as_deref().unwrap_or(&self.model_name),
                        );
                        next = Some(target);
                        emit(RunEvent::Agent {
                            agent: target.name.clone(),
                        });
                        json!({"assistant": target.name})
                    } else {
                        json!({"error": "only the first handoff of a turn is followed"})
                    }
                } else if let Some(decision) = decision.filter(|d| d["approved"] != true) {
                    match decision["reason"].as_str().filter(|r| !r.trim().is_empty()) {
                        Some(reason) => {
                            json!({"error": format!("the user rejected this tool call: {reason}")})
                        }
                        None => json!({"error": "the user rejected this tool call"}),
                    }
                } else if let Some(tool) = agent.tools.iter().find(|t| t.name() == call.name) {
                    match serde_json::from_str::<Value>(if call.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        &call.arguments
                    }) {
                        Err(e) => json!({"error": format!("arguments are not JSON: {e}")}),
                        Ok(args) => match tool
                            .call(
                                args,
                                &ToolContext {
                                    call_id: call.id.clone(),
                                    ..tool_context.clone()
                                },
                            )
                            .instrument(tool_span.clone())
                            .await
                        {
                            Ok(value) => value,
                            Err(e) => json!({"error": e.to_string()}),
                        },
                    }
                } else if let Some(tool) = mcp_tools.iter().find(|t| t.exposed == call.name) {
                    match serde_json::from_str::<Value>(if call.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        &call.arguments
                    }) {
                        Err(e) => json!({"error": format!("arguments are not JSON: {e}")}),
                        Ok(args) => {
                            let output = self
                                .mcp
                                .call(tool, args)
                                .instrument(tool_span.clone())
                                .await;
                            attachments = output.attachments;
                            output.value
                        }
                    }
                } else {
                    json!({"error": format!("there is no tool named {:?}", call.name)})
                };
                telemetry::record_tool_result(&tool_span, &result);
                drop(tool_span);
                if target.is_none() {
                    emit(RunEvent::ToolResult {
                        id: call.id.clone(),
                        name: call.name.clone(),
                        ok: result.get("error").is_none(),
                    });
                }
                let content = match result {
                    Value::String(s) => s,
                    other => other.to_string(),
                };
                let mut message =
                    json!({"role": "tool", "tool_call_id": call.id, "content": content});
                if let Some(decision) = decision {
                    // Who decided, when and what, kept in the session (never sent to the model).
                    message["approval"] = decision.clone();
                }
                if !attachments.is_empty() {
                    // Images for the model's next call, after the tool results (see
                    // `messages`); never kept in the session.
                    message["attachments"] = Value::Array(attachments);
                }
                new_items.push(message);
            }
            if let Some(target) = next {
                agent = target;
            }
        }
        Err(RunError::MaxTurns(self.max_turns))
    }

    /// System instructions, then history and this run's items, without our bookkeeping fields.
    /// Handoff exchanges (a `transfer_to_*` call and its result) are not replayed: they were
    /// the runtime's routing, not conversation. An agent offering no tools gets no tool calls or
    /// results at all (their outcome is in the answers that followed): some servers refuse tool
    /// messages in a request without `tools` (Bedrock behind an OpenAI-compatible gateway).
    fn messages(
        &self,
        agent: &Agent,
        context: &serde_json::Map<String, Value>,
        history: &[Turn],
        new_items: &[Value],
        offers_tools: bool,
    ) -> Vec<Value> {
        let mut system = agent.instructions.clone();
        if !context.is_empty() {
            system.push_str("\n\nRequest context (JSON): ");
            system.push_str(&Value::Object(context.clone()).to_string());
        }
        let earlier = history.iter().flat_map(|turn| &turn.items);
        // A client's own system messages (in a `history` it sends) follow the agent's
        // instructions, in one system message: some servers take only one, and first.
        for item in earlier.clone() {
            if item["role"] == "system"
                && let Some(text) = item["content"].as_str()
                && !text.trim().is_empty()
            {
                system.push_str("\n\n");
                system.push_str(text);
            }
        }
        let earlier = earlier.filter(|item| item["role"] != "system");
        let mut messages = Vec::with_capacity(new_items.len() + 1);
        messages.push(json!({"role": "system", "content": system}));
        let mut kept_calls: Vec<&str> = Vec::new();
        // Images of the tool results just read, for a user message after them: tool messages
        // carry text only (Chat Completions), and must follow their calls directly.
        let mut images: Vec<Value> = Vec::new();
        for item in earlier.chain(new_items) {
            let mut message = item.clone();
            let Value::Object(map) = &mut message else {
                continue;
            };
            for field in BOOKKEEPING_FIELDS {
                map.remove(*field);
            }
            let attached = map.remove("attachments");
            if map.get("role").and_then(Value::as_str) == Some("tool") {
                let id = map.get("tool_call_id").and_then(Value::as_str);
                if !id.is_some_and(|id| kept_calls.contains(&id)) {
                    continue;
                }
                images.extend(
                    attached
                        .and_then(|a| a.as_array().cloned())
                        .unwrap_or_default(),
                );
                messages.push(message);
                continue;
            }
            if !images.is_empty() {
                messages.push(images_message(std::mem::take(&mut images)));
            }
            if let Some(Value::Array(calls)) = map.get_mut("tool_calls") {
                calls.retain(|call| {
                    let name = call["function"]["name"].as_str().unwrap_or_default();
                    offers_tools && !self.agents.is_handoff_tool(name)
                });
                kept_calls.extend(
                    item["tool_calls"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter(|call| {
                            let name = call["function"]["name"].as_str().unwrap_or_default();
                            offers_tools && !self.agents.is_handoff_tool(name)
                        })
                        .filter_map(|call| call["id"].as_str()),
                );
                if calls.is_empty() {
                    map.remove("tool_calls");
                    map.remove("reasoning_content");
                    let text = map
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    if text.trim().is_empty() {
                        continue;
                    }
                }
            }
            messages.push(message);
        }
        if !images.is_empty() {
            messages.push(images_message(images));
        }
        // A model call never ends on the assistant's own words (what a model wrote before it
        // handed off, kept once its handoff call is left out): Converse and strict servers
        // refuse a conversation that does not end with the user or a tool result, and others
        // would read it as the start of their answer.
        while messages.len() > 1
            && messages.last().is_some_and(|m| {
                m["role"] == "assistant" && m.get("tool_calls").is_none_or(Value::is_null)
            })
        {
            messages.pop();
        }
        messages
    }
}

/// A client's conversation (`RunRequest::history`) as the session history it stands in for:
/// one turn per user message (with the answers that followed it), the newest whole turns
/// within `limits` (as a stored session is loaded); system messages are always kept.
fn client_history(messages: &[Value], limits: HistoryLimits) -> SessionHistory {
    let mut system = Vec::new();
    let mut turns: Vec<Turn> = Vec::new();
    for message in messages {
        if message["role"] == "system" {
            system.push(message.clone());
            continue;
        }
        if message["role"] == "user" || turns.is_empty() {
            turns.push(Turn {
                request_id: String::new(),
                fingerprint: String::new(),
                user_id: None,
                items: Vec::new(),
                created_at: 0,
            });
        }
        if let Some(turn) = turns.last_mut() {
            turn.items.push(message.clone());
        }
    }
    let mut kept = limits.take(turns.into_iter().rev());
    if !system.is_empty() {
        kept.insert(
            0,
            Turn {
                request_id: String::new(),
                fingerprint: String::new(),
                user_id: None,
                items: system,
                created_at: 0,
            },
        );
    }
    SessionHistory {
        turns: kept,
        next_seq: 0,
        user_id: None,
        has_turns: false,
    }
}

/// Fields the session keeps on its items for this runtime (which agent acted, how a turn
/// ended), never sent to the model.
const BOOKKEEPING_FIELDS: &[&str] = &["agent", "outcome", "approval"];

/// The user message carrying tool results' images (`{"type": "image", "mime_type", "data"}`)
/// as Chat Completions image parts (data URLs); the Converse mapping reads them back as image
/// blocks.
fn images_message(images: Vec<Value>) -> Value {
    let mut parts = vec![json!({
        "type": "text",
        "text": format!("The image{} the tool results above refer to, in order:", if images.len() == 1 { "" } else { "s" }),
    })];
    for image in images {
        let url = format!(
            "data:{};base64,{}",
            image["mime_type"].as_str().unwrap_or("image/png"),
            image["data"].as_str().unwrap_or_default()
        );
        parts.push(json!({"type": "image_url", "image_url": {"url": url}}));
    }
    json!({"role": "user", "content": parts})
}

/// The function tools an agent offers: one `transfer_to_<name>` per handoff, then its tools.
fn tool_specs(agent: &Agent, agents: &AgentSet) -> Vec<ToolSpec> {
    let mut specs: Vec<ToolSpec> = agent
        .handoffs
        .iter()
        .map(|target| {
            let about = agents
                .get(target)
                .and_then(|a| a.handoff_description.clone())
                .map(|d| format!(" {d}"))
                .unwrap_or_default();
            ToolSpec {
                name: handoff_tool_name(target),
                description: format!("Handoff to the {target} agent to handle the request.{about}"),
                parameters: json!({"type": "object", "properties": {}, "additionalProperties": false}),
            }
        })
        .collect();
    specs.extend(agent.tools.iter().map(|t| ToolSpec {
        name: t.name().to_owned(),
        description: t.description().to_owned(),
        parameters: t.parameters(),
    }));
    specs
}

/// The answer a stored turn gave: its last message, if `fingerprint` is the request's it was
/// stored for.
fn answer_of(turn: &Turn, fingerprint: &str) -> Result<RunOutcome, RunError> {
    if turn.fingerprint != fingerprint {
        return Err(RunError::RequestIdReused(turn.request_id.clone()));
    }
    let last = turn.items.last().cloned().unwrap_or_default();
    let text = |k: &str| last[k].as_str().unwrap_or_default().to_owned();
    Ok(RunOutcome {
        text: text("content"),
        agent: text("agent"),
        usage: Usage::default(),
        turns: 0,
        model_ms: 0.0,
        refusal: last["outcome"] == "refusal",
        truncated: last["outcome"] == "cut_off",
        repeated: true,
        tool_calls: Vec::new(),
        pause: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_follow_keys_and_settings() {
        let none = |_: &str| None;
        let key = |name: &str| (name == "OPENAI_API_KEY").then(|| "sk-test".to_owned());
        let settings = ModelSettings::default();
        let local = model_provider(&settings, &none, true, &Default::default())
            .map(|p| p.name())
            .ok();
        assert_eq!(local, Some("offline"));
        let lambda = model_provider(&settings, &none, false, &Default::default())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(lambda.contains("OPENAI_API_KEY"), "{lambda}");
        assert_eq!(
            model_provider(&settings, &key, false, &Default::default())
                .map(|p| p.name())
                .ok(),
            Some("openai")
        );
        let offline = ModelSettings {
            provider: Some(ProviderKind::Offline),
            ..ModelSettings::default()
        };
        assert_eq!(
            model_provider(&offline, &key, false, &Default::default())
                .map(|p| p.name())
                .ok(),
            Some("offline")
        );
        let bad = ModelSettings {
            base_url: Some("not a url".into()),
            ..ModelSettings::default()
        };
        assert!(model_provider(&bad, &key, false, &Default::default()).is_err());
    }
}

#[async_trait::async_trait]
impl ak_core::ports::AgentRunner for AgentRuntime {
    async fn run(
        &self,
        request: &RunRequest,
        events: Option<&EventSender>,
    ) -> Result<ak_core::answer::AgentAnswer, ak_core::answer::AgentFailure> {
        match AgentRuntime::run_with_events(self, request, events).await {
            Ok(outcome) => Ok(ak_core::answer::AgentAnswer {
                text: outcome.text,
                agent: outcome.agent,
                prompt_tokens: outcome.usage.prompt_tokens,
                completion_tokens: outcome.usage.completion_tokens,
                total_tokens: outcome.usage.total_tokens,
                model_ms: outcome.model_ms,
                refusal: outcome.refusal,
                truncated: outcome.truncated,
                tool_calls: outcome.tool_calls,
                pause: outcome.pause,
            }),
            Err(e) => Err(ak_core::answer::AgentFailure {
                transient: e.is_transient(),
                error: e.into(),
            }),
        }
    }

    fn provider(&self) -> &'static str {
        self.provider_name()
    }
}

/// Building a runtime from the configuration failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The agent definitions are invalid.
    #[error("agents: {0}")]
    Agents(#[from] AgentError),
    /// The model provider cannot be set up.
    #[error(transparent)]
    Provider(#[from] ProviderError),
    /// The session store cannot be set up.
    #[error("session store: {0}")]
    Sessions(#[from] PortError),
}

impl AgentRuntime {
    /// Everything from the configuration: agents (with `tools`), the model provider (reading
    /// `OPENAI_API_KEY` / `OPENAI_BASE_URL` from the process environment) and the session store.
    /// `offline_fallback` allows the offline model when no provider and no key are configured
    /// (the local server); Lambda functions pass `false`.
    pub async fn load(
        settings: &Settings,
        tools: &ToolRegistry,
        aws: &ak_adapters::AwsConfig,
        offline_fallback: bool,
    ) -> Result<Self, LoadError> {
        let model = model_provider(
            &settings.model,
            &|name| std::env::var(name).ok(),
            offline_fallback,
            aws,
        )?;
        let sessions = ak_adapters::session_store(settings, aws).await?;
        Ok(Self::from_settings(settings, tools, model, sessions)?)
    }

    /// The agents a request handler runs itself: in direct mode, [`AgentRuntime::load`]'s (no
    /// offline fallback: a Lambda function); in the queue modes none (the agent runner has them).
    pub async fn for_request_handler(
        settings: &Settings,
        tools: &ToolRegistry,
        aws: &ak_adapters::AwsConfig,
    ) -> Result<Option<std::sync::Arc<dyn ak_core::ports::AgentRunner>>, LoadError> {
        if settings.execution.mode().uses_queues() {
            return Ok(None);
        }
        Ok(Some(std::sync::Arc::new(
            Self::load(settings, tools, aws, false).await?,
        )))
    }
}

#[cfg(all(test, not(feature = "bedrock")))]
mod without_bedrock {
    use super::*;

    #[test]
    fn bedrock_as_the_provider_stops_the_start_up_saying_which_feature() {
        let settings = ModelSettings {
            provider: Some(ProviderKind::Bedrock),
            ..ModelSettings::default()
        };
        let error = model_provider(
            &settings,
            &|_| None,
            false,
            &ak_adapters::AwsConfig::default(),
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(error.contains("`bedrock` feature"), "{error}");
    }
}
