//! Faults real deployments see, injected on loopback:
//!
//! - [`TcpFaultProxy`]: a TCP proxy in front of a server (Redis, moto) whose connections can be
//!   reset at once, reset when next used, or silently black-holed (what a NAT gateway's idle
//!   timeout, a failover or a function frozen between invocations does to them);
//! - [`HttpFaultProxy`]: an HTTP proxy in front of moto that answers chosen AWS operations with
//!   the errors AWS sends under load (DynamoDB `ProvisionedThroughputExceededException`, SQS
//!   500s) a given number of times;
//! - [`freeze`], [`thaw`] and [`kill`]: `SIGSTOP`, `SIGCONT` and `SIGKILL` of a process, as
//!   Lambda freezes a function between invocations and a crash ends one.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What a proxied connection does now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Forward both ways.
    Pass,
    /// Reset (RST) at once.
    Reset,
    /// Reset when the client next sends something.
    ResetOnNextUse,
    /// Forward nothing, close nothing: the peer waits forever.
    BlackHole,
}

/// New connections' fate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Door {
    /// Accepted and forwarded.
    Open,
    /// Accepted, then black-holed (a host that stopped answering).
    BlackHole,
    /// Reset as soon as accepted (a server that is down but reachable).
    Reset,
}

struct Connection {
    fate: watch::Sender<Fate>,
}

/// A TCP proxy on a free loopback port forwarding to `target`; stops when dropped.
pub struct TcpFaultProxy {
    /// `127.0.0.1:port` of the proxy.
    pub addr: String,
    connections: Arc<Mutex<Vec<Connection>>>,
    door: Arc<Mutex<Door>>,
    accepted: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TcpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        self.set_all(Fate::Reset);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl TcpFaultProxy {
    /// Starts a proxy to `target` (`host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let connections: Arc<Mutex<Vec<Connection>>> = Arc::default();
        let door = Arc::new(Mutex::new(Door::Open));
        let accepted = Arc::new(AtomicU64::new(0));
        let target = target.to_owned();
        let (c, d, a) = (connections.clone(), door.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                a.fetch_add(1, Ordering::Relaxed);
                let door = *lock(&d);
                let fate = match door {
                    Door::Open => Fate::Pass,
                    Door::BlackHole => Fate::BlackHole,
                    Door::Reset => Fate::Reset,
                };
                let (tx, rx) = watch::channel(fate);
                lock(&c).push(Connection { fate: tx });
                let target = target.clone();
                tokio::spawn(async move {
                    let _ = relay(client, &target, rx).await;
                });
            }
        });
        Ok(Self {
            addr,
            connections,
            door,
            accepted,
            task,
        })
    }

    fn set_all(&self, fate: Fate) {
        let mut connections = lock(&self.connections);
        connections.retain(|c| !c.fate.is_closed());
        for c in connections.iter() {
            c.fate.send_replace(fate);
        }
    }

    /// Resets every open connection now (RST), as a restarted server or a NAT gateway that
    /// forgot them does.
    pub fn reset_all(&self) {
        self.set_all(Fate::Reset);
    }

    /// Resets every open connection when its client next sends on it (what a client finds
    /// after a freeze: the connection looks open until it is used).
    pub fn reset_on_next_use(&self) {
        self.set_all(Fate::ResetOnNextUse);
    }

    /// Makes every open connection silent both ways, without closing it (a dropped NAT
    /// mapping, a failed-over node): the client's reads wait forever.
    pub fn black_hole(&self) {
        self.set_all(Fate::BlackHole);
    }

    /// New connections: black-holed (`true`) or forwarded again (`false`).
    pub fn black_hole_new(&self, on: bool) {
        *lock(&self.door) = if on { Door::BlackHole } else { Door::Open };
    }

    /// New connections: reset at once (`true`) or forwarded again (`false`).
    pub fn refuse_new(&self, on: bool) {
        *lock(&self.door) = if on { Door::Reset } else { Door::Open };
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }
}

/// Resets `stream` (closes it with SO_LINGER 0: the peer gets RST).
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn relay(
    client: TcpStream,
    target: &str,
    mut fate: watch::Receiver<Fate>,
) -> anyhow::Result<()> {
    if *fate.borrow() == Fate::Reset {
        reset(client);
        return Ok(());
    }
    let server = TcpStream::connect(target).await?;
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let mut up = vec![0u8; 16 * 1024];
    let mut down = vec![0u8; 16 * 1024];
    loop {
        let current = *fate.borrow();
        if current == Fate::Reset {
            break;
        }
        tokio::select! {
            changed = fate.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            read = client_read.read(&mut up), if current != Fate::BlackHole => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                if current == Fate::ResetOnNextUse {
                    break;
                }
                server_write.write_all(&up[..n]).await?;
            }
            read = server_read.read(&mut down), if current == Fate::Pass => {
                let n = read?;
                if n == 0 {
                    return Ok(());
                }
                client_write.write_all(&down[..n]).await?;
            }
        }
    }
    // Reset both sides.
    if let (Ok(client), Ok(server)) = (
        client_read.reunite(client_write),
        server_read.reunite(server_write),
    ) {
        reset(client);
        reset(server);
    }
    Ok(())
}

