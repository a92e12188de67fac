//! Redis adapters (ElastiCache in production).
//!
//! Responses live at `<prefix><request_id>` as JSON, written with `SET NX EX` in one command, so
//! the first answer wins and expires by TTL. Claims live at `<prefix>#claim:<request_id>` (ids
//! never contain `#`, so the two key spaces cannot collide). A stored answer is announced on
//! the channel `<prefix>#done:<request_id>`; waiters subscribe through one shared connection
//! per process and re-read the key after subscribing, so an answer stored in between is not
//! missed. Sessions are hashes `{version, data}` at `<prefix><session_id>`, saved by a script
//! that checks the version first.

use super::{CALL_TIMEOUT, with_timeout};
use crate::config::RedisSettings;
use crate::ports::{
    Backend, ClaimOutcome, PortError, ResponseRecord, ResponseStore, SessionStore, StoredSession,
};
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, OnceCell, watch};
use tokio::time::Instant;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// While waiting, the key is re-read this often even without a notification, in case the
/// notification connection is down.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a waiter gives the notification connection to come up before reading.
const SUBSCRIBE_GRACE: Duration = Duration::from_millis(300);

fn unavailable(e: redis::RedisError) -> PortError {
    PortError::unavailable(Backend::Redis, e)
}

/// A lazily connected, self-reconnecting Redis connection.
struct Connection {
    client: redis::Client,
    manager: OnceCell<ConnectionManager>,
}

impl Connection {
    fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        let client = redis::Client::open(settings.url.expose()).map_err(|e| {
            PortError::Rejected(format!(
                "Redis URL {} is invalid: {}",
                settings.url.redacted(),
                e.detail().unwrap_or("malformed")
            ))
        })?;
        Ok(Self {
            client,
            manager: OnceCell::new(),
        })
    }

    async fn get(&self) -> Result<ConnectionManager, PortError> {
        let manager = self
            .manager
            .get_or_try_init(|| async {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(1)
                    .set_max_delay(Duration::from_millis(500));
                with_timeout(Backend::Redis, CALL_TIMEOUT, async {
                    ConnectionManager::new_with_config(self.client.clone(), config)
                        .await
                        .map_err(unavailable)
                })
                .await
            })
            .await?;
        Ok(manager.clone())
    }

    async fn query<T: redis::FromRedisValue + Send>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, PortError> {
        let mut conn = self.get().await?;
        with_timeout(Backend::Redis, CALL_TIMEOUT, async {
            cmd.query_async(&mut conn).await.map_err(unavailable)
        })
        .await
    }

    async fn query_pipe<T: redis::FromRedisValue + Send>(
        &self,
        pipe: &redis::Pipeline,
    ) -> Result<T, PortError> {
        let mut conn = self.get().await?;
        with_timeout(Backend::Redis, CALL_TIMEOUT, async {
            pipe.query_async(&mut conn).await.map_err(unavailable)
        })
        .await
    }
}

/// Response store on Redis.
pub struct RedisResponseStore {
    conn: Connection,
    prefix: String,
    ttl: u64,
    notifications: Arc<Notifications>,
}

impl RedisResponseStore {
    /// A store for these settings; connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        Ok(Self {
            conn: Connection::new(settings)?,
            prefix: settings.prefix().to_owned(),
            ttl: settings.ttl,
            notifications: Arc::new(Notifications::default()),
        })
    }

    fn key(&self, request_id: &str) -> String {
        format!("{}{request_id}", self.prefix)
    }

    fn claim_key(&self, request_id: &str) -> String {
        format!("{}#claim:{request_id}", self.prefix)
    }

    fn channel_prefix(&self) -> String {
        format!("{}#done:", self.prefix)
    }

    fn decode(&self, text: &str) -> Result<ResponseRecord, PortError> {
        serde_json::from_str(text).map_err(|e| PortError::Corrupt {
            backend: Backend::Redis,
            detail: format!("response record: {e}"),
        })
    }
}

#[async_trait]
impl ResponseStore for RedisResponseStore {
    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError> {
        let json = serde_json::to_string(record)
            .map_err(|e| PortError::Rejected(format!("response is not serializable: {e}")))?;
        let mut set = redis::cmd("SET");
        set.arg(self.key(&record.request_id)).arg(json).arg("NX");
        if self.ttl > 0 {
            set.arg("EX").arg(self.ttl);
        }
        let mut pipe = redis::pipe();
        pipe.add_command(set).ignore();
        pipe.cmd("PUBLISH")
            .arg(format!("{}{}", self.channel_prefix(), record.request_id))
            .arg(1)
            .ignore();
        self.conn.query_pipe::<()>(&pipe).await
    }

    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError> {
        let text: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.key(request_id)))
            .await?;
        text.map(|t| self.decode(&t)).transpose()
    }

    async fn wait_for(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError> {
        let deadline = Instant::now() + timeout;
        let waiter = self.notifications.register(request_id);
        self.notifications
            .ensure_listening(&self.conn.client, &self.prefix, self.channel_prefix());
        self.notifications
            .until_subscribed(SUBSCRIBE_GRACE.min(timeout))
            .await;
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(record) = self.get(request_id).await? {
                return Ok(Some(record));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + FALLBACK_POLL)) => {}
            }
        }
    }

    async fn claim(
        &self,
        request_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        let answered = |n: i64| n > 0;
        let exists = redis::cmd("EXISTS").arg(self.key(request_id)).clone();
        if answered(self.conn.query(&exists).await?) {
            return Ok(ClaimOutcome::AlreadyAnswered);
        }
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let set: Option<String> = self
            .conn
            .query(
                redis::cmd("SET")
                    .arg(self.claim_key(request_id))
                    .arg(owner)
                    .arg("NX")
                    .arg("PX")
                    .arg(ttl_ms),
            )
            .await?;
        if set.is_none() {
            let holder: Option<String> = self
                .conn
                .query(redis::cmd("GET").arg(self.claim_key(request_id)))
                .await?;
            if holder.as_deref() != Some(owner) {
                return Ok(ClaimOutcome::HeldByOther);
            }
        }
        // The answer may have been stored between the check and the claim.
        if answered(self.conn.query(&exists).await?) {
            self.release(request_id, owner).await?;
            return Ok(ClaimOutcome::AlreadyAnswered);
        }
        Ok(ClaimOutcome::Acquired)
    }

    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError> {
        const RELEASE: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                               return redis.call('DEL', KEYS[1]) else return 0 end";
        self.conn
            .query::<i64>(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(self.claim_key(request_id))
                    .arg(owner),
            )
            .await
            .map(drop)
    }
}

