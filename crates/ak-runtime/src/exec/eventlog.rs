//! Event logs: in the queue modes the agent runner writes each run's events to the response
//! store ([`LogWriter`]), and request handlers on any instance relay them to streaming clients
//! ([`follow`]): a streaming POST from the start, `GET .../stream` from any point.
//!
//! A log holds the events of direct-mode streaming (`agent`, `delta`, `tool_call`,
//! `tool_result`, `done`, `error`), numbered from 1; the number is the SSE `id:`, so a client
//! resumes with `Last-Event-ID`. Deltas are merged before they are written: a write happens when
//! [`FLUSH_BYTES`] of text are waiting, [`FLUSH_INTERVAL`] after the first waiting delta, or at
//! once for any other event — so a long answer costs a write per kilobyte (or per 50 ms while
//! the model is slower than that), not one per token.
//!
//! A run that starts over (the message delivered again after a runner died) continues the same
//! log: its first event is an `agent` event with `"retry": true`, and what came before it in
//! the log belongs to the attempt that did not finish. A follower drops what it showed of the
//! answer when it sees one.

use ak_core::events::{EventSender, Numbered, RunEvent};
use ak_core::ports::{LoggedEvent, PortError, ResponseStore};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest time a delta waits before it is written.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(50);
/// Bytes of merged delta text that are written at once.
pub const FLUSH_BYTES: usize = 1024;
/// Longest delta text in one logged event; a longer delta is logged as several (so no event
/// meets DynamoDB's 400 KB item limit).
pub const MAX_DELTA_BYTES: usize = 32 * 1024;
/// Tries of one write before the writer gives up on the log (the run goes on; followers then
/// get the stored answer as their `done`).
const WRITE_TRIES: u32 = 3;

/// What a writer did, for logs and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Store writes (`append_events` calls that succeeded).
    pub writes: u64,
    /// Events written.
    pub events: u64,
    /// The number of the last event written (0: none).
    pub last_seq: u64,
    /// Whether the writer gave up (the store refused or failed; see the warning logged).
    pub gave_up: bool,
}

/// Writes one run's events to its log, batching deltas. Events go in through
/// [`LogWriter::sender`]; [`LogWriter::finish`] writes the last one and waits for the rest.
pub struct LogWriter {
    sender: EventSender,
    task: JoinHandle<LogStats>,
}

impl LogWriter {
    /// A writer for the log of `request_id`, whose events so far end at number `after`. With
    /// `retry` (`after` > 0: an attempt before this one wrote events), the first event becomes
    /// the retry marker (an `agent` event with `"retry": true`; `agent` names the agent when
    /// the run's first event is not an `agent` event).
    pub fn start(store: Arc<dyn ResponseStore>, request_id: &str, after: u64, agent: &str) -> Self {
        Self::continuing(store, request_id, after, after > 0, agent)
    }

    /// [`LogWriter::start`], saying whether the first event must be the retry marker (`false`
    /// when the log already ends with one).
    pub fn continuing(
        store: Arc<dyn ResponseStore>,
        request_id: &str,
        after: u64,
        mark_retry: bool,
        agent: &str,
    ) -> Self {
        let (sender, receiver) = ak_core::events::channel();
        let writer = Writer {
            store,
            request_id: request_id.to_owned(),
            next: after.saturating_add(1),
            retry: mark_retry.then(|| agent.to_owned()),
            pending: Vec::new(),
            pending_bytes: 0,
            stats: LogStats {
                last_seq: after,
                ..LogStats::default()
            },
        };
        Self {
            sender,
            task: tokio::spawn(writer.run(receiver)),
        }
    }

    /// Where the run sends its events.
    pub fn sender(&self) -> &EventSender {
        &self.sender
    }

    /// Logs `last` (`done` or `error`) after everything sent before, and waits until all is
    /// written (or given up).
    pub async fn finish(self, last: RunEvent) -> LogStats {
        self.sender.send(last);
        self.close().await
    }

    /// Writes what was sent and stops, without a last event (an attempt that will be retried).
    pub async fn close(self) -> LogStats {
        drop(self.sender);
        self.task.await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "the event log writer failed");
            LogStats {
                gave_up: true,
                ..LogStats::default()
            }
        })
    }
}

struct Writer {
    store: Arc<dyn ResponseStore>,
    request_id: String,
    next: u64,
    retry: Option<String>,
    pending: Vec<RunEvent>,
    pending_bytes: usize,
    stats: LogStats,
}

