//! In-process adapters for local runs and unit tests. They keep the semantics of the real
//! ones (visibility timeouts, receive counts, FIFO order per group, first answer wins, claims
//! that lapse, optimistic session versions), so code tested against them behaves the same on
//! SQS, Redis and DynamoDB.

use crate::ports::{
    Appended, ClaimOutcome, HistoryLimits, LoggedEvent, Pointer, PortError, Queue, QueueMessage,
    Registration, ResponseRecord, ResponseStore, SessionHistory, SessionStore, Turn,
};
use async_trait::async_trait;
use aws_lambda_events::sqs::SqsMessage;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// How long a received message stays invisible (SQS's default is 30 s).
pub const DEFAULT_VISIBILITY: Duration = Duration::from_secs(30);
/// FIFO deduplication window, as on SQS.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);
/// Receives after which a message is dropped (logged), standing in for a dead-letter queue.
const MAX_RECEIVES: u32 = 100;
/// Sessions kept before the least recently used is evicted.
pub const MAX_SESSIONS: usize = 10_000;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves plain data behind; keep serving it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

struct Entry {
    id: String,
    message: QueueMessage,
    receives: u32,
    visible_at: Instant,
    receipt: Option<String>,
    /// The sender's span (`traceparent`), when traced.
    traceparent: Option<String>,
}

#[derive(Default)]
struct QueueState {
    entries: VecDeque<Entry>,
    dedup: HashMap<String, Instant>,
}

/// A named in-process queue (`memory://NAME`).
pub struct MemoryQueue {
    name: String,
    fifo: bool,
    visibility: Duration,
    state: Mutex<QueueState>,
    arrived: Notify,
}

impl MemoryQueue {
    /// A fresh queue, not registered under any name.
    pub fn new(fifo: bool, visibility: Duration) -> Self {
        Self {
            name: "memory".to_owned(),
            fifo,
            visibility,
            state: Mutex::new(QueueState::default()),
            arrived: Notify::new(),
        }
    }

    /// The process-wide queue of this name, created on first use; names ending in `.fifo` are
    /// FIFO queues.
    pub fn named(name: &str) -> Arc<MemoryQueue> {
        static QUEUES: OnceLock<Mutex<HashMap<String, Arc<MemoryQueue>>>> = OnceLock::new();
        let mut queues = lock(QUEUES.get_or_init(Default::default));
        queues
            .entry(name.to_owned())
            .or_insert_with(|| {
                Arc::new(MemoryQueue {
                    name: name.to_owned(),
                    ..MemoryQueue::new(name.ends_with(".fifo"), DEFAULT_VISIBILITY)
                })
            })
            .clone()
    }

    /// Messages waiting or in flight.
    pub fn len(&self) -> usize {
        lock(&self.state).entries.len()
    }

    /// Whether no message is waiting or in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take_visible(&self, max: usize) -> Vec<SqsMessage> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state.entries.retain(|e| {
            let keep = e.receives < MAX_RECEIVES || e.visible_at > now;
            if !keep {
                tracing::warn!(message_id = %e.id, "in-memory queue dropped a message received {MAX_RECEIVES} times");
            }
            keep
        });
        let mut blocked_groups: HashSet<String> = HashSet::new();
        let mut out = Vec::new();
        for entry in state.entries.iter_mut() {
            if out.len() >= max {
                break;
            }
            let group = &entry.message.session_id;
            if entry.visible_at > now {
                if self.fifo && entry.receives > 0 {
                    blocked_groups.insert(group.clone());
                }
                continue;
            }
            if self.fifo && blocked_groups.contains(group) {
                continue;
            }
            entry.receives += 1;
            entry.visible_at = now + self.visibility;
            let receipt = uuid::Uuid::new_v4().to_string();
            entry.receipt = Some(receipt.clone());
            let mut record = entry
                .message
                .to_sqs_record(&entry.id, &receipt, entry.receives);
            record.event_source_arn = Some(format!("arn:aws:sqs:local:000000000000:{}", self.name));
            if let Some(traceparent) = &entry.traceparent {
                let mut attr = aws_lambda_events::sqs::SqsMessageAttribute::default();
                attr.string_value = Some(traceparent.clone());
                attr.data_type = Some("String".to_owned());
                record
                    .message_attributes
                    .insert(super::ATTR_TRACEPARENT.to_owned(), attr);
            }
            out.push(record);
        }
        out
    }
}

#[async_trait]
impl Queue for MemoryQueue {
    async fn send(&self, message: &QueueMessage) -> Result<(), PortError> {
        let span = crate::otel::producer_span(&self.name);
        let traceparent = span.in_scope(crate::otel::current_traceparent);
        let now = Instant::now();
        {
            let mut state = lock(&self.state);
            if self.fifo {
                state
                    .dedup
                    .retain(|_, at| now.duration_since(*at) < DEDUP_WINDOW);
                let dedup = message.deduplication_id();
                if state.dedup.contains_key(&dedup) {
                    return Ok(());
                }
                state.dedup.insert(dedup, now);
            }
            state.entries.push_back(Entry {
                id: uuid::Uuid::new_v4().to_string(),
                message: message.clone(),
                receives: 0,
                visible_at: now,
                receipt: None,
                traceparent,
            });
        }
        self.arrived.notify_waiters();
        Ok(())
    }

