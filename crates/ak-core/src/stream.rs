//! Streaming a run to its client as server-sent events (SSE, the WHATWG HTML "server-sent
//! events" format): the events a run emits, their encoding, and the body stream that carries
//! them — heartbeats included — to a local HTTP client or through Lambda response streaming.
//!
//! ```text
//! id: 1
//! event: agent
//! data: {"agent":"triage"}
//!
//! id: 2
//! event: delta
//! data: {"text":"12 * 7 "}
//! ```
//!
//! Event types: `agent` `{"agent"}` (the active agent, at the start and on each handoff),
//! `delta` `{"text"}`, `tool_call` `{"name", "arguments"}` (when complete), `tool_result`
//! `{"name", "ok"}`, `done` (the non-streaming answer's JSON plus `usage`), `error`
//! `{"status", "error", "request_id"}`. Every event has an `id:`, counting from 1; a comment
//! line (`: keep-alive`) is sent whenever nothing else was for the heartbeat interval.

use bytes::Bytes;
use futures_util::Stream;
use serde_json::{Value, json};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;

/// How often a silent stream sends a comment, so proxies and API Gateway (30 s idle timeout on
/// edge-optimized endpoints) keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

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
        /// The tool.
        name: String,
        /// Its arguments (the JSON the model wrote, or the text when it is not JSON).
        arguments: Value,
    },
    /// A tool call's outcome: whether it succeeded (never its payload).
    ToolResult {
        /// The tool.
        name: String,
        /// `false` when the tool failed or does not exist.
        ok: bool,
    },
    /// The answer: the JSON object the non-streaming request gets, plus `usage`.
    Done(Value),
    /// The run failed: `{"status", "error", ...}` as the status table says.
    Error(Value),
}

impl RunEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            RunEvent::Agent { .. } | RunEvent::Retry { .. } => "agent",
            RunEvent::Delta { .. } => "delta",
            RunEvent::ToolCall { .. } => "tool_call",
            RunEvent::ToolResult { .. } => "tool_result",
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
            RunEvent::ToolCall { name, arguments } => {
                json!({"name": name, "arguments": arguments})
            }
            RunEvent::ToolResult { name, ok } => json!({"name": name, "ok": ok}),
            RunEvent::Done(answer) | RunEvent::Error(answer) => answer.clone(),
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
                name: text("name")?,
                arguments: data.get("arguments").cloned().unwrap_or(Value::Null),
            },
            "tool_result" => RunEvent::ToolResult {
                name: text("name")?,
                ok: data.get("ok").and_then(Value::as_bool).unwrap_or(false),
            },
            "done" => RunEvent::Done(data),
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
        let mut body = error.to_response().body;
        if let Value::Object(map) = &mut body {
            map.insert("status".into(), json!(error.status().as_u16()));
            map.entry("request_id")
                .or_insert_with(|| Value::String(request_id.to_owned()));
        }
        RunEvent::Error(body)
    }

    /// The event as SSE text with this id.
    pub fn to_sse(&self, id: u64) -> String {
        format!(
            "id: {id}\nevent: {}\ndata: {}\n\n",
            self.name(),
            self.data()
        )
    }

    /// The event as SSE text without an `id:` line: a notice that is not part of the run's
    /// log, so a client's `Last-Event-ID` stays at the last logged event it got.
    pub fn to_sse_unnumbered(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name(), self.data())
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

/// The SSE comment sent while a stream is silent.
pub const HEARTBEAT_COMMENT: &str = ": keep-alive\n\n";

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

