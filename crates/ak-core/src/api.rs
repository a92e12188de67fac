//! The HTTP API of the request handler: size limit, routing, identity, the chat endpoint and
//! custom routes, and the one place where errors become responses. The Lambda function and the
//! local server both call [`Api::handle`].

use crate::chat::ChatService;
use crate::error::ApiError;
use crate::request::{RunRequest, poll_request_id};
use crate::response::ApiResponse;
use crate::router::{Route, Router};
use http::Method;
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt};
use std::time::Instant;

/// The request handler's HTTP API.
pub struct Api {
    router: Router,
    chat: ChatService,
    max_body_bytes: usize,
}

impl Api {
    /// An API serving `router`'s routes with `chat` behind the chat path.
    pub fn new(router: Router, chat: ChatService, max_body_bytes: usize) -> Self {
        Self {
            router,
            chat,
            max_body_bytes,
        }
    }

    /// The chat service.
    pub fn chat(&self) -> &ChatService {
        &self.chat
    }

    /// Answers one request; never fails, never panics on input. Logs one line per request
    /// (request and session ids, user, mode, status, outcome, duration) and emits its metrics.
    pub async fn handle(&self, request: Request) -> http::Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_owned();
        let user = principal(&request);
        let response = match self.dispatch(request).await {
            Ok(response) => response,
            Err(error) => {
                match &error {
                    ApiError::Internal { detail, .. }
                    | ApiError::ServiceUnavailable { detail, .. } => {
                        tracing::error!(class = error.class(), detail = %detail, "request failed");
                    }
                    _ => tracing::info!(class = error.class(), error = %error, "request refused"),
                }
                crate::metrics::error_class(error.class());
                let mut response = error.to_response();
                response.outcome = error.class();
                response
            }
        };
        let duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        let field = |name: &str| {
            response
                .body
                .get(name)
                .and_then(|v| v.as_str())
                .unwrap_or("")
        };
        let mode = self.chat.mode().as_str();
        tracing::info!(
            method = %method,
            path = %path,
            status = response.status.as_u16(),
            outcome = response.outcome,
            mode,
            request_id = field("request_id"),
            session_id = field("session_id"),
            agent = field("agent"),
            user_id = user.as_deref().unwrap_or(""),
            duration_ms,
            "request"
        );
        let errors = if response.status.is_server_error() {
            1.0
        } else {
            0.0
        };
        crate::metrics::emit(
            &[
                ("Function", &crate::metrics::function_name()),
                ("Mode", mode),
            ],
            &[
                ("Requests", 1.0, crate::metrics::Unit::Count),
                ("ServerErrors", errors, crate::metrics::Unit::Count),
                ("Latency", duration_ms, crate::metrics::Unit::Milliseconds),
            ],
            &[
                ("status", response.status.as_u16().into()),
                ("outcome", response.outcome.into()),
            ],
        );
        response.into_http()
    }

    async fn dispatch(&self, request: Request) -> Result<ApiResponse, ApiError> {
        let size = request.body().len();
        if size > self.max_body_bytes {
            return Err(ApiError::PayloadTooLarge {
                size,
                limit: self.max_body_bytes,
            });
        }
        if is_keep_warm_ping(&request) {
            return Ok(ApiResponse::ok(serde_json::json!({"status": "warm"})));
        }
        match self.router.resolve(&request)? {
            Route::Custom(handler) => handler.call(request).await,
            Route::Chat => {
                let user = principal(&request);
                if request.method() == Method::GET {
                    let query_id = query_param(&request, "request_id");
                    let id = poll_request_id(query_id.as_deref(), request.body().as_ref())?;
                    self.chat.poll(&id, user.as_deref()).await
                } else {
                    let run = RunRequest::from_json(request.body().as_ref(), user.as_deref())?;
                    self.chat.post(run).await
                }
            }
        }
    }
}

/// A scheduled keep-warm invoke (`{"warmup": true}` or an EventBridge scheduled event) rather
/// than a request: answered at once, without touching agents, queues or stores.
fn is_keep_warm_ping(request: &Request) -> bool {
    if !matches!(
        request.request_context_ref(),
        Some(RequestContext::PassThrough)
    ) {
        return false;
    }
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(request.body().as_ref()) else {
        return false;
    };
    body.get("warmup").and_then(serde_json::Value::as_bool) == Some(true)
        || body.get("detail-type").and_then(serde_json::Value::as_str) == Some("Scheduled Event")
}

/// The authorizer's identity for this request: `user_id` from the authorizer context, else
/// its `principalId` (REST API), else the `sub` claim of an HTTP API JWT authorizer.
pub fn principal(request: &Request) -> Option<String> {
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned).filter(|s| !s.is_empty());
    match request.request_context_ref()? {
        RequestContext::ApiGatewayV1(ctx) => {
            let fields = &ctx.authorizer.fields;
            fields
                .get("user_id")
                .and_then(text)
                .or_else(|| fields.get("principalId").and_then(text))
        }
        RequestContext::ApiGatewayV2(ctx) => {
            let authorizer = ctx.authorizer.as_ref()?;
            authorizer.fields.get("user_id").and_then(text).or_else(|| {
                authorizer
                    .jwt
                    .as_ref()
                    .and_then(|jwt| jwt.claims.get("sub").cloned())
                    .filter(|s| !s.is_empty())
            })
        }
        _ => None,
    }
}

/// A query parameter, from the event's parsed parameters or, for plain HTTP requests (the local
/// server), from the URI.
fn query_param(request: &Request, name: &str) -> Option<String> {
    if let Some(params) = request.query_string_parameters_ref() {
        return params.first(name).map(str::to_owned);
    }
    request.uri().query().and_then(|query| {
        query.split('&').find_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (key == name).then(|| percent_decode(value))
        })
    })
}

fn percent_decode(text: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let decoded = match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex);
                let lo = bytes.get(i + 2).copied().and_then(hex);
                match (hi, lo) {
                    (Some(hi), Some(lo)) => {
                        i += 2;
                        hi * 16 + lo
                    }
                    _ => b'%',
                }
            }
            b'+' => b' ',
            b => b,
        };
        out.push(decoded);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_come_from_the_uri_when_not_parsed() {
        let request: Request = http::Request::builder()
            .uri("/api/v1/chat?x=1&request_id=req%3A1&y")
            .body(Body::Empty)
            .unwrap_or_default();
        assert_eq!(
            query_param(&request, "request_id").as_deref(),
            Some("req:1")
        );
        assert_eq!(query_param(&request, "y").as_deref(), Some(""));
        assert_eq!(query_param(&request, "z"), None);
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(
            percent_decode("%a\u{e9}"),
            "%a\u{e9}",
            "no panic inside a multi-byte char"
        );
    }

    #[test]
    fn principals_come_from_the_authorizer_context() {
        let v1 = lambda_http::request::from_str(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat_authorized.json"
        ))
        .unwrap_or_default();
        assert_eq!(principal(&v1).as_deref(), Some("user-a"));
        let v2 = lambda_http::request::from_str(include_str!(
            "../../../tests/fixtures/apigw_v2_post_chat.json"
        ))
        .unwrap_or_default();
        assert_eq!(principal(&v2).as_deref(), Some("user-b"));
        let public = lambda_http::request::from_str(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat.json"
        ))
        .unwrap_or_default();
        assert_eq!(principal(&public), None);
    }
}
