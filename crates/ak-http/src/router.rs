//! Routes of the HTTP API: the chat endpoint at `/{API_BASE_PATH}/{API_VERSION}/{AGENT_ENDPOINT}`
//! and custom routes registered in Rust under `/{API_BASE_PATH}/{API_VERSION}`.
//!
//! The router works on `lambda_http` requests (built from any front door's event by
//! [`crate::event`], or by the local server), so every front door routes the same way. What
//! stands in front of the base path — an API Gateway stage, a custom domain's base path mapping
//! (`/assistant/api/v1/chat`) or an HTTP API mapping key — is not part of the route; a trailing
//! slash is tolerated; an unknown path is 404 and a known path with the wrong method is 405.

use crate::response::ApiResponse;
use ak_core::error::ApiError;
use http::Method;
use lambda_http::{Request, RequestExt};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// Methods the chat path answers: POST to ask, GET to poll.
pub const CHAT_METHODS: [Method; 2] = [Method::GET, Method::POST];

/// The segment after the chat path where a run's event log is followed
/// (`/api/v1/chat/stream`).
pub const STREAM_SEGMENT: &str = "stream";

/// The segment under the chat path where decisions on paused runs are posted
/// (`/api/v1/chat/approvals`).
pub const APPROVALS_SEGMENT: &str = "approvals";

/// The future a route handler returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<ApiResponse, ApiError>> + Send>>;

/// A custom route's handler: any `async fn(Request) -> Result<impl Into<ApiResponse>, ApiError>`.
pub trait RouteHandler: Send + Sync {
    /// Answers one request.
    fn call(&self, request: Request) -> HandlerFuture;
}

impl<F, Fut, R> RouteHandler for F
where
    F: Fn(Request) -> Fut + Send + Sync,
    Fut: Future<Output = Result<R, ApiError>> + Send + 'static,
    R: Into<ApiResponse>,
{
    fn call(&self, request: Request) -> HandlerFuture {
        let fut = self(request);
        Box::pin(async move { fut.await.map(Into::into) })
    }
}

/// A route or path setting that cannot work; reported at startup.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RouterError {
    /// `API_BASE_PATH`, `API_VERSION` or `AGENT_ENDPOINT` is unusable.
    #[error("{var}={value:?}: {problem}")]
    BadSetting {
        /// The environment variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        problem: String,
    },
    /// A custom route cannot be registered.
    #[error("route {method} {path}: {problem}")]
    BadRoute {
        /// The method.
        method: Method,
        /// The path as given.
        path: String,
        /// What is wrong.
        problem: String,
    },
}

/// The base path and chat path, from `API_BASE_PATH`, `API_VERSION` and `AGENT_ENDPOINT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePaths {
    base: String,
    chat: String,
    stream: String,
    approvals: String,
}

impl RoutePaths {
    /// Builds the paths from their three segments (slashes at either end are ignored).
    pub fn new(base_path: &str, version: &str, endpoint: &str) -> Result<Self, RouterError> {
        let base_path = segment("API_BASE_PATH", base_path)?;
        let version = segment("API_VERSION", version)?;
        let endpoint = segment("AGENT_ENDPOINT", endpoint)?;
        let base = format!("/{base_path}/{version}");
        let chat = format!("{base}/{endpoint}");
        let stream = format!("{chat}/{STREAM_SEGMENT}");
        let approvals = format!("{chat}/{APPROVALS_SEGMENT}");
        Ok(Self {
            base,
            chat,
            stream,
            approvals,
        })
    }

    /// Reads the three variables from the process environment (defaults api, v1, chat).
    pub fn from_env() -> Result<Self, RouterError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the three variables through `get`; empty values count as unset.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, RouterError> {
        let var = |name: &str, default: &str| {
            get(name)
                .filter(|v| !v.trim().is_empty())
                .unwrap_or_else(|| default.to_owned())
        };
        Self::new(
            &var("API_BASE_PATH", "api"),
            &var("API_VERSION", "v1"),
            &var("AGENT_ENDPOINT", "chat"),
        )
    }

    /// `/api/v1`: where custom routes live.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// `/api/v1/chat`.
    pub fn chat(&self) -> &str {
        &self.chat
    }

    /// `/api/v1/chat/stream`: where a run's events are followed.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// `/api/v1/chat/approvals`: where decisions on runs paused for approval are posted.
    pub fn approvals(&self) -> &str {
        &self.approvals
    }

    /// `/api/v1/mcp`: the MCP server endpoint.
    pub fn mcp(&self) -> String {
        format!("{}/mcp", self.base)
    }
}

