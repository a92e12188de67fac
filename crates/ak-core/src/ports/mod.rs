//! The ports: what the runtime needs from a queue, a response store, a session store and an
//! agent runner, as small `Send + Sync` async traits. In-process adapters are in [`memory`]
//! (unit tests and the local default); SQS, Redis and DynamoDB are in `ak-adapters`, agents in
//! `ak-agents`. SDK types never cross these signatures; nothing here knows HTTP.

pub mod memory;

use crate::error::ApiError;
use async_trait::async_trait;
use aws_lambda_events::sqs::SqsMessage;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Which backend an error comes from; named in the 503 the client gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Redis / ElastiCache.
    Redis,
    /// DynamoDB.
    DynamoDb,
    /// SQS.
    Sqs,
    /// The in-process adapters.
    Memory,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Redis => "Redis",
            Backend::DynamoDb => "DynamoDB",
            Backend::Sqs => "SQS",
            Backend::Memory => "in-memory store",
        })
    }
}

/// A failure of a queue or store.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The backend could not be reached or did not answer in time.
    #[error("{backend} is unavailable: {detail}")]
    Unavailable {
        /// Which backend.
        backend: Backend,
        /// What happened (for logs; may name hosts, never credentials).
        detail: String,
    },
    /// The deployment's configuration keeps the backend from being used (no AWS credentials or
    /// region, an unreadable CA file, an IAM token that cannot be made): trying again cannot
    /// help until the configuration changes. The detail goes to the log; a client gets a 500.
    #[error("{backend} cannot be used as configured: {detail}")]
    Misconfigured {
        /// Which backend.
        backend: Backend,
        /// What to change (for logs; never credentials).
        detail: String,
    },
    /// The backend holds data this version cannot read.
    #[error("{backend} holds malformed data: {detail}")]
    Corrupt {
        /// Which backend.
        backend: Backend,
        /// What is wrong.
        detail: String,
    },
    /// A session changed since it was loaded; saving would lose the other turn.
    #[error("session {session_id} was saved by another request since it was loaded")]
    Conflict {
        /// The session.
        session_id: String,
    },
    /// The data cannot be accepted (too large for the backend, say); trying again cannot help.
    #[error("{0}")]
    Rejected(String),
    /// Something of a request (its turn, its queue message, its answer) larger than the
    /// backend can ever hold.
    #[error("the {what} of request {request_id} is {size} bytes; {limit}")]
    TooLarge {
        /// What is too large: `turn`, `message` or `answer`.
        what: &'static str,
        /// The request it belongs to.
        request_id: String,
        /// Its size in bytes.
        size: usize,
        /// Which limit it exceeds.
        limit: String,
    },
}

impl PortError {
    /// An `Unavailable` error from any displayable cause.
    pub fn unavailable(backend: Backend, detail: impl fmt::Display) -> Self {
        PortError::Unavailable {
            backend,
            detail: detail.to_string(),
        }
    }

    /// The error for an event number already in a request's log (a second writer).
    pub fn event_taken(request_id: &str, seq: u64) -> Self {
        PortError::Rejected(format!(
            "event {seq} of request {request_id} is already in its log (another run writes it)"
        ))
    }

    /// Whether trying again later may succeed (the runner reports such records as failures so
    /// SQS redelivers them).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            PortError::Unavailable { .. } | PortError::Conflict { .. }
        )
    }
}

impl From<PortError> for ApiError {
    fn from(e: PortError) -> Self {
        match e {
            PortError::Unavailable { backend, detail } => ApiError::ServiceUnavailable {
                backend: backend.to_string(),
                request_id: None,
                detail,
            },
            PortError::Conflict { session_id } => ApiError::Conflict(format!(
                "session {session_id} was answering another message at the same time; send this one again once that answer has arrived"
            )),
            PortError::Rejected(message) => ApiError::BadRequest(message),
            too_large @ PortError::TooLarge { what: "turn", .. } => ApiError::TooLarge(format!(
                "{too_large}; start a new session (omit session_id) or ask for a shorter answer"
            )),
            too_large @ PortError::TooLarge { .. } => ApiError::TooLarge(too_large.to_string()),
            PortError::Corrupt { .. } | PortError::Misconfigured { .. } => {
                ApiError::internal(None, e.to_string())
            }
        }
    }
}

