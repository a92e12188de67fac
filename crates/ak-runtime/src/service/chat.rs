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

use crate::exec::{self, ClaimGuard, LOCAL_CLAIM_TTL};
use ak_adapters::{self as adapters, AwsConfig, SetupError};
use ak_core::answer::Answer;
use ak_core::config::{ExecutionMode, Settings};
use ak_core::error::ApiError;
use ak_core::events::{EventSender, RunEvent, RunStream};
use ak_core::ports::{
    AgentRunner, ClaimOutcome, PortError, Queue, QueueMessage, Registration, ResponseRecord,
    ResponseStore,
};
use ak_core::request::RunRequest;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

pub use crate::exec::CANCELED;

/// Where a request's run stands ([`ChatService::progress`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// No such request for this user (or no store keeps requests: direct mode without one).
    Unknown,
    /// Not answered yet; `logged` events of its log are written (0: not started).
    Pending {
        /// The number of the log's last event.
        logged: u64,
    },
    /// Answered (a success, a failure, or [`CANCELED`]).
    Answered(Answer),
}

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
    /// The agent of requests that name none: naming it is the same request as naming none.
    default_agent: Option<String>,
    /// How long a repeat of a request still running in direct mode waits for its answer.
    repeat_wait: Duration,
    /// Whether runs write event logs (`execution.response_store.event_log`); without them a
    /// relayed stream waits for the stored answer.
    event_log: bool,
    /// The direct-mode runs under way in this process, for cancellations.
    running: exec::Running,
}

/// How a streamed answer is relayed.
#[derive(Debug, Clone, Copy, Default)]
pub struct StreamOptions {
    /// The last logged event the client has (`Last-Event-ID` or `?after=`; 0: none).
    pub after: u64,
    /// The longest a relay may last on this front door (API Gateway answers a buffered
    /// response within 29 s), besides the invocation's deadline.
    pub bound: Option<Duration>,
    /// The run outlives its client, so the stream can be picked up again (the AI SDK's
    /// resume): in direct mode with a response store and event logs the run goes on when the
    /// client leaves and writes its event log, which the stream relays. The queue modes always
    /// work this way.
    pub durable: bool,
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
            running: exec::Running::default(),
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
    pub async fn post(&self, mut request: RunRequest) -> Result<Answer, ApiError> {
        self.check_agent(&mut request)?;
        if let (Some(repeat), _) = self.register(&request).await? {
            return Ok(match self.execution {
                Execution::Async { .. } => Answer::accepted(&request.request_id),
                _ => repeat,
            });
        }
        self.answer(request, None).await
    }