impl Default for RoutePaths {
    fn default() -> Self {
        Self {
            base: "/api/v1".to_owned(),
            chat: "/api/v1/chat".to_owned(),
            stream: "/api/v1/chat/stream".to_owned(),
            approvals: "/api/v1/chat/approvals".to_owned(),
        }
    }
}

fn segment(var: &'static str, value: &str) -> Result<String, RouterError> {
    let trimmed = value.trim().trim_matches('/');
    let ok = !trimmed.is_empty()
        && trimmed.split('/').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        });
    if ok {
        Ok(trimmed.to_owned())
    } else {
        Err(RouterError::BadSetting {
            var,
            value: value.to_owned(),
            problem: "use path segments of letters, digits, - _ . (e.g. api, v1, chat)".to_owned(),
        })
    }
}

/// What a request resolved to.
#[derive(Clone)]
pub enum Route {
    /// The chat endpoint (POST to ask, GET to poll) or a direct Lambda invoke.
    Chat,
    /// A run's event log, followed as SSE (GET).
    ChatStream,
    /// Decisions on a run paused for approval (POST).
    ChatApprovals,
    /// A protocol surface's route: the surface's index in the API, and the values of the
    /// route's `{name}` segments.
    Surface(usize, Vec<String>),
    /// A custom route.
    Custom(Arc<dyn RouteHandler>),
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Route::Chat => f.write_str("Chat"),
            Route::ChatStream => f.write_str("ChatStream"),
            Route::ChatApprovals => f.write_str("ChatApprovals"),
            Route::Surface(index, params) => write!(f, "Surface({index}, {params:?})"),
            Route::Custom(_) => f.write_str("Custom"),
        }
    }
}

struct CustomRoute {
    method: Method,
    path: String,
    handler: Arc<dyn RouteHandler>,
}

/// Collects custom routes; [`RouterBuilder::build`] reports the first invalid one.
pub struct RouterBuilder {
    paths: RoutePaths,
    routes: Vec<CustomRoute>,
    error: Option<RouterError>,
}

impl RouterBuilder {
    /// Registers `handler` for `method` at `path` under the base path.
    pub fn route(
        mut self,
        method: Method,
        path: &str,
        handler: impl RouteHandler + 'static,
    ) -> Self {
        if self.error.is_some() {
            return self;
        }
        let bad = |problem: &str| RouterError::BadRoute {
            method: method.clone(),
            path: path.to_owned(),
            problem: problem.to_owned(),
        };
        let relative = path.trim().trim_end_matches('/');
        if !relative.starts_with('/') || relative.contains("//") || relative.contains(['?', '#']) {
            self.error = Some(bad(
                "a route path starts with / and has no empty segments, query or fragment (e.g. /app)",
            ));
            return self;
        }
        let full = format!("{}{relative}", self.paths.base);
        let first = relative
            .split('/')
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        if full == self.paths.chat
            || full == self.paths.stream
            || crate::surface::RESERVED.contains(&first)
        {
            self.error = Some(bad(&format!(
                "{full} is a built-in endpoint (chat, its stream, or a protocol surface: {})",
                crate::surface::RESERVED.join(", ")
            )));
            return self;
        }
        if self
            .routes
            .iter()
            .any(|r| r.method == method && r.path == full)
        {
            self.error = Some(bad("registered twice"));
            return self;
        }
        self.routes.push(CustomRoute {
            method,
            path: full,
            handler: Arc::new(handler),
        });
        self
    }

    /// Registers a GET route.
    pub fn get(self, path: &str, handler: impl RouteHandler + 'static) -> Self {
        self.route(Method::GET, path, handler)
    }

    /// Registers a POST route.
    pub fn post(self, path: &str, handler: impl RouteHandler + 'static) -> Self {
        self.route(Method::POST, path, handler)
    }

    /// Registers a PUT route.
    pub fn put(self, path: &str, handler: impl RouteHandler + 'static) -> Self {
        self.route(Method::PUT, path, handler)
    }

    /// Registers a DELETE route.
    pub fn delete(self, path: &str, handler: impl RouteHandler + 'static) -> Self {
        self.route(Method::DELETE, path, handler)
    }

    /// Registers a PATCH route.
    pub fn patch(self, path: &str, handler: impl RouteHandler + 'static) -> Self {
        self.route(Method::PATCH, path, handler)
    }

    /// The router, or the first registration error.
    pub fn build(self) -> Result<Router, RouterError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(Router {
                paths: self.paths,
                routes: self.routes,
                surfaces: Vec::new(),
            }),
        }
    }
}

