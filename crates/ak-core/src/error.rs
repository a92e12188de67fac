//! The one error type of the runtime: everything a client can be answered with when a request
//! fails, its status code and its JSON body.
//!
//! The status code is part of an answer wherever it travels (the output queue's `status_code`
//! attribute, the stored record, the `error` event), so each failure's number is defined here,
//! once: the status table of the API lives here and nowhere else. Headers, content types and the
//! HTTP types are the edge's (`ak-http`). 5xx bodies never carry internals: the detail of an
//! internal error is for the log, the client gets `internal error` and the request id.

use serde_json::{Value, json};
use std::time::Duration;

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
        method: String,
        /// The path asked for.
        path: String,
        /// Methods the path accepts.
        allowed: Vec<String>,
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
    /// The model provider kept answering "too many requests" (HTTP 429, Bedrock's throttling)
    /// through every attempt: the client should wait and send the request again.
    #[error("the model provider is rate limiting requests; try again shortly: {message}")]
    RateLimited {
        /// The request that was limited.
        request_id: Option<String>,
        /// What the provider said, without secrets or request bodies.
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
            | ApiError::RateLimited { request_id, .. }
            | ApiError::ContentFiltered { request_id, .. }
            | ApiError::ServiceUnavailable { request_id, .. }
            | ApiError::Internal { request_id, .. } => {
                request_id.get_or_insert_with(|| id.to_owned());
            }
            _ => {}
        }
        self
    }

    /// The status code of the answer (the HTTP API's status table).
    pub fn status_code(&self) -> u16 {
        match self {
            ApiError::BadRequest(_) => 400,
            ApiError::PayloadTooLarge { .. } | ApiError::TooLarge(_) => 413,
            ApiError::RequestIdReused { .. } | ApiError::ContentFiltered { .. } => 422,
            ApiError::RouteNotFound { .. }
            | ApiError::ResponseNotFound { .. }
            | ApiError::NothingToPoll { .. }
            | ApiError::NothingToStream { .. } => 404,
            ApiError::MethodNotAllowed { .. } => 405,
            ApiError::ResponseTimeout { .. } => 504,
            ApiError::ModelProvider { .. } => 502,
            ApiError::RateLimited { .. } => 429,
            ApiError::ServiceUnavailable { .. } => 503,
            ApiError::Forbidden(_) => 403,
            ApiError::Conflict(_) => 409,
            ApiError::Internal { .. } => 500,
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
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::ContentFiltered { .. } => "content_filtered",
            ApiError::ServiceUnavailable { .. } => "service_unavailable",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::Conflict(_) => "conflict",
            ApiError::Internal { .. } => "internal",
        }
    }

    /// The JSON body of the answer: `{"error": ...}` with the request id where one is known;
    /// `{"status": "NOT_FOUND", ...}` for answers not (yet) there.
    pub fn body(&self) -> Value {
        let with_id = |mut body: Value, id: &Option<String>| {
            if let (Some(id), Value::Object(map)) = (id, &mut body) {
                map.insert("request_id".into(), Value::String(id.clone()));
            }
            body
        };
        match self {
            ApiError::ResponseNotFound { request_id } => {
                json!({"status": "NOT_FOUND", "request_id": request_id})
            }
            ApiError::ResponseTimeout { request_id, .. }
            | ApiError::NothingToPoll { request_id }
            | ApiError::NothingToStream { request_id } => {
                json!({"status": "NOT_FOUND", "request_id": request_id, "error": self.to_string()})
            }
            ApiError::ModelProvider { request_id, .. }
            | ApiError::RateLimited { request_id, .. }
            | ApiError::ServiceUnavailable { request_id, .. } => {
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
                "error": format!("{self}; allowed: {}", allowed.join(", ")),
            }),
            _ => json!({"error": self.to_string()}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_api_table() {
        let cases = [
            (ApiError::bad_request("prompt is required"), 400),
            (ApiError::PayloadTooLarge { size: 2, limit: 1 }, 413),
            (ApiError::RouteNotFound { path: "/x".into() }, 404),
            (
                ApiError::MethodNotAllowed {
                    method: "PUT".into(),
                    path: "/api/v1/chat".into(),
                    allowed: vec!["GET".into(), "POST".into()],
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
            (
                ApiError::RateLimited {
                    request_id: None,
                    message: "HTTP 429".into(),
                },
                429,
            ),
            (ApiError::internal(Some("r"), "bug"), 500),
        ];
        for (e, status) in cases {
            assert_eq!(e.status_code(), status, "{e:?}");
        }
    }

    #[test]
    fn not_found_and_timeout_carry_status_and_request_id() {
        let nf = ApiError::ResponseNotFound {
            request_id: "req-1".into(),
        };
        assert_eq!(
            nf.body(),
            json!({"status": "NOT_FOUND", "request_id": "req-1"})
        );
        let to = ApiError::ResponseTimeout {
            request_id: "req-2".into(),
            waited: Duration::from_secs(25),
        };
        let b = to.body();
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
            e.body(),
            json!({"error": "internal error", "request_id": "req-9"})
        );
        let e = ApiError::ServiceUnavailable {
            backend: "Redis".into(),
            request_id: Some("req-3".into()),
            detail: "redis://:hunter2@cache refused".into(),
        };
        let text = e.body().to_string();
        assert!(text.contains("Redis is unavailable"));
        assert!(!text.contains("hunter2"));
        assert!(text.contains("req-3"));
    }
}
