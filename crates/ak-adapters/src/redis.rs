//! Redis adapters (ElastiCache in production).
//!
//! Responses live at `<prefix><request_id>` as JSON, written with `SET NX EX` in one command, so
//! the first answer wins and expires by TTL. Claims live at `<prefix>#claim:<request_id>` and
//! request registrations (the fingerprint of the request an id was first used for) at
//! `<prefix>#req:<request_id>` (ids never contain `#`, so the key spaces cannot collide). A
//! stored answer is announced on the channel `<prefix>#done:<request_id>`; waiters subscribe
//! through one shared connection per process and re-read the key after subscribing, so an
//! answer stored in between is not missed.
//!
//! Sessions: a list of turns (JSON, oldest first) at `<prefix>{<session_id>}:turns` and a hash
//! request id → turn number at `<prefix>{<session_id>}:requests`, appended by one script that
//! refuses a taken turn number or a request id already present; both keys share a hash tag, so
//! the script also works on a Redis cluster. Loads read the list's length and its newest turns.

use crate::{CALL_TIMEOUT, with_timeout};
use ak_core::config::RedisSettings;
use ak_core::ports::{
    Appended, Backend, ClaimOutcome, HistoryLimits, LoggedEvent, PortError, Registration,
    ResponseRecord, ResponseStore, SessionHistory, SessionStore, Turn,
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
    stored: Arc<Notifications>,
    logged: Arc<Notifications>,
}

