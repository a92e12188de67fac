//! The one error type of the HTTP API and its mapping to status, headers and JSON body.
//!
//! Every failure a client can see goes through [`ApiError::to_response`], so the status table of
//! the API lives here and nowhere else. 5xx bodies never carry internals: the detail of an
//! internal error is for the log, the client gets `internal error` and the request id.

use crate::response::ApiResponse;
use http::{HeaderValue, Method, StatusCode, header};
use serde_json::{Value, json};
use std::time::Duration;

/// Seconds a client is told to wait before polling again.
pub const POLL_RETRY_AFTER_SECS: u32 = 2;

/// Everything that can go wrong while answering an API call.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed; the message says what is wrong and how to fix it.
    #[error("{0}")]
    BadRequest(String),
    /// The body is larger than `api.max_body_bytes`.
    #[error("request body is {size} bytes; the limit is {limit} bytes")]
    PayloadTooLarge {
        /// Bytes received.
        size: usize,
        /// Bytes allowed.
        limit: usize,
    },
    /// Something the request produced is larger than a backend can ever store.
    #[error("{0}")]
    TooLarge(String),
    /// A request id (idempotency key) came back with a different request.
    #[error(
        "request_id {request_id} was already used for a different request; send a new request_id for a new request (the same request with the same request_id gets the first answer)"
    )]
    RequestIdReused {
        /// The reused id.
        request_id: String,
    },
    /// No route has this path.
    #[error("no route for {path}")]
    RouteNotFound {
        /// The path asked for.
        path: String,
    },
    /// The path exists, the method does not.
    #[error("method {method} is not allowed on {path}")]
    MethodNotAllowed {
        /// The method used.
        method: Method,
        /// The path asked for.
        path: String,
        /// Methods the path accepts.
        allowed: Vec<Method>,
    },
    /// The answer to a request is not stored (yet), or belongs to someone else.
    #[error("no response for request {request_id} yet")]
    ResponseNotFound {
        /// The request asked about.
        request_id: String,
    },
    /// Direct mode without a response store keeps no answers: a poll can never find one.
    #[error(
        "this deployment runs in direct mode without a response store, so it keeps no answers to poll; the answer comes with the POST"
    )]
    NothingToPoll {
        /// The request asked about.
        request_id: String,
    },
    /// Direct mode keeps no event logs: a run's events stream in its own POST only.
    #[error(
        "this deployment runs in direct mode, where a run's events stream in the POST that asked (\"stream\": true) and no event log is kept to follow"
    )]
    NothingToStream {
        /// The request asked about.
        request_id: String,
    },
    /// rest_sync waited its full bound without an answer; the client may poll later.
    #[error("no answer for request {request_id} within {}s; poll later with GET ?request_id={request_id}", waited.as_secs_f64())]
    ResponseTimeout {
        /// The request still being processed.
        request_id: String,
        /// How long the handler waited.
        waited: Duration,
    },
    /// The model provider failed or answered something unusable.
    #[error("model provider failed: {message}")]
    ModelProvider {
        /// The request that failed.
        request_id: Option<String>,
        /// What failed, without secrets or request bodies.
        message: String,
    },
    /// The model provider's content filter blocked the prompt or the answer.
    #[error("{message}")]
    ContentFiltered {
        /// The request that was filtered.
        request_id: Option<String>,
        /// What happened and what the client can do.
        message: String,
    },
    /// A queue or store could not be reached.
    #[error("{backend} is unavailable; try again shortly")]
    ServiceUnavailable {
        /// Which backend (`Redis`, `SQS`, `DynamoDB`).
        backend: String,
        /// The request that failed, when one was assigned.
        request_id: Option<String>,
        /// Diagnostic detail for the log only.
        detail: String,
    },
    /// The caller may not use this resource (a session that belongs to another user).
    #[error("{0}")]
    Forbidden(String),
    /// Two requests changed the same session at once; the later one should be sent again.
    #[error("{0}")]
    Conflict(String),
    /// Anything else: a bug. The detail is logged, never sent.
    #[error("internal error")]
    Internal {
        /// The request that failed, when one was assigned.
        request_id: Option<String>,
        /// Diagnostic detail for the log only.
        detail: String,
    },
}