impl Writer {
    async fn run(mut self, mut events: UnboundedReceiver<Numbered>) -> LogStats {
        let mut due: Option<Instant> = None;
        loop {
            let received = match due {
                Some(at) => tokio::select! {
                    received = events.recv() => Some(received),
                    () = tokio::time::sleep_until(at) => None,
                },
                None => Some(events.recv().await),
            };
            match received {
                // The delta's time is up.
                None => {
                    self.flush().await;
                    due = None;
                }
                // The run is over.
                Some(None) => {
                    self.flush().await;
                    return self.stats;
                }
                Some(Some((_, event))) => {
                    if self.stats.gave_up {
                        continue;
                    }
                    let event = self.marked(event);
                    if let RunEvent::Delta { text } = event {
                        for piece in pieces(&text, MAX_DELTA_BYTES) {
                            match self.pending.last_mut() {
                                Some(RunEvent::Delta { text })
                                    if text.len() + piece.len() <= MAX_DELTA_BYTES =>
                                {
                                    text.push_str(piece);
                                }
                                _ => self.pending.push(RunEvent::Delta {
                                    text: piece.to_owned(),
                                }),
                            }
                            self.pending_bytes += piece.len();
                            if self.pending_bytes >= FLUSH_BYTES {
                                self.flush().await;
                                due = None;
                            }
                        }
                        if !self.pending.is_empty() && due.is_none() {
                            due = Some(Instant::now() + FLUSH_INTERVAL);
                        }
                    } else {
                        self.pending.push(event);
                        self.flush().await;
                        due = None;
                    }
                }
            }
        }
    }

    /// The run's first event after an attempt that did not finish: the retry marker.
    fn marked(&mut self, event: RunEvent) -> RunEvent {
        let Some(agent) = self.retry.take() else {
            return event;
        };
        match event {
            RunEvent::Agent { agent } => RunEvent::Retry { agent },
            other => {
                self.pending.push(RunEvent::Retry { agent });
                other
            }
        }
    }

    async fn flush(&mut self) {
        if self.pending.is_empty() || self.stats.gave_up {
            self.pending.clear();
            self.pending_bytes = 0;
            return;
        }
        let batch: Vec<LoggedEvent> = self
            .pending
            .drain(..)
            .zip(self.next..)
            .map(|(event, seq)| LoggedEvent { seq, event })
            .collect();
        self.pending_bytes = 0;
        let count = batch.len() as u64;
        let mut failed_before = false;
        for attempt in 1..=WRITE_TRIES {
            match self.store.append_events(&self.request_id, &batch).await {
                Ok(()) => {
                    self.stats.writes += 1;
                    break;
                }
                // A try that timed out may have been written after all.
                Err(PortError::Rejected(_)) if failed_before => break,
                Err(e) if attempt == WRITE_TRIES || !e.is_transient() => {
                    tracing::warn!(request_id = %self.request_id, error = %e, "cannot write the event log; the run goes on without it");
                    self.stats.gave_up = true;
                    return;
                }
                Err(e) => {
                    tracing::debug!(request_id = %self.request_id, error = %e, "event log write failed; trying again");
                    failed_before = true;
                    tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                }
            }
        }
        self.next += count;
        self.stats.events += count;
        self.stats.last_seq = self.next - 1;
    }
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn pieces(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut cut = rest.len().min(max);
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        rest = tail;
        Some(head)
    })
}

/// How long one read of a log waits for something new before the follower checks whether the
/// answer was stored without its `done` (a writer that gave up).
const FOLLOW_WAIT: Duration = Duration::from_secs(2);

/// Whether event `seq` of the log ends it for good: a `done` or `error` with no retry marker
/// after it (a request sent again after it failed continues its log after such a marker).
/// Such a follower is answered 204, which tells an `EventSource` to stop reconnecting. A
/// number past the log's end counts as its last (the client has it all).
pub async fn ends_at(store: &dyn ResponseStore, request_id: &str, seq: u64) -> bool {
    if seq == 0 {
        return false;
    }
    let Ok(last) = store.last_event_seq(request_id).await else {
        return false;
    };
    if last == 0 {
        return false;
    }
    let seq = seq.min(last);
    let around = store
        .events_after(request_id, seq - 1, Duration::ZERO)
        .await
        .unwrap_or_default();
    let at = around.first().filter(|e| e.seq == seq);
    let last = at.is_some_and(|e| e.event.is_last());
    let paused = at.is_some_and(|e| e.event.is_pause());
    // A retry marker continues a log; so does anything after a pause (the run resumed).
    let continued = around
        .get(1)
        .is_some_and(|e| paused || matches!(e.event, RunEvent::Retry { .. }));
    if last && !continued && paused {
        // A pause ends the log while the request waits for its decision; once decided, the
        // resumed run goes on writing it.
        return matches!(store.get(request_id).await, Ok(Some(r)) if r.body["status"] == ak_core::events::PAUSED);
    }
    last && !continued
}