/// Seconds since the Unix epoch.
pub fn now_epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// Queues

/// One message on the input or output queue: a JSON body and the attributes that route it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueMessage {
    /// The request this message belongs to (attribute `request_id`; FIFO deduplication id).
    pub request_id: String,
    /// The conversation (attribute `session_id`; FIFO group id, so one session stays in order).
    pub session_id: String,
    /// Who asked (attribute `user_id`, when known).
    pub user_id: Option<String>,
    /// HTTP status of an answer (attribute `status_code`, output queue only).
    pub status_code: Option<u16>,
    /// The run attempt an answer comes from (attribute `attempt`, output queue only): the
    /// fencing token of the claim it ran under, so the store keeps answers in attempt order.
    pub attempt: Option<u64>,
    /// Input: the request body (prompt, agent, session_id, extras). Output: the client's body.
    pub body: Value,
}

/// A message taken from a queue, with what delivery adds.
#[derive(Debug, Clone, PartialEq)]
pub struct Delivery {
    /// The message.
    pub message: QueueMessage,
    /// Id of this SQS message (what `batchItemFailures` names).
    pub message_id: String,
    /// How many times it has been received, this time included.
    pub receive_count: u32,
    /// The sender's trace context: the `traceparent` message attribute.
    pub traceparent: Option<String>,
    /// The X-Ray trace header SQS adds (`AWSTraceHeader` system attribute).
    pub xray: Option<String>,
}

impl Delivery {
    /// The CONSUMER span processing this delivery of `record` (its queue named by the record's
    /// `eventSourceARN`), continuing the sender's trace.
    pub fn process_span(&self, record: &Value) -> tracing::Span {
        let queue = record
            .get("eventSourceARN")
            .and_then(Value::as_str)
            .and_then(|arn| arn.rsplit(':').next())
            .filter(|name| !name.is_empty())
            .unwrap_or("queue");
        crate::otel::consumer_span(queue, &self.message_id, self.carrier())
    }

    /// Where this message's trace continues from (see [`crate::otel::Carrier`]).
    pub fn carrier(&self) -> crate::otel::Carrier<'_> {
        crate::otel::Carrier {
            traceparent: self.traceparent.as_deref(),
            xray: self.xray.as_deref(),
        }
    }
}

/// A queue record that cannot be read as a [`QueueMessage`].
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("queue message {message_id}: {problem}")]
pub struct MessageError {
    /// The SQS message id, or `(none)`.
    pub message_id: String,
    /// What is missing or malformed.
    pub problem: String,
}

const ATTR_REQUEST_ID: &str = "request_id";
const ATTR_SESSION_ID: &str = "session_id";
const ATTR_USER_ID: &str = "user_id";
const ATTR_STATUS_CODE: &str = "status_code";
const ATTR_ATTEMPT: &str = "attempt";
/// The message attribute carrying the sender's W3C trace context.
pub const ATTR_TRACEPARENT: &str = "traceparent";