impl RedisResponseStore {
    /// A store for these settings; connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        let prefix = settings.prefix().to_owned();
        Ok(Self {
            conn: Connection::new(settings)?,
            stored: Arc::new(Notifications::new(format!("{prefix}#done:"))),
            logged: Arc::new(Notifications::new(format!("{prefix}#evt:"))),
            prefix,
            ttl: settings.ttl,
        })
    }

    fn events_key(&self, request_id: &str) -> String {
        format!("{}#events:{request_id}", self.prefix)
    }

    /// The registration as stored: `{"fingerprint", "user_id"}` JSON, or (as written before
    /// event logs existed) the bare fingerprint of an anonymous request.
    fn registration(text: &str) -> (String, Option<String>) {
        #[derive(serde::Deserialize)]
        struct Stored {
            fingerprint: String,
            user_id: Option<String>,
        }
        match serde_json::from_str::<Stored>(text) {
            Ok(stored) => (stored.fingerprint, stored.user_id),
            Err(_) => (text.to_owned(), None),
        }
    }

    /// Log entries (`[id, [field, value, ...]]`) as events; ids are `0-<seq>`.
    fn logged_events(request_id: &str, entries: Vec<(String, Vec<String>)>) -> Vec<LoggedEvent> {
        entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let seq = id.strip_prefix("0-")?.parse().ok()?;
                let text = fields.get(1)?;
                let event = LoggedEvent::from_json(seq, text);
                if event.is_none() {
                    tracing::warn!(request_id, seq, "an unreadable event in the log; skipped");
                }
                event
            })
            .collect()
    }

    fn key(&self, request_id: &str) -> String {
        format!("{}{request_id}", self.prefix)
    }

    fn claim_key(&self, request_id: &str) -> String {
        format!("{}#claim:{request_id}", self.prefix)
    }

    fn registration_key(&self, request_id: &str) -> String {
        format!("{}#req:{request_id}", self.prefix)
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
    async fn register(
        &self,
        request_id: &str,
        fingerprint: &str,
        user_id: Option<&str>,
    ) -> Result<Registration, PortError> {
        let value = serde_json::json!({"fingerprint": fingerprint, "user_id": user_id}).to_string();
        // SET NX GET would do, but only from Redis 7.0 on; this works on 6.x too.
        const REGISTER: &str = "local known = redis.call('GET', KEYS[1]) \
            if known then return known end \
            if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
            else redis.call('SET', KEYS[1], ARGV[1]) end \
            return false";
        let known: Option<String> = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(REGISTER)
                    .arg(1)
                    .arg(self.registration_key(request_id))
                    .arg(value)
                    .arg(self.ttl),
            )
            .await?;
        match known {
            None => {
                // A fresh start: what an earlier use of the id left (an answer stored later than
                // its registration, a claim outliving a short TTL) belongs to another request.
                let mut pipe = redis::pipe();
                pipe.cmd("DEL").arg(self.claim_key(request_id)).ignore();
                pipe.cmd("DEL").arg(self.key(request_id)).ignore();
                pipe.cmd("DEL").arg(self.events_key(request_id)).ignore();
                self.conn.query_pipe::<()>(&pipe).await?;
                Ok(Registration::New)
            }
            Some(known) if Self::registration(&known).0 == fingerprint => {
                Ok(Registration::Repeat(self.get(request_id).await?))
            }
            Some(_) => Ok(Registration::Mismatch),
        }
    }

    async fn registered_user(&self, request_id: &str) -> Result<Option<Option<String>>, PortError> {
        let known: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.registration_key(request_id)))
            .await?;
        Ok(known.map(|text| Self::registration(&text).1))
    }

    async fn append_events(
        &self,
        request_id: &str,
        events: &[LoggedEvent],
    ) -> Result<(), PortError> {
        // Refuses a number not above the log's last, then adds every event, refreshes the TTL
        // and wakes the followers: one script, so a log never holds half a batch.
        const APPEND: &str = "local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) \
            if #last > 0 and tonumber(string.sub(last[1][1], 3)) >= tonumber(ARGV[3]) then \
              return -1 end \
            for i = 3, #ARGV, 2 do \
              redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'e', ARGV[i + 1]) end \
            if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end \
            redis.call('PUBLISH', ARGV[2], 1) \
            return 0";
        let Some(first) = events.first() else {
            return Ok(());
        };
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(APPEND)
            .arg(1)
            .arg(self.events_key(request_id))
            .arg(self.ttl)
            .arg(format!("{}#evt:{request_id}", self.prefix));
        for event in events {
            cmd.arg(event.seq).arg(event.to_json());
        }
        match self.conn.query::<i64>(&cmd).await? {
            -1 => Err(PortError::event_taken(request_id, first.seq)),
            _ => Ok(()),
        }
    }

    async fn events_after(
        &self,
        request_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        let deadline = Instant::now() + wait;
        let read = redis::cmd("XRANGE")
            .arg(self.events_key(request_id))
            .arg(format!("0-{}", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .clone();
        let first: Vec<(String, Vec<String>)> = self.conn.query(&read).await?;
        if !first.is_empty() || wait.is_zero() {
            return Ok(Self::logged_events(request_id, first));
        }
        let waiter = self.logged.register(request_id);
        self.logged
            .listening(&self.conn.client, SUBSCRIBE_GRACE.min(wait))
            .await;
        loop {
            let notified = waiter.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let entries: Vec<(String, Vec<String>)> = self.conn.query(&read).await?;
            let now = Instant::now();
            if !entries.is_empty() || now >= deadline {
                return Ok(Self::logged_events(request_id, entries));
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline.min(now + FALLBACK_POLL)) => {}
            }
        }
    }

    async fn last_event_seq(&self, request_id: &str) -> Result<u64, PortError> {
        let last: Vec<(String, Vec<String>)> = self
            .conn
            .query(
                redis::cmd("XREVRANGE")
                    .arg(self.events_key(request_id))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1),
            )
            .await?;
        Ok(last
            .first()
            .and_then(|(id, _)| id.strip_prefix("0-")?.parse().ok())
            .unwrap_or(0))
    }

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
        if self.ttl > 0 {
            // The registration lives as long as the answer, so until both expire a different
            // request with this id is told apart.
            pipe.cmd("EXPIRE")
                .arg(self.registration_key(&record.request_id))
                .arg(self.ttl)
                .ignore();
        }
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
        let waiter = self.stored.register(request_id);
        self.stored
            .listening(&self.conn.client, SUBSCRIBE_GRACE.min(timeout))
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
            // Held already: by this owner it is renewed (a long run keeps its claim).
            const RENEW: &str = "if redis.call('GET', KEYS[1]) == ARGV[1] then \
                return redis.call('PEXPIRE', KEYS[1], ARGV[2]) else return 0 end";
            let renewed: i64 = self
                .conn
                .query(
                    redis::cmd("EVAL")
                        .arg(RENEW)
                        .arg(1)
                        .arg(self.claim_key(request_id))
                        .arg(owner)
                        .arg(ttl_ms),
                )
                .await?;
            if renewed == 0 {
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

    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError> {
        const FORGET: &str = "local v = redis.call('GET', KEYS[1]) \
            if not v then return 0 end \
            local ok, r = pcall(cjson.decode, v) \
            if not ok or tostring(r['status_code']) ~= ARGV[1] \
              or tostring(r['created_at']) ~= ARGV[2] then return 0 end \
            return redis.call('DEL', KEYS[1])";
        let id = &answer.request_id;
        let forgotten: i64 = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(FORGET)
                    .arg(1)
                    .arg(self.key(id))
                    .arg(answer.status_code)
                    .arg(answer.created_at),
            )
            .await?;
        if forgotten > 0 {
            // The failed run's claim goes with it (a separate command: the keys may live in
            // different slots of a cluster). Its event log stays: the next run continues it.
            self.conn
                .query::<i64>(redis::cmd("DEL").arg(self.claim_key(id)))
                .await?;
        }
        Ok(())
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

/// One pattern subscription per store and channel prefix, fanning announcements (an answer
/// stored, events logged) out to the waiters of each request id.
struct Notifications {
    channels: String,
    waiters: Arc<Mutex<HashMap<String, Arc<Notify>>>>,
    started: AtomicBool,
    subscribed: watch::Sender<bool>,
}

impl Notifications {
    /// Announcements on channels `<channels><request_id>`.
    fn new(channels: String) -> Self {
        Self {
            channels,
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

    /// Starts the subscription (once) and waits up to `grace` for it to be up.
    async fn listening(self: &Arc<Self>, client: &redis::Client, grace: Duration) {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.start(client);
        }
        let mut rx = self.subscribed.subscribe();
        let _ = tokio::time::timeout(grace, rx.wait_for(|s| *s)).await;
    }

    fn start(self: &Arc<Self>, client: &redis::Client) {
        let pattern = format!("{}*", escape_glob(&self.channels));
        let this = self.clone();
        let client = client.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.listen(&client, &pattern).await {
                    tracing::warn!(error = %e, "Redis notification connection failed; retrying");
                }
                this.subscribed.send_replace(false);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
    }

    async fn listen(&self, client: &redis::Client, pattern: &str) -> Result<(), PortError> {
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
            if let Some(id) = channel.strip_prefix(self.channels.as_str()) {
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

    fn keys(&self, session_id: &str) -> (String, String) {
        (
            format!("{}{{{session_id}}}:turns", self.prefix),
            format!("{}{{{session_id}}}:requests", self.prefix),
        )
    }

    fn decode(session_id: &str, text: &str) -> Result<Turn, PortError> {
        serde_json::from_str(text).map_err(|e| PortError::Corrupt {
            backend: Backend::Redis,
            detail: format!("session {session_id}: {e}"),
        })
    }
}

#[async_trait]
impl SessionStore for RedisSessionStore {
    async fn load(
        &self,
        session_id: &str,
        limits: HistoryLimits,
    ) -> Result<Option<SessionHistory>, PortError> {
        let (turns_key, _) = self.keys(session_id);
        // Every turn holds at least one message, so max_items turns always cover the window.
        let newest = limits.max_items.clamp(1, 100_000);
        let mut pipe = redis::pipe();
        pipe.cmd("LLEN").arg(&turns_key);
        pipe.cmd("LRANGE")
            .arg(&turns_key)
            .arg(-(newest as i64))
            .arg(-1);
        let (count, texts): (u64, Vec<String>) = self.conn.query_pipe(&pipe).await?;
        if count == 0 {
            return Ok(None);
        }
        let newest_first = texts
            .iter()
            .rev()
            .map(|t| Self::decode(session_id, t))
            .collect::<Result<Vec<Turn>, PortError>>()?;
        Ok(Some(SessionHistory {
            user_id: newest_first.first().and_then(|t| t.user_id.clone()),
            has_turns: !newest_first.is_empty(),
            turns: limits.take(newest_first),
            next_seq: count,
        }))
    }

    async fn append(&self, session_id: &str, seq: u64, turn: &Turn) -> Result<Appended, PortError> {
        const APPEND: &str = "if redis.call('HEXISTS', KEYS[2], ARGV[2]) == 1 then return -2 end \
            if redis.call('LLEN', KEYS[1]) ~= tonumber(ARGV[1]) then return -1 end \
            redis.call('RPUSH', KEYS[1], ARGV[3]) \
            redis.call('HSET', KEYS[2], ARGV[2], ARGV[1]) \
            if tonumber(ARGV[4]) > 0 then \
              redis.call('EXPIRE', KEYS[1], ARGV[4]) redis.call('EXPIRE', KEYS[2], ARGV[4]) \
            end \
            return 0";
        let (turns_key, requests_key) = self.keys(session_id);
        let data = serde_json::to_string(turn)
            .map_err(|e| PortError::Rejected(format!("the turn is not serializable: {e}")))?;
        let outcome: i64 = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(APPEND)
                    .arg(2)
                    .arg(turns_key)
                    .arg(requests_key)
                    .arg(seq)
                    .arg(&turn.request_id)
                    .arg(data)
                    .arg(self.ttl),
            )
            .await?;
        match outcome {
            -2 => Ok(Appended::Duplicate),
            -1 => Err(PortError::Conflict {
                session_id: session_id.to_owned(),
            }),
            _ => Ok(Appended::Stored),
        }
    }

    async fn find(&self, session_id: &str, request_id: &str) -> Result<Option<Turn>, PortError> {
        const FIND: &str = "local n = redis.call('HGET', KEYS[2], ARGV[1]) \
            if not n then return false end \
            return redis.call('LINDEX', KEYS[1], n)";
        let (turns_key, requests_key) = self.keys(session_id);
        let text: Option<String> = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(FIND)
                    .arg(2)
                    .arg(turns_key)
                    .arg(requests_key)
                    .arg(request_id),
            )
            .await?;
        text.map(|t| Self::decode(session_id, &t)).transpose()
    }
}