/// The body of an SSE response: drives the run that produces the events (it lives inside the
/// body, so a client that goes away and drops the body stops the run, and with it the model
/// call), turns its events into SSE text with ids, and sends a heartbeat comment whenever the
/// run was silent for the heartbeat interval. Ends after `done` or `error` (or when the run
/// ends without one).
pub struct SseBody {
    run: Option<RunFuture>,
    events: mpsc::UnboundedReceiver<Numbered>,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
    next_id: u64,
    finished: bool,
    on_end: Option<EndHook>,
    ids: Vec<(&'static str, String)>,
    /// Whether a `done` or `error` ends the stream (else the run's end does).
    ends_at_last_event: bool,
    /// The last `done` or `error` sent, for the end hook.
    last: Option<RunEvent>,
}

/// Called once when a stream ends: with its last event (`done` or `error`), or `None` when it
/// ended without one (the client left, or the run stopped short).
type EndHook = Box<dyn FnOnce(Option<&RunEvent>) + Send>;

impl SseBody {
    /// A body for the events `run` sends to the sender of `events`.
    pub fn new(
        run: impl Future<Output = ()> + Send + 'static,
        events: mpsc::UnboundedReceiver<Numbered>,
        heartbeat: Duration,
    ) -> Self {
        Self {
            run: Some(Box::pin(run)),
            events,
            heartbeat: Box::pin(tokio::time::sleep(heartbeat)),
            interval: heartbeat,
            next_id: 1,
            finished: false,
            on_end: None,
            ids: Vec::new(),
            ends_at_last_event: true,
            last: None,
        }
    }

    /// Ends when the run ends rather than at the first `done` or `error`: for a relayed log,
    /// where a failed run's `error` may be followed by a retry marker and the next run.
    pub fn until_run_ends(mut self) -> Self {
        self.ends_at_last_event = false;
        self
    }

    /// Names the request (and its session) in the response headers (`X-Request-Id`,
    /// `X-Session-Id`), so a client whose stream breaks before `done` can still poll, follow
    /// or continue.
    pub fn with_ids(mut self, request_id: &str, session_id: Option<&str>) -> Self {
        self.ids.push(("x-request-id", request_id.to_owned()));
        if let Some(session) = session_id {
            self.ids.push(("x-session-id", session.to_owned()));
        }
        self
    }

    /// The response headers of this stream: `Content-Type: text/event-stream`,
    /// `Cache-Control: no-cache`, `X-Accel-Buffering: no` (nginx and the like buffer otherwise)
    /// and the ids of [`SseBody::with_ids`].
    pub fn headers(&self) -> http::HeaderMap {
        use http::HeaderValue;
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        for (name, value) in &self.ids {
            if let Ok(value) = HeaderValue::from_str(value) {
                headers.insert(*name, value);
            }
        }
        headers
    }

    /// Calls `hook` once when the stream ends (see [`EndHook`]): for the request log line,
    /// written when the outcome is known rather than when the stream starts.
    pub fn on_end(mut self, hook: impl FnOnce(Option<&RunEvent>) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(hook));
        self
    }

    fn ended(&mut self, last: Option<&RunEvent>) {
        if let Some(hook) = self.on_end.take() {
            hook(last);
        }
    }

    /// A body that only carries `events` already known (a repeat's stored answer).
    pub fn of(events: Vec<RunEvent>) -> Self {
        let (tx, rx) = channel();
        for event in events {
            tx.send(event);
        }
        Self::new(async {}, rx, DEFAULT_HEARTBEAT)
    }

    /// The whole stream as one text (for front doors that cannot stream: every event, in order,
    /// once the run is over).
    pub async fn collect(mut self) -> String {
        use futures_util::StreamExt;
        let mut text = String::new();
        while let Some(Ok(chunk)) = self.next().await {
            // Heartbeats keep connections open; in one piece there is nothing to keep open.
            if chunk != HEARTBEAT_COMMENT.as_bytes() {
                text.push_str(&String::from_utf8_lossy(&chunk));
            }
        }
        text
    }
}

