//! A run's events as its clients see them, whatever the protocol: [`RunEvent`], the channel a
//! run reports them to ([`EventSender`]), and [`RunStream`], the stream of numbered events that
//! drives the run producing them. The edge encodes them (our SSE in `ak-http::sse`, and each
//! protocol surface its own vocabulary); the event logs store them.
//!
//! Event types: `agent` `{"agent"}` (the active agent, at the start and on each handoff),
//! `delta` `{"text"}`, `tool_call` `{"name", "arguments"}` (when complete), `tool_result`
//! `{"name", "ok"}`, `done` (the non-streaming answer's JSON plus `usage`), `error`
//! `{"status", "error", "request_id"}`. Each event on a stream has a number, counting from 1
//! (the SSE `id:` a client resumes from), except notices outside a run's log.

use futures_util::Stream;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// One event of a run, as its client sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum RunEvent {
    /// The agent now answering (at the start, and after each handoff).
    Agent {
        /// Its name.
        agent: String,
    },
    /// A run starting over (the agent runner took the request up again after an attempt that
    /// did not finish): what came before in the log was that attempt's.
    Retry {
        /// The agent the new attempt starts with.
        agent: String,
    },
    /// Text the model wrote.
    Delta {
        /// The new text.
        text: String,
    },
    /// A tool call, once its arguments are complete.
    ToolCall {
        /// The call's id, as the model gave it (empty in logs written before ids were
        /// recorded); its `tool_result` names the same id.
        id: String,
        /// The tool.
        name: String,
        /// Its arguments (the JSON the model wrote, or the text when it is not JSON).
        arguments: Value,
    },
    /// A tool call's outcome: whether it succeeded (never its payload).
    ToolResult {
        /// The id of the call this is the outcome of.
        id: String,
        /// The tool.
        name: String,
        /// `false` when the tool failed or does not exist.
        ok: bool,
    },
    /// A person's decision on a tool call of a paused run: `{"id", "tool", "approved",
    /// "reason", "by", "at"}` (`at`: seconds since the epoch).
    Approval(Value),
    /// The answer: the JSON object the non-streaming request gets, plus `usage`. A run paused
    /// for approval ends with its pause (`"status": "PAUSED"`), named `approval_required`.
    Done(Value),
    /// The run failed: `{"status", "error", ...}` as the status table says.
    Error(Value),
}

/// The `status` of the answer of a run paused for a person's approval.
pub const PAUSED: &str = "PAUSED";

impl RunEvent {
    /// Whether this is the pause of a run waiting for approval (`approval_required`).
    pub fn is_pause(&self) -> bool {
        matches!(self, RunEvent::Done(answer) if answer.get("status").and_then(Value::as_str) == Some(PAUSED))
    }

    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Agent { .. } | RunEvent::Retry { .. } => "agent",
            RunEvent::Delta { .. } => "delta",
            RunEvent::ToolCall { .. } => "tool_call",
            RunEvent::ToolResult { .. } => "tool_result",
            RunEvent::Approval(_) => "approval",
            RunEvent::Done(answer)
                if answer.get("status").and_then(Value::as_str) == Some(PAUSED) =>
            {
                "approval_required"
            }
            RunEvent::Done(_) => "done",
            RunEvent::Error(_) => "error",
        }
    }

    /// The event's JSON data.
    pub fn data(&self) -> Value {
        match self {
            RunEvent::Agent { agent } => json!({"agent": agent}),
            RunEvent::Retry { agent } => json!({"agent": agent, "retry": true}),
            RunEvent::Delta { text } => json!({"text": text}),
            RunEvent::ToolCall {
                id,
                name,
                arguments,
            } => {
                json!({"id": id, "name": name, "arguments": arguments})
            }
            RunEvent::ToolResult { id, name, ok } => json!({"id": id, "name": name, "ok": ok}),
            RunEvent::Done(answer) | RunEvent::Error(answer) | RunEvent::Approval(answer) => {
                answer.clone()
            }
        }
    }

    /// The event of this name with this data (what [`RunEvent::name`] and [`RunEvent::data`]
    /// gave); `None` for an unknown name.
    pub fn from_parts(name: &str, data: Value) -> Option<RunEvent> {
        let text = |k: &str| data.get(k).and_then(Value::as_str).map(str::to_owned);
        Some(match name {
            "agent" if data.get("retry") == Some(&Value::Bool(true)) => RunEvent::Retry {
                agent: text("agent")?,
            },
            "agent" => RunEvent::Agent {
                agent: text("agent")?,
            },
            "delta" => RunEvent::Delta {
                text: text("text")?,
            },
            "tool_call" => RunEvent::ToolCall {
                id: text("id").unwrap_or_default(),
                name: text("name")?,
                arguments: data.get("arguments").cloned().unwrap_or(Value::Null),
            },
            "tool_result" => RunEvent::ToolResult {
                id: text("id").unwrap_or_default(),
                name: text("name")?,
                ok: data.get("ok").and_then(Value::as_bool).unwrap_or(false),
            },
            "done" | "approval_required" => RunEvent::Done(data),
            "approval" => RunEvent::Approval(data),
            "error" => RunEvent::Error(data),
            // A retry marker is an agent event with more fields.
            _ => return None,
        })
    }

    /// Whether this event ends the stream.
    pub fn is_last(&self) -> bool {
        matches!(self, RunEvent::Done(_) | RunEvent::Error(_))
    }

    /// An `error` event for a failure as the API would answer it.
    pub fn error(error: &crate::ApiError, request_id: &str) -> RunEvent {
        let mut body = error.body();
        if let Value::Object(map) = &mut body {
            map.insert("status".into(), json!(error.status_code()));
            map.entry("request_id")
                .or_insert_with(|| Value::String(request_id.to_owned()));
        }
        RunEvent::Error(body)
    }
}

