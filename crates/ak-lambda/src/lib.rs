//! The Lambda Runtime API loop every function of the runtime runs: [`start`] reports cold-start
//! failures the way Lambda expects (one clear line in the log and an `init/error` call, so the
//! invoker sees `Runtime.InitError` instead of a bare "Runtime exited"); [`serve`] answers
//! invocations — each with its raw event and deadline — with a [`Reply`], buffered or streamed
//! (Lambda response streaming), and goes on after a broken Runtime API connection instead of
//! exiting (which would cost a cold start).
//!
//! Layer: beside the foundations, below the edge: it knows the Runtime API and nothing of
//! HTTP APIs, queues or agents. Built on `lambda_runtime`.

use bytes::Bytes;
use futures_util::Stream;
use lambda_runtime::{Diagnostic, FunctionResponse, LambdaEvent, MetadataPrelude, StreamResponse};
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use tokio::time::Instant;

/// A streamed reply's body.
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, Infallible>> + Send>>;

/// What a function answers an invocation with.
pub enum Reply {
    /// A JSON value in one piece (what SQS, authorizer and buffered HTTP invocations return).
    Buffered(serde_json::Value),
    /// Lambda response streaming (function URLs in `RESPONSE_STREAM` mode, REST API
    /// integrations in `STREAM` mode): the status and headers first, then the body as it comes.
    Streamed {
        /// HTTP status.
        status: http::StatusCode,
        /// Headers (`Set-Cookie` among them).
        headers: http::HeaderMap,
        /// The body.
        body: BodyStream,
    },
}

impl Reply {
    /// Any serializable value, in one piece.
    pub fn json(value: &impl serde::Serialize) -> Self {
        Reply::Buffered(serde_json::to_value(value).unwrap_or(serde_json::Value::Null))
    }

    /// The reply as `lambda_runtime` sends it: cookies go from the headers to the prelude's
    /// own list, as Lambda's streaming prelude wants them.
    pub fn into_function_response(self) -> FunctionResponse<serde_json::Value, BodyStream> {
        match self {
            Reply::Buffered(value) => FunctionResponse::BufferedResponse(value),
            Reply::Streamed {
                status,
                mut headers,
                body,
            } => {
                let cookies = headers
                    .get_all(http::header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok().map(str::to_owned))
                    .collect();
                headers.remove(http::header::SET_COOKIE);
                FunctionResponse::StreamingResponse(StreamResponse {
                    metadata_prelude: MetadataPrelude {
                        status_code: status,
                        headers,
                        cookies,
                    },
                    stream: body,
                })
            }
        }
    }
}

/// One invocation: its raw event, its deadline and Lambda's context.
pub struct Invocation {
    /// The event's JSON, unread (handlers read it tolerantly themselves).
    pub event: Box<RawValue>,
    /// When the invocation must have answered.
    pub deadline: Instant,
    /// Lambda's context (request id, X-Ray trace id, function ARN).
    pub context: lambda_runtime::Context,
}

/// The tokio instant of a Lambda deadline given in milliseconds since the epoch.
pub fn deadline_from_epoch_ms(deadline_ms: u64) -> Instant {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    Instant::now() + Duration::from_millis(deadline_ms.saturating_sub(now_ms))
}

/// Work every invocation awaits before its reply goes to the Runtime API (for a streamed
/// reply: after the body's last chunk), given the invocation's deadline — exporting the
/// invocation's trace spans, which a frozen sandbox would otherwise hold until the next
/// invocation, or lose. It must bound its own time.
pub type BeforeReply = fn(Instant) -> Pin<Box<dyn Future<Output = ()> + Send>>;

static BEFORE_REPLY: std::sync::OnceLock<BeforeReply> = std::sync::OnceLock::new();

/// Sets the [`BeforeReply`] hook (once; later calls do nothing).
pub fn before_reply(hook: BeforeReply) {
    let _ = BEFORE_REPLY.set(hook);
}

/// `reply` with the [`BeforeReply`] hook run before it is handed over.
async fn with_hook(
    reply: Result<Reply, Diagnostic>,
    deadline: Instant,
) -> Result<Reply, Diagnostic> {
    let Some(hook) = BEFORE_REPLY.get().copied() else {
        return reply;
    };
    match reply {
        Ok(Reply::Streamed {
            status,
            headers,
            body,
        }) => {
            use futures_util::StreamExt as _;
            let after = futures_util::stream::once(hook(deadline)).filter_map(|()| async { None });
            Ok(Reply::Streamed {
                status,
                headers,
                body: Box::pin(body.chain(after)),
            })
        }
        other => {
            hook(deadline).await;
            other
        }
    }
}

