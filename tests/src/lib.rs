//! Harness for the integration tests: the endpoints of the services `scripts/test.sh` starts on
//! 127.0.0.1, and names unique to each test so tests run in parallel without sharing state.
//!
//! [`model_server::ScriptedModel`] is the OpenAI-compatible model the tests talk to: a scripted
//! server each test starts for itself on 127.0.0.1, recording what it receives.
//!
//! `scripts/test.sh` exports `TEST_REDIS_URL` and `AWS_ENDPOINT_URL` (moto, serving SQS and
//! DynamoDB) with dummy credentials. Run the suite through it; `cargo test` alone fails with a
//! message saying so, rather than skipping.

pub mod clients;
pub mod converse_server;
pub mod event_source;
pub mod faults;
pub mod gateway;
pub mod local;
pub mod model_server;
pub mod otlp;
pub mod runtime_api;
pub mod soak;

use std::time::Duration;

/// SQS records as the JSON a Lambda SQS event carries (what the runner and response handler
/// take).
pub fn records_json(records: Vec<aws_lambda_events::sqs::SqsMessage>) -> Vec<serde_json::Value> {
    records
        .iter()
        .map(|r| serde_json::to_value(r).unwrap_or_default())
        .collect()
}

/// A variable `scripts/test.sh` sets, or a panic explaining how to get it.
fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: run the integration tests through scripts/test.sh, \
             which starts Redis and moto on 127.0.0.1 and exports their endpoints"
        ),
    }
}

/// The repository's `config.yaml` (what `AK_CONFIG_PATH_OVERRIDE` points a function at).
pub fn repo_config() -> String {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string()
}

/// The Redis server for this run.
pub fn redis_url() -> String {
    required_env("TEST_REDIS_URL")
}

/// The MCP server of the Python SDK that `scripts/test.sh` starts (`tests/mcp/tools_server.py`:
/// `add`, `slow_echo`).
pub fn mcp_url() -> String {
    required_env("TEST_MCP_URL")
}

/// The Python with the MCP SDK (the test venv's), for MCP servers and clients of the tests.
pub fn python() -> String {
    required_env("TEST_PYTHON")
}

/// The AWS endpoint (moto) for this run; refuses anything but loopback, so no test can reach a
/// real AWS account.
pub fn aws_endpoint() -> String {
    let url = required_env("AWS_ENDPOINT_URL");
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    assert!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "AWS_ENDPOINT_URL={url} is not on loopback; the tests only talk to local emulators"
    );
    url
}

/// A name no other test uses: `<prefix>-<8 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// An SQS client for moto, configured the way the functions configure theirs.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_endpoint();
    aws_sdk_sqs::Client::new(&ak_adapters::aws::load_sdk_config().await)
}

/// Creates a standard SQS queue on moto named `<prefix>-<8 hex digits>`, with this visibility
/// timeout in seconds (SQS's 30 when `None`), and returns its URL.
pub async fn create_queue(prefix: &str, visibility_secs: Option<u32>) -> anyhow::Result<String> {
    let mut request = sqs_client()
        .await
        .create_queue()
        .queue_name(unique_name(prefix));
    if let Some(secs) = visibility_secs {
        request = request.attributes(
            aws_sdk_sqs::types::QueueAttributeName::VisibilityTimeout,
            secs.to_string(),
        );
    }
    request
        .send()
        .await?
        .queue_url
        .ok_or_else(|| anyhow::anyhow!("moto returned no queue URL"))
}

/// A multiplexed Redis connection with a short response timeout.
pub async fn redis_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}

/// A DynamoDB client for moto.
pub async fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    aws_endpoint();
    aws_sdk_dynamodb::Client::new(&ak_adapters::aws::load_sdk_config().await)
}

/// Creates a response table (partition key `request_id`) the way the Terraform module does.
pub async fn create_response_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> anyhow::Result<()> {
    create_table(client, name, &[("request_id", KeyType::Hash)]).await
}

/// Creates a session table (partition `session_id`, sort `key`).
pub async fn create_session_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
) -> anyhow::Result<()> {
    create_table(
        client,
        name,
        &[("session_id", KeyType::Hash), ("key", KeyType::Range)],
    )
    .await
}

use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, KeySchemaElement, KeyType, ScalarAttributeType,
};

async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    keys: &[(&str, KeyType)],
) -> anyhow::Result<()> {
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest);
    for (attr, kind) in keys {
        request = request
            .attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(*attr)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            )
            .key_schema(
                KeySchemaElement::builder()
                    .attribute_name(*attr)
                    .key_type(kind.clone())
                    .build()?,
            );
    }
    request.send().await?;
    Ok(())
}

/// Redis settings on this run's server with a key prefix of their own.
pub fn redis_settings(ttl: u64) -> ak_core::config::RedisSettings {
    ak_core::config::RedisSettings {
        url: ak_core::secret::SecretUrl::new(redis_url()),
        prefix: Some(format!("{}:", unique_name("t"))),
        ttl,
        ..ak_core::config::RedisSettings::default()
    }
}

/// Redis settings on this run's TLS-only server (`rediss://`, the test CA in `ca_file`), with
/// a key prefix of their own.
pub fn redis_tls_settings(ttl: u64) -> ak_core::config::RedisSettings {
    ak_core::config::RedisSettings {
        url: ak_core::secret::SecretUrl::new(required_env("TEST_REDIS_TLS_URL")),
        ca_file: Some(required_env("TEST_REDIS_TLS_CA")),
        ..redis_settings(ttl)
    }
}

