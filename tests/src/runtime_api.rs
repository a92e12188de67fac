//! A local AWS Lambda Runtime API (the `2018-06-01` interface a function's `bootstrap` polls),
//! so tests and benchmarks can run the real function binaries: events are queued with
//! [`RuntimeApi::invoke`], each answer (or error) is recorded, and the time of the first
//! `GET /runtime/invocation/next` marks the end of a cold start.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::Notify;

/// What a function answered for one invocation.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// `POST /runtime/invocation/{id}/response`.
    Response(Value),
    /// `POST /runtime/invocation/{id}/response` in streaming mode
    /// (`Lambda-Runtime-Function-Response-Mode: streaming`, chunked): the metadata prelude (the
    /// JSON before the 8 NUL bytes), the body after it, and each body chunk with when it came.
    Streamed {
        /// `{"statusCode", "headers", "cookies"}`.
        prelude: Value,
        /// The body after the delimiter.
        body: Vec<u8>,
        /// The raw chunks of the whole upload, with their arrival times.
        chunks: Vec<(Instant, Vec<u8>)>,
    },
    /// `POST /runtime/invocation/{id}/error`.
    Error(Value),
}

/// An invocation waiting for the function: its id, payload (raw JSON text) and deadline.
struct Pending {
    id: String,
    payload: String,
    deadline: Duration,
}

#[derive(Default)]
struct State {
    pending: VecDeque<Pending>,
    /// Invocations handed to the function and not answered yet.
    in_flight: Vec<String>,
    outcomes: HashMap<String, (Outcome, Instant)>,
    first_next: Option<Instant>,
    init_error: Option<Value>,
    /// The `Lambda-Runtime-Trace-Id` header of the next invocations, when set.
    trace_header: Option<String>,
}

/// A running Runtime API; stops when dropped.
pub struct RuntimeApi {
    /// `host:port`, the value of `AWS_LAMBDA_RUNTIME_API`.
    pub addr: String,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock(state: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

impl RuntimeApi {
    /// Starts one on a free loopback port.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (s, c) = (state.clone(), changed.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, c) = (s.clone(), c.clone());
                tokio::spawn(async move {
                    let service =
                        hyper::service::service_fn(move |req| route(s.clone(), c.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            addr,
            state,
            changed,
            task,
        })
    }

    /// Queues an event for the function (with 30 s to answer); returns its request id.
    pub fn invoke(&self, event: Value) -> String {
        self.invoke_raw(&event.to_string(), Duration::from_secs(30))
    }

    /// Queues a payload exactly as given (it need not be JSON serde can build) with `deadline`
    /// to answer, as Lambda's `lambda-runtime-deadline-ms` says; returns its request id.
    pub fn invoke_raw(&self, payload: &str, deadline: Duration) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        lock(&self.state).pending.push_back(Pending {
            id: id.clone(),
            payload: payload.to_owned(),
            deadline,
        });
        self.changed.notify_waiters();
        id
    }

    /// Sends `header` as `Lambda-Runtime-Trace-Id` (the invocation's X-Ray trace, which the
    /// function sees as `_X_AMZN_TRACE_ID`) with the invocations handed out from now on.
    pub fn set_trace_header(&self, header: &str) {
        lock(&self.state).trace_header = Some(header.to_owned());
    }

    /// Waits for the outcome of invocation `id`, with when it arrived.
    pub async fn outcome(&self, id: &str, timeout: Duration) -> Option<(Outcome, Instant)> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(found) = lock(&self.state).outcomes.get(id).cloned() {
                return Some(found);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Waits until the function first asks for work (its cold start is over).
    pub async fn first_next(&self, timeout: Duration) -> Option<Instant> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(at) = lock(&self.state).first_next {
                return Some(at);
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return None;
            }
        }
    }

    /// Ends the invocations the function took and did not answer with `Runtime.ExitError`, as
    /// Lambda does when the function's process dies (call it after killing the process).
    pub fn abandon_in_flight(&self) {
        {
            let mut state = lock(&self.state);
            let ids = std::mem::take(&mut state.in_flight);
            for id in ids {
                let error = serde_json::json!({"errorType": "Runtime.ExitError", "errorMessage": "the function's process exited"});
                state
                    .outcomes
                    .insert(id, (Outcome::Error(error), Instant::now()));
            }
        }
        self.changed.notify_waiters();
    }

    /// An initialization error the function reported, if any.
    pub fn init_error(&self) -> Option<Value> {
        lock(&self.state).init_error.clone()
    }
}

fn empty(status: StatusCode) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(b"{}")));
    *response.status_mut() = status;
    response
}