/// Relays the log of `request_id` after event `after` to `events`, with the log's numbers as
/// ids, until `done` or `error` (one not followed by a retry marker), the client going away,
/// or `until`. When the log has nothing new but the answer is stored (its writer gave up),
/// the answer is relayed as the `done` (or `error`), without an id: it is not part of the log.
/// Returns whether a last event was relayed.
pub async fn follow(
    store: Arc<dyn ResponseStore>,
    request_id: &str,
    after: u64,
    user: Option<&str>,
    events: &EventSender,
    until: Instant,
) -> bool {
    let mut after = after;
    loop {
        if events.is_closed() {
            return false;
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        match store
            .events_after(request_id, after, FOLLOW_WAIT.min(left))
            .await
        {
            Ok(batch) if !batch.is_empty() => {
                for logged in batch {
                    after = logged.seq;
                    let last = logged.event.is_last();
                    events.send_numbered(logged.seq, logged.event);
                    if last && ends_at(store.as_ref(), request_id, after).await {
                        return true;
                    }
                }
            }
            Ok(_) => match store.get(request_id).await {
                Ok(Some(record)) if record.visible_to(user) => {
                    events.send_unnumbered(record.into_answer().final_event(request_id));
                    return true;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(request_id, error = %e, "cannot read the answer while following")
                }
            },
            Err(e) => {
                tracing::warn!(request_id, error = %e, "cannot read the event log; trying again");
                tokio::time::sleep(Duration::from_millis(500).min(left)).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ak_core::ports::memory::MemoryResponseStore;

    fn delta(text: &str) -> RunEvent {
        RunEvent::Delta {
            text: text.to_owned(),
        }
    }

    #[tokio::test]
    async fn deltas_are_merged_and_other_events_written_at_once() {
        let store = Arc::new(MemoryResponseStore::default());
        let writer = LogWriter::start(store.clone(), "r", 0, "a");
        writer.sender().send(RunEvent::Agent { agent: "a".into() });
        for _ in 0..2000 {
            writer.sender().send(delta("tok "));
        }
        writer.sender().send(RunEvent::ToolCall {
            id: "call-1".into(),
            name: "t".into(),
            arguments: serde_json::json!({}),
        });
        let stats = writer
            .finish(RunEvent::Done(serde_json::json!({"result": "x"})))
            .await;
        let log = store
            .events_after("r", 0, Duration::ZERO)
            .await
            .unwrap_or_default();
        let text: String = log
            .iter()
            .filter_map(|e| match &e.event {
                RunEvent::Delta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(text, "tok ".repeat(2000), "every delta, in order");
        assert!(
            stats.writes <= 12,
            "8 KB of deltas in about 8 writes: {stats:?}"
        );
        assert_eq!(log.first().map(|e| e.event.name()), Some("agent"));
        assert_eq!(log.last().map(|e| e.event.name()), Some("done"));
        let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=log.len() as u64).collect::<Vec<_>>(),
            "gapless from 1"
        );
        assert_eq!(stats.last_seq, log.len() as u64);
    }

    #[tokio::test]
    async fn a_retry_continues_the_log_with_a_marker_and_huge_deltas_are_cut() {
        let store = Arc::new(MemoryResponseStore::default());
        let first = LogWriter::start(store.clone(), "r", 0, "a");
        first.sender().send(RunEvent::Agent { agent: "a".into() });
        first.sender().send(delta("half an ans"));
        let written = first.close().await;
        let retry = LogWriter::start(store.clone(), "r", written.last_seq, "a");
        retry.sender().send(RunEvent::Agent { agent: "a".into() });
        retry.sender().send(delta(&"é".repeat(40_000)));
        retry.finish(RunEvent::Done(serde_json::json!({}))).await;
        let log = store
            .events_after("r", 0, Duration::ZERO)
            .await
            .unwrap_or_default();
        let names: Vec<&str> = log.iter().map(|e| e.event.name()).collect();
        assert_eq!(names[..3], ["agent", "delta", "agent"]);
        assert_eq!(log[2].event, RunEvent::Retry { agent: "a".into() });
        assert_eq!(log[2].event.data()["retry"], true);
        let long: Vec<usize> = log[3..log.len() - 1]
            .iter()
            .map(|e| e.event.data()["text"].as_str().map_or(0, str::len))
            .collect();
        assert!(long.iter().all(|n| *n <= MAX_DELTA_BYTES), "{long:?}");
        assert_eq!(long.iter().sum::<usize>(), 80_000);
    }
}