impl QueueMessage {
    /// The FIFO deduplication id: the request id, so a retried send within five minutes is
    /// not delivered twice — but a message that is the same request again on purpose keeps
    /// its own: the resume of a paused run names the pause it resumes, and an answer names
    /// the attempt it comes from (a rerun's answer must reach the store after a failed
    /// attempt's). A SHA-256 in hex when that would pass SQS's 128 characters.
    pub fn deduplication_id(&self) -> String {
        let pause = self.body.get("resume").and_then(|r| r.get("pause"));
        let id = match (pause, self.attempt) {
            (Some(pause), _) => format!("{}:resume:{pause}", self.request_id),
            (None, Some(attempt)) => format!("{}:attempt:{attempt}", self.request_id),
            (None, None) => return self.request_id.clone(),
        };
        if id.len() <= 128 {
            return id;
        }
        use sha2::Digest;
        sha2::Sha256::digest(id.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The message attributes as (name, `String` value) pairs.
    pub fn attributes(&self) -> Vec<(&'static str, String)> {
        let mut attrs = vec![
            (ATTR_REQUEST_ID, self.request_id.clone()),
            (ATTR_SESSION_ID, self.session_id.clone()),
        ];
        if let Some(user) = &self.user_id {
            attrs.push((ATTR_USER_ID, user.clone()));
        }
        if let Some(status) = self.status_code {
            attrs.push((ATTR_STATUS_CODE, status.to_string()));
        }
        if let Some(attempt) = self.attempt {
            attrs.push((ATTR_ATTEMPT, attempt.to_string()));
        }
        attrs
    }

    /// The record a Lambda SQS event carries for this message (what the queues hand the runner
    /// and the response handler, locally as on Lambda).
    pub fn to_sqs_record(&self, message_id: &str, receipt: &str, receive_count: u32) -> SqsMessage {
        let mut record = SqsMessage::default();
        record.message_id = Some(message_id.to_owned());
        record.receipt_handle = Some(receipt.to_owned());
        record.body = Some(self.body.to_string());
        record.event_source = Some("aws:sqs".to_owned());
        record.attributes.insert(
            "ApproximateReceiveCount".to_owned(),
            receive_count.to_string(),
        );
        for (name, value) in self.attributes() {
            let mut attr = aws_lambda_events::sqs::SqsMessageAttribute::default();
            attr.string_value = Some(value);
            attr.data_type = Some("String".to_owned());
            record.message_attributes.insert(name.to_owned(), attr);
        }
        record
    }

    /// Reads a record of a Lambda SQS event. The session id falls back to the body's
    /// `session_id` for messages sent by other producers.
    pub fn from_sqs_record(record: &SqsMessage) -> Result<Delivery, MessageError> {
        let value = serde_json::to_value(record).map_err(|e| MessageError {
            message_id: record
                .message_id
                .clone()
                .unwrap_or_else(|| "(none)".to_owned()),
            problem: format!("cannot be read: {e}"),
        })?;
        Self::from_record(&value)
    }

    /// Reads one record of a Lambda SQS event from its JSON, looking only at what this runtime
    /// uses (`messageId`, `body`, the `String` message attributes, `ApproximateReceiveCount`),
    /// so a malformed part it does not use (a `binaryValue` that is not base64, say) does not
    /// make the record unreadable.
    pub fn from_record(record: &Value) -> Result<Delivery, MessageError> {
        let message_id = record
            .get("messageId")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let problem = |p: String| MessageError {
            message_id: if message_id.is_empty() {
                "(none)".to_owned()
            } else {
                message_id.clone()
            },
            problem: p,
        };
        let attr = |name: &str| {
            record
                .get("messageAttributes")
                .and_then(|a| a.get(name))
                .and_then(|a| a.get("stringValue"))
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        let text = record
            .get("body")
            .and_then(Value::as_str)
            .ok_or_else(|| problem("has no body".to_owned()))?;
        let body: Value =
            serde_json::from_str(text).map_err(|e| problem(format!("body is not JSON: {e}")))?;
        let request_id = attr(ATTR_REQUEST_ID)
            .ok_or_else(|| problem("has no request_id attribute".to_owned()))?;
        let session_id = attr(ATTR_SESSION_ID)
            .or_else(|| {
                body.get("session_id")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .ok_or_else(|| problem("has no session_id attribute or body field".to_owned()))?;
        let status_code = match attr(ATTR_STATUS_CODE) {
            None => None,
            Some(s) => Some(
                s.parse::<u16>()
                    .ok()
                    .filter(|c| (100..=599).contains(c))
                    .ok_or_else(|| problem(format!("status_code {s:?} is not an HTTP status")))?,
            ),
        };
        // An attempt that does not read as a number is the earliest (0): it never replaces an
        // answer of a counted attempt.
        let attempt = attr(ATTR_ATTEMPT).map(|a| a.trim().parse().unwrap_or(0));
        let receive_count = match record
            .get("attributes")
            .and_then(|a| a.get("ApproximateReceiveCount"))
        {
            Some(Value::String(c)) => c.trim().parse().unwrap_or(1),
            Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(1),
            _ => 1,
        };
        Ok(Delivery {
            message: QueueMessage {
                request_id,
                session_id,
                user_id: attr(ATTR_USER_ID),
                status_code,
                attempt,
                body,
            },
            message_id,
            receive_count,
            traceparent: attr(ATTR_TRACEPARENT),
            xray: record
                .get("attributes")
                .and_then(|a| a.get("AWSTraceHeader"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        })
    }
}

/// The records of a Lambda SQS event (`Records`), read from its raw JSON one by one, so a record
/// that is not readable JSON (a lone surrogate escape, nesting too deep) cannot make the others
/// unreadable: it comes back as `{"messageId": ...}` alone, which the handlers report as a
/// batch item failure. An event without a `Records` list has none.
pub fn sqs_records(event: &str) -> Vec<Value> {
    use serde_json::value::RawValue;
    #[derive(Deserialize)]
    struct Event {
        #[serde(rename = "Records", default)]
        records: Vec<Box<RawValue>>,
    }
    #[derive(Deserialize)]
    struct Id {
        #[serde(rename = "messageId")]
        message_id: Option<String>,
    }
    let Ok(event) = serde_json::from_str::<Event>(event) else {
        tracing::error!("an SQS event without a Records list");
        return Vec::new();
    };
    event
        .records
        .into_iter()
        .map(|raw| {
            serde_json::from_str::<Value>(raw.get()).unwrap_or_else(|e| {
                let id = serde_json::from_str::<Id>(raw.get())
                    .ok()
                    .and_then(|id| id.message_id);
                tracing::error!(message_id = id.as_deref().unwrap_or(""), error = %e, "an SQS record that is not readable JSON");
                serde_json::json!({"messageId": id})
            })
        })
        .collect()
}

/// A queue: send messages, and (for the local server, which plays the Lambda event source)
/// receive and delete them.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends one message. FIFO queues group by session and deduplicate by request id.
    async fn send(&self, message: &QueueMessage) -> Result<(), PortError>;

    /// Receives up to `max` messages (≤ 10), waiting up to `wait` for the first, as the records
    /// of a Lambda SQS event. Received messages stay invisible until deleted or their visibility
    /// timeout passes, then come back with a higher receive count.
    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, PortError>;

    /// Deletes a received message by its receipt handle.
    async fn delete(&self, receipt: &str) -> Result<(), PortError>;
}

// ---------------------------------------------------------------------------------------------
// Response store

/// A stored answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResponseRecord {
    /// The request answered.
    pub request_id: String,
    /// Its session.
    pub session_id: String,
    /// Who asked; polls by anyone else see NOT_FOUND.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// HTTP status the client gets.
    pub status_code: u16,
    /// The JSON body the client gets.
    pub body: Value,
    /// When it was stored, in seconds since the epoch.
    pub created_at: u64,
    /// The run attempt that produced it: the fencing token of the claim it ran under
    /// ([`ClaimOutcome::Acquired`]); 0 for answers given without a run (a queue that refused the
    /// request). See [`ResponseRecord::replaces`].
    #[serde(default)]
    pub attempt: u64,
}

/// Whether an answer with this status is a failure worth running again (5xx, 408, 409, 425,
/// 429): a repeat of its request runs again instead of getting it back, and a later attempt's
/// answer replaces it.
pub fn is_retryable_status(status: u16) -> bool {
    status >= 500 || matches!(status, 408 | 409 | 425 | 429)
}

impl ResponseRecord {
    /// Whether this answer, arriving now, takes the place of `stored`: only a later attempt's
    /// answer replaces an earlier failure. A success is final (a client may have read it, and
    /// the session holds its turn); an earlier attempt's answer, or the same attempt's again (a
    /// redelivered output message), changes nothing.
    pub fn replaces(&self, stored: &ResponseRecord) -> bool {
        stored.is_retryable() && self.attempt > stored.attempt
    }

    /// The answer the client gets: the stored status and body.
    pub fn into_answer(self) -> crate::answer::Answer {
        crate::answer::Answer::new(self.status_code, self.body)
    }

    /// Whether the answer is a failure worth running again (5xx, 408, 409, 425, 429): a repeat
    /// of its request runs again instead of getting it back.
    pub fn is_retryable(&self) -> bool {
        is_retryable_status(self.status_code)
    }

    /// Whether `user` may read this record: records without an owner are public, owned ones
    /// only to their owner.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        match &self.user_id {
            None => true,
            Some(owner) => user == Some(owner.as_str()),
        }
    }
}

/// Outcome of [`ResponseStore::claim`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimOutcome {
    /// This caller holds the claim and should process the request.
    Acquired {
        /// The fencing token of this claim: 1 for the first run of the request, one more for
        /// each claim taken afresh after (a renewal by the same owner keeps it). The answer of
        /// the run carries it, so a store never lets an earlier attempt's answer win.
        attempt: u64,
    },
    /// Another runner holds an unexpired claim: try again later.
    HeldByOther,
    /// The answer is already stored: nothing to do.
    AlreadyAnswered,
}

/// What the store knows of a request id when a request arrives with it (the request id is an
/// idempotency key).
#[derive(Debug, Clone, PartialEq)]
pub enum Registration {
    /// First time: the id is now registered with this request's fingerprint.
    New,
    /// The same request again; its answer, once stored.
    Repeat(Option<ResponseRecord>),
    /// The id was used for a different request.
    Mismatch,
}

/// One event of a run's log: its number (1, 2, ...; the SSE `id:` a follower resumes from)
/// and the event.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedEvent {
    /// Position in the log, from 1.
    pub seq: u64,
    /// The event.
    pub event: crate::events::RunEvent,
}

impl LoggedEvent {
    /// As stored: `{"event": name, "data": data}`.
    pub fn to_json(&self) -> String {
        serde_json::json!({"event": self.event.name(), "data": self.event.data()}).to_string()
    }