async fn route(
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let streaming = req
        .headers()
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"streaming"));
    let mut incoming = req.into_body();
    let mut chunks = Vec::new();
    let mut body = Vec::new();
    while let Some(Ok(frame)) = incoming.frame().await {
        if let Ok(data) = frame.into_data() {
            body.extend_from_slice(&data);
            chunks.push((Instant::now(), data.to_vec()));
        }
    }
    let body = Bytes::from(body);
    let json: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method.as_str(), parts.as_slice()) {
        ("GET", ["2018-06-01", "runtime", "invocation", "next"]) => {
            lock(&state).first_next.get_or_insert_with(Instant::now);
            changed.notify_waiters();
            loop {
                let notified = changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                let (next, trace_header) = {
                    let mut state = lock(&state);
                    let next = state.pending.pop_front();
                    if let Some(pending) = &next {
                        state.in_flight.push(pending.id.clone());
                    }
                    (next, state.trace_header.clone())
                };
                if let Some(Pending {
                    id,
                    payload,
                    deadline,
                }) = next
                {
                    let deadline = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| (d + deadline).as_millis())
                        .unwrap_or_default();
                    let mut response = Response::new(Full::new(Bytes::from(payload)));
                    let headers = response.headers_mut();
                    let mut set = |name: &'static str, value: String| {
                        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
                            headers.insert(name, v);
                        }
                    };
                    set("lambda-runtime-aws-request-id", id);
                    set("lambda-runtime-deadline-ms", deadline.to_string());
                    set(
                        "lambda-runtime-invoked-function-arn",
                        "arn:aws:lambda:us-east-1:123456789012:function:test".to_owned(),
                    );
                    set(
                        "lambda-runtime-trace-id",
                        trace_header.unwrap_or_else(|| {
                            "Root=1-00000000-000000000000000000000000;Sampled=0".to_owned()
                        }),
                    );
                    set("content-type", "application/json".to_owned());
                    return Ok(response);
                }
                notified.await;
            }
        }
        ("POST", ["2018-06-01", "runtime", "invocation", id, kind]) => {
            let delimiter = [0u8; 8];
            let outcome = if *kind != "response" {
                Outcome::Error(json)
            } else if streaming {
                let split = body.windows(8).position(|w| w == delimiter);
                let (prelude, rest) = match split {
                    Some(at) => (&body[..at], &body[at + 8..]),
                    None => (&body[..0], &body[..]),
                };
                Outcome::Streamed {
                    prelude: serde_json::from_slice(prelude).unwrap_or(Value::Null),
                    body: rest.to_vec(),
                    chunks,
                }
            } else {
                Outcome::Response(json)
            };
            {
                let mut state = lock(&state);
                state.in_flight.retain(|i| i != id);
                state
                    .outcomes
                    .insert((*id).to_owned(), (outcome, Instant::now()));
            }
            changed.notify_waiters();
            Ok(empty(StatusCode::ACCEPTED))
        }
        ("POST", ["2018-06-01", "runtime", "init", "error"]) => {
            lock(&state).init_error = Some(json);
            changed.notify_waiters();
            Ok(empty(StatusCode::ACCEPTED))
        }
        _ => Ok(empty(StatusCode::NOT_FOUND)),
    }
}

/// A child process (a function binary) killed when dropped.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The path of a function binary built into this workspace's target directory (`profile` is
/// `debug` or `release`).
pub fn function_binary(name: &str, profile: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from))
        .ok_or_else(|| {
            anyhow::anyhow!("cannot find the target directory from {}", exe.display())
        })?;
    let path = target.join(profile).join(name);
    anyhow::ensure!(
        path.is_file(),
        "{} is not built: run `cargo build --bins` (scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// Starts a function binary against `api`, in an empty working directory, with only the
/// variables Lambda sets plus `env` (and the AWS/test endpoints of this run).
pub fn spawn_function(
    binary: &PathBuf,
    api: &RuntimeApi,
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    spawn_function_with_log(binary, api, env, None)
}

/// The same, writing the function's stdout and stderr (its log) to `log` when given.
pub fn spawn_function_with_log(
    binary: &PathBuf,
    api: &RuntimeApi,
    env: &[(&str, &str)],
    log: Option<&std::path::Path>,
) -> anyhow::Result<Child> {
    let dir = std::env::temp_dir().join(crate::unique_name("ak-fn"));
    std::fs::create_dir_all(&dir)?;
    let mut command = Command::new(binary);
    command
        .current_dir(&dir)
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", &api.addr)
        .env("AWS_LAMBDA_FUNCTION_NAME", "test")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/test")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "test")
        .env("LAMBDA_TASK_ROOT", &dir)
        .stdin(Stdio::null());
    for (name, value) in std::env::vars() {
        if name.starts_with("AWS_") && !name.starts_with("AWS_LAMBDA") || name == "PATH" {
            command.env(name, value);
        }
    }
    command.envs(env.iter().copied());
    if let Some(path) = log {
        let file = std::fs::File::create(path)?;
        command.stdout(file.try_clone()?).stderr(file);
    }
    Ok(command.spawn()?)
}
