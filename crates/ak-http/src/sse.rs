//! Run events on the wire as server-sent events (SSE, the WHATWG HTML "server-sent events"
//! format): [`SseBody`] carries a [`RunStream`] to a local HTTP client or through Lambda
//! response streaming, encoding each event with an [`EventEncoder`] — ours ([`RunSse`]) or a
//! protocol surface's — and sending a heartbeat comment whenever the run was silent.
//!
//! Our encoding:
//! ```text
//! id: 1
//! event: agent
//! data: {"agent":"triage"}
//!
//! id: 2
//! event: delta
//! data: {"text":"12 * 7 "}
//! ```
//! Every event of a run's log has an `id:` (its number); a notice outside the log has none; a
//! comment line (`: keep-alive`) is sent whenever nothing else was for the heartbeat interval.

use ak_core::events::{RunEvent, RunStream};
use bytes::Bytes;
use futures_util::Stream;
use serde_json::Value;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

/// How often a silent stream sends a comment, so proxies and API Gateway (30 s idle timeout on
/// edge-optimized endpoints) keep it open.
pub const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(5);

/// The SSE comment sent while a stream is silent.
pub const HEARTBEAT_COMMENT: &str = ": keep-alive\n\n";

/// Turns a run's events into the text of one protocol's stream. Stateful: a protocol that
/// opens and closes messages keeps track of what it opened.
pub trait EventEncoder: Send + 'static {
    /// The text for one event (its number in the run's log, if any); empty to send nothing.
    fn encode(&mut self, id: Option<u64>, event: &RunEvent) -> String;

    /// The text sent once after the last event (`last`: the `done` or `error` that ended the
    /// run, `None` when it ended without one); empty for nothing.
    fn finish(&mut self, _last: Option<&RunEvent>) -> String {
        String::new()
    }

    /// The response's `Content-Type`.
    fn content_type(&self) -> &'static str {
        "text/event-stream"
    }
}

/// Our own SSE encoding of run events (see the module documentation).
#[derive(Debug, Default, Clone, Copy)]
pub struct RunSse;

impl EventEncoder for RunSse {
    fn encode(&mut self, id: Option<u64>, event: &RunEvent) -> String {
        match id {
            Some(id) => to_sse(event, id),
            None => to_sse_unnumbered(event),
        }
    }
}

/// A JSON value as one SSE event without a name or id (`data: <json>` and a blank line): the
/// framing of the protocols whose events carry their type inside the JSON (AG-UI, the AI
/// SDK's UI message stream, Chat Completions chunks, A2A's JSON-RPC responses).
pub fn data_event(value: &Value) -> String {
    format!("data: {value}\n\n")
}

/// [`data_event`], appended to `out`.
pub fn push_data(out: &mut String, value: &Value) {
    out.push_str(&data_event(value));
}

/// An event as SSE text with this id.
pub fn to_sse(event: &RunEvent, id: u64) -> String {
    format!(
        "id: {id}\nevent: {}\ndata: {}\n\n",
        event.name(),
        event.data()
    )
}

/// An event as SSE text without an `id:` line: a notice that is not part of the run's log, so a
/// client's `Last-Event-ID` stays at the last logged event it got.
pub fn to_sse_unnumbered(event: &RunEvent) -> String {
    format!("event: {}\ndata: {}\n\n", event.name(), event.data())
}

/// Called once when a stream ends: with its last event (`done` or `error`), or `None` when it
/// ended without one (the client left, or the run stopped short).
type EndHook = Box<dyn FnOnce(Option<&RunEvent>) + Send>;

/// The body of a streamed response: the run's events, encoded, with heartbeats. Dropping it
/// (the client went away) drops the run, and with it the model call.
pub struct SseBody {
    stream: RunStream,
    encoder: Box<dyn EventEncoder>,
    heartbeat: Pin<Box<tokio::time::Sleep>>,
    interval: Duration,
    finished: bool,
    on_end: Option<EndHook>,
    /// The last `done` or `error` sent, for the end hook.
    last: Option<RunEvent>,
    headers: http::HeaderMap,
    /// An SSE stream made elsewhere (a library's), passed through as it comes instead of
    /// `stream`.
    raw: Option<futures_util::stream::BoxStream<'static, Bytes>>,
}

impl SseBody {
    /// `stream` in our own SSE encoding, with a heartbeat comment after `heartbeat` of silence.
    pub fn new(stream: RunStream, heartbeat: Duration) -> Self {
        Self::encoded(stream, heartbeat, RunSse)
    }

    /// `stream` encoded by `encoder`.
    pub fn encoded(stream: RunStream, heartbeat: Duration, encoder: impl EventEncoder) -> Self {
        Self {
            stream,
            encoder: Box::new(encoder),
            heartbeat: Box::pin(tokio::time::sleep(heartbeat)),
            interval: heartbeat,
            finished: false,
            on_end: None,
            last: None,
            headers: http::HeaderMap::new(),
            raw: None,
        }
    }

    /// A body passing on an SSE stream a library made (`text/event-stream`, its own
    /// keep-alives), for a surface whose protocol library writes the stream itself. Logged as
    /// answered when it ends, cut when it is dropped before.
    pub fn raw(stream: impl Stream<Item = Bytes> + Send + 'static) -> Self {
        use futures_util::StreamExt;
        let mut body = Self::new(RunStream::of(Vec::new()), DEFAULT_HEARTBEAT);
        body.raw = Some(stream.boxed());
        body
    }

    /// Adds a response header (a protocol's own, such as `x-vercel-ai-ui-message-stream`).
    pub fn with_header(mut self, name: &'static str, value: &str) -> Self {
        if let Ok(value) = http::HeaderValue::from_str(value) {
            self.headers.insert(name, value);
        }
        self
    }