    /// From what [`LoggedEvent::to_json`] stored.
    pub fn from_json(seq: u64, text: &str) -> Option<LoggedEvent> {
        let v: Value = serde_json::from_str(text).ok()?;
        let event = crate::events::RunEvent::from_parts(v["event"].as_str()?, v["data"].clone())?;
        Some(LoggedEvent { seq, event })
    }
}

/// What a named pointer ([`ResponseStore::set_pointer`]) holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pointer {
    /// The id it points at.
    pub target: String,
    /// Whose it is (`None`: anonymous, anyone's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
}

impl Pointer {
    /// Whether `user` may follow it: an anonymous request is anyone's, an owned one its
    /// owner's only.
    pub fn visible_to(&self, user: Option<&str>) -> bool {
        self.user_id.is_none() || self.user_id.as_deref() == user
    }
}

/// Where answers wait for rest_sync and rest_async clients, and where runs in the queue modes
/// keep their event logs for streaming clients.
#[async_trait]
pub trait ResponseStore: Send + Sync {
    /// Registers `request_id` for the request with `fingerprint`, asked by `user_id`, or tells
    /// what it was used for before. The registration lives as long as an answer would (the
    /// store's TTL).
    async fn register(
        &self,
        request_id: &str,
        fingerprint: &str,
        user_id: Option<&str>,
    ) -> Result<Registration, PortError>;

