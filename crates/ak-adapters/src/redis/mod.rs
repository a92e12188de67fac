//! Redis adapters (ElastiCache, Valkey and MemoryDB in production).
//!
//! Every key of one request shares the hash tag `{<request_id>}`, so each script and pipeline
//! about a request stays in one hash slot (what ElastiCache Serverless, cluster mode and
//! MemoryDB require): the answer at `<prefix>{<id>}`, its claim at `<prefix>{<id>}#claim`
//! (`"<attempt> <owner>"`), the attempt counter at `<prefix>{<id>}#attempt`, the registration
//! (the fingerprint of the request the id was first used for) at `<prefix>{<id>}#req`, and the
//! event log (a stream with ids `0-<n>`) at `<prefix>{<id>}#events`. A stored answer is
//! announced on the channel `<prefix>{<id>}#done`, logged events on `<prefix>{<id>}#evt`;
//! waiters `SUBSCRIBE` to the exact channel (no pattern subscriptions, which ElastiCache
//! Serverless refuses) on one shared connection per store and re-read after subscribing, so an
//! answer stored in between is not missed.
//!
//! Sessions: a list of turns (JSON, oldest first) at `<prefix>{<session_id>}:turns` and a hash
//! request id → turn number at `<prefix>{<session_id>}:requests`, appended by one script that
//! refuses a taken turn number or a request id already present.
//!
//! Connections are replaced before they cost a request: a command that fails because its
//! connection broke (reset, closed, refused, no answer within the response timeout, or a
//! server that is loading or became a replica in a failover) is sent once more on a fresh
//! connection. That is safe for every command here, because each write is conditional or
//! keyed so that a repeat changes nothing: `SET NX`, scripts that check before they write
//! (a registration carries a nonce, a claim its owner, an event batch its numbers, an answer
//! its attempt), `DEL`/`EXPIRE`/`PUBLISH` of the same values.

mod connection;
pub mod iam;

use crate::{AwsConfig, with_timeout};
use ak_core::config::RedisSettings;
use ak_core::ports::{
    Appended, Backend, ClaimOutcome, HistoryLimits, LoggedEvent, Pointer, PortError, Registration,
    ResponseRecord, ResponseStore, SessionHistory, SessionStore, Turn,
};
use async_trait::async_trait;
use connection::{CONNECT_TIMEOUT, Connection, RESPONSE_TIMEOUT, lock, unavailable};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// While waiting, the key is re-read this often even without a notification, in case the
/// notification connection is down.
const FALLBACK_POLL: Duration = Duration::from_secs(1);
/// How long a waiter gives its subscription to be confirmed before reading.
const SUBSCRIBE_GRACE: Duration = Duration::from_millis(300);
/// How often the notification connection is checked (`PING`) while anyone waits.
const NOTIFY_PING: Duration = Duration::from_secs(5);
/// A notification connection is made anew at least this often (an ElastiCache IAM connection
/// is cut after 12 hours; a subscribed connection cannot authenticate again).
const NOTIFY_MAX_AGE: Duration = Duration::from_secs(6 * 3600);

/// The keys and channels of one request (see the module documentation).
struct RequestKeys {
    answer: String,
    claim: String,
    attempt: String,
    registration: String,
    events: String,
    done: String,
    logged: String,
}

/// Response store on Redis.
pub struct RedisResponseStore {
    conn: Arc<Connection>,
    prefix: String,
    ttl: u64,
    stored: Arc<Notifications>,
    logged: Arc<Notifications>,
}

/// The stored registration: `{"fingerprint", "user_id", "nonce"}`.
#[derive(serde::Deserialize)]
struct StoredRegistration {
    fingerprint: String,
    user_id: Option<String>,
}