/// The id an event carries on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventId {
    /// The stream's next number (1, 2, ...: a stream of its own, as in direct mode).
    Next,
    /// Its number in the run's event log.
    Logged(u64),
    /// None: a notice outside the log (the stream's deadline, an answer without a log).
    Unnumbered,
}

/// An event on its way to a stream, with the id it must carry.
pub type Numbered = (EventId, RunEvent);

/// Where a run reports its events. Cloning shares the channel; sending after the client went
/// away is harmless (the event is dropped).
#[derive(Clone, Debug)]
pub struct EventSender(mpsc::UnboundedSender<Numbered>);

impl EventSender {
    /// Sends an event; `false` when nobody listens any more.
    pub fn send(&self, event: RunEvent) -> bool {
        self.0.send((EventId::Next, event)).is_ok()
    }

    /// Sends an event that carries its own id (a logged event, relayed with its number).
    pub fn send_numbered(&self, id: u64, event: RunEvent) -> bool {
        self.0.send((EventId::Logged(id), event)).is_ok()
    }

    /// Sends an event without an id (a notice outside the run's log).
    pub fn send_unnumbered(&self, event: RunEvent) -> bool {
        self.0.send((EventId::Unnumbered, event)).is_ok()
    }

    /// Whether the listener is gone (the client disconnected).
    pub fn is_closed(&self) -> bool {
        self.0.is_closed()
    }
}

/// A sender and the receiver its events arrive at.
pub fn channel() -> (EventSender, mpsc::UnboundedReceiver<Numbered>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (EventSender(tx), rx)
}

type RunFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A run's events as a stream: it drives the run that produces them (the run lives inside the
/// stream, so a client that goes away and drops it stops the run, and with it the model call)
/// and yields each event with its number (`None` for a notice outside the run's log). Ends
/// after `done` or `error` (or, for a relayed log, see [`RunStream::until_run_ends`]), or when
/// the run ends without one.
pub struct RunStream {
    run: Option<RunFuture>,
    events: mpsc::UnboundedReceiver<Numbered>,
    next_id: u64,
    finished: bool,
    /// Whether a `done` or `error` ends the stream (else the run's end does).
    ends_at_last_event: bool,
    /// The request the events belong to, when known.
    request_id: Option<String>,
    /// Its session, when known.
    session_id: Option<String>,
    /// An event taken by [`RunStream::peek`], yielded first.
    peeked: Option<Box<(Option<u64>, RunEvent)>>,
}

impl RunStream {
    /// A stream of the events `run` sends to the sender of `events`. The run stays inside the
    /// span current here (a trace's request), wherever the stream is polled.
    pub fn new(
        run: impl Future<Output = ()> + Send + 'static,
        events: mpsc::UnboundedReceiver<Numbered>,
    ) -> Self {
        use tracing::Instrument as _;
        Self {
            run: Some(Box::pin(run.in_current_span())),
            events,
            next_id: 1,
            finished: false,
            ends_at_last_event: true,
            request_id: None,
            session_id: None,
            peeked: None,
        }
    }

    /// A stream that only carries `events` already known (a repeat's stored answer).
    pub fn of(events: Vec<RunEvent>) -> Self {
        let (tx, rx) = channel();
        for event in events {
            tx.send(event);
        }
        Self::new(async {}, rx)
    }

    /// Ends when the run ends rather than at the first `done` or `error`: for a relayed log,
    /// where a failed run's `error` may be followed by a retry marker and the next run.
    pub fn until_run_ends(mut self) -> Self {
        self.ends_at_last_event = false;
        self
    }

    /// Names the request (and its session) the events belong to, so a client whose stream
    /// breaks before `done` can still poll, follow or continue (the edge puts them in headers).
    pub fn with_ids(mut self, request_id: &str, session_id: Option<&str>) -> Self {
        self.request_id = Some(request_id.to_owned());
        self.session_id = session_id.map(str::to_owned);
        self
    }