    /// Who registered `request_id`: `None` if nobody did (or it expired), `Some(None)` for an
    /// anonymous request.
    async fn registered_user(&self, request_id: &str) -> Result<Option<Option<String>>, PortError>;

    /// Appends events to the request's log (each `seq` new and larger than the last, else
    /// [`PortError::Conflict`]), with the store's TTL, and wakes its followers.
    async fn append_events(
        &self,
        request_id: &str,
        events: &[LoggedEvent],
    ) -> Result<(), PortError>;

    /// The events after number `after`, in order; waits up to `wait` for the first one when
    /// there is none yet (an empty list then).
    async fn events_after(
        &self,
        request_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<LoggedEvent>, PortError>;

    /// The number of the log's last event (0: none).
    async fn last_event_seq(&self, request_id: &str) -> Result<u64, PortError>;

    /// Stores an answer, with the store's TTL, in attempt order, decided by the store's
    /// conditional write: it is written when the request has none, when it replaces a stored
    /// failure of an earlier attempt ([`ResponseRecord::replaces`]), or when it is of a later
    /// attempt than a forgotten one ([`ResponseStore::forget`]); otherwise nothing changes (a
    /// redelivered answer, a stale failure after the rerun's success). Idempotent.
    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError>;

    /// Reads an answer without removing it.
    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError>;

    /// Waits up to `timeout` for an answer, returning as soon as it is stored.
    async fn wait_for(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError>;

    /// Claims a request for processing by `owner` until `ttl` passes, so a duplicate delivery
    /// does not call the model again while this one works or after it answered. A claim taken
    /// afresh gets the next attempt number; the same owner claiming again renews it (same
    /// number). Idempotent for one owner, so a retried call cannot take two attempts.
    async fn claim(
        &self,
        request_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, PortError>;

    /// Gives up a claim early (after a transient failure), if `owner` still holds it.
    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError>;

    /// Points `name` at `target`, for `user_id`: an id a surface finds again by a name it
    /// knows (an AI SDK chat's latest request, an A2A task's context); the last write wins.
    /// Lives as long as an answer would (the store's TTL).
    async fn set_pointer(
        &self,
        name: &str,
        target: &str,
        user_id: Option<&str>,
    ) -> Result<(), PortError>;

    /// Where `name` points: `None` if nowhere (or the pointer expired).
    async fn pointer(&self, name: &str) -> Result<Option<Pointer>, PortError>;

    /// Forgets a stored answer if it is still `answer` (same status and time), with any claim,
    /// keeping the registration: the same request then runs again. For answers a client may
    /// retry (see [`ResponseRecord::is_retryable`]). What is forgotten leaves its attempt
    /// behind: an answer of that attempt or an earlier one arriving later (a redelivered output
    /// message) is not stored again.
    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError>;
}

// ---------------------------------------------------------------------------------------------
// Session store

/// One request's turn of a conversation: the user's message, the agents' tool calls and
/// results, and the final answer, stored as one unit under the request id, so a history never
/// starts inside a turn and a turn is stored once however often its request is delivered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    /// The request that produced the turn.
    pub request_id: String,
    /// Fingerprint of that request (see `RunRequest::fingerprint`): a repeat of the request id
    /// with another request is told apart by it.
    pub fingerprint: String,
    /// The session's owner: the user of its first turn, carried on every turn (`None`: an
    /// open session anyone may continue).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Chat Completions messages, oldest first; the last one is the answer.
    pub items: Vec<Value>,
    /// When it was stored, in seconds since the epoch.
    #[serde(default)]
    pub created_at: u64,
}

impl Turn {
    /// Its size as stored and sent to the model: the JSON length of its items, in bytes.
    pub fn size(&self) -> usize {
        self.items.iter().map(|i| i.to_string().len()).sum()
    }
}

/// How much history a load returns: whole turns, newest first, while both bounds hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Most messages (`agents.history_window`).
    pub max_items: usize,
    /// Most bytes of message JSON (`agents.history_max_bytes`).
    pub max_bytes: usize,
}

impl HistoryLimits {
    /// The newest whole turns of `newest_first` within these limits, returned oldest first.
    pub fn take(&self, newest_first: impl IntoIterator<Item = Turn>) -> Vec<Turn> {
        let (mut items, mut bytes) = (0usize, 0usize);
        let mut kept: Vec<Turn> = Vec::new();
        for turn in newest_first {
            items += turn.items.len();
            bytes += turn.size();
            if items > self.max_items || bytes > self.max_bytes {
                break;
            }
            kept.push(turn);
        }
        kept.reverse();
        kept
    }
}

/// A conversation as loaded: its newest turns within the limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionHistory {
    /// The newest whole turns within the limits, oldest first.
    pub turns: Vec<Turn>,
    /// How many turns the session holds in all: the number the next append takes.
    pub next_seq: u64,
    /// The owner: the `user_id` of the newest live turn (`None`: anyone may continue it).
    pub user_id: Option<String>,
    /// Whether the session has a live turn at all (beyond the limits, too): when not, the next
    /// turn starts it afresh, and its user becomes the owner.
    pub has_turns: bool,
}