/// A protocol surface's route: its full path split in segments (`None` for a `{name}`
/// segment), its method (`None`: any), and the surface's index.
struct SurfaceRoute {
    segments: Vec<Option<String>>,
    method: Option<Method>,
    surface: usize,
}

/// Resolves requests to the chat endpoint, a protocol surface or a custom route.
pub struct Router {
    paths: RoutePaths,
    routes: Vec<CustomRoute>,
    surfaces: Vec<SurfaceRoute>,
}

impl Router {
    /// Starts a router with these paths.
    pub fn builder(paths: RoutePaths) -> RouterBuilder {
        RouterBuilder {
            paths,
            routes: Vec::new(),
            error: None,
        }
    }

    /// Routes `routes` (paths relative to the base path, `{name}` for any one segment) to the
    /// surface with index `surface`. A surface's path wins over a custom route's.
    pub fn add_surface(&mut self, surface: usize, routes: &[(Option<Method>, &str)]) {
        for (method, path) in routes {
            let segments = format!("{}{}", self.paths.base, path)
                .split('/')
                .filter(|s| !s.is_empty())
                .map(|s| (!(s.starts_with('{') && s.ends_with('}'))).then(|| s.to_owned()))
                .collect();
            self.surfaces.push(SurfaceRoute {
                segments,
                method: method.clone(),
                surface,
            });
        }
    }

    /// Every route it serves, as (method, full path): the chat endpoint's, its stream's, the
    /// protocol surfaces' (`None`: any method, the surface decides; `{name}` segments as
    /// written) and the custom routes. For documentation and its checks.
    pub fn routes(&self) -> Vec<(Option<Method>, String)> {
        let mut routes: Vec<(Option<Method>, String)> = CHAT_METHODS
            .iter()
            .map(|m| (Some(m.clone()), self.paths.chat.clone()))
            .collect();
        routes.push((Some(Method::GET), self.paths.stream.clone()));
        for route in &self.surfaces {
            let path = route
                .segments
                .iter()
                .map(|s| s.clone().unwrap_or_else(|| "{param}".to_owned()))
                .collect::<Vec<_>>()
                .join("/");
            routes.push((route.method.clone(), format!("/{path}")));
        }
        for route in &self.routes {
            routes.push((Some(route.method.clone()), route.path.clone()));
        }
        routes
    }

    /// The paths this router serves.
    pub fn paths(&self) -> &RoutePaths {
        &self.paths
    }

    /// Finds the route for a request. What stands in front of the base path (a stage, a custom
    /// domain's base path mapping of any depth, an HTTP API mapping key) is skipped: the first
    /// tail of the path that names a route wins, so even a mapping that repeats the base path
    /// (`/api/v1/api/v1/chat`) routes. Empty segments and a trailing slash are ignored.
    pub fn resolve(&self, request: &Request) -> Result<Route, ApiError> {
        let raw = match request.raw_http_path() {
            "" => request.uri().path(),
            raw => raw,
        };
        let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        let method = request.method();
        let mut wrong_method = None;
        for skip in 0..=segments.len() {
            let path = format!("/{}", segments[skip..].join("/"));
            if !under(&path, &self.paths.base) {
                continue;
            }
            match self.route_at(&path, method) {
                Ok(Some(route)) => return Ok(route),
                Ok(None) => {}
                Err(e) => {
                    wrong_method.get_or_insert(e);
                }
            }
        }
        let path = format!("/{}", segments.join("/"));
        if wrong_method.is_none() {
            let base = self.paths.base.as_str();
            let rest = path
                .find(base)
                .map_or(path.as_str(), |at| &path[at + base.len()..]);
            let first = rest.split('/').find(|s| !s.is_empty()).unwrap_or_default();
            if let Some(feature) = crate::surface::left_out(first) {
                tracing::warn!(
                    path = %path,
                    feature,
                    "no route: this build has no `{feature}` surface (deploy.sh builds it when \
                     the Terraform variables route it: protocol_endpoints, mcp_endpoint)"
                );
            }
        }
        Err(wrong_method.unwrap_or(ApiError::RouteNotFound { path }))
    }