impl RedisResponseStore {
    /// A store for these settings; connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        Self::with_aws(settings, &AwsConfig::default())
    }

    /// A store on a connection of its own that authenticates with `iam` (tests of
    /// authentication: [`iam::IamAuth::with_tokens`]).
    pub fn with_iam(settings: &RedisSettings, iam: Arc<iam::IamAuth>) -> Result<Self, PortError> {
        Self::on(settings, Arc::new(Connection::with_iam(settings, iam)?))
    }

    /// A store for these settings, authenticating with the credentials of `aws` when
    /// `auth: iam`; connects on first use.
    pub fn with_aws(settings: &RedisSettings, aws: &AwsConfig) -> Result<Self, PortError> {
        Self::on(settings, Connection::shared(settings, aws)?)
    }

    fn on(settings: &RedisSettings, conn: Arc<Connection>) -> Result<Self, PortError> {
        let prefix = settings.prefix().to_owned();
        Ok(Self {
            conn,
            stored: Arc::new(Notifications::new(format!("{prefix}{{"), "}#done")),
            logged: Arc::new(Notifications::new(format!("{prefix}{{"), "}#evt")),
            prefix,
            ttl: settings.ttl,
        })
    }

    fn keys(&self, request_id: &str) -> RequestKeys {
        let base = format!("{}{{{request_id}}}", self.prefix);
        RequestKeys {
            answer: base.clone(),
            claim: format!("{base}#claim"),
            attempt: format!("{base}#attempt"),
            registration: format!("{base}#req"),
            events: format!("{base}#events"),
            done: format!("{base}#done"),
            logged: format!("{base}#evt"),
        }
    }

    /// The key of the pointer `name` (its own hash slot, like a request's keys).
    fn pointer_key(&self, name: &str) -> String {
        format!("{}{{{name}}}#pointer", self.prefix)
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

    /// The answer stored under the answer key: `None` for none, or for what [`forget`] left.
    fn decode(&self, text: &str) -> Result<Option<ResponseRecord>, PortError> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| PortError::Corrupt {
                backend: Backend::Redis,
                detail: format!("response record: {e}"),
            })?;
        if value.get("forgotten").is_some() {
            return Ok(None);
        }
        serde_json::from_value(value)
            .map(Some)
            .map_err(|e| PortError::Corrupt {
                backend: Backend::Redis,
                detail: format!("response record: {e}"),
            })
    }
}

/// The Lua of "is this a stored answer" (not a forgotten one): `answered(text)`.
const LUA_ANSWERED: &str = "local function answered(v) \
    if not v then return false end \
    local ok, r = pcall(cjson.decode, v) \
    return not (ok and type(r) == 'table' and r['forgotten']) end ";