/// Outcome of [`SessionStore::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    /// The turn is stored.
    Stored,
    /// The session already holds a turn of this request id; nothing was written.
    Duplicate,
}

/// Conversation history by session id: append-only turns, numbered, one per request id.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// The newest turns of a session within `limits`; `None` if it has none (or they expired).
    async fn load(
        &self,
        session_id: &str,
        limits: HistoryLimits,
    ) -> Result<Option<SessionHistory>, PortError>;

    /// Appends `turn` as number `seq` (the `next_seq` of the load it follows):
    /// [`PortError::Conflict`] if another turn took that number since, [`Appended::Duplicate`]
    /// if the session already holds a turn of `turn.request_id`. [`PortError::Rejected`] when
    /// the turn can never be stored (too large), saying which limit it exceeds.
    async fn append(&self, session_id: &str, seq: u64, turn: &Turn) -> Result<Appended, PortError>;

    /// The session's turn of `request_id`, however old.
    async fn find(&self, session_id: &str, request_id: &str) -> Result<Option<Turn>, PortError>;
}

// ---------------------------------------------------------------------------------------------
// Agents

/// Runs agents. Implemented by `ak_agents::AgentRuntime`; the request handler (direct mode)
/// and the agent runner (queue modes) only need this.
#[async_trait]
pub trait AgentRunner: Send + Sync {
    /// Answers one chat turn. With `events`, reports the run as it happens (`agent`, `delta`,
    /// `tool_call`, `tool_result`; `done` and `error` are the caller's to send) and asks the
    /// model for a streamed answer.
    async fn run(
        &self,
        request: &crate::request::RunRequest,
        events: Option<&crate::events::EventSender>,
    ) -> Result<crate::answer::AgentAnswer, crate::answer::AgentFailure>;