    /// The protocol surface whose paths `request`'s path is under (its first segment after the
    /// base path, `/api/v1/openai/...`), if any: where a refusal (an unknown path, a method it
    /// does not take, a body too large) is answered in that surface's error shape.
    pub fn surface_of(&self, request: &Request) -> Option<usize> {
        let raw = match request.raw_http_path() {
            "" => request.uri().path(),
            raw => raw,
        };
        let segments: Vec<&str> = raw.split('/').filter(|s| !s.is_empty()).collect();
        let claimed = self.paths.base.split('/').filter(|s| !s.is_empty()).count() + 1;
        (0..segments.len()).find_map(|skip| {
            let tail = &segments[skip..];
            self.surfaces.iter().find_map(|route| {
                let owns = tail.len() >= claimed
                    && route.segments.len() >= claimed
                    && route.segments[..claimed]
                        .iter()
                        .zip(tail)
                        .all(|(want, got)| want.as_deref() == Some(*got));
                owns.then_some(route.surface)
            })
        })
    }

    /// The route at exactly `path`: `Ok(None)` if there is none, 405 if it takes other methods.
    fn route_at(&self, path: &str, method: &Method) -> Result<Option<Route>, ApiError> {
        if path == self.paths.chat {
            return if CHAT_METHODS.contains(method) {
                Ok(Some(Route::Chat))
            } else {
                Err(method_not_allowed(method, path, &CHAT_METHODS))
            };
        }
        if path == self.paths.approvals {
            return if method == Method::POST {
                Ok(Some(Route::ChatApprovals))
            } else {
                Err(method_not_allowed(method, path, &[Method::POST]))
            };
        }
        if path == self.paths.stream {
            return if method == Method::GET {
                Ok(Some(Route::ChatStream))
            } else {
                Err(method_not_allowed(method, path, &[Method::GET]))
            };
        }
        let mut allowed = Vec::new();
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        for route in &self.surfaces {
            let Some(params) = route.matches(&segments) else {
                continue;
            };
            match &route.method {
                Some(m) if m != method => allowed.push(m.clone()),
                _ => return Ok(Some(Route::Surface(route.surface, params))),
            }
        }
        for route in self.routes.iter().filter(|r| r.path == path) {
            if route.method == *method {
                return Ok(Some(Route::Custom(route.handler.clone())));
            }
            allowed.push(route.method.clone());
        }
        if allowed.is_empty() {
            Ok(None)
        } else {
            Err(method_not_allowed(method, path, &allowed))
        }
    }
}

impl SurfaceRoute {
    /// The values of the `{name}` segments when `segments` is this route's path.
    fn matches(&self, segments: &[&str]) -> Option<Vec<String>> {
        if segments.len() != self.segments.len() {
            return None;
        }
        let mut params = Vec::new();
        for (want, got) in self.segments.iter().zip(segments) {
            match want {
                Some(literal) if literal != got => return None,
                Some(_) => {}
                None => params.push(crate::event::percent_decode(got)),
            }
        }
        Some(params)
    }
}

/// A JSON picture of a request for handlers that echo what they received: method, path, query,
/// headers (without credentials) and body.
pub fn request_summary(request: &Request) -> serde_json::Value {
    use serde_json::{Map, Value};
    let mut headers = Map::new();
    for (name, value) in request.headers() {
        if is_credential_header(name.as_str()) {
            continue;
        }
        if let Ok(v) = value.to_str() {
            headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    // From the event's parsed parameters, or (a plain HTTP request: the local server) the URI.
    let query: Map<String, Value> = match request.query_string_parameters_ref() {
        Some(q) => q
            .iter()
            .map(|(k, v)| (k.to_owned(), Value::String(v.to_owned())))
            .collect(),
        None => request
            .uri()
            .query()
            .map(crate::event::parse_query)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(k, v)| Some((k, Value::String(v.into_iter().next()?))))
            .collect(),
    };
    let body = String::from_utf8_lossy(request.body().as_ref()).into_owned();
    serde_json::json!({
        "method": request.method().as_str(),
        "path": match request.raw_http_path() { "" => request.uri().path(), raw => raw },
        "query": query,
        "headers": headers,
        "body": body,
    })
}

/// Headers that carry credentials or identity (`authorization`, `proxy-authorization`, `cookie`,
/// `x-api-key`, `x-amz-security-token`, `x-auth-token`, an ALB's `x-amzn-oidc-*`, ...), which an
/// echo must not send back.
pub fn is_credential_header(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "auth",
        "token",
        "cookie",
        "key",
        "secret",
        "session",
        "oidc",
        "credential",
        "signature",
        "password",
    ]
    .iter()
    .any(|word| name.contains(word))
}

/// The 405 for `method` on `path`, which takes `allowed`.
fn method_not_allowed(method: &Method, path: &str, allowed: &[Method]) -> ApiError {
    ApiError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allowed: allowed.iter().map(ToString::to_string).collect(),
    }
}

fn under(path: &str, base: &str) -> bool {
    path.strip_prefix(base)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests;