    /// Answers a chat POST as a stream of events: the run's events as they happen (direct
    /// mode), or relayed from its event log (the queue modes, resuming after `options.after`),
    /// then `done` or `error`. What can be refused is refused before the stream starts, with
    /// its own status (400, 422, 503).
    pub async fn post_stream(
        &self,
        mut request: RunRequest,
        options: StreamOptions,
    ) -> Result<RunStream, ApiError> {
        self.check_agent(&mut request)?;
        let id = request.request_id.clone();
        let session = request.session_id.clone();
        let queued = match &self.execution {
            Execution::Sync { input, store, .. } => Some((input.clone(), store.clone())),
            Execution::Async { input } => self.store.clone().map(|store| (input.clone(), store)),
            Execution::Direct(_) => None,
        };
        let (repeat, known) = self.register(&request).await?;
        // The session the stream names: a repeat's is its first answer's, or — still in work,
        // and the client named none — not known here (the `done` event names it).
        let session = match &repeat {
            Some(answer) => answer
                .body
                .get("session_id")
                .and_then(serde_json::Value::as_str)
                .map_or(Some(session), |s| Some(s.to_owned())),
            None if known && request.session_generated => None,
            None => Some(session),
        };
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
                .with_ids(&id, session.as_deref()));
        }
        if let Some(store) = self
            .store
            .clone()
            .filter(|_| options.durable && self.event_log)
        {
            // Direct mode, durable: the run goes on in its own task, writing its log, and the
            // stream relays the log like the queue modes do. A repeat relays the same log.
            let until = relay_until(request.deadline, options.bound);
            let user = request.user_id.clone();
            if repeat.is_none() {
                let writer = exec::eventlog::LogWriter::start(store.clone(), &id, 0, "");
                self.spawn_logged(request, writer);
            }
            return Ok(self
                .relay(store, &id, options, user, until, true)
                .with_ids(&id, session.as_deref()));
        }
        if let Some(repeat) = repeat {
            let (events, receiver) = ak_core::events::channel();
            events.send_unnumbered(repeat.final_event(&id));
            drop(events);
            return Ok(RunStream::new(async {}, receiver).with_ids(&id, session.as_deref()));
        }
        Ok(self.live(request).with_ids(&id, session.as_deref()))
    }

    /// Runs `request` in a task of its own, its events and last event written to `writer`'s
    /// log: it goes on (and stores its answer) if its client leaves.
    fn spawn_logged(&self, request: RunRequest, writer: exec::eventlog::LogWriter) {
        let service = self.clone();
        let id = request.request_id.clone();
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let result = service.answer(request, Some(writer.sender())).await;
            let last = match result {
                Ok(answer) => answer.final_event(&id),
                Err(error) => RunEvent::error(&error, &id),
            };
            writer.finish(last).await;
        }));
    }

    /// The run of `request` as the stream of its events, ending with `done` or `error`; the
    /// run lives in the stream (a client that leaves stops it).
    fn live(&self, request: RunRequest) -> RunStream {
        let (events, receiver) = ak_core::events::channel();
        let service = self.clone();
        let id = request.request_id.clone();
        let run = async move {
            let result = service.answer(request, Some(&events)).await;
            let last = match result {
                Ok(answer) => answer.final_event(&id),
                Err(error) => RunEvent::error(&error, &id),
            };
            events.send(last);
        };
        RunStream::new(run, receiver)
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
    ) -> RunStream {
        let (events, receiver) = ak_core::events::channel();
        let id = request_id.to_owned();
        let event_log = self.event_log;
        let started = tokio::time::Instant::now();
        let run = async move {
            let ended = if event_log {
                exec::eventlog::follow(store, &id, options.after, user.as_deref(), &events, until)
                    .await
            } else {
                let wait = until.saturating_duration_since(tokio::time::Instant::now());
                match store.wait_for(&id, wait).await {
                    Ok(Some(record)) if record.visible_to(user.as_deref()) => {
                        events.send_unnumbered(record.into_answer().final_event(&id));
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
        RunStream::new(run, receiver).until_run_ends()
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
    ) -> Result<Option<RunStream>, ApiError> {
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
            && exec::eventlog::ends_at(store.as_ref(), request_id, options.after).await
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

    /// The run of `request_id` while it is still going (a stream client reattaching after a
    /// reload, as the AI SDK's resume does): its whole log from the start, then its events as
    /// they come. `None` when there is nothing to reattach to: the run has ended (its log is
    /// complete, or its answer is stored without a log), or no log is kept (direct mode
    /// without a response store). Another user's request is NOT_FOUND.
    pub async fn follow_active(
        &self,
        request_id: &str,
        user: Option<&str>,
        deadline: Option<tokio::time::Instant>,
        options: StreamOptions,
    ) -> Result<Option<RunStream>, ApiError> {
        let Some(store) = self.store.clone().filter(|_| self.event_log) else {
            return Ok(None);
        };
        let unavailable = |e: PortError| ApiError::from(e).with_request_id(request_id);
        match store
            .registered_user(request_id)
            .await
            .map_err(unavailable)?
        {
            Some(None) => {}
            Some(Some(owner)) if user == Some(owner.as_str()) => {}
            Some(Some(_)) => {
                return Err(ApiError::ResponseNotFound {
                    request_id: request_id.to_owned(),
                });
            }
            None => return Ok(None),
        }
        let last = store
            .last_event_seq(request_id)
            .await
            .map_err(unavailable)?;
        let ended = if last == 0 {
            store.get(request_id).await.map_err(unavailable)?.is_some()
        } else {
            exec::eventlog::ends_at(store.as_ref(), request_id, last).await
        };
        if ended {
            return Ok(None);
        }
        let until = relay_until(deadline, options.bound);
        let user = user.map(str::to_owned);
        Ok(Some(
            self.relay(store, request_id, options, user, until, false)
                .with_ids(request_id, None),
        ))
    }

    /// Where the run of `request_id` stands, for `user` (A2A's GetTask): unknown (or another
    /// user's, or direct mode without a response store), waiting or running (with whether its
    /// log has events yet), or answered.
    pub async fn progress(
        &self,
        request_id: &str,
        user: Option<&str>,
    ) -> Result<Progress, ApiError> {
        let Some(store) = &self.store else {
            return Ok(Progress::Unknown);
        };
        let unavailable = |e: PortError| ApiError::from(e).with_request_id(request_id);
        match store
            .registered_user(request_id)
            .await
            .map_err(unavailable)?
        {
            Some(None) => {}
            Some(Some(owner)) if user == Some(owner.as_str()) => {}
            _ => return Ok(Progress::Unknown),
        }
        if let Some(record) = store.get(request_id).await.map_err(unavailable)? {
            return Ok(Progress::Answered(record.into_answer()));
        }
        let logged = store
            .last_event_seq(request_id)
            .await
            .map_err(unavailable)?;
        Ok(Progress::Pending { logged })
    }

    /// Cancels the run of `request_id` for `user` (A2A's CancelTask): unless it is answered
    /// already, its answer becomes [`CANCELED`] (`410`, stored with the conditional write of
    /// every answer, so a run's answer stored first wins), and its event log ends with that
    /// `error`, which ends every follower's stream. A run not yet taken up never runs (the
    /// agent runner finds it answered); one already running stops — at once in this process,
    /// within [`exec::CANCEL_POLL`] elsewhere (it watches its stored answer) — its model call
    /// dropped and nothing of its turn saved. Returns where the run stands afterwards.
    pub async fn cancel(&self, request_id: &str, user: Option<&str>) -> Result<Progress, ApiError> {
        let here = self.running.cancel(request_id, user);
        let Some(store) = self.store.clone() else {
            return Ok(if here {
                Progress::Answered(exec::canceled_answer(request_id))
            } else {
                Progress::Unknown
            });
        };
        let progress = self.progress(request_id, user).await?;
        if !matches!(progress, Progress::Pending { .. }) {
            return Ok(progress);
        }
        let unavailable = |e: PortError| ApiError::from(e).with_request_id(request_id);
        let answer = exec::canceled_answer(request_id);
        let body = answer.body.clone();
        let record = exec::record_of(request_id, "", user, answer);
        store.put(&record).await.map_err(unavailable)?;
        let mut last = body;
        last["status"] = json!(CANCELED);
        for _ in 0..3 {
            let seq = store
                .last_event_seq(request_id)
                .await
                .map_err(unavailable)?
                + 1;
            let event = ak_core::ports::LoggedEvent {
                seq,
                event: RunEvent::Error(last.clone()),
            };
            match store.append_events(request_id, &[event]).await {
                Ok(()) => break,
                // The run wrote an event at that number meanwhile: after it, then.
                Err(PortError::Conflict { .. }) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        self.progress(request_id, user).await
    }

    /// The response store, where one is configured.
    pub fn store(&self) -> Option<&Arc<dyn ResponseStore>> {
        self.store.as_ref()
    }

    /// Enqueues a request; when the queue refuses it, its answer is that 503 (stored, so a
    /// follower or a poll learns it instead of waiting for a run that never starts; a failure
    /// is not kept: the same request sent again runs).
    async fn enqueue(&self, input: &dyn Queue, request: &RunRequest) -> Result<(), ApiError> {
        let Err(error) = enqueue(input, request).await else {
            return Ok(());
        };
        if let Some(store) = &self.store {
            let record = exec::record_of(
                &request.request_id,
                &request.session_id,
                request.user_id.as_deref(),
                Answer::from(&error),
            );
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

    /// Registers the request id where a store is configured: a mismatch is a 422. Returns the
    /// first answer of a repeat that has one to give, and whether the id was known (a repeat,
    /// answered or still in work).
    async fn register(&self, request: &RunRequest) -> Result<(Option<Answer>, bool), ApiError> {
        let Some(store) = &self.store else {
            return Ok((None, false));
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
                    let marker = ak_core::ports::LoggedEvent {
                        seq: last + 1,
                        event: RunEvent::Retry {
                            agent: request.agent.clone().unwrap_or_default(),
                        },
                    };
                    if let Err(e) = store.append_events(id, &[marker]).await {
                        tracing::warn!(request_id = %id, error = %e, "cannot mark the event log for the rerun");
                    }
                }
                Ok((None, true))
            }
            Registration::Repeat(Some(record)) if record.visible_to(request.user_id.as_deref()) => {
                tracing::info!(request_id = %id, "a repeated request: answered with its first answer");
                Ok((Some(record.into_answer()), true))
            }
            // A repeat still in work (or whose answer is someone else's): go on; the runner's
            // claim keeps the model from being called twice.
            Registration::Repeat(_) => Ok((None, true)),
            Registration::New => Ok((None, false)),
        }
    }

    /// The answer in this mode: the run's (direct, reporting to `events`), the one the runner
    /// stores (rest_sync), or 202 (rest_async).
    async fn answer(
        &self,
        request: RunRequest,
        events: Option<&EventSender>,
    ) -> Result<Answer, ApiError> {
        let id = request.request_id.clone();
        let (input, store, wait) = match &self.execution {
            Execution::Direct(runner) => {
                // A cancellation — here, or stored by another instance — drops the run: its
                // model call ends, nothing of its turn is saved.
                let running = self.running.start(&id, request.user_id.as_deref());
                let stored_cancel = async {
                    match &self.store {
                        Some(store) => exec::canceled(store.as_ref(), &id).await,
                        None => std::future::pending().await,
                    }
                };
                let run = async {
                    match &self.store {
                        None => exec::run_to_answer(runner.as_ref(), &request, events, None).await,
                        Some(store) => {
                            self.run_direct_once(
                                runner.as_ref(),
                                store.clone(),
                                request.clone(),
                                events,
                            )
                            .await
                        }
                    }
                };
                return tokio::select! {
                    answer = run => answer,
                    () = running.cancelled() => Ok(exec::canceled_answer(&id)),
                    () = stored_cancel => Ok(exec::canceled_answer(&id)),
                };
            }
            Execution::Sync { input, store, wait } => (input, Some(store), *wait),
            Execution::Async { input } => (input, self.store.as_ref(), self.repeat_wait),
        };
        self.enqueue(input.as_ref(), &request).await?;
        let Some(store) = store.filter(|_| matches!(self.execution, Execution::Sync { .. })) else {
            return Ok(Answer::accepted(&id));
        };
        let wait = exec::within(request.deadline, wait);
        let record = exec::wait_for_answer(store.as_ref(), &id, wait)
            .await
            .map_err(|e| ApiError::from(e).with_request_id(&id))?;
        match record {
            Some(record) if record.visible_to(request.user_id.as_deref()) => {
                Ok(record.into_answer())
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
    ) -> Result<Answer, ApiError> {
        let id = request.request_id.clone();
        let owner = ak_core::request::new_id();
        let claim_ttl = request.deadline.map_or(LOCAL_CLAIM_TTL, |deadline| {
            deadline.saturating_duration_since(tokio::time::Instant::now())
                + exec::ANSWER_MARGIN
                + exec::DIRECT_CLAIM_GRACE
        });
        let unavailable = |e: PortError| ApiError::from(e).with_request_id(&id);
        let attempt = match store
            .claim(&id, &owner, claim_ttl)
            .await
            .map_err(unavailable)?
        {
            ClaimOutcome::Acquired { attempt } => Some(attempt),
            ClaimOutcome::HeldByOther | ClaimOutcome::AlreadyAnswered => None,
        };
        let Some(attempt) = attempt else {
            return match exec::wait_for_answer(store.as_ref(), &id, self.repeat_wait)
                .await
                .map_err(unavailable)?
            {
                Some(record) if record.visible_to(request.user_id.as_deref()) => {
                    Ok(record.into_answer())
                }
                _ => Err(ApiError::ResponseTimeout {
                    request_id: id,
                    waited: self.repeat_wait,
                }),
            };
        };
        // A run that does not finish (its client left and the stream was dropped) gives the
        // request id back at once, so a retry runs instead of waiting for the claim to lapse.
        let mut claim = ClaimGuard::new(store.clone(), &id, &owner);
        let result = exec::run_to_answer(runner, &request, events, Some(store.as_ref())).await;
        claim.disarm();
        match result {
            Ok(response) => {
                let stored = ResponseRecord {
                    attempt,
                    ..exec::record_of(
                        &id,
                        &request.session_id,
                        request.user_id.as_deref(),
                        response.clone(),
                    )
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

    /// Decides on the pause of `request_id` for `user` (`decisions`: `[{"id", "approve",
    /// "reason"?}]`; see [`exec::approval`]) and goes on with the run: in direct mode within this
    /// call, in the queue modes through the input queue (rest_sync waits for the answer,
    /// rest_async answers 202). The same decision again gets the request's answer (202 while
    /// the run is under way). Errors as [`exec::approval::decide`] says.
    pub async fn decide(
        &self,
        request_id: &str,
        user: Option<&str>,
        decisions: &[serde_json::Value],
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answer, ApiError> {
        match self.take_decision(request_id, user, decisions).await? {
            None => self.answer_of_repeat(request_id, user, deadline).await,
            Some(mut request) => {
                request.deadline = deadline;
                if !matches!(self.execution, Execution::Direct(_)) {
                    return self.answer(request, None).await;
                }
                // Direct mode: the resumed run goes on (and stores its answer) even if this
                // client leaves: its tools may already have run.
                let service = self.clone();
                tokio::spawn(async move { service.answer(request, None).await })
                    .await
                    .unwrap_or_else(|e| {
                        Err(ApiError::internal(
                            Some(request_id),
                            format!("the resumed run stopped: {e}"),
                        ))
                    })
            }
        }
    }

    /// [`ChatService::decide`], answering with the resumed run's events (relayed from its
    /// event log in the queue modes), ending with `done`, `error` or another
    /// `approval_required`.
    pub async fn decide_stream(
        &self,
        request_id: &str,
        user: Option<&str>,
        decisions: &[serde_json::Value],
        deadline: Option<tokio::time::Instant>,
        options: StreamOptions,
    ) -> Result<RunStream, ApiError> {
        let Some(mut request) = self.take_decision(request_id, user, decisions).await? else {
            let answer = self.answer_of_repeat(request_id, user, deadline).await?;
            return Ok(RunStream::of(vec![answer.final_event(request_id)]));
        };
        request.deadline = deadline;
        let id = request.request_id.clone();
        let session = request.session_id.clone();
        let queued = match &self.execution {
            Execution::Sync { input, store, .. } => Some((input.clone(), store.clone())),
            Execution::Async { input } => self.store.clone().map(|store| (input.clone(), store)),
            Execution::Direct(_) => None,
        };
        if let Some((input, store)) = queued {
            // From the log's end: what the client saw up to the pause is not sent again.
            let after = store.last_event_seq(&id).await.unwrap_or_default();
            self.enqueue(input.as_ref(), &request).await?;
            let until = relay_until(request.deadline, options.bound);
            let options = StreamOptions { after, ..options };
            return Ok(self
                .relay(store, &id, options, request.user_id.clone(), until, true)
                .with_ids(&id, Some(&session)));
        }
        if let Some(store) = self.store.clone().filter(|_| self.event_log) {
            // Direct mode: the resumed run writes its events to the log in a task of its own,
            // so it goes on (and stores its answer) if this client leaves; the stream relays
            // the log from where it stood.
            let after = store.last_event_seq(&id).await.unwrap_or_default();
            let user = request.user_id.clone();
            let writer =
                exec::eventlog::LogWriter::continuing(store.clone(), &id, after, false, "");
            self.spawn_logged(request, writer);
            let until = relay_until(deadline, options.bound);
            let options = StreamOptions { after, ..options };
            return Ok(self
                .relay(store, &id, options, user, until, true)
                .with_ids(request_id, Some(&session)));
        }
        Ok(self.live(request).with_ids(request_id, Some(&session)))
    }

    /// The decision taken: the request to resume, or `None` for a repeat.
    async fn take_decision(
        &self,
        request_id: &str,
        user: Option<&str>,
        decisions: &[serde_json::Value],
    ) -> Result<Option<RunRequest>, ApiError> {
        let Some(store) = &self.store else {
            return Err(ApiError::NothingToPoll {
                request_id: request_id.to_owned(),
            });
        };
        Ok(
            match exec::approval::decide(store.as_ref(), request_id, user, decisions).await? {
                exec::approval::Decided::Resume(request) => Some(*request),
                exec::approval::Decided::Repeat => None,
            },
        )
    }

    /// The answer a repeated decision gets: the request's, once stored (waiting a while for
    /// it); 202 while the run is under way.
    async fn answer_of_repeat(
        &self,
        request_id: &str,
        user: Option<&str>,
        deadline: Option<tokio::time::Instant>,
    ) -> Result<Answer, ApiError> {
        let Some(store) = &self.store else {
            return Err(ApiError::NothingToPoll {
                request_id: request_id.to_owned(),
            });
        };
        let wait = exec::within(deadline, self.repeat_wait);
        let record = exec::wait_for_answer(store.as_ref(), request_id, wait)
            .await
            .map_err(|e| ApiError::from(e).with_request_id(request_id))?;
        Ok(match record {
            Some(record) if record.visible_to(user) => record.into_answer(),
            _ => Answer::accepted(request_id),
        })
    }

    /// Answers a chat GET for `request_id` on behalf of `user`.
    pub async fn poll(&self, request_id: &str, user: Option<&str>) -> Result<Answer, ApiError> {
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
                // A pause nobody decided in time ends the request when first looked at.
                if exec::approval::is_expired_pause(&record).is_some() {
                    return Ok(exec::approval::expire(store.as_ref(), &record).await);
                }
                Ok(record.into_answer())
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
        attempt: None,
        body: request.queue_body(),
    };
    input.send(&message).await.map_err(|e: PortError| {
        // Not enqueued: the client must not think it was accepted.
        ApiError::from(e).with_request_id(&request.request_id)
    })
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