    /// Which model provider answers (`openai`, `offline`), for start-up logs.
    fn provider(&self) -> &'static str;
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn message() -> QueueMessage {
        QueueMessage {
            request_id: "req-1".into(),
            session_id: "s-1".into(),
            user_id: Some("u".into()),
            status_code: Some(502),
            attempt: Some(2),
            body: json!({"error": "model failed", "request_id": "req-1"}),
        }
    }

    #[test]
    fn a_resume_is_not_deduplicated_against_its_request() {
        let mut m = message();
        assert_eq!(
            m.deduplication_id(),
            "req-1:attempt:2",
            "an answer: its attempt"
        );
        m.attempt = None;
        assert_eq!(m.deduplication_id(), "req-1");
        m.body = json!({"prompt": "p", "resume": {"pause": 2}});
        assert_eq!(m.deduplication_id(), "req-1:resume:2");
        m.request_id = "r".repeat(128);
        let long = m.deduplication_id();
        assert_eq!(long.len(), 64);
        assert_ne!(long, m.request_id);
    }

    #[test]
    fn records_round_trip_and_name_what_is_missing() {
        let record = message().to_sqs_record("m-1", "r-1", 3);
        let delivery = QueueMessage::from_sqs_record(&record).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((delivery.message, delivery.receive_count), (message(), 3));

        let mut no_id = record.clone();
        no_id.message_attributes.remove("request_id");
        let e = QueueMessage::from_sqs_record(&no_id)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("m-1") && e.contains("request_id"), "{e}");
        let mut bad_status = record.clone();
        if let Some(a) = bad_status.message_attributes.get_mut("status_code") {
            a.string_value = Some("999".into());
        }
        assert!(QueueMessage::from_sqs_record(&bad_status).is_err());
        let mut no_body = record;
        no_body.body = None;
        assert!(QueueMessage::from_sqs_record(&no_body).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn arbitrary_records_never_panic(
            body in proptest::option::of(".{0,200}"),
            request_id in proptest::option::of(".{0,40}"),
            status in proptest::option::of(".{0,6}"),
            count in proptest::option::of(".{0,6}"),
        ) {
            let mut record = message().to_sqs_record("m", "r", 1);
            record.body = body;
            for (name, value) in [("request_id", request_id), ("status_code", status)] {
                match value {
                    Some(v) => {
                        if let Some(a) = record.message_attributes.get_mut(name) {
                            a.string_value = Some(v);
                        }
                    }
                    None => {
                        record.message_attributes.remove(name);
                    }
                }
            }
            if let Some(c) = count {
                record.attributes.insert("ApproximateReceiveCount".into(), c);
            }
            let _ = QueueMessage::from_sqs_record(&record);
        }

        #[test]
        fn arbitrary_sqs_event_json_never_panics(text in ".{0,300}") {
            if let Ok(record) = serde_json::from_str::<SqsMessage>(&text) {
                let _ = QueueMessage::from_sqs_record(&record);
            }
        }
    }
}