#[async_trait]
impl ResponseStore for RedisResponseStore {
    async fn register(
        &self,
        request_id: &str,
        fingerprint: &str,
        user_id: Option<&str>,
    ) -> Result<Registration, PortError> {
        // A fresh registration also clears what an earlier use of the id left (an answer stored
        // later than its registration, a claim outliving a short TTL, an event log): it belongs
        // to another request. The nonce makes a repeat of this very call say `new` again.
        const REGISTER: &str = "local known = redis.call('GET', KEYS[1]) \
            if known then \
              local ok, r = pcall(cjson.decode, known) \
              if ok and type(r) == 'table' and r['nonce'] == ARGV[3] then return {'new'} end \
              return {'known', known} end \
            if tonumber(ARGV[2]) > 0 then redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2]) \
            else redis.call('SET', KEYS[1], ARGV[1]) end \
            redis.call('DEL', KEYS[2], KEYS[3], KEYS[4]) \
            return {'new'}";
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let value =
            serde_json::json!({"fingerprint": fingerprint, "user_id": user_id, "nonce": nonce})
                .to_string();
        let keys = self.keys(request_id);
        let outcome: Vec<String> = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(REGISTER)
                    .arg(4)
                    .arg(&keys.registration)
                    .arg(&keys.answer)
                    .arg(&keys.claim)
                    .arg(&keys.events)
                    .arg(value)
                    .arg(self.ttl)
                    .arg(&nonce),
            )
            .await?;
        let known = match outcome.as_slice() {
            [status] if status == "new" => return Ok(Registration::New),
            [_, known] => known,
            _ => {
                return Err(PortError::Corrupt {
                    backend: Backend::Redis,
                    detail: "the registration script answered an unknown shape".to_owned(),
                });
            }
        };
        let same = serde_json::from_str::<StoredRegistration>(known)
            .is_ok_and(|stored| stored.fingerprint == fingerprint);
        if same {
            Ok(Registration::Repeat(self.get(request_id).await?))
        } else {
            Ok(Registration::Mismatch)
        }
    }

    async fn registered_user(&self, request_id: &str) -> Result<Option<Option<String>>, PortError> {
        let known: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.keys(request_id).registration))
            .await?;
        Ok(known.map(|text| {
            serde_json::from_str::<StoredRegistration>(&text)
                .ok()
                .and_then(|stored| stored.user_id)
        }))
    }

    async fn append_events(
        &self,
        request_id: &str,
        events: &[LoggedEvent],
    ) -> Result<(), PortError> {
        // Refuses a number not above the log's last — unless the log already holds this very
        // batch (a repeat of this call) — then adds every event and refreshes the TTL: one
        // script, so a log never holds half a batch.
        const APPEND: &str = "local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1) \
            if #last > 0 and tonumber(string.sub(last[1][1], 3)) >= tonumber(ARGV[2]) then \
              local same = redis.call('XRANGE', KEYS[1], '0-' .. ARGV[2], '0-' .. ARGV[2]) \
              if #same > 0 and same[1][2][2] == ARGV[3] then return 0 end \
              return -1 end \
            for i = 2, #ARGV, 2 do \
              redis.call('XADD', KEYS[1], '0-' .. ARGV[i], 'e', ARGV[i + 1]) end \
            if tonumber(ARGV[1]) > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end \
            return 0";
        // At most this many events per script: its arguments stay far below the 3,999 that
        // ElastiCache Serverless allows a command.
        const MOST: usize = 500;
        if events.len() > MOST {
            for chunk in events.chunks(MOST) {
                Box::pin(self.append_events(request_id, chunk)).await?;
            }
            return Ok(());
        }
        let Some(first) = events.first() else {
            return Ok(());
        };
        let keys = self.keys(request_id);
        let mut script = redis::cmd("EVAL");
        script.arg(APPEND).arg(1).arg(&keys.events).arg(self.ttl);
        for event in events {
            script.arg(event.seq).arg(event.to_json());
        }
        let mut pipe = redis::pipe();
        pipe.add_command(script);
        pipe.cmd("PUBLISH").arg(&keys.logged).arg(1).ignore();
        let (appended,): (i64,) = self.conn.query_pipe(&pipe).await?;
        match appended {
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
        let keys = self.keys(request_id);
        let read = redis::cmd("XRANGE")
            .arg(&keys.events)
            .arg(format!("0-{}", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(1000)
            .clone();
        let first: Vec<(String, Vec<String>)> = self.conn.query(&read).await?;
        if !first.is_empty() || wait.is_zero() {
            return Ok(Self::logged_events(request_id, first));
        }
        let waiter = self
            .logged
            .wait_on(&self.conn, request_id, SUBSCRIBE_GRACE.min(wait))
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
                    .arg(self.keys(request_id).events)
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
        // The store decides the order of answers (see `ResponseStore::put`): a forgotten answer
        // lets only later attempts in; a stored one gives way only to a later attempt's answer,
        // and only when it is a failure (the statuses of `is_retryable_status`). The
        // registration lives as long as the answer, so until both expire a different request
        // with this id is told apart.
        const PUT: &str = "local v = redis.call('GET', KEYS[1]) \
            if v then \
              local ok, r = pcall(cjson.decode, v) \
              if ok and type(r) == 'table' then \
                local n, a = tonumber(ARGV[2]), tonumber(r['attempt']) or 0 \
                if r['forgotten'] then \
                  if n <= a then return 0 end \
                else \
                  local s = tonumber(r['status_code']) or 0 \
                  local failed = s >= 500 or s == 408 or s == 409 or s == 425 or s == 429 \
                  if not failed or n <= a then return 0 end \
                end \
              end \
            end \
            if tonumber(ARGV[3]) > 0 then \
              redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) \
              redis.call('EXPIRE', KEYS[2], ARGV[3]) \
            else redis.call('SET', KEYS[1], ARGV[1]) end \
            return 1";
        let json = serde_json::to_string(record)
            .map_err(|e| PortError::Rejected(format!("response is not serializable: {e}")))?;
        let keys = self.keys(&record.request_id);
        let mut pipe = redis::pipe();
        pipe.cmd("EVAL")
            .arg(PUT)
            .arg(2)
            .arg(&keys.answer)
            .arg(&keys.registration)
            .arg(json)
            .arg(record.attempt)
            .arg(self.ttl)
            .ignore();
        pipe.cmd("PUBLISH").arg(&keys.done).arg(1).ignore();
        self.conn.query_pipe::<()>(&pipe).await
    }

    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError> {
        let text: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.keys(request_id).answer))
            .await?;
        match text {
            Some(text) => self.decode(&text),
            None => Ok(None),
        }
    }

    async fn wait_for(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError> {
        let deadline = Instant::now() + timeout;
        let waiter = self
            .stored
            .wait_on(&self.conn, request_id, SUBSCRIBE_GRACE.min(timeout))
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
        // Answered → nothing to do; held by this owner → renewed, same attempt; held by
        // another → busy; free → the next attempt number, held until `ttl` passes.
        let script = format!(
            "{LUA_ANSWERED} \
            if answered(redis.call('GET', KEYS[1])) then return {{'answered', 0}} end \
            local held = redis.call('GET', KEYS[2]) \
            if held then \
              local attempt, holder = string.match(held, '^(%d+) (.*)$') \
              if holder == ARGV[1] then \
                redis.call('PEXPIRE', KEYS[2], ARGV[2]) return {{'acquired', tonumber(attempt)}} end \
              return {{'held', 0}} end \
            local attempt = redis.call('INCR', KEYS[3]) \
            if tonumber(ARGV[3]) > 0 then redis.call('EXPIRE', KEYS[3], ARGV[3]) end \
            redis.call('SET', KEYS[2], attempt .. ' ' .. ARGV[1], 'PX', ARGV[2]) \
            return {{'acquired', attempt}}"
        );
        let keys = self.keys(request_id);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let (outcome, attempt): (String, u64) = self
            .conn
            .query(
                redis::cmd("EVAL")
                    .arg(script)
                    .arg(3)
                    .arg(&keys.answer)
                    .arg(&keys.claim)
                    .arg(&keys.attempt)
                    .arg(owner)
                    .arg(ttl_ms)
                    // The attempt counter outlives any answer it numbered.
                    .arg(if self.ttl > 0 {
                        self.ttl + ttl.as_secs() + 1
                    } else {
                        0
                    }),
            )
            .await?;
        Ok(match outcome.as_str() {
            "acquired" => ClaimOutcome::Acquired { attempt },
            "answered" => ClaimOutcome::AlreadyAnswered,
            _ => ClaimOutcome::HeldByOther,
        })
    }

    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError> {
        const RELEASE: &str = "local held = redis.call('GET', KEYS[1]) \
            if held and string.match(held, '^%d+ (.*)$') == ARGV[1] then \
              return redis.call('DEL', KEYS[1]) end \
            return 0";
        self.conn
            .query::<i64>(
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(self.keys(request_id).claim)
                    .arg(owner),
            )
            .await
            .map(drop)
    }

    async fn set_pointer(
        &self,
        name: &str,
        target: &str,
        user_id: Option<&str>,
    ) -> Result<(), PortError> {
        let value = serde_json::to_string(&Pointer {
            target: target.to_owned(),
            user_id: user_id.map(str::to_owned),
        })
        .map_err(|e| PortError::Rejected(e.to_string()))?;
        let mut cmd = redis::cmd("SET");
        cmd.arg(self.pointer_key(name)).arg(value);
        if self.ttl > 0 {
            cmd.arg("EX").arg(self.ttl);
        }
        self.conn.query::<()>(&cmd).await
    }

    async fn pointer(&self, name: &str) -> Result<Option<Pointer>, PortError> {
        let text: Option<String> = self
            .conn
            .query(redis::cmd("GET").arg(self.pointer_key(name)))
            .await?;
        Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
    }

    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError> {
        // The answer becomes `{"forgotten": true, "attempt": n}` (same TTL): nothing of attempt
        // n or earlier is stored again. The failed run's claim goes with it; its event log
        // stays (the next run continues it).
        const FORGET: &str = "local v = redis.call('GET', KEYS[1]) \
            if not v then return 0 end \
            local ok, r = pcall(cjson.decode, v) \
            if not ok or type(r) ~= 'table' or r['forgotten'] \
              or tostring(r['status_code']) ~= ARGV[1] \
              or tostring(r['created_at']) ~= ARGV[2] then return 0 end \
            local mark = cjson.encode({forgotten = true, attempt = tonumber(r['attempt']) or 0}) \
            local ttl = redis.call('PTTL', KEYS[1]) \
            if ttl > 0 then redis.call('SET', KEYS[1], mark, 'PX', ttl) \
            else redis.call('SET', KEYS[1], mark) end \
            redis.call('DEL', KEYS[2]) \
            return 1";
        let keys = self.keys(&answer.request_id);
        self.conn
            .query::<i64>(
                redis::cmd("EVAL")
                    .arg(FORGET)
                    .arg(2)
                    .arg(&keys.answer)
                    .arg(&keys.claim)
                    .arg(answer.status_code)
                    .arg(answer.created_at),
            )
            .await
            .map(drop)
    }
}

struct Waiter {
    notify: Arc<Notify>,
    id: String,
    notifications: Arc<Notifications>,
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut waiters = lock(&self.notifications.waiters);
        // The map holds one reference and this waiter another: the last one out removes it and
        // unsubscribes.
        if waiters
            .get(&self.id)
            .is_some_and(|n| Arc::strong_count(n) <= 2)
        {
            waiters.remove(&self.id);
            drop(waiters);
            let channel = self.notifications.channel(&self.id);
            if let Some(sink) = self.notifications.sink() {
                tokio::spawn(async move {
                    let mut sink = sink;
                    let _ = tokio::time::timeout(RESPONSE_TIMEOUT, sink.unsubscribe(channel)).await;
                });
            }
        }
    }
}

