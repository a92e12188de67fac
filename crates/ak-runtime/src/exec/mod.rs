//! The execution core: running an agent for one request — under the invocation's deadline,
//! with panics contained, metrics written — and turning its outcome into the answer that is
//! stored and the final event that is streamed; claims that keep a request from running twice;
//! and the run's event log ([`eventlog`]).
//!
//! Layer: execution core. Uses `ak-core` (foundations, ports) only; the services
//! ([`crate::service`]) and the edges build on it. Knows no HTTP.

pub mod approval;
pub mod eventlog;

use ak_core::answer::{AgentAnswer, AgentFailure, Answer, ChatAnswer};
use ak_core::error::ApiError;
use ak_core::events::EventSender;
use ak_core::ports::{AgentRunner, PortError, ResponseRecord, ResponseStore, now_epoch_secs};
use ak_core::request::RunRequest;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// A model run must end this long before the invocation's deadline, so the answer (or the
/// error) is written before Lambda stops the function.
pub const ANSWER_MARGIN: Duration = Duration::from_secs(1);

/// A runner stops taking records this long before its deadline and hands the rest back.
pub const DEADLINE_MARGIN: Duration = Duration::from_secs(3);

/// How long a claim lasts when there is no Lambda deadline (the local server).
pub const LOCAL_CLAIM_TTL: Duration = Duration::from_secs(300);

/// How long a direct-mode run holds its request id beyond the invocation's deadline: a repeat
/// arriving meanwhile waits for the answer instead of running the model again, and one arriving
/// after a crash runs it again soon after. Without a deadline (the local server) the claim
/// lasts [`LOCAL_CLAIM_TTL`].
pub const DIRECT_CLAIM_GRACE: Duration = Duration::from_secs(5);

/// The status of the answer of a canceled request (HTTP `410 Gone`): final, never replaced by
/// the run's own answer.
pub const CANCELED: u16 = 410;

/// How often a running run looks in the response store for its cancellation (made by another
/// instance: a `CancelTask`, an MCP host's `notifications/cancelled`).
pub const CANCEL_POLL: Duration = Duration::from_secs(1);

/// The answer of a canceled request: [`CANCELED`], naming it.
pub fn canceled_answer(request_id: &str) -> Answer {
    Answer::new(
        CANCELED,
        json!({"error": "the request was canceled", "request_id": request_id}),
    )
}

/// Resolves once the stored answer of `request_id` is a cancellation (looking every
/// [`CANCEL_POLL`]); never otherwise. A run selects on it, so a cancellation stored by any
/// instance drops the run: its model call ends and nothing of its turn is saved.
pub async fn canceled(store: &dyn ResponseStore, request_id: &str) {
    loop {
        tokio::time::sleep(CANCEL_POLL).await;
        if let Ok(Some(record)) = store.get(request_id).await
            && record.status_code == CANCELED
        {
            tracing::info!(request_id = %request_id, "the request was canceled: its run stops");
            return;
        }
    }
}

type RunningMap = std::collections::HashMap<String, (Option<String>, Arc<tokio::sync::Notify>)>;

/// The runs under way in this process, by request id, so a cancellation arriving here stops
/// one at once (and one without a response store at all).
#[derive(Clone, Default)]
pub struct Running {
    runs: Arc<std::sync::Mutex<RunningMap>>,
}

impl Running {
    /// Registers the run of `request_id` for `user`; the guard says when it is canceled and
    /// unregisters it when dropped.
    pub fn start(&self, request_id: &str, user: Option<&str>) -> RunningGuard {
        let notify = Arc::new(tokio::sync::Notify::new());
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(
                request_id.to_owned(),
                (user.map(str::to_owned), notify.clone()),
            );
        }
        RunningGuard {
            running: self.clone(),
            request_id: request_id.to_owned(),
            notify,
        }
    }

    /// Cancels the run of `request_id` here, if it is `user`'s (or anonymous); whether one was.
    pub fn cancel(&self, request_id: &str, user: Option<&str>) -> bool {
        let Ok(runs) = self.runs.lock() else {
            return false;
        };
        match runs.get(request_id) {
            Some((owner, notify)) if owner.is_none() || owner.as_deref() == user => {
                notify.notify_one();
                true
            }
            _ => false,
        }
    }
}