    /// The request the events belong to, when known.
    pub fn request_id(&self) -> Option<&str> {
        self.request_id.as_deref()
    }

    /// Its session, when known.
    pub fn session_id(&self) -> Option<&str> {
        self.session_id.as_deref()
    }

    /// Waits up to `wait` for the first event and keeps it to be yielded first, so an edge can
    /// answer a failure that comes before anything else (a session of another user, a refused
    /// request) with its own status instead of a stream. `None` when no event came in time or
    /// the stream ended.
    pub async fn peek(&mut self, wait: std::time::Duration) -> Option<&RunEvent> {
        use futures_util::StreamExt;
        if self.peeked.is_none()
            && let Ok(Some(item)) = tokio::time::timeout(wait, self.next()).await
        {
            self.peeked = Some(Box::new(item));
        }
        self.peeked.as_deref().map(|(_, event)| event)
    }

    /// Every event until the end, in order.
    pub async fn collect_events(mut self) -> Vec<(Option<u64>, RunEvent)> {
        use futures_util::StreamExt;
        let mut out = Vec::new();
        while let Some(event) = self.next().await {
            out.push(event);
        }
        out
    }
}

impl Stream for RunStream {
    type Item = (Option<u64>, RunEvent);

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(item) = this.peeked.take() {
            return Poll::Ready(Some(*item));
        }
        if this.finished {
            return Poll::Ready(None);
        }
        if let Some(run) = &mut this.run
            && run.as_mut().poll(cx).is_ready()
        {
            this.run = None;
        }
        match this.events.poll_recv(cx) {
            Poll::Ready(Some((given, event))) => {
                let id = match given {
                    EventId::Unnumbered => None,
                    EventId::Logged(id) => Some(id),
                    EventId::Next => Some(this.next_id),
                };
                if let Some(id) = id {
                    this.next_id = id.saturating_add(1);
                }
                if event.is_last() && this.ends_at_last_event {
                    this.finished = true;
                }
                Poll::Ready(Some((id, event)))
            }
            // Every sender is gone: the run is over.
            Poll::Ready(None) => {
                this.finished = true;
                Poll::Ready(None)
            }
            Poll::Pending => {
                if this.run.is_none()
                    && this.events.is_empty()
                    && this.events.sender_strong_count() == 0
                {
                    this.finished = true;
                    return Poll::Ready(None);
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_peeked_event_is_still_the_first_one_yielded() {
        use futures_util::StreamExt;
        let (tx, rx) = channel();
        let run = async move {
            tx.send(RunEvent::Error(serde_json::json!({"status": 403})));
        };
        let mut stream = RunStream::new(run, rx);
        let first = stream
            .peek(std::time::Duration::from_secs(1))
            .await
            .cloned();
        assert_eq!(
            first,
            Some(RunEvent::Error(serde_json::json!({"status": 403})))
        );
        // Peeking again does not take another event.
        assert_eq!(stream.peek(std::time::Duration::ZERO).await.cloned(), first);
        assert_eq!(stream.next().await.map(|(_, e)| e), first);
        assert_eq!(stream.next().await, None);
    }

    #[tokio::test]
    async fn a_run_becomes_numbered_events_ending_at_done() {
        let (tx, rx) = channel();
        let run = async move {
            tx.send(RunEvent::Agent {
                agent: "math".into(),
            });
            tx.send(RunEvent::Delta { text: "84".into() });
            tx.send_unnumbered(RunEvent::Delta {
                text: "notice".into(),
            });
            tx.send(RunEvent::Done(json!({"result": "84"})));
            tx.send(RunEvent::Delta {
                text: "after the end".into(),
            });
        };
        let events = RunStream::new(run, rx).collect_events().await;
        let names: Vec<&str> = events.iter().map(|(_, e)| e.name()).collect();
        assert_eq!(names, ["agent", "delta", "delta", "done"]);
        let ids: Vec<Option<u64>> = events.iter().map(|(id, _)| *id).collect();
        assert_eq!(ids, [Some(1), Some(2), None, Some(3)]);
    }

    #[tokio::test]
    async fn dropping_the_stream_stops_the_run() {
        let (tx, rx) = channel();
        let (dropped_tx, dropped_rx) = tokio::sync::oneshot::channel::<()>();
        struct Guard(Option<tokio::sync::oneshot::Sender<()>>);
        impl Drop for Guard {
            fn drop(&mut self) {
                if let Some(tx) = self.0.take() {
                    let _ = tx.send(());
                }
            }
        }
        let run = async move {
            let _guard = Guard(Some(dropped_tx));
            tx.send(RunEvent::Delta { text: "a".into() });
            std::future::pending::<()>().await;
        };
        let mut stream = RunStream::new(run, rx);
        use futures_util::StreamExt;
        assert!(stream.next().await.is_some());
        drop(stream);
        assert!(
            dropped_rx.await.is_ok(),
            "the run was dropped with the stream"
        );
    }
}
