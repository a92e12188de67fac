//! What the API answers: a status, headers and a JSON body, turned into an HTTP response in one
//! place so every answer has `Content-Type: application/json`; and the one place where a
//! failure ([`ApiError`]) becomes an HTTP response ([`ErrorResponse`]): its status, its body, and
//! the headers its status calls for (`Retry-After`, `Allow`).

use ak_core::answer::Answer;
use ak_core::error::ApiError;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use lambda_http::Body;
use serde_json::Value;

/// Seconds a client is told to wait before polling again.
pub const POLL_RETRY_AFTER_SECS: u32 = 2;

/// A JSON answer.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// HTTP status.
    pub status: StatusCode,
    /// Extra headers (`Retry-After`, `Allow`, ...); `Content-Type` is added on conversion.
    pub headers: HeaderMap,
    /// The body.
    pub body: Value,
    /// How the request ended, for logs and metrics (`ok`, or the error class).
    pub outcome: &'static str,
}

impl ApiResponse {
    /// An answer with this status and body.
    pub fn json(status: StatusCode, body: Value) -> Self {
        Self {
            status,
            headers: HeaderMap::new(),
            body,
            outcome: "ok",
        }
    }

    /// A 200 answer.
    pub fn ok(body: Value) -> Self {
        Self::json(StatusCode::OK, body)
    }

    /// The HTTP response, with `Content-Type: application/json`.
    pub fn into_http(self) -> http::Response<Body> {
        let text = serde_json::to_string(&self.body).unwrap_or_else(|_| "{}".to_owned());
        let mut response = http::Response::new(Body::Text(text));
        *response.status_mut() = self.status;
        *response.headers_mut() = self.headers;
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        response
    }
}

impl From<Value> for ApiResponse {
    fn from(body: Value) -> Self {
        ApiResponse::ok(body)
    }
}

impl From<Answer> for ApiResponse {
    /// A stored or computed answer as the API sends it. A 429 or 503 (a queue or model that
    /// refused the request, read back by a poll or a wait) says when to try again, like the live
    /// error does.
    fn from(answer: Answer) -> Self {
        let status =
            StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = ApiResponse::json(status, answer.body);
        if matches!(
            status,
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
        ) {
            response.headers.insert(
                header::RETRY_AFTER,
                HeaderValue::from(POLL_RETRY_AFTER_SECS),
            );
        }
        response
    }
}

/// A failure as the HTTP API answers it.
pub trait ErrorResponse {
    /// The response the client gets: status, JSON body and any headers the status calls for.
    fn to_response(&self) -> ApiResponse;

    /// The HTTP status.
    fn status(&self) -> StatusCode;
}

impl ErrorResponse for ApiError {
    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.status_code()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    fn to_response(&self) -> ApiResponse {
        let mut response = ApiResponse::from(Answer::from(self));
        response.outcome = self.class();
        match self {
            ApiError::MethodNotAllowed { allowed, .. } => {
                if let Ok(v) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers.insert(header::ALLOW, v);
                }
            }
            ApiError::ResponseNotFound { .. }
            | ApiError::ResponseTimeout { .. }
            | ApiError::RateLimited { .. }
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

impl From<ApiError> for ApiResponse {
    fn from(e: ApiError) -> Self {
        e.to_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn every_error_is_json_with_its_status() {
        let cases = [
            (ApiError::bad_request("prompt is required"), 400),
            (ApiError::PayloadTooLarge { size: 2, limit: 1 }, 413),
            (
                ApiError::ResponseTimeout {
                    request_id: "r".into(),
                    waited: Duration::from_secs(25),
                },
                504,
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
    fn not_found_timeout_and_unavailable_say_when_to_retry() {
        for e in [
            ApiError::ResponseNotFound {
                request_id: "req-1".into(),
            },
            ApiError::ResponseTimeout {
                request_id: "req-2".into(),
                waited: Duration::from_secs(25),
            },
            ApiError::ServiceUnavailable {
                backend: "Redis".into(),
                request_id: None,
                detail: "down".into(),
            },
        ] {
            assert!(
                e.to_response().headers.contains_key(header::RETRY_AFTER),
                "{e:?}"
            );
        }
        assert!(
            !ApiError::bad_request("x")
                .to_response()
                .headers
                .contains_key(header::RETRY_AFTER)
        );
    }

    #[test]
    fn a_stored_refusal_says_when_to_try_again() {
        for status in [429, 503] {
            let answer = Answer {
                status,
                body: serde_json::json!({"error": "busy"}),
            };
            let r = ApiResponse::from(answer).into_http();
            assert_eq!(r.status().as_u16(), status);
            assert_eq!(
                r.headers().get(header::RETRY_AFTER).map(|v| v.as_bytes()),
                Some(&b"2"[..])
            );
        }
        let failed = Answer {
            status: 502,
            body: serde_json::json!({"error": "model"}),
        };
        assert!(
            !ApiResponse::from(failed)
                .headers
                .contains_key(header::RETRY_AFTER)
        );
    }

    #[test]
    fn method_not_allowed_lists_the_allowed_methods() {
        let e = ApiError::MethodNotAllowed {
            method: "DELETE".into(),
            path: "/api/v1/chat".into(),
            allowed: vec!["GET".into(), "POST".into()],
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