/// One notification connection per store and kind of announcement (an answer stored, events
/// logged), subscribed to the exact channel of each request id someone waits for, fanning
/// messages out to its waiters. Reconnects (and subscribes again to every channel waited on)
/// when the connection fails or stops answering its `PING`.
struct Notifications {
    prefix: String,
    suffix: &'static str,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    started: AtomicBool,
    /// The live connection's sending half, while it is up.
    sink: Mutex<Option<redis::aio::PubSubSink>>,
    up: watch::Sender<bool>,
    /// Asks the connection task to start over (a subscribe that failed or timed out).
    restart: Notify,
}

impl Notifications {
    /// Announcements on channels `<prefix><request_id><suffix>`.
    fn new(prefix: String, suffix: &'static str) -> Self {
        Self {
            prefix,
            suffix,
            waiters: Mutex::default(),
            started: AtomicBool::new(false),
            sink: Mutex::new(None),
            up: watch::Sender::new(false),
            restart: Notify::new(),
        }
    }

    fn channel(&self, id: &str) -> String {
        format!("{}{id}{}", self.prefix, self.suffix)
    }

    fn sink(&self) -> Option<redis::aio::PubSubSink> {
        lock(&self.sink).clone()
    }

    /// Registers a waiter for `id` and subscribes to its channel, waiting up to `grace` for the
    /// confirmation (after which the waiter relies on its fallback reads until it comes).
    async fn wait_on(
        self: &Arc<Self>,
        conn: &Arc<Connection>,
        id: &str,
        grace: Duration,
    ) -> Waiter {
        if !self.started.swap(true, Ordering::SeqCst) {
            self.start(conn.clone());
        }
        let (notify, first) = {
            let mut waiters = lock(&self.waiters);
            let first = !waiters.contains_key(id);
            (waiters.entry(id.to_owned()).or_default().clone(), first)
        };
        let waiter = Waiter {
            notify,
            id: id.to_owned(),
            notifications: self.clone(),
        };
        let subscribed = async {
            let mut up = self.up.subscribe();
            up.wait_for(|up| *up).await.map_err(drop)?;
            if !first {
                return Ok(());
            }
            let mut sink = self.sink().ok_or(())?;
            sink.subscribe(self.channel(id)).await.map_err(drop)
        };
        match tokio::time::timeout(grace, subscribed).await {
            Ok(Ok(())) => {}
            // The connection is down or not answering: start it over (it subscribes again to
            // every channel waited on).
            Ok(Err(())) => self.restart.notify_one(),
            Err(_) if *self.up.borrow() => self.restart.notify_one(),
            Err(_) => {}
        }
        waiter
    }

