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
//!
//! The request id is an idempotency key wherever a response store is configured (the queue
//! modes, and direct mode when `execution.response_store.type` is set): the store registers the
//! fingerprint of the request each id is first used for. The same request again gets the first
//! answer (in rest_async: 202 again; the answer by GET) without a second model call; the same id
//! with a different request is a 422. A failure (5xx, 408, 409, 425, 429) is not kept as the
//! answer: a repeat of a failed request runs again, in every mode. Direct mode without a store remembers request ids in the
//! session only (see `ak_agents::AgentRuntime::run`).

use crate::adapters::{self, AwsConfig, SetupError};
use crate::config::{ExecutionMode, Settings};
use crate::error::ApiError;
use crate::ports::{
    AgentRunner, ClaimOutcome, PortError, Queue, QueueMessage, Registration, ResponseRecord,
    ResponseStore, now_epoch_secs,
};
use crate::request::RunRequest;
use crate::response::{ApiResponse, ChatAnswer};
use crate::stream::{EventSender, RunEvent, SseBody};
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

/// How long a direct-mode run holds its request id beyond the invocation's deadline: a repeat
/// arriving meanwhile waits for the answer instead of running the model again, and one arriving
/// after a crash runs it again soon after. Without a deadline (the local server) the claim
/// lasts [`crate::pipeline::LOCAL_CLAIM_TTL`].
pub const DIRECT_CLAIM_GRACE: Duration = Duration::from_secs(5);

/// The chat endpoint: POST to ask, GET to poll.
#[derive(Clone)]
pub struct ChatService {
    execution: Execution,
    store: Option<Arc<dyn ResponseStore>>,
    agents: Vec<String>,
    /// The agent of requests that name none: naming it is the same request as naming none.
    default_agent: Option<String>,
    /// How long a repeat of a request still running in direct mode waits for its answer.
    repeat_wait: Duration,
    /// Whether runs write event logs (`execution.response_store.event_log`); without them a
    /// relayed stream waits for the stored answer.
    event_log: bool,
}

/// How a streamed answer is relayed.
#[derive(Debug, Clone, Copy)]
pub struct StreamOptions {
    /// The SSE comment interval (`api.stream_heartbeat`).
    pub heartbeat: Duration,
    /// The last logged event the client has (`Last-Event-ID` or `?after=`; 0: none).
    pub after: u64,
    /// The longest a relay may last on this front door (API Gateway answers a buffered
    /// response within 29 s), besides the invocation's deadline.
    pub bound: Option<Duration>,
}

impl StreamOptions {
    /// Heartbeats every `heartbeat`, from the start, unbounded.
    pub fn new(heartbeat: Duration) -> Self {
        Self {
            heartbeat,
            after: 0,
            bound: None,
        }
    }
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
            default_agent: None,
            repeat_wait: Duration::from_secs(25),
            event_log: true,
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
        // Direct mode uses a store only when one is configured (for idempotency and polls);
        // without one it builds no store client and loads no AWS config.
        let store = adapters::response_store(settings, aws)
            .await
            .map_err(|e| SetupError(e.to_string()))?;
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
        let mut service = Self::new(execution, store, agents);
        service.default_agent = settings.agents.default_agent().map(str::to_owned);
        service.event_log = settings.execution.response_store.event_log;
        service.repeat_wait = settings.execution.response_store.sync_wait();
        Ok(service)
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
    pub async fn post(&self, mut request: RunRequest) -> Result<ApiResponse, ApiError> {
        self.check_agent(&mut request)?;
        if let Some(repeat) = self.register(&request).await? {
            return Ok(match self.execution {
                Execution::Async { .. } => accepted(&request.request_id),
                _ => repeat,
            });
        }
        self.answer(request, None).await
    }

