//! The local server: the request handler's [`Api`] over plain HTTP, and — in the queue modes —
//! the agent runner and response handler driven by polling their queues, the role Lambda's event
//! source mappings play. With `memory://` queues and the memory store it is the whole pipeline
//! in one process; with SQS URLs and Redis or DynamoDB it works against the real services.

use ak_adapters::{self as adapters, AwsConfig, required_response_store};
use ak_agents::AgentRuntime;
use ak_core::ports::{AgentRunner, Queue};
use ak_core::{ApiError, Settings};
use ak_http::api::{Api, Reply};
use ak_http::{ApiResponse, RoutePaths, Router};
use ak_runtime::service::worker::sqs::SqsBatchResponse;
use ak_runtime::{AgentRunnerHandler, ResponseHandler, pump};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use lambda_http::Body;
use serde_json::Value;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one receive waits for messages (SQS long polling allows 20 s).
const RECEIVE_WAIT: Duration = Duration::from_secs(10);

/// A running local system.
pub struct LocalServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Which model provider answers.
    pub provider: &'static str,
    /// The execution mode.
    pub mode: ak_core::config::ExecutionMode,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl LocalServer {
    /// Builds everything from `settings`, binds `addr` and starts serving and (in queue modes)
    /// the runner and response-handler workers.
    pub async fn start(
        settings: &Settings,
        addr: SocketAddr,
        workers: usize,
    ) -> anyhow::Result<Self> {
        let aws = AwsConfig::default();
        let runtime: Arc<dyn AgentRunner> =
            Arc::new(AgentRuntime::load(settings, &agent_app::tools(), &aws, true).await?);
        let mode = settings.execution.mode();
        let router = agent_app::routes(Router::builder(RoutePaths::from_env()?)).build()?;
        // The MCP endpoint answers loopback hosts only when the server listens on loopback
        // (against DNS rebinding from a browser); on another address, any host.
        let loopback = addr.ip().is_loopback();
        let api = Arc::new(
            Api::from_settings(settings, &aws, Some(runtime.clone()), router, loopback).await?,
        );

        let mut tasks = Vec::new();
        if mode.uses_queues() {
            let input = match &settings.execution.queues.input.url {
                Some(url) => adapters::queue(url, &aws).await,
                None => anyhow::bail!("execution.queues.input.url is required in {mode}"),
            };
            let output = adapters::required_output_queue(settings, &aws).await?;
            let store = required_response_store(settings, &aws).await?;
            let runner =
                Arc::new(AgentRunnerHandler::from_settings(settings, &aws, runtime.clone()).await?);
            let responses = Arc::new(ResponseHandler::new(store));
            for _ in 0..workers.max(1) {
                let (input, runner) = (input.clone(), runner.clone());
                tasks.push(tokio::spawn(drive(input, "agent-runner", move |records| {
                    let runner = runner.clone();
                    async move { runner.handle(records, None).await }
                })));
                let (output, responses) = (output.clone(), responses.clone());
                tasks.push(tokio::spawn(drive(
                    output,
                    "response-handler",
                    move |records| {
                        let responses = responses.clone();
                        async move { responses.handle(records).await }
                    },
                )));
            }
        }

        let page = Arc::new(playground(settings, mode));
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let limit = settings.api.max_body_bytes;
        tasks.push(tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (api, page) = (api.clone(), page.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        serve(api.clone(), page.clone(), limit, req)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        }));
        Ok(Self {
            addr,
            provider: runtime.provider(),
            mode,
            tasks,
        })
    }
}