/// A run registered in [`Running`].
pub struct RunningGuard {
    running: Running,
    request_id: String,
    notify: Arc<tokio::sync::Notify>,
}

impl RunningGuard {
    /// Resolves when the run is canceled.
    pub async fn cancelled(&self) {
        self.notify.notified().await;
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        if let Ok(mut runs) = self.running.runs.lock()
            && runs
                .get(&self.request_id)
                .is_some_and(|(_, n)| Arc::ptr_eq(n, &self.notify))
        {
            runs.remove(&self.request_id);
        }
    }
}

/// The message of a caught panic.
pub fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

/// Runs an agent; a panic inside the run (a bug, in a tool, say) becomes an internal error of
/// this request alone.
pub async fn run_agent(
    runner: &dyn AgentRunner,
    request: &RunRequest,
    events: Option<&EventSender>,
) -> Result<AgentAnswer, AgentFailure> {
    use futures_util::FutureExt;
    std::panic::AssertUnwindSafe(runner.run(request, events))
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let detail = format!("the agent run panicked: {}", panic_text(&*panic));
            tracing::error!(request_id = %request.request_id, detail = %detail, "agent run failed");
            Err(AgentFailure {
                error: ApiError::internal(Some(&request.request_id), detail),
                transient: false,
            })
        })
}

/// Writes the agent-run metric line of one run.
pub fn record_run(
    request: &RunRequest,
    started: std::time::Instant,
    result: &Result<AgentAnswer, AgentFailure>,
) {
    let (agent, tokens, model_ms, outcome) = match result {
        Ok(a) => (a.agent.as_str(), a.total_tokens, a.model_ms, "ok"),
        Err(f) => ("", 0, 0.0, f.error.class()),
    };
    ak_core::metrics::agent_run(&ak_core::metrics::AgentRun {
        request_id: &request.request_id,
        session_id: &request.session_id,
        user_id: request.user_id.as_deref(),
        agent,
        tokens,
        duration_ms: started.elapsed().as_secs_f64() * 1000.0,
        model_ms,
        outcome,
    });
}

/// Logs a run dropped before it ended (its client left) as an agent run with outcome
/// `cancelled`.
struct CancelledRun {
    request_id: Option<String>,
    session_id: String,
    user_id: Option<String>,
    started: std::time::Instant,
}