    /// Answers a chat POST as server-sent events: the run's events as they happen (direct
    /// mode), or relayed from its event log (the queue modes, resuming after `options.after`),
    /// then `done` or `error`. What can be refused is refused before the stream starts, with
    /// its own status (400, 422, 503).
    pub async fn post_stream(
        &self,
        mut request: RunRequest,
        options: StreamOptions,
    ) -> Result<SseBody, ApiError> {
        self.check_agent(&mut request)?;
        let id = request.request_id.clone();
        let session = request.session_id.clone();
        let queued = match &self.execution {
            Execution::Sync { input, store, .. } => Some((input.clone(), store.clone())),
            Execution::Async { input } => self.store.clone().map(|store| (input.clone(), store)),
            Execution::Direct(_) => None,
        };
        let repeat = self.register(&request).await?;
        if let Some((input, store)) = queued {
            // The queue modes: the runner logs the run's events; relay them as they are
            // written. A repeat relays the same log (from where the client resumes).
            if repeat.is_none() {
                self.enqueue(input.as_ref(), &request).await?;
            }
            let until = relay_until(request.deadline, options.bound);
            let user = request.user_id.clone();
            return Ok(self
                .relay(store, &id, options, user, until, true)
                .with_ids(&id, Some(&session)));
        }
        if let Some(repeat) = repeat {
            let (events, receiver) = crate::stream::channel();
            events.send_unnumbered(final_event(repeat, &id));
            drop(events);
            return Ok(
                SseBody::new(async {}, receiver, options.heartbeat).with_ids(&id, Some(&session))
            );
        }
        let (events, receiver) = crate::stream::channel();
        let service = self.clone();
        let id_header = id.clone();
        let run = async move {
            let result = service.answer(request, Some(&events)).await;
            let last = match result {
                Ok(response) => final_event(response, &id),
                Err(error) => RunEvent::error(&error, &id),
            };
            events.send(last);
        };
        Ok(SseBody::new(run, receiver, options.heartbeat).with_ids(&id_header, Some(&session)))
    }

    /// A stream relaying the run of `request_id` from its event log (or, without logs, its
    /// stored answer), until its last event or `until`. A POST's relay that reaches `until`
    /// ends with an `error` 504 saying how to resume; it carries no id (it is not in the log).
    fn relay(
        &self,
        store: Arc<dyn ResponseStore>,
        request_id: &str,
        options: StreamOptions,
        user: Option<String>,
        until: tokio::time::Instant,
        post: bool,
    ) -> SseBody {
        let (events, receiver) = crate::stream::channel();
        let id = request_id.to_owned();
        let event_log = self.event_log;
        let started = tokio::time::Instant::now();
        let run = async move {
            let ended = if event_log {
                crate::eventlog::follow(store, &id, options.after, user.as_deref(), &events, until)
                    .await
            } else {
                let wait = until.saturating_duration_since(tokio::time::Instant::now());
                match store.wait_for(&id, wait).await {
                    Ok(Some(record)) if record.visible_to(user.as_deref()) => {
                        let response = stored_response(record.status_code, record.body);
                        events.send_unnumbered(final_event(response, &id));
                        true
                    }
                    _ => false,
                }
            };
            if !ended && post {
                let waited = started.elapsed().as_secs_f64();
                events.send_unnumbered(RunEvent::Error(json!({
                    "status": 504,
                    "request_id": id,
                    "error": format!(
                        "the answer was not complete within {waited:.0} s; the run goes on: follow it with GET .../chat/stream?request_id={id} and Last-Event-ID (the id of the last event you got), or poll GET ?request_id={id}"
                    ),
                })));
            }
        };
        SseBody::new(run, receiver, options.heartbeat).until_run_ends()
    }

    /// Follows the event log of `request_id` (`GET .../stream`): the events after
    /// `options.after`, then new ones as the runner writes them, until `done` or `error` or
    /// `deadline` (the invocation's, or [`STREAM_MAX`] from now, within `options.bound`).
    /// `None` when the client already has the whole log (answered 204, which tells an
    /// `EventSource` to stop reconnecting). Unknown ids and other users' requests are
    /// NOT_FOUND; direct mode keeps no logs (its stream is the POST's).
    pub async fn follow(
        &self,
        request_id: &str,
        user: Option<&str>,
        deadline: Option<tokio::time::Instant>,
        options: StreamOptions,
    ) -> Result<Option<SseBody>, ApiError> {
        let not_found = || ApiError::ResponseNotFound {
            request_id: request_id.to_owned(),
        };
        let store = match (&self.execution, &self.store) {
            (Execution::Direct(_), _) | (_, None) => {
                return Err(ApiError::NothingToStream {
                    request_id: request_id.to_owned(),
                });
            }
            (_, Some(store)) => store.clone(),
        };
        let owner = store
            .registered_user(request_id)
            .await
            .map_err(|e| ApiError::from(e).with_request_id(request_id))?;
        match owner {
            Some(None) => {}
            Some(Some(owner)) if user == Some(owner.as_str()) => {}
            _ => return Err(not_found()),
        }
        if options.after > 0
            && crate::eventlog::ends_at(store.as_ref(), request_id, options.after).await
        {
            return Ok(None);
        }
        let until = relay_until(deadline, options.bound);
        let user = user.map(str::to_owned);
        Ok(Some(
            self.relay(store, request_id, options, user, until, false)
                .with_ids(request_id, None),
        ))
    }

