//! The chat endpoint in each execution mode.
//!
//! - `direct`: the agent runs inside the request handler; 200 with the answer.
//! - `rest_sync`: the request goes to the input queue, the handler waits on the response store
//!   (bounded by `retry_count × delay`, at most 28 s) and answers with what was stored, or 504
//!   with the request id so the client can poll.
//! - `rest_async`: the request goes to the input queue; 202 with the request id.
//!
//! A GET polls the response store; an answer stored for another user is NOT_FOUND, exactly like
//! an unknown id.

use crate::adapters::{self, AwsConfig, SetupError};
use crate::config::{ExecutionMode, Settings};
use crate::error::ApiError;
use crate::ports::{AgentRunner, PortError, Queue, QueueMessage, ResponseStore};
use crate::request::RunRequest;
use crate::response::{ApiResponse, ChatAnswer};
use http::StatusCode;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// How the chat endpoint gets answers.
#[derive(Clone)]
pub enum Execution {
    /// Run the agent in the handler.
    Direct(Arc<dyn AgentRunner>),
    /// Enqueue and wait for the stored answer.
    Sync {
        /// Input queue.
        input: Arc<dyn Queue>,
        /// Where answers appear.
        store: Arc<dyn ResponseStore>,
        /// How long to wait.
        wait: Duration,
    },
    /// Enqueue and answer 202.
    Async {
        /// Input queue.
        input: Arc<dyn Queue>,
    },
}

/// The chat endpoint: POST to ask, GET to poll.
#[derive(Clone)]
pub struct ChatService {
    execution: Execution,
    store: Option<Arc<dyn ResponseStore>>,
    agents: Vec<String>,
}

impl ChatService {
    /// A service from its parts. `agents` lists the known agent names for early validation
    /// (empty: accept any name and let the runner decide).
    pub fn new(
        execution: Execution,
        store: Option<Arc<dyn ResponseStore>>,
        agents: Vec<String>,
    ) -> Self {
        Self {
            execution,
            store,
            agents,
        }
    }

    /// The service the settings describe. Direct mode needs `runner`; queue modes build their
    /// queue and store clients (lazily connected).
    pub async fn from_settings(
        settings: &Settings,
        aws: &AwsConfig,
        runner: Option<Arc<dyn AgentRunner>>,
    ) -> Result<Self, SetupError> {
        let mode = settings.execution.mode();
        // Direct mode stores nothing, so it builds no store client (and loads no AWS config).
        let store = if mode.uses_queues() {
            adapters::response_store(settings, aws)
                .await
                .map_err(|e| SetupError(e.to_string()))?
        } else {
            None
        };
        let input = || async {
            match &settings.execution.queues.input.url {
                Some(url) => Ok(adapters::queue(url, aws).await),
                None => Err(SetupError(format!(
                    "execution.mode {mode} needs execution.queues.input.url"
                ))),
            }
        };
        let needs_store = || {
            store.clone().ok_or_else(|| {
                SetupError(format!(
                    "execution.mode {mode} needs execution.response_store.type"
                ))
            })
        };
        let execution = match mode {
            ExecutionMode::Direct => Execution::Direct(runner.ok_or_else(|| {
                SetupError(
                    "execution.mode direct runs agents in the request handler, but none were given"
                        .to_owned(),
                )
            })?),
            ExecutionMode::RestSync => Execution::Sync {
                input: input().await?,
                store: needs_store()?,
                wait: settings.execution.response_store.sync_wait(),
            },
            ExecutionMode::RestAsync => {
                needs_store()?;
                Execution::Async {
                    input: input().await?,
                }
            }
        };
        let agents = settings
            .agents
            .definitions
            .iter()
            .map(|d| d.name.clone())
            .collect();
        Ok(Self::new(execution, store, agents))
    }

    /// The execution mode.
    pub fn mode(&self) -> ExecutionMode {
        match self.execution {
            Execution::Direct(_) => ExecutionMode::Direct,
            Execution::Sync { .. } => ExecutionMode::RestSync,
            Execution::Async { .. } => ExecutionMode::RestAsync,
        }
    }

    /// Answers a chat POST.
    pub async fn post(&self, request: RunRequest) -> Result<ApiResponse, ApiError> {
        if let Some(agent) = &request.agent
            && !self.agents.is_empty()
            && !self.agents.contains(agent)
        {
            return Err(ApiError::bad_request(format!(
                "unknown agent {agent:?}; available: {}",
                self.agents.join(", ")
            )));
        }
        let id = request.request_id.clone();
        match &self.execution {
            Execution::Direct(runner) => {
                let started = std::time::Instant::now();
                let result = runner.run(&request).await;
                let (agent, tokens, model_ms, outcome) = match &result {
                    Ok(a) => (a.agent.as_str(), a.total_tokens, a.model_ms, "ok"),
                    Err(f) => ("", 0, 0.0, f.error.class()),
                };
                crate::metrics::agent_run(&crate::metrics::AgentRun {
                    request_id: &id,
                    session_id: &request.session_id,
                    user_id: request.user_id.as_deref(),
                    agent,
                    tokens,
                    duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                    model_ms,
                    outcome,
                });
                let answer = result.map_err(|f| f.error.with_request_id(&id))?;
                Ok(ApiResponse::ok(json!(ChatAnswer::of(
                    answer,
                    &request.session_id,
                    &id
                ))))
            }
            Execution::Sync { input, store, wait } => {
                enqueue(input.as_ref(), &request).await?;
                let record = store
                    .wait_for(&id, *wait)
                    .await
                    .map_err(|e| ApiError::from(e).with_request_id(&id))?;
                match record {
                    Some(record) if record.visible_to(request.user_id.as_deref()) => {
                        Ok(stored_response(record.status_code, record.body))
                    }
                    _ => Err(ApiError::ResponseTimeout {
                        request_id: id,
                        waited: *wait,
                    }),
                }
            }
            Execution::Async { input } => {
                enqueue(input.as_ref(), &request).await?;
                Ok(ApiResponse::json(
                    StatusCode::ACCEPTED,
                    json!({"status": "ACCEPTED", "request_id": id}),
                ))
            }
        }
    }

    /// Answers a chat GET for `request_id` on behalf of `user`.
    pub async fn poll(
        &self,
        request_id: &str,
        user: Option<&str>,
    ) -> Result<ApiResponse, ApiError> {
        let not_found = || ApiError::ResponseNotFound {
            request_id: request_id.to_owned(),
        };
        let Some(store) = &self.store else {
            return Err(not_found());
        };
        let record = store
            .get(request_id)
            .await
            .map_err(|e| ApiError::from(e).with_request_id(request_id))?;
        match record {
            Some(record) if record.visible_to(user) => {
                Ok(stored_response(record.status_code, record.body))
            }
            _ => Err(not_found()),
        }
    }
}

async fn enqueue(input: &dyn Queue, request: &RunRequest) -> Result<(), ApiError> {
    let message = QueueMessage {
        request_id: request.request_id.clone(),
        session_id: request.session_id.clone(),
        user_id: request.user_id.clone(),
        status_code: None,
        body: request.queue_body(),
    };
    input.send(&message).await.map_err(|e: PortError| {
        // Not enqueued: the client must not think it was accepted.
        ApiError::from(e).with_request_id(&request.request_id)
    })
}

fn stored_response(status: u16, body: serde_json::Value) -> ApiResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiResponse::json(status, body)
}