/// One rule of the [`HttpFaultProxy`]: the next `times` requests whose target (the
/// `X-Amz-Target` header, e.g. `DynamoDB_20120810.GetItem`, `AmazonSQS.SendMessage`) contains
/// `operation` get `status` with `body` instead of reaching moto.
#[derive(Debug, Clone)]
pub struct HttpFault {
    /// A part of the `X-Amz-Target` header to match.
    pub operation: String,
    /// How many matching requests fail.
    pub times: u32,
    /// The status answered.
    pub status: u16,
    /// The JSON body answered.
    pub body: String,
}

impl HttpFault {
    /// DynamoDB throttling on `operation` (`GetItem`, `PutItem`, `UpdateItem`, ...), as AWS
    /// answers it: 400 with `ProvisionedThroughputExceededException`.
    pub fn dynamodb_throttled(operation: &str, times: u32) -> Self {
        Self {
            operation: format!("DynamoDB_20120810.{operation}"),
            times,
            status: 400,
            body: r#"{"__type":"com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException","message":"The level of configured provisioned throughput for the table was exceeded. Consider increasing your provisioning level with the UpdateTable API."}"#.to_owned(),
        }
    }

    /// An SQS internal error on `operation` (`SendMessage`, `ReceiveMessage`, ...): 500.
    pub fn sqs_internal_error(operation: &str, times: u32) -> Self {
        Self {
            operation: format!("AmazonSQS.{operation}"),
            times,
            status: 500,
            body: r#"{"__type":"com.amazonaws.sqs#InternalError","message":"We encountered an internal error. Please try again."}"#.to_owned(),
        }
    }
}

/// An HTTP/1.1 proxy on a free loopback port in front of `target` (moto), failing requests by
/// its [`HttpFault`] rules; stops when dropped.
pub struct HttpFaultProxy {
    /// `http://127.0.0.1:port`: what `AWS_ENDPOINT_URL` points at.
    pub url: String,
    rules: Arc<Mutex<VecDeque<HttpFault>>>,
    injected: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpFaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HttpFaultProxy {
    /// Starts a proxy to `target` (`http://host:port`).
    pub async fn start(target: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let rules: Arc<Mutex<VecDeque<HttpFault>>> = Arc::default();
        let injected = Arc::new(AtomicU64::new(0));
        let target: hyper::Uri = target.parse()?;
        let authority = target
            .authority()
            .map(|a| a.to_string())
            .ok_or_else(|| anyhow::anyhow!("{target} has no host"))?;
        let (r, i) = (rules.clone(), injected.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (r, i, authority) = (r.clone(), i.clone(), authority.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        forward(req, authority.clone(), r.clone(), i.clone())
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Self {
            url,
            rules,
            injected,
            task,
        })
    }

    /// Adds a rule (rules are tried in the order added).
    pub fn fail(&self, fault: HttpFault) {
        lock(&self.rules).push_back(fault);
    }

    /// Requests answered with an injected error so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }
}

async fn forward(
    request: hyper::Request<hyper::body::Incoming>,
    authority: String,
    rules: Arc<Mutex<VecDeque<HttpFault>>>,
    injected: Arc<AtomicU64>,
) -> Result<hyper::Response<Full<Bytes>>, std::convert::Infallible> {
    let target = request
        .headers()
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let fault = {
        let mut rules = lock(&rules);
        let hit = rules
            .iter_mut()
            .find(|r| r.times > 0 && target.contains(&r.operation));
        hit.map(|rule| {
            rule.times -= 1;
            (rule.status, rule.body.clone())
        })
    };
    if let Some((status, body)) = fault {
        injected.fetch_add(1, Ordering::Relaxed);
        let mut response = hyper::Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = hyper::StatusCode::from_u16(status).unwrap_or_default();
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/x-amz-json-1.0"),
        );
        return Ok(response);
    }
    let answer = async {
        let (parts, body) = request.into_parts();
        let body = body.collect().await?.to_bytes();
        let stream = TcpStream::connect(&authority).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let mut upstream = hyper::Request::from_parts(parts, Full::new(body));
        *upstream.uri_mut() = upstream
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .parse()?;
        let response = sender.send_request(upstream).await?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        anyhow::Ok(hyper::Response::from_parts(parts, Full::new(body)))
    };
    Ok(answer.await.unwrap_or_else(|e| {
        let mut response = hyper::Response::new(Full::new(Bytes::from(e.to_string())));
        *response.status_mut() = hyper::StatusCode::BAD_GATEWAY;
        response
    }))
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status();
}

/// Freezes a process (`SIGSTOP`), as Lambda freezes a function between invocations.
pub fn freeze(pid: u32) {
    signal(pid, "STOP");
}

/// Thaws a frozen process (`SIGCONT`).
pub fn thaw(pid: u32) {
    signal(pid, "CONT");
}

/// Kills a process at once (`SIGKILL`), as a crash or a timeout ends a function.
pub fn kill(pid: u32) {
    signal(pid, "KILL");
}