    async fn receive(&self, max: usize, wait: Duration) -> Result<Vec<SqsMessage>, PortError> {
        let deadline = Instant::now() + wait;
        let max = max.clamp(1, 10);
        loop {
            let arrived = self.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let batch = self.take_visible(max);
            if !batch.is_empty() || Instant::now() >= deadline {
                return Ok(batch);
            }
            // Wake for a new message, for an in-flight one becoming visible again, or at the end.
            let next_visible = lock(&self.state).entries.iter().map(|e| e.visible_at).min();
            let until = next_visible.map_or(deadline, |v| v.min(deadline));
            tokio::select! {
                () = &mut arrived => {}
                () = tokio::time::sleep_until(until) => {}
            }
        }
    }

    async fn delete(&self, receipt: &str) -> Result<(), PortError> {
        lock(&self.state)
            .entries
            .retain(|e| e.receipt.as_deref() != Some(receipt));
        Ok(())
    }
}

#[derive(Default)]
struct ResponseSlot {
    record: Option<ResponseRecord>,
    /// The attempt of the last answer forgotten: answers of it or earlier are not stored again.
    forgotten: Option<u64>,
    /// Holder, until, attempt.
    claim: Option<(String, Instant, u64)>,
    /// Attempts taken so far.
    attempts: u64,
    fingerprint: Option<String>,
    user_id: Option<String>,
    events: Vec<LoggedEvent>,
}

/// In-process response store.
#[derive(Default)]
pub struct MemoryResponseStore {
    slots: Mutex<HashMap<String, ResponseSlot>>,
    pointers: Mutex<HashMap<String, Pointer>>,
    stored: Notify,
    logged: Notify,
}

impl MemoryResponseStore {
    /// The process-wide store (what `type: memory` selects).
    pub fn shared() -> Arc<MemoryResponseStore> {
        static STORE: OnceLock<Arc<MemoryResponseStore>> = OnceLock::new();
        STORE.get_or_init(Default::default).clone()
    }
}

#[async_trait]
impl ResponseStore for MemoryResponseStore {
    async fn register(
        &self,
        request_id: &str,
        fingerprint: &str,
        user_id: Option<&str>,
    ) -> Result<Registration, PortError> {
        let mut slots = lock(&self.slots);
        let slot = slots.entry(request_id.to_owned()).or_default();
        Ok(match &slot.fingerprint {
            None => {
                slot.fingerprint = Some(fingerprint.to_owned());
                slot.user_id = user_id.map(str::to_owned);
                Registration::New
            }
            Some(known) if known == fingerprint => Registration::Repeat(slot.record.clone()),
            Some(_) => Registration::Mismatch,
        })
    }

    async fn registered_user(&self, request_id: &str) -> Result<Option<Option<String>>, PortError> {
        Ok(lock(&self.slots)
            .get(request_id)
            .filter(|slot| slot.fingerprint.is_some())
            .map(|slot| slot.user_id.clone()))
    }

    async fn append_events(
        &self,
        request_id: &str,
        events: &[LoggedEvent],
    ) -> Result<(), PortError> {
        {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(request_id.to_owned()).or_default();
            let mut last = slot.events.last().map_or(0, |e| e.seq);
            for event in events {
                if event.seq <= last {
                    return Err(PortError::event_taken(request_id, event.seq));
                }
                last = event.seq;
            }
            slot.events.extend_from_slice(events);
        }
        self.logged.notify_waiters();
        Ok(())
    }