struct Waiter {
    notify: Arc<Notify>,
    id: String,
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        // The map holds one reference and this waiter another: the last one out removes it.
        if waiters
            .get(&self.id)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            waiters.remove(&self.id);
        }
    }
}

/// One pattern subscription per store, fanning "stored" announcements out to waiters.
struct Notifications {
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    started: AtomicBool,
    subscribed: watch::Sender<bool>,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            waiters: Arc::default(),
            started: AtomicBool::new(false),
            subscribed: watch::Sender::new(false),
        }
    }
}

impl Notifications {
    fn register(&self, id: &str) -> Waiter {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let notify = waiters.entry(id.to_owned()).or_default().clone();
        Waiter {
            notify,
            id: id.to_owned(),
            waiters: self.waiters.clone(),
        }
    }

    fn ensure_listening(self: &Arc<Self>, client: &redis::Client, prefix: &str, channels: String) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let pattern = format!("{}#done:*", escape_glob(prefix));
        let this = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.listen(&client, &pattern, &channels).await {
                    tracing::warn!(error = %e, "Redis notification connection failed; retrying");
                }
                this.subscribed.send_replace(false);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    async fn listen(
        &self,
        client: &redis::Client,
        pattern: &str,
        channels: &str,
    ) -> Result<(), PortError> {
        use futures_util::StreamExt;
        let mut pubsub = with_timeout(Backend::Redis, CONNECT_TIMEOUT, async {
            client.get_async_pubsub().await.map_err(unavailable)
        })
        .await?;
        pubsub.psubscribe(pattern).await.map_err(unavailable)?;
        self.subscribed.send_replace(true);
        let mut messages = pubsub.on_message();
        while let Some(message) = messages.next().await {
            let channel = message.get_channel_name();
            if let Some(id) = channel.strip_prefix(channels) {
                let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(notify) = waiters.get(id) {
                    notify.notify_waiters();
                }
            }
        }
        Err(PortError::unavailable(
            Backend::Redis,
            "notification connection closed",
        ))
    }

    async fn until_subscribed(&self, grace: Duration) {
        let mut rx = self.subscribed.subscribe();
        let _ = tokio::time::timeout(grace, rx.wait_for(|s| *s)).await;
    }
}

fn escape_glob(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Session store on Redis.
pub struct RedisSessionStore {
    conn: Connection,
    prefix: String,
    ttl: u64,
}

impl RedisSessionStore {
    /// A store for these settings; connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        Ok(Self {
            conn: Connection::new(settings)?,
            prefix: settings.prefix().to_owned(),
            ttl: settings.ttl,
        })
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, PortError> {
        let (version, data): (Option<u64>, Option<String>) = self
            .conn
            .query(
                redis::cmd("HMGET")
                    .arg(format!("{}{session_id}", self.prefix))
                    .arg("version")
                    .arg("data"),
            )
            .await?;
        let Some(data) = data else { return Ok(None) };
        let mut session: StoredSession =
            serde_json::from_str(&data).map_err(|e| PortError::Corrupt {
                backend: Backend::Redis,
                detail: format!("session {session_id}: {e}"),
            })?;
        session.version = version.unwrap_or_default();
        Ok(Some(session))
    }

    async fn save(&self, session_id: &str, session: &StoredSession) -> Result<u64, PortError> {
        const SAVE: &str = "local v = redis.call('HGET', KEYS[1], 'version') or '0' \
            if v ~= ARGV[1] then return -1 end \
            local nv = tonumber(v) + 1 \
            redis.call('HSET', KEYS[1], 'version', nv, 'data', ARGV[2]) \
            if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[3]) end \
            return nv";
        let data = serde_json::to_string(session)
            .map_err(|e| PortError::Rejected(format!("session is not serializable: {e}")))?;
        let version: i64 = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(SAVE)
                    .arg(1)
                    .arg(format!("{}{session_id}", self.prefix))
                    .arg(session.version)
                    .arg(data)
                    .arg(self.ttl),
            )
            .await?;
        u64::try_from(version).map_err(|_| PortError::Conflict {
            session_id: session_id.to_owned(),
        })
    }
}