    /// Enqueues a request; when the queue refuses it, its answer is that 503 (stored, so a
    /// follower or a poll learns it instead of waiting for a run that never starts; a failure
    /// is not kept: the same request sent again runs).
    async fn enqueue(&self, input: &dyn Queue, request: &RunRequest) -> Result<(), ApiError> {
        let Err(error) = enqueue(input, request).await else {
            return Ok(());
        };
        if let Some(store) = &self.store {
            let response = error.to_response();
            let record = ResponseRecord {
                request_id: request.request_id.clone(),
                session_id: request.session_id.clone(),
                user_id: request.user_id.clone(),
                status_code: response.status.as_u16(),
                body: response.body,
                created_at: now_epoch_secs(),
            };
            if let Err(e) = store.put(&record).await {
                tracing::warn!(request_id = %request.request_id, error = %e, "cannot store the enqueue failure");
            }
        }
        Err(error)
    }

    /// Refuses an unknown agent; the default agent named explicitly becomes no agent named, so
    /// both are the same request (one fingerprint).
    fn check_agent(&self, request: &mut RunRequest) -> Result<(), ApiError> {
        if request.agent.is_some() && request.agent == self.default_agent {
            request.agent = None;
        }
        match &request.agent {
            Some(agent) if !self.agents.is_empty() && !self.agents.contains(agent) => {
                Err(ApiError::bad_request(format!(
                    "unknown agent {agent:?}; available: {}",
                    self.agents.join(", ")
                )))
            }
            _ => Ok(()),
        }
    }

