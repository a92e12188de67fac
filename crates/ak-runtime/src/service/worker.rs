//! The queue workers: the agent runner (input batch → agents → output queue) and the response
//! handler (output batch → response store), as Lambda calls them with an SQS event, plus
//! [`pump`], which plays the event source mapping for the local server.
//!
//! Both report per-record failures (`batchItemFailures`) so SQS redelivers only those.

use crate::exec::eventlog::LogWriter;
use crate::exec::{
    self, AbortOnDrop, DEADLINE_MARGIN, LOCAL_CLAIM_TTL, error_answer, put_answer, record_of,
};
use ak_core::answer::{Answer, ChatAnswer};
use ak_core::error::ApiError;
use ak_core::ports::{
    AgentRunner, ClaimOutcome, Delivery, LoggedEvent, PortError, Queue, QueueMessage,
    ResponseRecord, ResponseStore, now_epoch_secs,
};
use ak_core::request::RunRequest;
use aws_lambda_events::sqs::{BatchItemFailure, SqsBatchResponse};
use serde_json::Value as Json;

/// The SQS event types the handlers take, for crates that drive them.
pub mod sqs {
    pub use aws_lambda_events::sqs::{SqsBatchResponse, SqsEvent, SqsMessage};
}
use serde_json::json;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tracing::Instrument as _;

fn failures(ids: Vec<String>) -> SqsBatchResponse {
    let mut response = SqsBatchResponse::default();
    response.batch_item_failures = ids
        .into_iter()
        .filter(|id| !id.is_empty())
        .map(|id| {
            let mut failure = BatchItemFailure::default();
            failure.item_identifier = id;
            failure
        })
        .collect();
    response
}

/// The agent runner: runs each input record's request and sends the answer to the output queue.
pub struct AgentRunnerHandler {
    runner: Arc<dyn AgentRunner>,
    output: Arc<dyn Queue>,
    store: Arc<dyn ResponseStore>,
    max_receive_count: u32,
    event_log: bool,
    /// The input queue's visibility timeout, when known: claims never outlive it.
    visibility: Option<Duration>,
    /// Whether runs of one session wait for each other (standard queues).
    session_lock: bool,
}

/// The longest a run waits for another run of its session before its record is handed back.
pub const SESSION_WAIT: Duration = Duration::from_secs(20);

/// How long past the invocation's deadline a runner's claim lasts: Lambda stops the function at
/// the deadline, so a claim a little longer covers the whole run, clock skew included.
pub const CLAIM_GRACE: Duration = Duration::from_secs(5);

/// How much before the message is visible again a claim expires: a redelivery after a crash
/// finds the request free.
pub const VISIBILITY_MARGIN: Duration = Duration::from_secs(2);

/// Gives up `owner`'s claim on `id`; when the store does not answer, goes on trying in the
/// background for a while (a claim that cannot be released still expires with its TTL).
async fn release_soon(store: Arc<dyn ResponseStore>, id: &str, owner: &str) {
    let Err(e) = store.release(id, owner).await else {
        return;
    };
    tracing::warn!(request_id = %id, error = %e, "cannot release the claim yet");
    let (id, owner) = (id.to_owned(), owner.to_owned());
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(250);
        for _ in 0..5 {
            tokio::time::sleep(pause).await;
            match store.release(&id, &owner).await {
                Ok(()) => return,
                Err(e) => {
                    tracing::warn!(request_id = %id, error = %e, "cannot release the claim yet");
                    pause *= 2;
                }
            }
        }
    });
}

/// What became of one record.
enum Outcome {
    /// Answered (or already answered): delete it.
    Done,
    /// Try again later: report it as a batch item failure.
    Retry,
}

impl AgentRunnerHandler {
    /// A runner answering to `output`, claiming requests in `store`.
    pub fn new(
        runner: Arc<dyn AgentRunner>,
        output: Arc<dyn Queue>,
        store: Arc<dyn ResponseStore>,
        max_receive_count: u32,
    ) -> Self {
        Self {
            runner,
            output,
            store,
            max_receive_count: max_receive_count.max(1),
            event_log: true,
            visibility: None,
            session_lock: false,
        }
    }