    /// The response headers of this stream: the encoder's `Content-Type`, `Cache-Control:
    /// no-cache`, `X-Accel-Buffering: no` (nginx and the like buffer otherwise), the request and
    /// session ids the stream names (`X-Request-Id`, `X-Session-Id`), and any added.
    pub fn headers(&self) -> http::HeaderMap {
        use http::HeaderValue;
        let mut headers = self.headers.clone();
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static(self.encoder.content_type()),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
        let ids = [
            ("x-request-id", self.stream.request_id()),
            ("x-session-id", self.stream.session_id()),
        ];
        for (name, value) in ids {
            if let Some(Ok(value)) = value.map(HeaderValue::from_str) {
                headers.insert(name, value);
            }
        }
        headers
    }

    /// Calls `hook` once when the stream ends (with the last `done` or `error`, `None` when none came): for the request log line,
    /// written when the outcome is known rather than when the stream starts.
    pub fn on_end(mut self, hook: impl FnOnce(Option<&RunEvent>) + Send + 'static) -> Self {
        self.on_end = Some(Box::new(hook));
        self
    }

    fn ended(&mut self) {
        if let Some(hook) = self.on_end.take() {
            hook(self.last.as_ref());
        }
    }

    /// A body that only carries `events` already known (a repeat's stored answer).
    pub fn of(events: Vec<RunEvent>) -> Self {
        Self::new(RunStream::of(events), DEFAULT_HEARTBEAT)
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
        if let Some(raw) = &mut this.raw {
            if this.finished {
                return Poll::Ready(None);
            }
            return match raw.as_mut().poll_next(cx) {
                Poll::Ready(Some(bytes)) => Poll::Ready(Some(Ok(bytes))),
                Poll::Ready(None) => {
                    this.finished = true;
                    this.last = Some(RunEvent::Done(Value::Null));
                    this.ended();
                    Poll::Ready(None)
                }
                Poll::Pending => Poll::Pending,
            };
        }
        loop {
            if this.finished {
                return Poll::Ready(None);
            }
            match Pin::new(&mut this.stream).poll_next(cx) {
                Poll::Ready(Some((id, event))) => {
                    if event.is_last() {
                        this.last = Some(event.clone());
                    }
                    let text = this.encoder.encode(id, &event);
                    this.heartbeat
                        .as_mut()
                        .reset(tokio::time::Instant::now() + this.interval);
                    if text.is_empty() {
                        continue;
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(text))));
                }
                Poll::Ready(None) => {
                    this.finished = true;
                    let text = this.encoder.finish(this.last.as_ref());
                    this.ended();
                    if text.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Bytes::from(text))));
                }
                Poll::Pending => {}
            }
            if this.heartbeat.as_mut().poll(cx).is_ready() {
                this.heartbeat
                    .as_mut()
                    .reset(tokio::time::Instant::now() + this.interval);
                return Poll::Ready(Some(Ok(Bytes::from_static(HEARTBEAT_COMMENT.as_bytes()))));
            }
            return Poll::Pending;
        }
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        // Dropped before its end: the client went away (after the answer, at most).
        self.ended();
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
    use serde_json::json;

    #[tokio::test]
    async fn a_run_becomes_numbered_events_ending_at_done() {
        let (tx, rx) = ak_core::events::channel();
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
        let text = SseBody::new(RunStream::new(run, rx), Duration::from_secs(60))
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
        let stream = || {
            let (tx, rx) = ak_core::events::channel();
            let run = async move {
                tokio::time::sleep(Duration::from_secs(12)).await;
                tx.send(RunEvent::Done(json!({})));
            };
            RunStream::new(run, rx)
        };
        let body = SseBody::new(stream(), Duration::from_secs(5));
        let chunks: Vec<_> = futures_util::StreamExt::collect(body).await;
        let text: String = chunks
            .into_iter()
            .map(|c| String::from_utf8_lossy(&c.unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(text.matches(HEARTBEAT_COMMENT).count(), 2, "{text}");
        assert!(text.ends_with("event: done\ndata: {}\n\n"), "{text}");
        // In one piece (a front door that cannot stream) the heartbeats are left out.
        let whole = SseBody::new(stream(), Duration::from_secs(5))
            .collect()
            .await;
        assert_eq!(whole, "id: 1\nevent: done\ndata: {}\n\n");
    }

    #[tokio::test]
    async fn an_encoder_chooses_the_text_and_ends_the_stream() {
        struct Lines;
        impl EventEncoder for Lines {
            fn encode(&mut self, _id: Option<u64>, event: &RunEvent) -> String {
                match event {
                    RunEvent::Delta { text } => format!("data: {text}\n\n"),
                    _ => String::new(),
                }
            }
            fn finish(&mut self, last: Option<&RunEvent>) -> String {
                format!("data: [DONE {}]\n\n", last.map_or("none", RunEvent::name))
            }
        }
        let (tx, rx) = ak_core::events::channel();
        let run = async move {
            tx.send(RunEvent::Agent { agent: "a".into() });
            tx.send(RunEvent::Delta { text: "hi".into() });
            tx.send(RunEvent::Done(json!({})));
        };
        let body = SseBody::encoded(RunStream::new(run, rx), DEFAULT_HEARTBEAT, Lines)
            .with_header("x-protocol", "lines");
        assert_eq!(
            body.headers().get("x-protocol").map(|v| v.as_bytes()),
            Some(&b"lines"[..])
        );
        assert_eq!(body.collect().await, "data: hi\n\ndata: [DONE done]\n\n");
    }
}