    /// Registers the request id where a store is configured: a mismatch is a 422, a repeat
    /// whose first answer is stored gets that answer (`Some`).
    async fn register(&self, request: &RunRequest) -> Result<Option<ApiResponse>, ApiError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let id = &request.request_id;
        let registration = store
            .register(id, &request.fingerprint(), request.user_id.as_deref())
            .await
            .map_err(|e| ApiError::from(e).with_request_id(id))?;
        match registration {
            Registration::Mismatch => Err(ApiError::RequestIdReused {
                request_id: id.clone(),
            }),
            Registration::Repeat(Some(record)) if record.is_retryable() => {
                // A failure is not the answer to keep: the repeat runs the request again.
                tracing::info!(request_id = %id, status = record.status_code, "a repeated request whose first attempt failed: running it again");
                store
                    .forget(&record)
                    .await
                    .map_err(|e| ApiError::from(e).with_request_id(id))?;
                // The run starts over: its event log goes on after a retry marker, so a
                // follower of the failed run is told and no number is used twice.
                if let Ok(last) = store.last_event_seq(id).await
                    && last > 0
                {
                    let marker = crate::ports::LoggedEvent {
                        seq: last + 1,
                        event: RunEvent::Retry {
                            agent: request.agent.clone().unwrap_or_default(),
                        },
                    };
                    if let Err(e) = store.append_events(id, &[marker]).await {
                        tracing::warn!(request_id = %id, error = %e, "cannot mark the event log for the rerun");
                    }
                }
                Ok(None)
            }
            Registration::Repeat(Some(record)) if record.visible_to(request.user_id.as_deref()) => {
                tracing::info!(request_id = %id, "a repeated request: answered with its first answer");
                Ok(Some(stored_response(record.status_code, record.body)))
            }
            // New, or a repeat still in work (or whose first attempt failed): go on; the
            // runner's claim keeps the model from being called twice.
            _ => Ok(None),
        }
    }

    /// The answer in this mode: the run's (direct, reporting to `events`), the one the runner
    /// stores (rest_sync), or 202 (rest_async).
    async fn answer(
        &self,
        request: RunRequest,
        events: Option<&EventSender>,
    ) -> Result<ApiResponse, ApiError> {
        let id = request.request_id.clone();
        let (input, store, wait) = match &self.execution {
            Execution::Direct(runner) => {
                return match &self.store {
                    None => run_direct(runner.as_ref(), request, events).await,
                    Some(store) => {
                        self.run_direct_once(runner.as_ref(), store.clone(), request, events)
                            .await
                    }
                };
            }
            Execution::Sync { input, store, wait } => (input, Some(store), *wait),
            Execution::Async { input } => (input, self.store.as_ref(), self.repeat_wait),
        };
        self.enqueue(input.as_ref(), &request).await?;
        let Some(store) = store.filter(|_| matches!(self.execution, Execution::Sync { .. })) else {
            return Ok(accepted(&id));
        };
        let wait = within_deadline(&request, wait);
        let record = store
            .wait_for(&id, wait)
            .await
            .map_err(|e| ApiError::from(e).with_request_id(&id))?;
        match record {
            Some(record) if record.visible_to(request.user_id.as_deref()) => {
                Ok(stored_response(record.status_code, record.body))
            }
            _ => Err(ApiError::ResponseTimeout {
                request_id: id,
                waited: wait,
            }),
        }
    }

    /// Direct mode with a response store: runs the request under a claim and stores the answer,
    /// so a repeat (a client retrying before or after the answer) gets the same answer and the
    /// model is called once.
    async fn run_direct_once(
        &self,
        runner: &dyn AgentRunner,
        store: Arc<dyn ResponseStore>,
        request: RunRequest,
        events: Option<&EventSender>,
    ) -> Result<ApiResponse, ApiError> {
        let id = request.request_id.clone();
        let owner = crate::request::new_id();
        let claim_ttl = request
            .deadline
            .map_or(crate::pipeline::LOCAL_CLAIM_TTL, |deadline| {
                deadline.saturating_duration_since(tokio::time::Instant::now())
                    + crate::api::ANSWER_MARGIN
                    + DIRECT_CLAIM_GRACE
            });
        let unavailable = |e: PortError| ApiError::from(e).with_request_id(&id);
        let held_elsewhere = match store
            .claim(&id, &owner, claim_ttl)
            .await
            .map_err(unavailable)?
        {
            ClaimOutcome::Acquired => false,
            ClaimOutcome::HeldByOther | ClaimOutcome::AlreadyAnswered => true,
        };
        if held_elsewhere {
            return match store
                .wait_for(&id, self.repeat_wait)
                .await
                .map_err(unavailable)?
            {
                Some(record) if record.visible_to(request.user_id.as_deref()) => {
                    Ok(stored_response(record.status_code, record.body))
                }
                _ => Err(ApiError::ResponseTimeout {
                    request_id: id,
                    waited: self.repeat_wait,
                }),
            };
        }
        // A run that does not finish (its client left and the stream was dropped) gives the
        // request id back at once, so a retry runs instead of waiting for the claim to lapse.
        let mut claim = ClaimGuard {
            store: Some(store.clone()),
            id: id.clone(),
            owner: owner.clone(),
        };
        let (session_id, user_id) = (request.session_id.clone(), request.user_id.clone());
        let result = run_direct(runner, request, events).await;
        claim.store = None;
        match result {
            Ok(response) => {
                let stored = ResponseRecord {
                    request_id: id.clone(),
                    session_id,
                    user_id,
                    status_code: response.status.as_u16(),
                    body: response.body.clone(),
                    created_at: now_epoch_secs(),
                };
                if let Err(e) = store.put(&stored).await {
                    // The client has its answer; a repeat would run again once the claim lapses.
                    tracing::warn!(request_id = %id, error = %e, "cannot store the answer of a direct run");
                }
                Ok(response)
            }
            Err(error) => {
                // Failed runs are not remembered: a retry runs again.
                let _ = store.release(&id, &owner).await;
                Err(error)
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
            return Err(ApiError::NothingToPoll {
                request_id: request_id.to_owned(),
            });
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

/// Runs an agent; a panic inside the run (a bug, in a tool, say) becomes an internal error of
/// this request alone.
pub async fn run_agent(
    runner: &dyn AgentRunner,
    request: &RunRequest,
    events: Option<&EventSender>,
) -> Result<crate::ports::AgentAnswer, crate::ports::AgentFailure> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(runner.run(request, events))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let detail = format!(
                "the agent run panicked: {}",
                crate::api::panic_text(&*panic)
            );
            tracing::error!(request_id = %request.request_id, detail = %detail, "agent run failed");
            Err(crate::ports::AgentFailure {
                error: ApiError::internal(Some(&request.request_id), detail),
                transient: false,
            })
        })
}