    /// The input queue's visibility timeout (`execution.queues.input.visibility_timeout`):
    /// a claim then expires before the message can be delivered again, so a redelivery after a
    /// crash runs — whatever the function's timeout.
    pub fn with_visibility_timeout(mut self, visibility: Option<Duration>) -> Self {
        self.visibility = visibility;
        self
    }

    /// Runs of one session wait for each other (what a standard queue needs: it delivers a
    /// session's messages concurrently; a FIFO queue delivers them one after another).
    pub fn with_session_lock(mut self, on: bool) -> Self {
        self.session_lock = on;
        self
    }

    /// How long a claim taken now lasts, for an invocation that must end by `deadline` and whose
    /// records were received about `received`: [`CLAIM_GRACE`] past the deadline, but never past
    /// the moment the message is visible again (received + visibility timeout, less
    /// [`VISIBILITY_MARGIN`]).
    pub fn claim_lifetime(&self, received: Instant, deadline: Instant) -> Duration {
        let now = Instant::now();
        let mut until = deadline + CLAIM_GRACE;
        if let Some(visibility) = self.visibility {
            let visible_again = received + visibility.saturating_sub(VISIBILITY_MARGIN);
            if received + visibility < deadline {
                static WARNED: std::sync::atomic::AtomicBool =
                    std::sync::atomic::AtomicBool::new(false);
                if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                    tracing::error!(
                        visibility_timeout_s = visibility.as_secs(),
                        function_timeout_s = deadline.saturating_duration_since(received).as_secs(),
                        "the input queue's visibility timeout is shorter than the function's timeout: a message can be delivered again while its run goes on"
                    );
                }
            }
            until = until.min(visible_again.max(now + Duration::from_secs(1)));
        }
        until.saturating_duration_since(now)
    }

    /// The runner `settings` describe, running agents with `runner`: its output queue and
    /// response store (both required), receive limit and event logs.
    pub async fn from_settings(
        settings: &ak_core::Settings,
        aws: &ak_adapters::AwsConfig,
        runner: Arc<dyn AgentRunner>,
    ) -> Result<Self, ak_adapters::SetupError> {
        let input = &settings.execution.queues.input;
        Ok(Self::new(
            runner,
            ak_adapters::required_output_queue(settings, aws).await?,
            ak_adapters::required_response_store(settings, aws).await?,
            input.max_receive_count,
        )
        .with_event_log(settings.execution.response_store.event_log)
        .with_visibility_timeout(input.visibility_timeout.map(Duration::from_secs))
        .with_session_lock(input.url.as_ref().is_some_and(|url| !url.is_fifo())))
    }

    /// Whether runs write their events to the store for streaming clients
    /// (`execution.response_store.event_log`, on by default; see [`crate::exec::eventlog`]).
    pub fn with_event_log(mut self, on: bool) -> Self {
        self.event_log = on;
        self
    }

    /// Where this attempt's events go: a writer continuing the request's log, or `None` (logs
    /// off, or the store unreadable: the run goes on without one). `Err(())` when the log
    /// already ends with the answer (an attempt before this one answered; its answer is on its
    /// way).
    async fn log_writer(&self, request: &RunRequest) -> Result<Option<LogWriter>, ()> {
        if !self.event_log {
            return Ok(None);
        }
        let id = &request.request_id;
        let after = match self.store.last_event_seq(id).await {
            Ok(after) => after,
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "cannot read the event log; running without it");
                return Ok(None);
            }
        };
        // A resumed run continues its log after the pause; any other run that finds a log
        // starts over, and says so.
        let mut mark_retry = after > 0 && request.resume.is_none();
        if after > 0 {
            let last = self
                .store
                .events_after(id, after - 1, Duration::ZERO)
                .await
                .unwrap_or_default();
            // A pause ends the log only until the run resumes after the decision.
            let resumes = request.resume.is_some();
            if last
                .iter()
                .any(|e| e.event.is_last() && !(resumes && e.event.is_pause()))
            {
                return Err(());
            }
            // A request sent again after it failed: its log already says the run starts over.
            if last
                .iter()
                .any(|e| matches!(e.event, ak_core::events::RunEvent::Retry { .. }))
            {
                mark_retry = false;
            }
        }
        let agent = request.agent.as_deref().unwrap_or_default();
        Ok(Some(LogWriter::continuing(
            self.store.clone(),
            id,
            after,
            mark_retry,
            agent,
        )))
    }

    /// Logs the last event of a request answered without a run.
    async fn log_last(&self, request_id: &str, answer: &Answer) {
        if !self.event_log {
            return;
        }
        let event = answer.clone().final_event(request_id);
        let logged = async {
            let seq = self.store.last_event_seq(request_id).await? + 1;
            self.store
                .append_events(request_id, &[LoggedEvent { seq, event }])
                .await
        };
        if let Err(e) = logged.await {
            tracing::warn!(request_id, error = %e, "cannot log the answer's event");
        }
    }

    /// Handles one SQS batch. Records of one session (FIFO message group) run in order, one
    /// after another; different sessions run concurrently. After a record of a session must be
    /// retried, the later records of that session are handed back too, so order holds. Past
    /// `deadline` (minus a margin) no new record starts; the rest are handed back.
    pub async fn handle(&self, records: Vec<Json>, deadline: Option<Instant>) -> SqsBatchResponse {
        let mut groups: BTreeMap<String, Vec<(String, Delivery, tracing::Span)>> = BTreeMap::new();
        let mut failed = Vec::new();
        for record in records {
            match QueueMessage::from_record(&record) {
                Ok(delivery) => groups
                    .entry(delivery.message.session_id.clone())
                    .or_default()
                    .push({
                        let span = delivery.process_span(&record);
                        (delivery.message_id.clone(), delivery, span)
                    }),
                Err(e) => {
                    // Unreadable: nobody can be answered. Hand it back so the queue's redrive
                    // policy moves it to the dead-letter queue for inspection.
                    tracing::error!(error = %e, "unreadable input record");
                    failed.extend(reportable(&record));
                }
            }
        }
        // When every claim of this batch ends at the latest: the batch's messages come back
        // after the visibility timeout from (about) now, whichever record a claim is for.
        let received = Instant::now();
        let claims_until =
            deadline.map(|deadline| received + self.claim_lifetime(received, deadline));
        let runs = groups.into_values().map(|group| async move {
            let mut retry = Vec::new();
            let mut blocked = false;
            for (id, delivery, span) in group {
                let late = deadline.is_some_and(|d| Instant::now() + DEADLINE_MARGIN >= d);
                if blocked || late {
                    ak_core::otel::record_error(&span, "handed_back");
                    retry.push(id);
                    continue;
                }
                let claim_ttl = claims_until.map_or(LOCAL_CLAIM_TTL, |until| {
                    until
                        .saturating_duration_since(Instant::now())
                        .max(Duration::from_secs(1))
                });
                let outcome = self
                    .process(&delivery, claim_ttl, deadline)
                    .instrument(span.clone())
                    .await;
                if let Outcome::Retry = outcome {
                    ak_core::otel::record_error(&span, "handed_back");
                    blocked = true;
                    retry.push(id);
                }
            }
            retry
        });
        for retry in futures_util::future::join_all(runs).await {
            failed.extend(retry);
        }
        failures(failed)
    }

    async fn process(
        &self,
        delivery: &Delivery,
        claim_ttl: Duration,
        deadline: Option<Instant>,
    ) -> Outcome {
        // Each processing attempt is its own claimant, so a duplicate in the same batch waits.
        let owner = &ak_core::request::new_id();
        let message = &delivery.message;
        let id = &message.request_id;
        let given_up = delivery.receive_count > self.max_receive_count;
        let attempt = match self.store.claim(id, owner, claim_ttl).await {
            Ok(ClaimOutcome::Acquired { attempt }) => attempt,
            Ok(ClaimOutcome::AlreadyAnswered) => {
                tracing::info!(request_id = %id, "duplicate delivery of an answered request");
                return Outcome::Done;
            }
            // A run still holding the request (one longer than the visibility timeout) answers
            // itself; only a request nobody works on is given up.
            Ok(ClaimOutcome::HeldByOther) => {
                tracing::info!(request_id = %id, receives = delivery.receive_count, "request is being processed elsewhere; handed back");
                return Outcome::Retry;
            }
            Err(e) => {
                tracing::warn!(request_id = %id, error = %e, "cannot claim request; handed back");
                return Outcome::Retry;
            }
        };
        if given_up {
            let error = ApiError::internal(
                Some(id),
                format!("received {} times", delivery.receive_count),
            );
            tracing::error!(request_id = %id, receives = delivery.receive_count, "giving up on a request");
            let answer = error_answer(
                id,
                &error,
                Some("the request could not be processed; please send it again"),
            );
            return self.answer_unrun(message, answer, attempt).await;
        }
        let caller = ak_core::request::Caller::from_principal(message.user_id.as_deref());
        let request = match RunRequest::from_queue_body(message.body.clone(), &caller) {
            Ok(mut request) => {
                // The attributes are authoritative for identity.
                request.request_id = id.clone();
                request.session_id = message.session_id.clone();
                request
            }
            Err(e) => {
                return self
                    .answer_unrun(message, error_answer(id, &e, None), attempt)
                    .await;
            }
        };
        let request = RunRequest {
            deadline: deadline.map(|d| d - exec::ANSWER_MARGIN),
            ..request
        };
        // On a standard queue, messages of one session may arrive together: one runs, the
        // others wait for it (or are handed back), instead of running the model and losing the
        // race to save the turn.
        let session_lock = format!("session#{}", request.session_id);
        if self.session_lock
            && !self
                .lock_session(&session_lock, owner, claim_ttl, deadline)
                .await
        {
            tracing::info!(request_id = %id, session_id = %request.session_id, "its session is answering another message; handed back");
            release_soon(self.store.clone(), id, owner).await;
            return Outcome::Retry;
        }
        // Without an invocation deadline (the local server) a run may outlast its claim: keep
        // renewing it while the run goes on, so a redelivery waits instead of running again.
        let keeper = deadline.is_none().then(|| {
            let store = self.store.clone();
            let mut held = vec![id.clone()];
            if self.session_lock {
                held.push(session_lock.clone());
            }
            let owner = owner.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(claim_ttl / 3).await;
                    for id in &held {
                        if let Err(e) = store.claim(id, &owner, claim_ttl).await {
                            tracing::warn!(request_id = %id, error = %e, "cannot renew the claim");
                        }
                    }
                }
            })
        });
        let keeper = AbortOnDrop(keeper);
        let outcome = self.run(delivery, request, attempt).await;
        drop(keeper);
        if self.session_lock {
            release_soon(self.store.clone(), &session_lock, owner).await;
        }
        if let Outcome::Retry = outcome {
            release_soon(self.store.clone(), id, owner).await;
        }
        outcome
    }

    /// Runs a claimed request and answers it (or hands it back after a transient failure).
    async fn run(&self, delivery: &Delivery, request: RunRequest, attempt: u64) -> Outcome {
        let message = &delivery.message;
        let id = &message.request_id;
        let started = std::time::Instant::now();
        let log = match self.log_writer(&request).await {
            Ok(log) => log,
            Err(()) => {
                tracing::info!(request_id = %id, "its event log ends with the answer: answered before");
                return Outcome::Done;
            }
        };
        // A cancellation stored meanwhile (its answer is already the 410) stops the run: the
        // model call is dropped, nothing of the turn is saved, the message is done.
        let result = tokio::select! {
            result = exec::run_agent(
                self.runner.as_ref(),
                &request,
                log.as_ref().map(LogWriter::sender),
            ) => result,
            () = exec::canceled(self.store.as_ref(), id) => {
                if let Some(log) = log {
                    log.close().await;
                }
                return Outcome::Done;
            }
        };
        exec::record_run(&request, started, &result);
        let answer = match result {
            Ok(answer) if answer.pause.is_some() => {
                match exec::approval::pause(Some(self.store.as_ref()), &request, &answer).await {
                    Ok(paused) => paused,
                    Err(e) => {
                        // The pause could not be kept: the run is done again on a later delivery.
                        tracing::warn!(request_id = %id, error = %e, "cannot store the pause; will retry");
                        if let Some(log) = log {
                            log.close().await;
                        }
                        return Outcome::Retry;
                    }
                }
            }
            Ok(answer) => Answer::ok(json!(ChatAnswer::of(answer, &request.session_id, id))),
            Err(failure) => {
                let last_try = delivery.receive_count >= self.max_receive_count;
                if failure.transient && !last_try {
                    tracing::warn!(request_id = %id, error = %failure.error, receives = delivery.receive_count, "transient failure; will retry");
                    if let Some(log) = log {
                        log.close().await;
                    }
                    return Outcome::Retry;
                }
                tracing::warn!(request_id = %id, error = %failure.error, "request failed; answering with the error");
                error_answer(id, &failure.error, None)
            }
        };
        let last = answer.clone().final_event(id);
        let outcome = self.answer(message, answer, attempt).await;
        if let Some(log) = log {
            // The answer is on its way: only then does the log say `done`.
            let stats = match outcome {
                Outcome::Done => log.finish(last).await,
                Outcome::Retry => log.close().await,
            };
            tracing::debug!(request_id = %id, writes = stats.writes, events = stats.events, "event log written");
        }
        outcome
    }

    /// Takes the session's lock for `owner`, waiting while another run holds it — up to
    /// [`SESSION_WAIT`], never past the deadline's margin. `false` when it stayed busy.
    async fn lock_session(
        &self,
        lock: &str,
        owner: &str,
        ttl: Duration,
        deadline: Option<Instant>,
    ) -> bool {
        let mut until = Instant::now() + SESSION_WAIT;
        if let Some(deadline) = deadline {
            until = until.min(deadline - DEADLINE_MARGIN);
        }
        let mut pause = Duration::from_millis(50);
        loop {
            match self.store.claim(lock, owner, ttl).await {
                Ok(ClaimOutcome::Acquired { .. } | ClaimOutcome::AlreadyAnswered) => return true,
                Ok(ClaimOutcome::HeldByOther) | Err(_) => {}
            }
            let now = Instant::now();
            if now >= until {
                return false;
            }
            tokio::time::sleep(pause.min(until - now)).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    /// Answers a request that was not run (unreadable, or given up), and logs the answer.
    async fn answer_unrun(&self, message: &QueueMessage, answer: Answer, attempt: u64) -> Outcome {
        let logged = answer.clone();
        let outcome = self.answer(message, answer, attempt).await;
        if let Outcome::Done = outcome {
            self.log_last(&message.request_id, &logged).await;
        }
        outcome
    }

    /// Sends the answer to the output queue; if that fails, stores it directly so the model is
    /// not called again for it.
    async fn answer(&self, message: &QueueMessage, answer: Answer, attempt: u64) -> Outcome {
        let out = QueueMessage {
            request_id: message.request_id.clone(),
            session_id: message.session_id.clone(),
            user_id: message.user_id.clone(),
            status_code: Some(answer.status),
            attempt: Some(attempt),
            body: answer.body.clone(),
        };
        let Err(send_error) = self.output.send(&out).await else {
            return Outcome::Done;
        };
        tracing::warn!(request_id = %message.request_id, error = %send_error, "output queue unavailable; storing the answer directly");
        let record = ResponseRecord {
            attempt,
            ..record_of(
                &out.request_id,
                &out.session_id,
                out.user_id.as_deref(),
                answer,
            )
        };
        let id = record.request_id.clone();
        match put_answer(self.store.as_ref(), record).await {
            Ok(()) => Outcome::Done,
            Err(e) => {
                tracing::error!(request_id = %id, error = %e, "cannot deliver the answer; will retry");
                Outcome::Retry
            }
        }
    }
}

/// The id under which a failed record is reported. A record without a `messageId` (never sent
/// by SQS) cannot be reported: naming no id would make Lambda retry the whole batch, so it is
/// logged and dropped instead.
fn reportable(record: &Json) -> Option<String> {
    let id = record
        .get("messageId")
        .and_then(Json::as_str)
        .filter(|id| !id.is_empty());
    if id.is_none() {
        tracing::error!(
            "a record without messageId cannot be reported as a batch item failure; dropped"
        );
    }
    id.map(str::to_owned)
}

/// The response handler: stores each output record by request id; idempotent.
pub struct ResponseHandler {
    store: Arc<dyn ResponseStore>,
}

impl ResponseHandler {
    /// A handler writing to `store`.
    pub fn new(store: Arc<dyn ResponseStore>) -> Self {
        Self { store }
    }

    /// Handles one SQS batch of answers. Answers of one request (a failure and its rerun's
    /// success, say) are stored one after another, so the store's conditional writes decide
    /// between them without racing; different requests are stored concurrently.
    pub async fn handle(&self, records: Vec<Json>) -> SqsBatchResponse {
        let mut failed = Vec::new();
        let mut by_request: BTreeMap<String, Vec<(String, QueueMessage, tracing::Span)>> =
            BTreeMap::new();
        for record in records {
            match QueueMessage::from_record(&record) {
                Ok(delivery) => by_request
                    .entry(delivery.message.request_id.clone())
                    .or_default()
                    .push({
                        let span = delivery.process_span(&record);
                        (delivery.message_id, delivery.message, span)
                    }),
                Err(e) => {
                    tracing::error!(error = %e, "unreadable output record");
                    failed.extend(reportable(&record));
                }
            }
        }
        let puts = by_request.into_values().map(|answers| async move {
            let mut failed = Vec::new();
            for (id, message, span) in answers {
                let record = ResponseRecord {
                    request_id: message.request_id,
                    session_id: message.session_id,
                    user_id: message.user_id,
                    status_code: message.status_code.unwrap_or(200),
                    body: message.body,
                    created_at: now_epoch_secs(),
                    attempt: message.attempt.unwrap_or(0),
                };
                let request_id = record.request_id.clone();
                if let Err(e) = put_answer(self.store.as_ref(), record)
                    .instrument(span.clone())
                    .await
                {
                    ak_core::otel::record_error(&span, "store_unavailable");
                    tracing::warn!(request_id = %request_id, error = %e, "cannot store answer; will retry");
                    failed.push(id);
                }
            }
            failed
        });
        for ids in futures_util::future::join_all(puts).await {
            failed.extend(ids);
        }
        failures(failed)
    }
}

/// One round of the local event source: receives up to 10 records (waiting up to `wait`),
/// hands them to `handle` as one batch, and deletes those not reported as failures. Returns how
/// many records were handled.
pub async fn pump<F, Fut>(queue: &dyn Queue, wait: Duration, handle: F) -> Result<usize, PortError>
where
    F: FnOnce(Vec<Json>) -> Fut,
    Fut: Future<Output = SqsBatchResponse>,
{
    let records = queue.receive(10, wait).await?;
    if records.is_empty() {
        return Ok(0);
    }
    let receipts: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (
                r.message_id.clone().unwrap_or_default(),
                r.receipt_handle.clone().unwrap_or_default(),
            )
        })
        .collect();
    let count = records.len();
    let records = records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or(Json::Null))
        .collect();
    let response = handle(records).await;
    for (id, receipt) in receipts {
        let failed = response
            .batch_item_failures
            .iter()
            .any(|f| f.item_identifier == id);
        if !failed {
            queue.delete(&receipt).await?;
        }
    }
    Ok(count)
}