    async fn events_after(
        &self,
        request_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        let deadline = Instant::now() + wait;
        loop {
            let logged = self.logged.notified();
            tokio::pin!(logged);
            logged.as_mut().enable();
            let found: Vec<LoggedEvent> = lock(&self.slots)
                .get(request_id)
                .map(|slot| {
                    slot.events
                        .iter()
                        .filter(|e| e.seq > after)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            if !found.is_empty() || Instant::now() >= deadline {
                return Ok(found);
            }
            tokio::select! {
                () = &mut logged => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn last_event_seq(&self, request_id: &str) -> Result<u64, PortError> {
        Ok(lock(&self.slots)
            .get(request_id)
            .and_then(|slot| slot.events.last())
            .map_or(0, |e| e.seq))
    }

    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError> {
        {
            let mut slots = lock(&self.slots);
            let slot = slots.entry(record.request_id.clone()).or_default();
            let fresh = match &slot.record {
                None => slot.forgotten.is_none_or(|a| record.attempt > a),
                Some(stored) => record.replaces(stored),
            };
            if fresh {
                slot.record = Some(record.clone());
            }
        }
        self.stored.notify_waiters();
        Ok(())
    }

    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError> {
        Ok(lock(&self.slots)
            .get(request_id)
            .and_then(|s| s.record.clone()))
    }

    async fn wait_for(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError> {
        let deadline = Instant::now() + timeout;
        loop {
            let stored = self.stored.notified();
            tokio::pin!(stored);
            stored.as_mut().enable();
            if let Some(record) = self.get(request_id).await? {
                return Ok(Some(record));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut stored => {}
                () = tokio::time::sleep_until(deadline) => {}
            }
        }
    }

    async fn claim(
        &self,
        request_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let now = Instant::now();
        let mut slots = lock(&self.slots);
        let slot = slots.entry(request_id.to_owned()).or_default();
        if slot.record.is_some() {
            return Ok(ClaimOutcome::AlreadyAnswered);
        }
        match &slot.claim {
            Some((holder, until, _)) if *until > now && holder != owner => {
                Ok(ClaimOutcome::HeldByOther)
            }
            Some((holder, until, attempt)) if *until > now && holder == owner => {
                let attempt = *attempt;
                slot.claim = Some((owner.to_owned(), now + ttl, attempt));
                Ok(ClaimOutcome::Acquired { attempt })
            }
            _ => {
                slot.attempts += 1;
                let attempt = slot.attempts;
                slot.claim = Some((owner.to_owned(), now + ttl, attempt));
                Ok(ClaimOutcome::Acquired { attempt })
            }
        }
    }

    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(request_id)
            && slot
                .claim
                .as_ref()
                .is_some_and(|(holder, _, _)| holder == owner)
        {
            slot.claim = None;
        }
        Ok(())
    }

    async fn set_pointer(
        &self,
        name: &str,
        target: &str,
        user_id: Option<&str>,
    ) -> Result<(), PortError> {
        lock(&self.pointers).insert(
            name.to_owned(),
            Pointer {
                target: target.to_owned(),
                user_id: user_id.map(str::to_owned),
            },
        );
        Ok(())
    }

    async fn pointer(&self, name: &str) -> Result<Option<Pointer>, PortError> {
        Ok(lock(&self.pointers).get(name).cloned())
    }

    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError> {
        let mut slots = lock(&self.slots);
        if let Some(slot) = slots.get_mut(&answer.request_id)
            && slot.record.as_ref().is_some_and(|r| {
                r.status_code == answer.status_code && r.created_at == answer.created_at
            })
        {
            slot.forgotten = Some(answer.attempt);
            slot.record = None;
            slot.claim = None;
        }
        Ok(())
    }
}

#[derive(Clone)]
struct MemorySession {
    turns: Vec<Turn>,
    touched: Instant,
}

/// In-process session store, bounded to [`MAX_SESSIONS`] (least recently used evicted).
pub struct MemorySessionStore {
    capacity: usize,
    sessions: Mutex<HashMap<String, MemorySession>>,
}

impl Default for MemorySessionStore {
    fn default() -> Self {
        Self::with_capacity(MAX_SESSIONS)
    }
}

impl MemorySessionStore {
    /// The process-wide store (what `type: in_memory` selects).
    pub fn shared() -> Arc<MemorySessionStore> {
        static STORE: OnceLock<Arc<MemorySessionStore>> = OnceLock::new();
        STORE.get_or_init(Default::default).clone()
    }

    /// A store keeping at most `capacity` sessions.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            sessions: Mutex::new(HashMap::new()),
        }
    }
}

#[async_trait]
impl SessionStore for MemorySessionStore {
    async fn load(
        &self,
        session_id: &str,
        limits: HistoryLimits,
    ) -> Result<Option<SessionHistory>, PortError> {
        let mut sessions = lock(&self.sessions);
        Ok(sessions.get_mut(session_id).map(|session| {
            session.touched = Instant::now();
            SessionHistory {
                turns: limits.take(session.turns.iter().rev().cloned()),
                next_seq: session.turns.len() as u64,
                user_id: session.turns.last().and_then(|t| t.user_id.clone()),
                has_turns: !session.turns.is_empty(),
            }
        }))
    }

    async fn append(&self, session_id: &str, seq: u64, turn: &Turn) -> Result<Appended, PortError> {
        let mut sessions = lock(&self.sessions);
        if !sessions.contains_key(session_id) && sessions.len() >= self.capacity {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.touched)
                .map(|(id, _)| id.clone());
            if let Some(id) = oldest {
                sessions.remove(&id);
            }
        }
        let session = sessions
            .entry(session_id.to_owned())
            .or_insert_with(|| MemorySession {
                turns: Vec::new(),
                touched: Instant::now(),
            });
        if session
            .turns
            .iter()
            .any(|t| t.request_id == turn.request_id)
        {
            return Ok(Appended::Duplicate);
        }
        if session.turns.len() as u64 != seq {
            return Err(PortError::Conflict {
                session_id: session_id.to_owned(),
            });
        }
        session.turns.push(turn.clone());
        session.touched = Instant::now();
        Ok(Appended::Stored)
    }

    async fn find(&self, session_id: &str, request_id: &str) -> Result<Option<Turn>, PortError> {
        Ok(lock(&self.sessions)
            .get(session_id)
            .and_then(|s| s.turns.iter().find(|t| t.request_id == request_id).cloned()))
    }
}
