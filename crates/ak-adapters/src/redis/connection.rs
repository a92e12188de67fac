//! The connection to a Redis server as AWS runs it: plain or TLS (`rediss://`, with the
//! platform's roots and an optional private CA), with the URL's password or ElastiCache IAM
//! tokens, to one endpoint (a node, or ElastiCache Serverless) or through a cluster client
//! (`cluster: true`). Connected on first use, shared by the stores of one URL in a process, and
//! replaced when it breaks (see the parent module).

use super::iam::IamAuth;
use crate::{AwsConfig, CALL_TIMEOUT, with_timeout};
use ak_core::config::{RedisAuth, RedisSettings};
use ak_core::ports::{Backend, PortError};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How long opening a connection may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a command may wait for its answer before its connection counts as dead (a silently
/// dropped connection — a NAT gateway's idle timeout, a failover — answers nothing, ever).
pub(super) const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

pub(super) fn unavailable(e: redis::RedisError) -> PortError {
    let text = e.to_string();
    // A certificate that is not trusted or does not match is the configuration's fault, not a
    // passing outage: say so.
    if text.contains("invalid peer certificate") || text.contains("certificate") && e.is_io_error()
    {
        return PortError::unavailable(
            Backend::Redis,
            format!(
                "TLS: the server's certificate was refused ({text}); check the URL's host and redis.ca_file"
            ),
        );
    }
    PortError::unavailable(Backend::Redis, e)
}

/// Whether `e` says the connection it came on is unusable, so a fresh one may succeed: it
/// broke or timed out, or the server is (re)loading or turned into a replica (a failover).
fn connection_failed(e: &redis::RedisError) -> bool {
    e.is_connection_dropped()
        || e.is_io_error()
        || e.is_timeout()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
        || matches!(e.code(), Some("READONLY" | "LOADING" | "MASTERDOWN"))
}

/// A live connection: to one endpoint, or through the cluster client.
#[derive(Clone)]
pub(super) enum Link {
    /// One endpoint (a node, a Serverless cache).
    Single(ConnectionManager),
    /// A cluster, following its slots.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Link {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// A lazily connected Redis connection, replaced when it fails.
pub(super) struct Connection {
    info: redis::ConnectionInfo,
    /// The trust roots of a `rediss://` URL with a private CA (the platform's and the CA's, in
    /// PEM), read on first connect.
    ca_file: Option<String>,
    tls: bool,
    iam: Option<Arc<IamAuth>>,
    cluster: bool,
    /// Where the server is, for messages (no credentials).
    pub(super) host: String,
    current: tokio::sync::Mutex<Option<(u64, Link)>>,
    generation: AtomicU64,
    /// The newest generation given up: commands still waiting on it stop waiting at once.
    replaced: watch::Sender<u64>,
}

impl Connection {
    /// The process's connection to the server of `settings` (one per URL and authentication:
    /// the response store and the session store on one Redis share it, so a connection that
    /// dies is found and replaced once, and a cache's connection limit is spent once).
    pub(super) fn shared(
        settings: &RedisSettings,
        aws: &AwsConfig,
    ) -> Result<Arc<Self>, PortError> {
        static SHARED: std::sync::OnceLock<Mutex<HashMap<String, Arc<Connection>>>> =
            std::sync::OnceLock::new();
        let mut shared = lock(SHARED.get_or_init(Mutex::default));
        let key = format!(
            "{}|{:?}|{:?}|{:?}|{}",
            settings.url.expose(),
            settings.ca_file,
            settings.auth,
            (&settings.iam.user_id, &settings.iam.cache_name),
            settings.cluster
        );
        if let Some(connection) = shared.get(&key) {
            return Ok(connection.clone());
        }
        let connection = Arc::new(Self::new(settings, aws)?);
        shared.insert(key, connection.clone());
        Ok(connection)
    }

    /// A connection of its own authenticating with `iam` (not shared; tests of authentication).
    pub(super) fn with_iam(settings: &RedisSettings, iam: Arc<IamAuth>) -> Result<Self, PortError> {
        let mut connection = Self::new(
            &RedisSettings {
                auth: RedisAuth::None,
                ..settings.clone()
            },
            &AwsConfig::default(),
        )?;
        connection.iam = Some(iam);
        Ok(connection)
    }

    fn new(settings: &RedisSettings, aws: &AwsConfig) -> Result<Self, PortError> {
        // rustls picks the process's crypto provider on the first handshake: ring, installed
        // before any TLS connection exists, so nothing panics choosing one.
        ak_core::https::install_crypto_provider();
        let invalid = |detail: &str| {
            PortError::Rejected(format!(
                "Redis URL {} is invalid: {detail}",
                settings.url.redacted()
            ))
        };
        let info = redis::IntoConnectionInfo::into_connection_info(settings.url.expose())
            .map_err(|e| invalid(e.detail().unwrap_or("malformed")))?;
        let (host, tls) = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => (format!("{host}:{port}"), false),
            redis::ConnectionAddr::TcpTls { host, port, .. } => (format!("{host}:{port}"), true),
            other => (other.to_string(), false),
        };
        let iam = match settings.auth {
            RedisAuth::Iam => Some(Arc::new(
                IamAuth::new(&settings.iam, aws.clone())
                    .map_err(|e| PortError::Rejected(format!("Redis IAM authentication: {e}")))?,
            )),
            RedisAuth::None => None,
        };
        Ok(Self {
            info,
            ca_file: settings.ca_file.clone(),
            tls,
            iam,
            cluster: settings.cluster,
            host,
            current: tokio::sync::Mutex::new(None),
            generation: AtomicU64::new(0),
            replaced: watch::Sender::new(0),
        })
    }

    /// The trust roots for TLS when a private CA is configured: the platform's roots (from
    /// `SSL_CERT_FILE`/`SSL_CERT_DIR` when set, else the system's store) and the CA file's, in
    /// PEM. `None` without a CA file: the client then loads the platform's roots itself.
    fn roots(&self) -> Result<Option<Vec<u8>>, PortError> {
        let Some(file) = &self.ca_file else {
            return Ok(None);
        };
        use base64::Engine;
        let mut pem = String::new();
        for cert in rustls_native_certs::load_native_certs().certs {
            let text = base64::engine::general_purpose::STANDARD.encode(cert.as_ref());
            pem.push_str("-----BEGIN CERTIFICATE-----\n");
            for line in text.as_bytes().chunks(64) {
                pem.push_str(&String::from_utf8_lossy(line));
                pem.push('\n');
            }
            pem.push_str("-----END CERTIFICATE-----\n");
        }
        let own = std::fs::read_to_string(file).map_err(|e| PortError::Misconfigured {
            backend: Backend::Redis,
            detail: format!("redis.ca_file {file} cannot be read: {e}"),
        })?;
        pem.push_str(&own);
        Ok(Some(pem.into_bytes()))
    }

    /// The connection info to connect with now: the URL's, with the current IAM token as the
    /// password when IAM authentication is on.
    async fn info_now(&self) -> Result<redis::ConnectionInfo, PortError> {
        let Some(iam) = &self.iam else {
            return Ok(self.info.clone());
        };
        let token = iam.token().await?;
        let redis_settings = self
            .info
            .redis_settings()
            .clone()
            .set_username(iam.user_id())
            .set_password(token);
        Ok(self.info.clone().set_redis_settings(redis_settings))
    }

    /// A client for one connection (the notification connection), with TLS roots and the
    /// current credentials.
    pub(super) async fn client(&self) -> Result<redis::Client, PortError> {
        let info = self.info_now().await?;
        let client = match self.roots()? {
            Some(root_cert) if self.tls => redis::Client::build_with_tls(
                info,
                redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                },
            ),
            _ => redis::Client::open(info),
        };
        client.map_err(unavailable)
    }

    async fn connect(&self) -> Result<Link, PortError> {
        if self.cluster {
            let mut builder = redis::cluster::ClusterClient::builder(vec![self.info.clone()])
                .connection_timeout(CONNECT_TIMEOUT)
                .response_timeout(RESPONSE_TIMEOUT)
                .retries(1);
            if let Some(root_cert) = self.roots()? {
                builder = builder.certs(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(root_cert),
                });
            }
            if let Some(iam) = &self.iam {
                builder = builder
                    .username(iam.user_id())
                    .set_credentials_provider(iam.credentials());
            }
            let client = builder.build().map_err(unavailable)?;
            return with_timeout(Backend::Redis, CALL_TIMEOUT, async {
                client.get_async_connection().await.map_err(unavailable)
            })
            .await
            .map(Link::Cluster);
        }
        let mut config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        if let Some(iam) = &self.iam {
            // New connections authenticate with the newest token; live ones again whenever
            // it is renewed, which also resets ElastiCache's 12-hour limit.
            config = config.set_credentials_provider(iam.credentials());
        }
        let client = self.client().await?;
        with_timeout(Backend::Redis, CALL_TIMEOUT, async {
            ConnectionManager::new_with_config(client, config)
                .await
                .map_err(unavailable)
        })
        .await
        .map(Link::Single)
    }

    /// The live connection and its generation, connecting when there is none.
    async fn get(&self) -> Result<(u64, Link), PortError> {
        let mut current = self.current.lock().await;
        if let Some((generation, link)) = current.as_ref() {
            return Ok((*generation, link.clone()));
        }
        let link = self.connect().await.inspect_err(|e| {
            tracing::warn!(host = %self.host, error = %e, "cannot connect to Redis");
        })?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        *current = Some((generation, link.clone()));
        Ok((generation, link))
    }

    /// Drops the connection of `generation` (if it is still the current one): the next use
    /// connects afresh.
    async fn replace(&self, generation: u64) {
        let mut current = self.current.lock().await;
        if current.as_ref().is_some_and(|(g, _)| *g == generation) {
            *current = None;
        }
        self.replaced.send_if_modified(|newest| {
            let newer = generation > *newest;
            *newest = (*newest).max(generation);
            newer
        });
    }

    /// Runs `call` on the connection; when the connection turns out broken, once more on a
    /// fresh one. Both tries together take at most [`CALL_TIMEOUT`]. A call still waiting on a
    /// connection that another call found broken stops waiting and tries again at once, so a
    /// dead connection costs the calls in flight one response timeout, not one each.
    async fn run<T, F, Fut>(&self, call: F) -> Result<T, PortError>
    where
        F: Fn(Link) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + CALL_TIMEOUT;
        let mut tried = false;
        loop {
            let (generation, conn) = self.get().await?;
            let left = deadline.saturating_duration_since(Instant::now());
            let mut replaced = self.replaced.subscribe();
            let result = tokio::select! {
                result = tokio::time::timeout(left.min(RESPONSE_TIMEOUT * 2), call(conn)) => result,
                _ = replaced.wait_for(|newest| *newest >= generation) => {
                    Ok(Err(redis::RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::ConnectionAborted,
                        "its connection was found broken",
                    ))))
                }
            };
            let error = match result {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(e)) if !connection_failed(&e) => return Err(unavailable(e)),
                Ok(Err(e)) => unavailable(e).to_string(),
                Err(_) => format!(
                    "no answer within {} ms",
                    left.min(RESPONSE_TIMEOUT * 2).as_millis()
                ),
            };
            self.replace(generation).await;
            if tried || Instant::now() >= deadline {
                return Err(PortError::unavailable(Backend::Redis, error));
            }
            tracing::info!(host = %self.host, error = %error, "a Redis connection failed; trying again on a fresh one");
            tried = true;
        }
    }

    pub(super) async fn query<T: redis::FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, PortError> {
        self.run(|mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Sends the commands of `pipe` together (one round trip). Through the cluster client a
    /// pipeline goes to one node, so its keys must share a slot (every pipeline here is about
    /// one request or one session, whose keys share a hash tag, plus `PUBLISH`, which has no
    /// key and reaches every node's subscribers).
    pub(super) async fn query_pipe<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, PortError> {
        self.run(|mut conn| async move { pipe.query_async(&mut conn).await })
            .await
    }
}