/// Runtime API failures in a row, without an invocation served between them, after which the
/// function exits.
const MAX_LOOP_FAILURES: u32 = 5;

/// Serves invocations with `handler` until the Runtime API loop ends. A loop that fails (a
/// streamed answer whose connection to the Runtime API broke ends `lambda_runtime::run` with an
/// error) starts again with the next invocation; five failures in a row without one
/// served end the function.
pub async fn serve<F, Fut>(handler: F) -> Result<(), lambda_runtime::Error>
where
    F: Fn(Invocation) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Reply, Diagnostic>> + Send,
{
    let handler = Arc::new(handler);
    let mut failures = 0u32;
    loop {
        let served = Arc::new(AtomicBool::new(false));
        let result = {
            let (handler, served) = (handler.clone(), served.clone());
            lambda_runtime::run(lambda_runtime::service_fn(
                move |event: LambdaEvent<Box<RawValue>>| {
                    served.store(true, Ordering::Relaxed);
                    let handler = handler.clone();
                    async move {
                        let deadline = deadline_from_epoch_ms(event.context.deadline);
                        let invocation = Invocation {
                            deadline,
                            event: event.payload,
                            context: event.context,
                        };
                        with_hook(handler(invocation).await, deadline)
                            .await
                            .map(Reply::into_function_response)
                    }
                },
            ))
            .await
        };
        match result {
            Ok(()) => return Ok(()),
            Err(e) => {
                if served.load(Ordering::Relaxed) {
                    failures = 0;
                }
                failures += 1;
                tracing::error!(error = %e, "the Runtime API connection failed; going on with the next invocation");
                if failures >= MAX_LOOP_FAILURES {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Runs a function's set-up. On failure it says why once — in the JSON log when logging is set
/// up, else on stderr (settings that cannot be read fail before logging starts) — reports it to
/// the Runtime API as `Runtime.InitError` (when running under one) and exits with status 1.
pub async fn start<T, E: fmt::Display>(setup: impl Future<Output = Result<T, E>>) -> T {
    match setup.await {
        Ok(state) => state,
        Err(e) => {
            let message = e.to_string();
            if tracing::dispatcher::has_been_set() {
                tracing::error!(error = %message, "cold start failed");
            } else {
                eprintln!("cold start failed: {message}");
            }
            if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
                report_init_error(&message).await;
            }
            std::process::exit(1)
        }
    }
}

async fn report_init_error(message: &str) {
    use lambda_runtime_api_client::{Client, body::Body, build_request};
    let body = serde_json::json!({"errorType": "Runtime.InitError", "errorMessage": message});
    let request = build_request()
        .method(http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .body(Body::from(body.to_string()));
    let (Ok(client), Ok(request)) = (Client::builder().build(), request) else {
        return;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.call(request)).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_replies_carry_cookies_in_the_prelude() {
        let mut headers = http::HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.append(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("a=1"),
        );
        headers.append(
            http::header::SET_COOKIE,
            http::HeaderValue::from_static("b=2"),
        );
        let reply = Reply::Streamed {
            status: http::StatusCode::OK,
            headers,
            body: Box::pin(futures_util::stream::empty()),
        };
        match reply.into_function_response() {
            FunctionResponse::StreamingResponse(response) => {
                let prelude = response.metadata_prelude;
                assert_eq!(prelude.cookies, ["a=1", "b=2"]);
                assert!(!prelude.headers.contains_key(http::header::SET_COOKIE));
                assert!(prelude.headers.contains_key(http::header::CONTENT_TYPE));
            }
            FunctionResponse::BufferedResponse(_) => panic!("expected a streamed reply"),
        }
        match Reply::json(&serde_json::json!({"batchItemFailures": []})).into_function_response() {
            FunctionResponse::BufferedResponse(value) => {
                assert_eq!(value, serde_json::json!({"batchItemFailures": []}));
            }
            FunctionResponse::StreamingResponse(_) => panic!("expected a buffered reply"),
        }
    }

    #[test]
    fn deadlines_in_the_past_are_now() {
        let past = deadline_from_epoch_ms(1);
        assert!(past <= Instant::now());
    }
}
