//! The HTTP API of the request handler: size limit, routing, identity, the chat endpoint and
//! custom routes, and the one place where errors become responses. The Lambda function and the
//! local server both call [`Api::handle`].

use crate::chat::ChatService;
use crate::error::ApiError;
use crate::event::{self, Incoming, Problem};
use crate::request::{Caller, RunRequest, poll_request_id};
use crate::response::ApiResponse;
use crate::router::{Route, Router};
use http::Method;
use lambda_http::{Body, Request, RequestExt};
use serde_json::Value;
use std::time::Instant;

/// The request handler's HTTP API.
pub struct Api {
    router: Router,
    chat: ChatService,
    max_body_bytes: usize,
    principal_claim: String,
}

impl Api {
    /// An API serving `router`'s routes with `chat` behind the chat path.
    pub fn new(router: Router, chat: ChatService, max_body_bytes: usize) -> Self {
        Self {
            router,
            chat,
            max_body_bytes,
            principal_claim: "sub".to_owned(),
        }
    }

    /// Reads the user from this claim of Cognito and JWT authorizers (`auth.principal_claim`,
    /// default `sub`).
    pub fn with_principal_claim(mut self, claim: &str) -> Self {
        self.principal_claim = claim.to_owned();
        self
    }

    /// Answers one Lambda event from any front door, in that door's format (see
    /// [`crate::event`]). Never fails: an event that cannot be read is answered 400.
    pub async fn handle_event(&self, event: Value) -> Value {
        match event::decode(&event, &self.principal_claim, self.router.paths().chat()) {
            Incoming::Request { door, request } => event::encode(door, self.handle(*request).await),
            Incoming::KeepWarm => serde_json::json!({"status": "warm"}),
            Incoming::Malformed { door, problem } => {
                tracing::warn!(door = door.as_str(), problem = %problem, "malformed event");
                event::encode(
                    door,
                    ApiError::bad_request(problem).to_response().into_http(),
                )
            }
            Incoming::Unrecognised(problem) => {
                tracing::warn!(problem = %problem, "unrecognised event");
                event::unrecognised_answer(&problem)
            }
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
        // A body the event could not deliver (bad base64) matters only where a body is read.
        let body_problem = request.extensions().get::<Problem>().cloned();
        let reads_body = |has_query_id: bool| {
            !matches!(
                *request.method(),
                Method::GET | Method::HEAD | Method::DELETE
            ) || !has_query_id
        };
        match self.router.resolve(&request)? {
            Route::Custom(handler) => {
                if let Some(Problem(problem)) = body_problem.filter(|_| reads_body(true)) {
                    return Err(ApiError::bad_request(problem));
                }
                handler.call(request).await
            }
            Route::Chat => {
                let caller = caller(&request);
                let query_id = query_param(&request, "request_id");
                if let Some(Problem(problem)) =
                    body_problem.filter(|_| reads_body(query_id.is_some()))
                {
                    return Err(ApiError::bad_request(problem));
                }
                if request.method() == Method::GET {
                    let id = poll_request_id(query_id.as_deref(), request.body().as_ref())?;
                    self.chat.poll(&id, caller.principal()).await
                } else {
                    let run = RunRequest::from_json(request.body().as_ref(), &caller)?;
                    self.chat.post(run).await
                }
            }
        }
    }
}

/// Who is calling, as the event's front door vouched for it ([`crate::event`] puts it in the
/// request's extensions); anonymous for requests that carry none (the local server).
pub fn caller(request: &Request) -> Caller {
    request
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or(Caller::Anonymous)
}

/// The authenticated user of this request, if any.
pub fn principal(request: &Request) -> Option<String> {
    caller(request).principal().map(str::to_owned)
}

/// A query parameter, from the event's parsed parameters or, for plain HTTP requests (the local
/// server), from the URI.
fn query_param(request: &Request, name: &str) -> Option<String> {
    if let Some(params) = request.query_string_parameters_ref() {
        return params.first(name).map(str::to_owned);
    }
    let query = event::parse_query(request.uri().query()?);
    query.get(name)?.first().cloned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::percent_decode;

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

    fn decoded(fixture: &str) -> Request {
        let event: Value = serde_json::from_str(fixture).unwrap_or_default();
        match event::decode(&event, "sub", "/api/v1/chat") {
            Incoming::Request { request, .. } => *request,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn principals_come_from_the_authorizer_context() {
        let v1 = decoded(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat_authorized.json"
        ));
        assert_eq!(principal(&v1).as_deref(), Some("user-a"));
        let v2 = decoded(include_str!(
            "../../../tests/fixtures/apigw_v2_post_chat.json"
        ));
        assert_eq!(principal(&v2).as_deref(), Some("user-b"));
        let public = decoded(include_str!(
            "../../../tests/fixtures/apigw_v1_post_chat.json"
        ));
        assert_eq!(principal(&public), None);
    }
}