    fn start(self: &Arc<Self>, conn: Arc<Connection>) {
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                if let Err(e) = this.listen(&conn).await {
                    tracing::warn!(error = %e, "Redis notification connection failed; reconnecting");
                }
                *lock(&this.sink) = None;
                this.up.send_replace(false);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }

    async fn listen(&self, conn: &Connection) -> Result<(), PortError> {
        use futures_util::StreamExt;
        let client = conn.client().await?;
        let pubsub = with_timeout(Backend::Redis, CONNECT_TIMEOUT, async {
            client.get_async_pubsub().await.map_err(unavailable)
        })
        .await?;
        let opened = Instant::now();
        let (mut sink, mut messages) = pubsub.split();
        let waited: Vec<String> = lock(&self.waiters)
            .keys()
            .map(|id| self.channel(id))
            .collect();
        if !waited.is_empty() {
            with_timeout(Backend::Redis, RESPONSE_TIMEOUT, async {
                sink.subscribe(&waited).await.map_err(unavailable)
            })
            .await?;
        }
        *lock(&self.sink) = Some(sink.clone());
        self.up.send_replace(true);
        let mut ping = tokio::time::interval(NOTIFY_PING);
        ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = messages.next() => {
                    let Some(message) = message else {
                        return Err(PortError::unavailable(Backend::Redis, "notification connection closed"));
                    };
                    let channel = message.get_channel_name();
                    let id = channel
                        .strip_prefix(self.prefix.as_str())
                        .and_then(|rest| rest.strip_suffix(self.suffix));
                    if let Some(id) = id
                        && let Some(notify) = lock(&self.waiters).get(id)
                    {
                        notify.notify_waiters();
                    }
                }
                _ = ping.tick() => {
                    if opened.elapsed() > NOTIFY_MAX_AGE {
                        return Ok(());
                    }
                    if lock(&self.waiters).is_empty() {
                        continue;
                    }
                    with_timeout(Backend::Redis, RESPONSE_TIMEOUT, async {
                        sink.ping::<redis::Value>().await.map(drop).map_err(unavailable)
                    })
                    .await?;
                }
                () = self.restart.notified() => {
                    return Err(PortError::unavailable(Backend::Redis, "a subscription was not confirmed in time"));
                }
            }
        }
    }
}

/// Session store on Redis.
pub struct RedisSessionStore {
    conn: Arc<Connection>,
    prefix: String,
    ttl: u64,
}

impl RedisSessionStore {
    /// A store for these settings; connects on first use.
    pub fn new(settings: &RedisSettings) -> Result<Self, PortError> {
        Self::with_aws(settings, &AwsConfig::default())
    }

    /// A store for these settings, authenticating with the credentials of `aws` when
    /// `auth: iam`; connects on first use.
    pub fn with_aws(settings: &RedisSettings, aws: &AwsConfig) -> Result<Self, PortError> {
        Ok(Self {
            conn: Connection::shared(settings, aws)?,
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