impl ApiError {
    /// A 400 with a message for the client.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::BadRequest(message.into())
    }

    /// A 500 whose detail goes to the log only.
    pub fn internal(request_id: Option<&str>, detail: impl Into<String>) -> Self {
        ApiError::Internal {
            request_id: request_id.map(str::to_owned),
            detail: detail.into(),
        }
    }

    /// Attaches a request id to the errors that report one.
    pub fn with_request_id(mut self, id: &str) -> Self {
        match &mut self {
            ApiError::ModelProvider { request_id, .. }
            | ApiError::ContentFiltered { request_id, .. }
            | ApiError::ServiceUnavailable { request_id, .. }
            | ApiError::Internal { request_id, .. } => {
                request_id.get_or_insert_with(|| id.to_owned());
            }
            _ => {}
        }
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } | ApiError::TooLarge(_) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            ApiError::RequestIdReused { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::RouteNotFound { .. }
            | ApiError::ResponseNotFound { .. }
            | ApiError::NothingToPoll { .. }
            | ApiError::NothingToStream { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::ResponseTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ModelProvider { .. } => StatusCode::BAD_GATEWAY,
            ApiError::ContentFiltered { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::ServiceUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Internal { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A short stable name of the error class, for logs and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "bad_request",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooLarge(_) => "too_large",
            ApiError::RequestIdReused { .. } => "request_id_reused",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::ResponseNotFound { .. } => "response_not_found",
            ApiError::NothingToPoll { .. } => "nothing_to_poll",
            ApiError::NothingToStream { .. } => "nothing_to_stream",
            ApiError::ResponseTimeout { .. } => "response_timeout",
            ApiError::ModelProvider { .. } => "model_provider",
            ApiError::ContentFiltered { .. } => "content_filtered",
            ApiError::ServiceUnavailable { .. } => "service_unavailable",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The response the client gets: status, JSON body and any headers the status calls for.
    pub fn to_response(&self) -> ApiResponse {
        let with_id = |mut body: Value, id: &Option<String>| {
            if let (Some(id), Value::Object(map)) = (id, &mut body) {
                map.insert("request_id".into(), Value::String(id.clone()));
            }
            body
        };
        let body = match self {
            ApiError::ResponseNotFound { request_id } => {
                json!({"status": "NOT_FOUND", "request_id": request_id})
            }
            ApiError::ResponseTimeout { request_id, .. }
            | ApiError::NothingToPoll { request_id }
            | ApiError::NothingToStream { request_id } => {
                json!({"status": "NOT_FOUND", "request_id": request_id, "error": self.to_string()})
            }
            ApiError::ModelProvider { request_id, .. } => {
                with_id(json!({"error": self.to_string()}), request_id)
            }
            ApiError::ServiceUnavailable { request_id, .. } => {
                with_id(json!({"error": self.to_string()}), request_id)
            }
            ApiError::ContentFiltered { request_id, .. } => with_id(
                json!({"error": self.to_string(), "reason": "content_filter"}),
                request_id,
            ),
            ApiError::Internal { request_id, .. } => {
                with_id(json!({"error": "internal error"}), request_id)
            }
            ApiError::MethodNotAllowed { allowed, .. } => json!({
                "error": format!("{self}; allowed: {}", method_list(allowed)),
            }),
            _ => json!({"error": self.to_string()}),
        };
        let mut response = ApiResponse::json(self.status(), body);
        match self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(v) = HeaderValue::from_str(&method_list(allowed)) {
                    response.headers.insert(header::ALLOW, v);
                }
            }
            ApiError::ResponseNotFound { .. }
            | ApiError::ResponseTimeout { .. }
            | ApiError::ServiceUnavailable { .. } => {
                response.headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(POLL_RETRY_AFTER_SECS),
                );
            }
            _ => {}
        }
        response
    }
}

fn method_list(methods: &[Method]) -> String {
    methods
        .iter()
        .map(Method::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> Self {
        e.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(e: &ApiError) -> Value {
        e.to_response().body
    }

    #[test]
    fn statuses_follow_the_api_table() {
        let cases = [
            (ApiError::bad_request("prompt is required"), 400),
            (ApiError::PayloadTooLarge { size: 2, limit: 1 }, 413),
            (ApiError::RouteNotFound { path: "/x".into() }, 404),
            (
                ApiError::MethodNotAllowed {
                    method: Method::PUT,
                    path: "/api/v1/chat".into(),
                    allowed: vec![Method::GET, Method::POST],
                },
                405,
            ),
            (
                ApiError::ResponseNotFound {
                    request_id: "r".into(),
                },
                404,
            ),
            (
                ApiError::ResponseTimeout {
                    request_id: "r".into(),
                    waited: Duration::from_secs(25),
                },
                504,
            ),
            (
                ApiError::ModelProvider {
                    request_id: Some("r".into()),
                    message: "HTTP 500".into(),
                },
                502,
            ),
            (
                ApiError::ServiceUnavailable {
                    backend: "Redis".into(),
                    request_id: None,
                    detail: "connection refused".into(),
                },
                503,
            ),
            (ApiError::internal(Some("r"), "bug"), 500),
        ];
        for (e, status) in cases {
            let r = e.to_response();
            assert_eq!(r.status.as_u16(), status, "{e:?}");
            assert_eq!(
                r.into_http()
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .map(|v| v.as_bytes()),
                Some(&b"application/json"[..])
            );
        }
    }

    #[test]
    fn not_found_and_timeout_carry_status_request_id_and_retry_after() {
        let nf = ApiError::ResponseNotFound {
            request_id: "req-1".into(),
        };
        assert_eq!(
            body(&nf),
            json!({"status": "NOT_FOUND", "request_id": "req-1"})
        );
        assert!(nf.to_response().headers.contains_key(header::RETRY_AFTER));

        let to = ApiError::ResponseTimeout {
            request_id: "req-2".into(),
            waited: Duration::from_secs(25),
        };
        let b = body(&to);
        assert_eq!(b["status"], "NOT_FOUND");
        assert_eq!(b["request_id"], "req-2");
        assert!(
            b["error"]
                .as_str()
                .unwrap_or_default()
                .contains("poll later")
        );
    }

    #[test]
    fn internal_details_stay_out_of_the_body() {
        let e = ApiError::internal(Some("req-9"), "thread panicked at src/secret.rs:12");
        assert_eq!(
            body(&e),
            json!({"error": "internal error", "request_id": "req-9"})
        );
        let e = ApiError::ServiceUnavailable {
            backend: "Redis".into(),
            request_id: Some("req-3".into()),
            detail: "redis://:hunter2@cache refused".into(),
        };
        let text = body(&e).to_string();
        assert!(text.contains("Redis is unavailable"));
        assert!(!text.contains("hunter2"));
        assert!(text.contains("req-3"));
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let e = ApiError::MethodNotAllowed {
            method: Method::DELETE,
            path: "/api/v1/chat".into(),
            allowed: vec![Method::GET, Method::POST],
        };
        let r = e.to_response();
        assert_eq!(
            r.headers.get(header::ALLOW).map(|v| v.as_bytes()),
            Some(&b"GET, POST"[..])
        );
        assert!(
            r.body["error"]
                .as_str()
                .unwrap_or_default()
                .contains("GET, POST")
        );
    }
}