/// Redis settings on this run's cluster-mode server (one node owning every slot, without
/// `PSUBSCRIBE`, `PUNSUBSCRIBE`, `CONFIG` and `KEYS`, as ElastiCache Serverless), reached with a
/// plain client as Serverless is, with a key prefix of their own.
pub fn redis_cluster_settings(ttl: u64) -> ak_core::config::RedisSettings {
    ak_core::config::RedisSettings {
        url: ak_core::secret::SecretUrl::new(required_env("TEST_REDIS_CLUSTER_URL")),
        ..redis_settings(ttl)
    }
}

/// Redis settings on this run's three-node cluster (node-based cluster mode with several
/// shards), through the cluster client, with a key prefix of their own.
pub fn redis_cluster3_settings(ttl: u64) -> ak_core::config::RedisSettings {
    ak_core::config::RedisSettings {
        url: ak_core::secret::SecretUrl::new(required_env("TEST_REDIS_CLUSTER3_URL")),
        cluster: true,
        ..redis_settings(ttl)
    }
}

/// The file of the CA that signed nothing of this run (a wrong CA must be refused).
pub fn redis_wrong_ca() -> String {
    required_env("TEST_REDIS_TLS_WRONG_CA")
}

/// A `redis-server` of a test's own, for tests that stop it. Killed on drop.
pub struct PrivateRedis {
    child: std::process::Child,
    /// Its URL.
    pub url: String,
    dir: std::path::PathBuf,
}

impl PrivateRedis {
    /// Starts one on a free loopback port and waits until it answers.
    pub async fn start() -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        Self::start_on(port).await
    }

    /// Starts it again on the same port (after [`PrivateRedis::stop`]), empty.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let port: u16 = self.url.rsplit(':').next().unwrap_or_default().parse()?;
        self.stop();
        let fresh = Self::start_on(port).await?;
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    async fn start_on(port: u16) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique_name("ak-redis"));
        std::fs::create_dir_all(&dir)?;
        let child = std::process::Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir)
            .stdout(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start redis-server (is it installed? scripts/test.sh installs it): {e}"
                )
            })?;
        let server = PrivateRedis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
            dir,
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("redis-server did not start on port {port}")
    }

    /// Stops it (SIGKILL, as a crash would).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Sends one HTTP/1.1 request over a plain socket to `base_url` (`http://host:port[/prefix]`) and
/// returns the status and the JSON body (`Null` if the body is not JSON).
pub async fn http_json(
    base_url: &str,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, serde_json::Value)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = base_url.trim_start_matches("http://");
    let authority = rest.split('/').next().unwrap_or_default();
    let prefix = &rest[authority.len()..];
    let mut stream = tokio::net::TcpStream::connect(authority).await?;
    let payload = body.map(ToString::to_string).unwrap_or_default();
    let request = format!(
        "{method} {prefix}{path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{payload}",
        payload.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw);
    let status = raw.split(' ').nth(1).unwrap_or_default().parse()?;
    let json = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    Ok((
        status,
        serde_json::from_str(json).unwrap_or(serde_json::Value::Null),
    ))
}

/// A streamed HTTP response being read: its status and headers, then its body chunk by chunk.
/// Dropping it closes the connection, as a client that goes away does.
pub struct Streaming {
    /// HTTP status.
    pub status: u16,
    /// Response headers.
    pub headers: hyper::HeaderMap,
    body: hyper::body::Incoming,
    _connection: tokio::task::JoinHandle<()>,
}

impl Streaming {
    /// The next body chunk and when it arrived; `None` at the end.
    pub async fn next_chunk(&mut self) -> Option<(std::time::Instant, String)> {
        use http_body_util::BodyExt;
        loop {
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                return Some((
                    std::time::Instant::now(),
                    String::from_utf8_lossy(&data).into_owned(),
                ));
            }
        }
    }

    /// Every remaining chunk with its arrival time.
    pub async fn chunks(mut self) -> Vec<(std::time::Instant, String)> {
        let mut out = Vec::new();
        while let Some(chunk) = self.next_chunk().await {
            out.push(chunk);
        }
        out
    }
}

/// POSTs `body` to `url` (`http://host:port/path`) with `Accept: accept` and returns the
/// response as it streams.
pub async fn post_streaming(
    url: &str,
    body: &serde_json::Value,
    accept: &str,
) -> anyhow::Result<Streaming> {
    send_streaming(
        hyper::Method::POST,
        url,
        Some(body),
        &[("content-type", "application/json"), ("accept", accept)],
    )
    .await
}

/// GETs `url` (path and query) with these headers and returns the response as it streams.
pub async fn get_streaming(url: &str, headers: &[(&str, &str)]) -> anyhow::Result<Streaming> {
    send_streaming(hyper::Method::GET, url, None, headers).await
}

/// Sends one request (`method` as text, these headers, a JSON body) and reads the whole
/// response: status, headers and body text.
pub async fn http_raw(
    url: &str,
    method: &str,
    headers: &[(String, String)],
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, hyper::HeaderMap, String)> {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    let response = send_streaming(method.parse()?, url, body, &headers).await?;
    let (status, head) = (response.status, response.headers.clone());
    let text: String = response
        .chunks()
        .await
        .into_iter()
        .map(|(_, c)| c)
        .collect();
    Ok((status, head, text))
}

async fn send_streaming(
    method: hyper::Method,
    url: &str,
    body: Option<&serde_json::Value>,
    headers: &[(&str, &str)],
) -> anyhow::Result<Streaming> {
    let uri: hyper::Uri = url.parse()?;
    let authority = uri
        .authority()
        .ok_or_else(|| anyhow::anyhow!("{url} has no host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str()).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let task = tokio::spawn(async move {
        let _ = connection.await;
    });
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, authority.as_str());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = body.map(ToString::to_string).unwrap_or_default();
    let request = request.body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    Ok(Streaming {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
        _connection: task,
    })
}