impl Drop for CancelledRun {
    fn drop(&mut self) {
        if let Some(request_id) = &self.request_id {
            ak_core::metrics::agent_run(&ak_core::metrics::AgentRun {
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

/// Runs the agent for `request` and answers with the result (`200` and the [`ChatAnswer`]), or
/// the failure; reports the run to `events` as it goes. A run that paused for approval has its
/// state stored in `store` first and answers with the pause (see [`approval`]). A run dropped
/// midway (its client left) is logged as cancelled.
pub async fn run_to_answer(
    runner: &dyn AgentRunner,
    request: &RunRequest,
    events: Option<&EventSender>,
    store: Option<&dyn ResponseStore>,
) -> Result<Answer, ApiError> {
    let id = request.request_id.clone();
    let started = std::time::Instant::now();
    let mut cancelled = CancelledRun {
        request_id: Some(id.clone()),
        session_id: request.session_id.clone(),
        user_id: request.user_id.clone(),
        started,
    };
    let result = run_agent(runner, request, events).await;
    cancelled.request_id = None;
    record_run(request, started, &result);
    let answer = result.map_err(|f| f.error.with_request_id(&id))?;
    if answer.pause.is_some() {
        return approval::pause(store, request, &answer).await;
    }
    Ok(Answer::ok(json!(ChatAnswer::of(
        answer,
        &request.session_id,
        &id
    ))))
}

/// The answer a client gets for a failed request: the error's, naming the request, with
/// `message` in place of the error's text when given.
pub fn error_answer(request_id: &str, error: &ApiError, message: Option<&str>) -> Answer {
    let mut body = error.body();
    if let (Some(message), Value::Object(map)) = (message, &mut body) {
        map.insert("error".into(), Value::String(message.to_owned()));
    }
    if let Value::Object(map) = &mut body {
        map.insert("request_id".into(), Value::String(request_id.to_owned()));
    }
    Answer::new(error.status_code(), body)
}

/// The record that stores `answer` for `request`'s ids.
pub fn record_of(
    request_id: &str,
    session_id: &str,
    user_id: Option<&str>,
    answer: Answer,
) -> ResponseRecord {
    ResponseRecord {
        request_id: request_id.to_owned(),
        session_id: session_id.to_owned(),
        user_id: user_id.map(str::to_owned),
        status_code: answer.status,
        body: answer.body,
        created_at: now_epoch_secs(),
        attempt: 0,
    }
}

/// Waits up to `wait` for the answer to `request_id`, as [`ResponseStore::wait_for`] does, but
/// through failed reads: a read that fails (a connection that broke, a throttled table) is
/// tried again with a bounded backoff until the wait ends. An error only when no read
/// succeeded at all.
pub async fn wait_for_answer(
    store: &dyn ResponseStore,
    request_id: &str,
    wait: Duration,
) -> Result<Option<ResponseRecord>, PortError> {
    let until = Instant::now() + wait;
    let mut pause = Duration::from_millis(50);
    let mut read_once = false;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match store.wait_for(request_id, left).await {
            Ok(found) => {
                if found.is_some() || Instant::now() >= until {
                    return Ok(found);
                }
                read_once = true;
            }
            Err(e) if !e.is_transient() => return Err(e),
            Err(e) => {
                let left = until.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return if read_once { Ok(None) } else { Err(e) };
                }
                tracing::info!(request_id, error = %e, "a read of the answer failed; reading again");
                tokio::time::sleep(pause.min(left)).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Stores an answer; one the store can never hold (too large) is replaced by an error saying
/// so, so the client learns what happened instead of waiting for an answer that cannot come.
/// Errors are those after which trying again later may help: an outage, or a store the
/// deployment cannot use as configured (nothing can be stored then, not even an error).
pub async fn put_answer(
    store: &dyn ResponseStore,
    record: ResponseRecord,
) -> Result<(), PortError> {
    match store.put(&record).await {
        Err(e) if !e.is_transient() && !matches!(e, PortError::Misconfigured { .. }) => {
            tracing::error!(request_id = %record.request_id, error = %e, "the answer cannot be stored; storing an error in its place");
            let error = ApiError::TooLarge(format!(
                "the answer could not be stored: {e}; ask for a shorter answer"
            ));
            let answer = error_answer(&record.request_id, &error, None);
            store
                .put(&ResponseRecord {
                    status_code: answer.status,
                    body: answer.body,
                    ..record
                })
                .await
        }
        other => other,
    }
}

/// Releases a claim when dropped while armed (the run was cancelled midway: its client left),
/// so a retry runs at once instead of waiting for the claim to lapse.
pub struct ClaimGuard {
    store: Option<Arc<dyn ResponseStore>>,
    id: String,
    owner: String,
}

impl ClaimGuard {
    /// An armed guard of `owner`'s claim on `request_id`.
    pub fn new(store: Arc<dyn ResponseStore>, request_id: &str, owner: &str) -> Self {
        Self {
            store: Some(store),
            id: request_id.to_owned(),
            owner: owner.to_owned(),
        }
    }

    /// The run ended: the claim is the caller's to keep or release.
    pub fn disarm(&mut self) {
        self.store = None;
    }
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

/// Aborts a background task when dropped.
pub struct AbortOnDrop(pub Option<tokio::task::JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

/// How long to wait from now: `wait`, but never past `deadline`.
pub fn within(deadline: Option<Instant>, wait: Duration) -> Duration {
    deadline.map_or(wait, |deadline| {
        wait.min(deadline.saturating_duration_since(Instant::now()))
    })
}