impl Stream for SseBody {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
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
                let text = match given {
                    EventId::Unnumbered => event.to_sse_unnumbered(),
                    EventId::Next | EventId::Logged(_) => {
                        let id = match given {
                            EventId::Logged(id) => id,
                            _ => this.next_id,
                        };
                        this.next_id = id.saturating_add(1);
                        event.to_sse(id)
                    }
                };
                if event.is_last() {
                    this.last = Some(event.clone());
                    if this.ends_at_last_event {
                        this.finished = true;
                        this.ended(Some(&event));
                    }
                }
                this.heartbeat
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.interval);
                return Poll::Ready(Some(Ok(Bytes::from(text))));
            }
            // Every sender is gone: the run is over.
            Poll::Ready(None) => {
                this.finished = true;
                let last = this.last.take();
                this.ended(last.as_ref());
                return Poll::Ready(None);
            }
            Poll::Pending => {}
        }
        if this.run.is_none() && this.events.is_empty() && this.events.sender_strong_count() == 0 {
            this.finished = true;
            let last = this.last.take();
            this.ended(last.as_ref());
            return Poll::Ready(None);
        }
        if this.heartbeat.as_mut().poll(cx).is_ready() {
            this.heartbeat
                .as_mut()
                .reset(tokio::time::Instant::now() + this.interval);
            return Poll::Ready(Some(Ok(Bytes::from_static(HEARTBEAT_COMMENT.as_bytes()))));
        }
        Poll::Pending
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (after the answer, at most).
        let last = self.last.take();
        self.ended(last.as_ref());
    }
}

/// The SSE events of a text stream (for clients and tests): `(id, event, data)` for each event,
/// comments skipped.
pub fn parse_sse(text: &str) -> Vec<(Option<u64>, String, Value)> {
    let mut events = Vec::new();
    for block in text.split("\n\n") {
        let (mut id, mut name, mut data) = (None, String::from("message"), String::new());
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("id:") {
                id = v.trim().parse().ok();
            } else if let Some(v) = line.strip_prefix("event:") {
                v.trim().clone_into(&mut name);
            } else if let Some(v) = line.strip_prefix("data:") {
                if !data.is_empty() {
                    data.push('\n');
                }
                data.push_str(v.strip_prefix(' ').unwrap_or(v));
            }
        }
        if !data.is_empty() {
            events.push((id, name, serde_json::from_str(&data).unwrap_or(Value::Null)));
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_run_becomes_numbered_events_ending_at_done() {
        let (tx, rx) = channel();
        let run = async move {
            tx.send(RunEvent::Agent {
                agent: "math".into(),
            });
            tx.send(RunEvent::Delta { text: "84".into() });
            tx.send(RunEvent::Done(json!({"result": "84"})));
            tx.send(RunEvent::Delta {
                text: "after the end".into(),
            });
        };
        let text = SseBody::new(run, rx, Duration::from_secs(60))
            .collect()
            .await;
        let events = parse_sse(&text);
        let names: Vec<&str> = events.iter().map(|(_, n, _)| n.as_str()).collect();
        assert_eq!(names, ["agent", "delta", "done"]);
        let ids: Vec<Option<u64>> = events.iter().map(|(id, _, _)| *id).collect();
        assert_eq!(ids, [Some(1), Some(2), Some(3)]);
        assert_eq!(events[1].2, json!({"text": "84"}));
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_run_sends_heartbeats() {
        let (tx, rx) = channel();
        let run = async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            tx.send(RunEvent::Done(json!({})));
        };
        let body = SseBody::new(run, rx, Duration::from_secs(5));
        let chunks: Vec<_> = futures_util::StreamExt::collect(body).await;
        let text: String = chunks
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(text.matches(HEARTBEAT_COMMENT).count(), 2, "{text}");
        assert!(text.ends_with("event: done\ndata: {}\n\n"), "{text}");
        // In one piece (a front door that cannot stream) the heartbeats are left out.
        let (tx, rx) = channel();
        let run = async move {
            tokio::time::sleep(Duration::from_secs(12)).await;
            tx.send(RunEvent::Done(json!({})));
        };
        let whole = SseBody::new(run, rx, Duration::from_secs(5))
            .collect()
            .await;
        assert_eq!(whole, "id: 1\nevent: done\ndata: {}\n\n");
    }

    #[tokio::test]
    async fn dropping_the_body_stops_the_run() {
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
        let mut body = SseBody::new(run, rx, Duration::from_secs(60));
        use futures_util::StreamExt;
        assert!(body.next().await.is_some());
        drop(body);
        assert!(
            dropped_rx.await.is_ok(),
            "the run was dropped with the body"
        );
    }
}