/// Logs a direct-mode run dropped before it ended (its client left) as an agent run with
/// outcome `cancelled`.
struct CancelledRun {
    request_id: Option<String>,
    session_id: String,
    user_id: Option<String>,
    started: std::time::Instant,
}

impl Drop for CancelledRun {
    fn drop(&mut self) {
        if let Some(request_id) = &self.request_id {
            crate::metrics::agent_run(&crate::metrics::AgentRun {
                request_id,
                session_id: &self.session_id,
                user_id: self.user_id.as_deref(),
                agent: "",
                tokens: 0,
                duration_ms: self.started.elapsed().as_secs_f64() * 1000.0,
                model_ms: 0.0,
                outcome: "cancelled",
            });
        }
    }
}

/// Releases a direct-mode claim when dropped while armed (the run was cancelled midway).
struct ClaimGuard {
    store: Option<Arc<dyn ResponseStore>>,
    id: String,
    owner: String,
}

impl Drop for ClaimGuard {
    fn drop(&mut self) {
        let Some(store) = self.store.take() else {
            return;
        };
        let (id, owner) = (
            std::mem::take(&mut self.id),
            std::mem::take(&mut self.owner),
        );
        tracing::info!(request_id = %id, "the run was cancelled (its client left); its request id is free again");
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = store.release(&id, &owner).await;
            });
        }
    }
}

/// Longest a stream relayed from an event log lasts without an invocation deadline (the local
/// server): Lambda's longest run.
pub const STREAM_MAX: Duration = Duration::from_secs(15 * 60);

/// When a relayed stream ends at the latest: the deadline (else [`STREAM_MAX`] from now),
/// within `bound` from now.
fn relay_until(
    deadline: Option<tokio::time::Instant>,
    bound: Option<Duration>,
) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    let until = deadline.unwrap_or(now + STREAM_MAX);
    bound.map_or(until, |b| until.min(now + b))
}

/// How long to wait from now: `wait`, but never past the request's deadline.
fn within_deadline(request: &RunRequest, wait: Duration) -> Duration {
    request.deadline.map_or(wait, |deadline| {
        wait.min(deadline.saturating_duration_since(tokio::time::Instant::now()))
    })
}

/// Runs the agent in the handler and answers with the result.
async fn run_direct(
    runner: &dyn AgentRunner,
    request: RunRequest,
    events: Option<&EventSender>,
) -> Result<ApiResponse, ApiError> {
    let id = request.request_id.clone();
    let started = std::time::Instant::now();
    let mut cancelled = CancelledRun {
        request_id: Some(id.clone()),
        session_id: request.session_id.clone(),
        user_id: request.user_id.clone(),
        started,
    };
    let result = run_agent(runner, &request, events).await;
    cancelled.request_id = None;
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

/// The last event of a stream for an answer: `done`, or `error` for an error status.
pub(crate) fn final_event(response: ApiResponse, request_id: &str) -> RunEvent {
    if response.status.is_success() {
        return RunEvent::Done(response.body);
    }
    let mut body = response.body;
    if let serde_json::Value::Object(map) = &mut body {
        map.insert("status".into(), json!(response.status.as_u16()));
        map.entry("request_id")
            .or_insert_with(|| serde_json::Value::String(request_id.to_owned()));
    }
    RunEvent::Error(body)
}

fn accepted(request_id: &str) -> ApiResponse {
    ApiResponse::json(
        StatusCode::ACCEPTED,
        json!({"status": "ACCEPTED", "request_id": request_id}),
    )
}

pub(crate) fn stored_response(status: u16, body: serde_json::Value) -> ApiResponse {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    ApiResponse::json(status, body)
}