/// Polls `queue` forever, handing each batch to `handle` and deleting what succeeded.
async fn drive<F, Fut>(queue: Arc<dyn Queue>, name: &'static str, handle: F)
where
    F: Fn(Vec<Value>) -> Fut,
    Fut: std::future::Future<Output = SqsBatchResponse>,
{
    loop {
        if let Err(e) = pump(queue.as_ref(), RECEIVE_WAIT, &handle).await {
            tracing::warn!(worker = name, error = %e, "queue unavailable; retrying in 1 s");
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// The OpenAPI document (`docs/openapi.yaml`), built into the binary.
const OPENAPI: &str = include_str!("../../../docs/openapi.yaml");

/// Where the document is served: under the API's base path (`/api/v1/openapi.yaml`).
fn openapi_base() -> String {
    RoutePaths::from_env().unwrap_or_default().base().to_owned()
}

/// The body of a local response: one piece, or server-sent events as they come.
type LocalBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

/// The playground page, with the agents, mode and chat path of these settings filled in.
fn playground(settings: &Settings, mode: ak_core::config::ExecutionMode) -> String {
    let paths = RoutePaths::from_env().unwrap_or_default();
    let config = serde_json::json!({
        "agents": settings.agents.definitions.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "default_agent": settings.agents.default_agent(),
        "mode": mode.as_str(),
        "chat": paths.chat(),
    });
    // `</` cannot end the script element early, whatever a name holds.
    let config = config.to_string().replace("</", "<\\/");
    include_str!("playground.html").replacen(
        "/*CONFIG*/{\"agents\": [], \"default_agent\": null, \"mode\": \"direct\", \"chat\": \"/api/v1/chat\"}",
        &config,
        1,
    )
}

async fn serve(
    api: Arc<Api>,
    page: Arc<String>,
    limit: usize,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<LocalBody>, Infallible> {
    use futures_util::StreamExt;
    // The playground: one page at `/`, calling the same HTTP API as any client.
    if matches!(*request.method(), hyper::Method::GET | hyper::Method::HEAD)
        && matches!(request.uri().path(), "/" | "/index.html")
    {
        let mut response =
            hyper::Response::new(Full::new(Bytes::from(page.as_bytes().to_vec())).boxed_unsync());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        return Ok(response);
    }
    // The OpenAPI document of the HTTP API, for tools that read it from a running server.
    let openapi_path = format!("{}/openapi.yaml", openapi_base());
    if request.uri().path() == openapi_path && request.method() != hyper::Method::GET {
        let error = ApiError::MethodNotAllowed {
            method: request.method().to_string(),
            path: openapi_path,
            allowed: vec!["GET".to_owned()],
        };
        let (parts, body) = ApiResponse::from(error).into_http().into_parts();
        let bytes = match body {
            Body::Text(text) => Bytes::from(text),
            _ => Bytes::new(),
        };
        return Ok(hyper::Response::from_parts(
            parts,
            Full::new(bytes).boxed_unsync(),
        ));
    }
    if request.uri().path() == openapi_path {
        let mut response =
            hyper::Response::new(Full::new(Bytes::from_static(OPENAPI.as_bytes())).boxed_unsync());
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/yaml"),
        );
        return Ok(response);
    }
    let (parts, body) = request.into_parts();
    let reply = match Limited::new(body, limit).collect().await {
        Ok(collected) => {
            let bytes = collected.to_bytes();
            let body = if bytes.is_empty() {
                Body::Empty
            } else {
                match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Body::Text(text),
                    Err(e) => Body::Binary(e.into_bytes()),
                }
            };
            api.respond(lambda_http::Request::from_parts(parts, body))
                .await
        }
        Err(_) => {
            let size = parts
                .headers
                .get(hyper::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(limit + 1);
            let request = lambda_http::Request::from_parts(parts, Body::Empty);
            Reply::Json(api.refusal(&request, ApiError::PayloadTooLarge { size, limit }))
        }
    };
    Ok(match reply {
        Reply::Json(response) => {
            let (parts, body) = response.into_parts();
            let bytes = match body {
                Body::Text(text) => Bytes::from(text),
                Body::Binary(data) => Bytes::from(data),
                _ => Bytes::new(),
            };
            hyper::Response::from_parts(parts, Full::new(bytes).boxed_unsync())
        }
        // The body owns the run: a client that disconnects drops it, and the run stops.
        Reply::Events(events) => {
            let headers = events.headers();
            let frames = events.map(|chunk| chunk.map(hyper::body::Frame::data));
            let mut response = hyper::Response::new(BodyExt::boxed_unsync(
                http_body_util::StreamBody::new(frames),
            ));
            *response.headers_mut() = headers;
            response
        }
    })
}
