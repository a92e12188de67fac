//! The HTTP client under rmcp's streamable HTTP transport: reqwest, configured as rmcp
//! configures its own, wrapped to read two things real servers send that rmcp 3.11 drops.
//!
//! - A restarted server no longer knows the session the client holds. The specification says
//!   it answers `404`, on which rmcp initialises a new session and sends the request again.
//!   The TypeScript and Python SDKs' servers (so `server-everything` and most servers in use)
//!   answer `400` with a JSON-RPC error without an `id` instead (typescript-sdk#389,
//!   python-sdk#1004); rmcp cannot match that to the pending call, which then waits for its
//!   timeout, and every later call too. Here such an answer to a request sent in a session is
//!   reported as the expired session it is, so rmcp recovers as it does on a `404`.
//! - A tool whose `execution.taskSupport` is `"required"` (MCP 2025-11-25 tasks) can only be
//!   called as a task, which this client does not do; rmcp 3.11's `Tool` has no `execution`
//!   field. The names of such tools are noted from the `tools/list` answers as they stream by.

use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use http::{HeaderName, HeaderValue};
use rmcp::model::{ClientJsonRpcMessage, ClientRequest, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_client::{
    SseError, StreamableHttpClient, StreamableHttpError, StreamableHttpPostResponse,
    StreamableHttpResponseLimits,
};
use serde_json::Value;
use sse_stream::Sse;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

type Failure = StreamableHttpError<reqwest::Error>;

/// reqwest as rmcp's default client, plus the two readings above.
#[derive(Clone)]
pub(super) struct McpHttp {
    inner: reqwest::Client,
    task_only: Arc<Mutex<HashSet<String>>>,
}

impl McpHttp {
    /// A client: no idle connections kept (rmcp's choice, against delayed-ACK stalls on
    /// reused connections) and no redirects followed (a redirect would replay the session and
    /// the configured headers, which may hold keys, to wherever it points).
    pub(super) fn new() -> Result<Self, String> {
        let inner = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("the HTTP client cannot be built: {e}"))?;
        Ok(Self {
            inner,
            task_only: Arc::default(),
        })
    }

    /// The tools seen so far that can only be called as tasks.
    pub(super) fn task_only(&self) -> HashSet<String> {
        self.task_only
            .lock()
            .map(|names| names.clone())
            .unwrap_or_default()
    }
}

/// Notes the task-only tools of one SSE event's data, if it is a `tools/list` answer.
fn note_task_only(seen: &Mutex<HashSet<String>>, data: &str) {
    let Ok(message) = serde_json::from_str::<Value>(data) else {
        return;
    };
    for tool in message["result"]["tools"].as_array().into_iter().flatten() {
        if tool["execution"]["taskSupport"] == "required"
            && let (Some(name), Ok(mut names)) = (tool["name"].as_str(), seen.lock())
        {
            names.insert(name.to_owned());
        }
    }
}

impl StreamableHttpClient for McpHttp {
    type Error = reqwest::Error;

    async fn post_message(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        self.post_message_with_response_limits(
            uri,
            message,
            session_id,
            auth_header,
            headers,
            StreamableHttpResponseLimits::default(),
        )
        .await
    }

    async fn post_message_with_response_limits(
        &self,
        uri: Arc<str>,
        message: ClientJsonRpcMessage,
        session_id: Option<Arc<str>>,
        auth_header: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
        limits: StreamableHttpResponseLimits,
    ) -> Result<StreamableHttpPostResponse, Failure> {
        let request = matches!(message, ClientJsonRpcMessage::Request(_));
        let lists_tools = matches!(&message, ClientJsonRpcMessage::Request(r)
            if matches!(r.request, ClientRequest::ListToolsRequest(_)));
        let in_session = session_id.is_some();
        let response = self
            .inner
            .post_message_with_response_limits(
                uri,
                message,
                session_id,
                auth_header,
                headers,
                limits,
            )
            .await?;
        match response {
            StreamableHttpPostResponse::Json(ServerJsonRpcMessage::Error(error), _)
                if request && in_session && error.id.is_none() =>
            {
                tracing::info!(error = %error.error.message, "the MCP server no longer knows the session (an error without an id): starting a new one");
                Err(StreamableHttpError::SessionExpired)
            }
            StreamableHttpPostResponse::Sse(stream, session) if lists_tools => {
                let seen = self.task_only.clone();
                let stream = stream.inspect(move |event| {
                    if let Ok(Sse {
                        data: Some(data), ..
                    }) = event
                    {
                        note_task_only(&seen, data);
                    }
                });
                Ok(StreamableHttpPostResponse::Sse(stream.boxed(), session))
            }
            other => Ok(other),
        }
    }

    async fn delete_session(
        &self,
        uri: Arc<str>,
        session_id: Arc<str>,
        auth_header: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<(), Failure> {
        self.inner
            .delete_session(uri, session_id, auth_header, headers)
            .await
    }

    async fn get_stream(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        self.inner
            .get_stream(uri, session_id, last_event_id, auth_header, headers)
            .await
    }

    async fn get_stream_with_max_sse_event_size(
        &self,
        uri: Arc<str>,
        session_id: Option<Arc<str>>,
        last_event_id: Option<String>,
        auth_header: Option<String>,
        headers: HashMap<HeaderName, HeaderValue>,
        max_sse_event_size: usize,
    ) -> Result<BoxStream<'static, Result<Sse, SseError>>, Failure> {
        self.inner
            .get_stream_with_max_sse_event_size(
                uri,
                session_id,
                last_event_id,
                auth_header,
                headers,
                max_sse_event_size,
            )
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_only_tools_are_noted_from_a_listing() {
        let seen = Mutex::default();
        note_task_only(&seen, "");
        note_task_only(
            &seen,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[
                {"name":"echo","execution":{"taskSupport":"forbidden"}},
                {"name":"research","execution":{"taskSupport":"required"}},
                {"name":"sum"}]}}"#,
        );
        let seen = seen.into_inner().unwrap_or_default();
        assert_eq!(seen, HashSet::from(["research".to_owned()]));
    }
}
