//! DynamoDB adapters.
//!
//! Responses: partition key `request_id` (S); attributes `session_id`, `user_id` (only when
//! known), `status_code` (N), `body` (S, the client's JSON), `created_at` (N) and `expiry_time`
//! (N, epoch seconds, only when ttl > 0). The request's registration is `fingerprint` (S) on the
//! same item, written first; a claim is `claim_owner` / `claim_until`, written only while no
//! `body` exists; storing the answer adds the answer's attributes. Items past `expiry_time`
//! count as absent even before DynamoDB's TTL sweep removes them.
//!
//! Sessions: partition `session_id` (S), sort `key` (S). Each turn is one item
//! `turn#<seq, 12 digits>#<part, 3 digits>` holding its JSON in `value` (S) — split into parts of
//! at most 350 KB, so no turn meets DynamoDB's 400 KB item limit — with `request_id`, `user_id`
//! and `parts` (N) on part 0; `req#<request_id>` holds the turn's `seq` (N). Every item has
//! `expiry_time`. An append writes all of a turn's items in one transaction, each conditional on
//! not existing, so a taken number is a conflict and a request id already present a duplicate,
//! told apart by the transaction's cancellation reasons. A load queries the newest turns first
//! and stops at the history limits, so a long conversation costs no more to read than a short
//! one.

use crate::{CALL_TIMEOUT, with_timeout};
use ak_core::config::DynamoDbSettings;
use ak_core::ports::{
    Appended, Backend, ClaimOutcome, HistoryLimits, LoggedEvent, Pointer, PortError, Registration,
    ResponseRecord, ResponseStore, SessionHistory, SessionStore, Turn, now_epoch_secs,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;

const TURN_PREFIX: &str = "turn#";
const REQUEST_PREFIX: &str = "req#";
/// Bytes of turn JSON per item: DynamoDB items hold at most 400 KB with their attributes.
const PART_BYTES: usize = 350_000;
/// A transaction writes at most 4 MB: the largest turn this store can hold.
const MAX_TURN_BYTES: usize = 3_500_000;
/// First and longest pause between reads while waiting for an answer: the pause grows by half
/// each read, so an answer stored soon is seen within milliseconds while a long wait reads five
/// times a second, not fifty (each read is a read unit, and a table's reads can be throttled).
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(200);
/// Pause between reads of an event log that has nothing new (one read unit each).
const EVENT_POLL: Duration = Duration::from_millis(50);

/// A failed SDK call: the configuration's fault, or an outage (see [`crate::aws::sdk_failure`]).
fn unavailable(
    e: impl aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
) -> PortError {
    crate::aws::sdk_failure(Backend::DynamoDb, e)
}

fn is_condition_failure<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .and_then(ProvideErrorMetadata::code)
        .is_some_and(|code| code == "ConditionalCheckFailedException")
}

/// Sends a conditional write with the call deadline: `Ok(true)` when written, `Ok(false)` when
/// its condition did not hold.
async fn conditional<T, E, R>(
    send: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<bool, PortError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    conditional_output(send)
        .await
        .map(|written| written.is_some())
}

/// [`conditional`], keeping the output of a write that happened.
async fn conditional_output<T, E, R>(
    send: impl std::future::Future<Output = Result<T, SdkError<E, R>>>,
) -> Result<Option<T>, PortError>
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + 'static,
{
    with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
        match send.await {
            Ok(output) => Ok(Some(output)),
            Err(e) if is_condition_failure(&e) => Ok(None),
            // A write DynamoDB cannot take (an item over 400 KB, say) fails the same way again.
            Err(e)
                if e.as_service_error().and_then(ProvideErrorMetadata::code)
                    == Some("ValidationException") =>
            {
                Err(PortError::Rejected(format!(
                    "DynamoDB refused the write: {}",
                    e.as_service_error()
                        .and_then(ProvideErrorMetadata::message)
                        .unwrap_or("validation error")
                )))
            }
            Err(e) => Err(unavailable(e)),
        }
    })
    .await
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

fn n(v: impl ToString) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

fn corrupt(what: &str) -> PortError {
    PortError::Corrupt {
        backend: Backend::DynamoDb,
        detail: what.to_owned(),
    }
}

fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

fn get_n<T: std::str::FromStr>(item: &Item, name: &str) -> Option<T> {
    item.get(name)
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
}

fn expired(item: &Item) -> bool {
    get_n::<u64>(item, "expiry_time").is_some_and(|t| t <= now_epoch_secs())
}

fn now_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

fn table_name(settings: &DynamoDbSettings) -> Result<String, PortError> {
    settings
        .table_name
        .clone()
        .ok_or_else(|| PortError::Rejected("the DynamoDB backend needs a table_name".to_owned()))
}

/// Response store on DynamoDB.
pub struct DynamoResponseStore {
    client: crate::aws::SdkClient<aws_sdk_dynamodb::Client>,
    table: String,
    ttl: u64,
}

impl DynamoResponseStore {
    /// A store on the configured table.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        settings: &DynamoDbSettings,
    ) -> Result<Self, PortError> {
        Self::with_client(crate::aws::SdkClient::ready(client), settings)
    }

    /// A store on the configured table, its client made from `aws` on first use.
    pub fn lazy(aws: &crate::AwsConfig, settings: &DynamoDbSettings) -> Result<Self, PortError> {
        Self::with_client(
            crate::aws::SdkClient::lazy(aws, aws_sdk_dynamodb::Client::new),
            settings,
        )
    }

    fn with_client(
        client: crate::aws::SdkClient<aws_sdk_dynamodb::Client>,
        settings: &DynamoDbSettings,
    ) -> Result<Self, PortError> {
        Ok(Self {
            client,
            table: table_name(settings)?,
            ttl: settings.ttl,
        })
    }

    fn expiry(&self) -> Option<AttributeValue> {
        (self.ttl > 0).then(|| n(now_epoch_secs() + self.ttl))
    }

    async fn read(&self, request_id: &str) -> Result<Option<Item>, PortError> {
        let request = self
            .client
            .get()
            .await
            .get_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .consistent_read(true);
        let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await?;
        Ok(output.item.filter(|item| !expired(item)))
    }
}

/// The item holding the pointer `name` ([`ResponseStore::set_pointer`]).
fn pointer_key(name: &str) -> String {
    format!("{name}#pointer")
}

/// The item holding event `seq` of a request's log.
fn event_key(request_id: &str, seq: u64) -> String {
    format!("{request_id}#event#{seq}")
}

impl DynamoResponseStore {
    async fn event_exists(&self, request_id: &str, seq: u64) -> Result<bool, PortError> {
        let request = self
            .client
            .get()
            .await
            .get_item()
            .table_name(&self.table)
            .key("request_id", s(event_key(request_id, seq)))
            .projection_expression("request_id, expiry_time")
            .consistent_read(true);
        let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await?;
        Ok(output.item.is_some_and(|item| !expired(&item)))
    }

    /// The events after `after` that are written, in order, gapless: the next one by itself
    /// (a follower that is up to date reads one item per poll), then batches that double while
    /// they come back full (a replay reads a long log in a few calls).
    async fn read_events(
        &self,
        request_id: &str,
        after: u64,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        let mut found = Vec::new();
        let mut next = after.saturating_add(1);
        let mut batch = 1u64;
        loop {
            let keys: Vec<Item> = (next..next.saturating_add(batch))
                .map(|seq| {
                    HashMap::from([("request_id".to_owned(), s(event_key(request_id, seq)))])
                })
                .collect();
            let keys = aws_sdk_dynamodb::types::KeysAndAttributes::builder()
                .set_keys(Some(keys))
                .consistent_read(true)
                .build()
                .map_err(|e| PortError::Rejected(e.to_string()))?;
            let request = self
                .client
                .get()
                .await
                .batch_get_item()
                .request_items(&self.table, keys);
            let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
                request.send().await.map_err(unavailable)
            })
            .await?;
            let mut got: HashMap<u64, LoggedEvent> = HashMap::new();
            for item in output
                .responses
                .unwrap_or_default()
                .remove(&self.table)
                .unwrap_or_default()
            {
                if expired(&item) {
                    continue;
                }
                let seq = get_s(&item, "request_id")
                    .and_then(|key| key.rsplit('#').next())
                    .and_then(|seq| seq.parse().ok());
                let event = seq.and_then(|seq| LoggedEvent::from_json(seq, get_s(&item, "event")?));
                match event {
                    Some(event) => {
                        got.insert(event.seq, event);
                    }
                    None => tracing::warn!(request_id, "an unreadable event in the log; skipped"),
                }
            }
            let before = found.len();
            while let Some(event) = got.remove(&next) {
                found.push(event);
                next += 1;
            }
            let complete = (found.len() - before) as u64 == batch;
            if !complete || found.len() >= 1000 {
                return Ok(found);
            }
            batch = (batch * 2).min(100);
        }
    }
}

/// The item holding part `index` (≥ 1) of an answer split under `reference`.
fn body_part_key(request_id: &str, reference: &str, index: usize) -> String {
    format!("{request_id}#body#{reference}#{index}")
}

impl DynamoResponseStore {
    /// The record of an answered item, its body put together from its parts when it was split.
    async fn decode(&self, item: &Item) -> Result<ResponseRecord, PortError> {
        let parts: usize = get_n(item, "body_parts").unwrap_or(1);
        if parts <= 1 {
            return decode_record(item, None);
        }
        let (Some(id), Some(reference)) = (get_s(item, "request_id"), get_s(item, "body_ref"))
        else {
            return Err(corrupt("a split answer without request_id or body_ref"));
        };
        let mut text = get_s(item, "body").unwrap_or_default().to_owned();
        for index in 1..parts {
            let request = self
                .client
                .get()
                .await
                .get_item()
                .table_name(&self.table)
                .key("request_id", s(body_part_key(id, reference, index)))
                .consistent_read(true);
            let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
                request.send().await.map_err(unavailable)
            })
            .await?;
            let part = output
                .item
                .as_ref()
                .and_then(|part| get_s(part, "value"))
                .ok_or_else(|| {
                    corrupt(&format!("part {index} of the answer to {id} is missing"))
                })?;
            text.push_str(part);
        }
        decode_record(item, Some(&text))
    }
}

/// The record of an answered item; `body` is the whole body when it was split.
fn decode_record(item: &Item, body: Option<&str>) -> Result<ResponseRecord, PortError> {
    let text = |name: &str| {
        get_s(item, name)
            .map(str::to_owned)
            .ok_or_else(|| corrupt(&format!("response item has no {name}")))
    };
    Ok(ResponseRecord {
        request_id: text("request_id")?,
        session_id: text("session_id")?,
        user_id: get_s(item, "user_id").map(str::to_owned),
        status_code: get_n(item, "status_code")
            .ok_or_else(|| corrupt("response item has no status_code"))?,
        body: serde_json::from_str(&body.map_or_else(|| text("body"), |b| Ok(b.to_owned()))?)
            .map_err(|e| corrupt(&format!("response body is not JSON: {e}")))?,
        created_at: get_n(item, "created_at").unwrap_or_default(),
        attempt: get_n(item, "answer_attempt").unwrap_or_default(),
    })
}

#[async_trait]
impl ResponseStore for DynamoResponseStore {
    async fn register(
        &self,
        request_id: &str,
        fingerprint: &str,
        user_id: Option<&str>,
    ) -> Result<Registration, PortError> {
        let mut item: Item = HashMap::from([
            ("request_id".to_owned(), s(request_id)),
            ("fingerprint".to_owned(), s(fingerprint)),
        ]);
        if let Some(user) = user_id {
            item.insert("user_id".to_owned(), s(user));
        }
        if let Some(expiry) = self.expiry() {
            item.insert("expiry_time".to_owned(), expiry);
        }
        let fresh = self
            .client
            .get()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(request_id) OR expiry_time <= :now")
            .expression_attribute_values(":now", n(now_epoch_secs()));
        if conditional(fresh.send()).await? {
            return Ok(Registration::New);
        }
        let Some(item) = self.read(request_id).await? else {
            // Expired between the write and the read: try once more.
            return Box::pin(self.register(request_id, fingerprint, user_id)).await;
        };
        let answer = async || match item.contains_key("body") {
            true => self.decode(&item).await.map(Some),
            false => Ok(None),
        };
        match get_s(&item, "fingerprint") {
            Some(known) if known == fingerprint => Ok(Registration::Repeat(answer().await?)),
            Some(_) => Ok(Registration::Mismatch),
            // Claimed or answered before any registration (a message of another producer).
            None => {
                let mut adopt = self
                    .client
                    .get()
                    .await
                    .update_item()
                    .table_name(&self.table)
                    .key("request_id", s(request_id))
                    .update_expression("SET fingerprint = :fp")
                    .condition_expression("attribute_not_exists(fingerprint)")
                    .expression_attribute_values(":fp", s(fingerprint));
                if let Some(user) = user_id {
                    adopt = adopt
                        .update_expression("SET fingerprint = :fp, user_id = :user")
                        .expression_attribute_values(":user", s(user));
                }
                if conditional(adopt.send()).await? {
                    Ok(answer()
                        .await?
                        .map_or(Registration::New, |r| Registration::Repeat(Some(r))))
                } else {
                    Box::pin(self.register(request_id, fingerprint, user_id)).await
                }
            }
        }
    }

    async fn registered_user(&self, request_id: &str) -> Result<Option<Option<String>>, PortError> {
        Ok(self
            .read(request_id)
            .await?
            .filter(|item| item.contains_key("fingerprint"))
            .map(|item| get_s(&item, "user_id").map(str::to_owned)))
    }

    async fn append_events(
        &self,
        request_id: &str,
        events: &[LoggedEvent],
    ) -> Result<(), PortError> {
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let now = now_epoch_secs();
        let item = |event: &LoggedEvent| {
            let mut item: Item = HashMap::from([
                ("request_id".to_owned(), s(event_key(request_id, event.seq))),
                ("event".to_owned(), s(event.to_json())),
            ]);
            if let Some(expiry) = self.expiry() {
                item.insert("expiry_time".to_owned(), expiry);
            }
            item
        };
        const FRESH: &str = "attribute_not_exists(request_id) OR expiry_time <= :now";
        // One event (the usual batch: merged deltas) is one conditional put; more go in one
        // transaction per 100, so a follower never sees a batch half written.
        if let [event] = events {
            let request = self
                .client
                .get()
                .await
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item(event)))
                .condition_expression(FRESH)
                .expression_attribute_values(":now", n(now));
            return match conditional(request.send()).await? {
                true => Ok(()),
                false => Err(PortError::event_taken(request_id, event.seq)),
            };
        }
        for chunk in events.chunks(100) {
            let writes = chunk
                .iter()
                .map(|event| {
                    Put::builder()
                        .table_name(&self.table)
                        .set_item(Some(item(event)))
                        .condition_expression(FRESH)
                        .expression_attribute_values(":now", n(now))
                        .build()
                        .map(|put| TransactWriteItem::builder().put(put).build())
                        .map_err(|e| PortError::Rejected(e.to_string()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let request = self
                .client
                .get()
                .await
                .transact_write_items()
                .set_transact_items(Some(writes));
            let sent = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
                Ok(request.send().await)
            })
            .await?;
            if let Err(e) = sent {
                let taken = matches!(
                    e.as_service_error(),
                    Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c))
                        if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
                );
                return Err(if taken {
                    PortError::event_taken(request_id, chunk[0].seq)
                } else {
                    unavailable(e)
                });
            }
        }
        Ok(())
    }

    async fn events_after(
        &self,
        request_id: &str,
        after: u64,
        wait: Duration,
    ) -> Result<Vec<LoggedEvent>, PortError> {
        let deadline = Instant::now() + wait;
        loop {
            let found = self.read_events(request_id, after).await?;
            let now = Instant::now();
            if !found.is_empty() || now >= deadline {
                return Ok(found);
            }
            tokio::time::sleep_until(deadline.min(now + EVENT_POLL)).await;
        }
    }

    async fn last_event_seq(&self, request_id: &str) -> Result<u64, PortError> {
        // Logs are gapless from 1: find the end by doubling, then halving.
        if !self.event_exists(request_id, 1).await? {
            return Ok(0);
        }
        let mut known = 1;
        let mut beyond = 2;
        while self.event_exists(request_id, beyond).await? {
            known = beyond;
            beyond = beyond.saturating_mul(2);
        }
        while beyond - known > 1 {
            let middle = known + (beyond - known) / 2;
            if self.event_exists(request_id, middle).await? {
                known = middle;
            } else {
                beyond = middle;
            }
        }
        Ok(known)
    }

    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError> {
        let id = &record.request_id;
        let body = record.body.to_string();
        if body.len() > MAX_TURN_BYTES {
            return Err(PortError::TooLarge {
                what: "answer",
                request_id: id.clone(),
                size: body.len(),
                limit: format!(
                    "the DynamoDB response store holds answers of at most {MAX_TURN_BYTES} bytes"
                ),
            });
        }
        // An answer too large for one item goes in parts: the first on the request's item, the
        // others on items of their own, written first and named by a reference of this write
        // alone, so two racing answers never mix.
        let parts = split_utf8(&body, PART_BYTES);
        let reference = uuid::Uuid::new_v4().simple().to_string();
        let client = self.client.get().await;
        let writes = parts.iter().enumerate().skip(1).map(|(index, part)| {
            let mut item: Item = HashMap::from([
                (
                    "request_id".to_owned(),
                    s(body_part_key(id, &reference, index)),
                ),
                ("value".to_owned(), s(*part)),
            ]);
            if let Some(expiry) = self.expiry() {
                item.insert("expiry_time".to_owned(), expiry);
            }
            let request = client
                .put_item()
                .table_name(&self.table)
                .set_item(Some(item));
            with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async move {
                request.send().await.map(drop).map_err(unavailable)
            })
        });
        futures_util::future::try_join_all(writes).await?;
        // An update, not a put: the registration (fingerprint) on the item stays.
        let mut sets = vec![
            "session_id = :session",
            "status_code = :status",
            "body = :body",
            "created_at = :created",
            "answer_attempt = :attempt",
        ];
        let mut request = self
            .client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(id))
            .expression_attribute_values(":session", s(&record.session_id))
            .expression_attribute_values(":status", n(record.status_code))
            .expression_attribute_values(":body", s(parts[0]))
            .expression_attribute_values(":created", n(record.created_at))
            .expression_attribute_values(":attempt", n(record.attempt))
            .expression_attribute_values(":now", n(now_epoch_secs()));
        if let Some(user) = &record.user_id {
            sets.push("user_id = :user");
            request = request.expression_attribute_values(":user", s(user));
        }
        if let Some(expiry) = self.expiry() {
            sets.push("expiry_time = :expiry");
            request = request.expression_attribute_values(":expiry", expiry);
        }
        let mut expression = format!("SET {}", sets.join(", "));
        if parts.len() > 1 {
            expression.push_str(", body_parts = :parts, body_ref = :ref");
            request = request
                .expression_attribute_values(":parts", n(parts.len()))
                .expression_attribute_values(":ref", s(&reference));
        } else {
            // What an expired answer split in parts left behind.
            expression.push_str(" REMOVE body_parts, body_ref");
        }
        // The store decides the order of answers (see `ResponseStore::put`): no answer and no
        // forgotten one of this attempt or later; or a stored failure of an earlier attempt.
        let request = request
            .update_expression(expression)
            .condition_expression(
                "attribute_not_exists(request_id) OR expiry_time <= :now \
                 OR (attribute_not_exists(body) AND \
                     (attribute_not_exists(floor_attempt) OR floor_attempt < :attempt)) \
                 OR (attribute_exists(body) AND answer_attempt < :attempt AND \
                     (status_code >= :s500 OR status_code IN (:s408, :s409, :s425, :s429)))",
            )
            .expression_attribute_values(":s500", n(500))
            .expression_attribute_values(":s408", n(408))
            .expression_attribute_values(":s409", n(409))
            .expression_attribute_values(":s425", n(425))
            .expression_attribute_values(":s429", n(429));
        // A failed condition: an answer that stays (a success, a later attempt's) or a
        // forgotten attempt at least as late; this one changes nothing.
        conditional(request.send()).await.map(drop)
    }

    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError> {
        match self.read(request_id).await? {
            Some(item) if item.contains_key("body") => self.decode(&item).await.map(Some),
            _ => Ok(None),
        }
    }

    async fn wait_for(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Option<ResponseRecord>, PortError> {
        let deadline = Instant::now() + timeout;
        let mut pause = POLL_FIRST;
        loop {
            if let Some(record) = self.get(request_id).await? {
                return Ok(Some(record));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            tokio::time::sleep_until(deadline.min(now + pause)).await;
            pause = (pause * 3 / 2).min(POLL_MAX);
        }
    }

    async fn claim(
        &self,
        request_id: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<ClaimOutcome, PortError> {
        use aws_sdk_dynamodb::types::ReturnValue;
        let now = now_millis();
        let until = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let attempt_of = |attributes: Option<&Item>| {
            attributes
                .and_then(|a| get_n::<u64>(a, "claim_attempt"))
                .unwrap_or(1)
        };
        // Free (no answer, no live claim): take the next attempt number.
        let mut take = self
            .client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .condition_expression(
                "(attribute_not_exists(body) OR expiry_time <= :epoch) AND \
                 (attribute_not_exists(claim_until) OR claim_until < :now)",
            )
            .expression_attribute_values(":epoch", n(now_epoch_secs()))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::UpdatedNew);
        let set = "SET claim_owner = :owner, claim_until = :until";
        take = match self.expiry() {
            Some(expiry) => take
                .update_expression(format!(
                    "{set}, expiry_time = :expiry ADD claim_attempt :one"
                ))
                .expression_attribute_values(":expiry", expiry),
            None => take.update_expression(format!("{set} ADD claim_attempt :one")),
        };
        if let Some(output) = conditional_output(take.send()).await? {
            return Ok(ClaimOutcome::Acquired {
                attempt: attempt_of(output.attributes.as_ref()),
            });
        }
        // Held by this owner: renewed, same attempt.
        let renew = self
            .client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .update_expression("SET claim_until = :until")
            .condition_expression(
                "(attribute_not_exists(body) OR expiry_time <= :epoch) AND claim_owner = :owner",
            )
            .expression_attribute_values(":epoch", n(now_epoch_secs()))
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(until))
            .return_values(ReturnValue::AllNew);
        if let Some(output) = conditional_output(renew.send()).await? {
            return Ok(ClaimOutcome::Acquired {
                attempt: attempt_of(output.attributes.as_ref()),
            });
        }
        match self.read(request_id).await? {
            Some(item) if item.contains_key("body") => Ok(ClaimOutcome::AlreadyAnswered),
            _ => Ok(ClaimOutcome::HeldByOther),
        }
    }

    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError> {
        let request = self
            .client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .update_expression("REMOVE claim_owner, claim_until")
            .condition_expression("claim_owner = :owner AND attribute_not_exists(body)")
            .expression_attribute_values(":owner", s(owner));
        // Not held by `owner` (any more): nothing to release.
        conditional(request.send()).await.map(drop)
    }

    async fn set_pointer(
        &self,
        name: &str,
        target: &str,
        user_id: Option<&str>,
    ) -> Result<(), PortError> {
        let mut item: Item = HashMap::from([
            ("request_id".to_owned(), s(pointer_key(name))),
            ("target".to_owned(), s(target)),
        ]);
        if let Some(user) = user_id {
            item.insert("user_id".to_owned(), s(user));
        }
        if let Some(expiry) = self.expiry() {
            item.insert("expiry_time".to_owned(), expiry);
        }
        let request = self
            .client
            .get()
            .await
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await
        .map(drop)
    }

    async fn pointer(&self, name: &str) -> Result<Option<Pointer>, PortError> {
        Ok(self.read(&pointer_key(name)).await?.and_then(|item| {
            Some(Pointer {
                target: get_s(&item, "target")?.to_owned(),
                user_id: get_s(&item, "user_id").map(str::to_owned),
            })
        }))
    }

    async fn forget(&self, answer: &ResponseRecord) -> Result<(), PortError> {
        let request = self
            .client
            .get()
            .await
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(&answer.request_id))
            .update_expression(
                "SET floor_attempt = :attempt \
                 REMOVE body, status_code, created_at, body_parts, body_ref, answer_attempt, \
                 claim_owner, claim_until",
            )
            .condition_expression("status_code = :status AND created_at = :created")
            .expression_attribute_values(":status", n(answer.status_code))
            .expression_attribute_values(":created", n(answer.created_at))
            .expression_attribute_values(":attempt", n(answer.attempt));
        // Another answer since, or none: nothing to forget. The event log stays: the next
        // run continues it.
        conditional(request.send()).await.map(drop)
    }
}

/// Session store on DynamoDB.
pub struct DynamoSessionStore {
    client: crate::aws::SdkClient<aws_sdk_dynamodb::Client>,
    table: String,
    ttl: u64,
}

fn turn_key(seq: u64, part: usize) -> String {
    format!("{TURN_PREFIX}{seq:012}#{part:03}")
}

/// `(seq, part)` of a turn item's sort key.
fn turn_position(key: &str) -> Option<(u64, usize)> {
    let rest = key.strip_prefix(TURN_PREFIX)?;
    let (seq, part) = rest.split_once('#')?;
    Some((seq.parse().ok()?, part.parse().ok()?))
}

/// `text` in pieces of at most `max` bytes, cut at character boundaries.
fn split_utf8(text: &str, max: usize) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max {
        let mut cut = max;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        let (head, tail) = rest.split_at(cut);
        parts.push(head);
        rest = tail;
    }
    parts.push(rest);
    parts
}

impl DynamoSessionStore {
    /// A store on the configured table.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        settings: &DynamoDbSettings,
    ) -> Result<Self, PortError> {
        Self::with_client(crate::aws::SdkClient::ready(client), settings)
    }

    /// A store on the configured table, its client made from `aws` on first use.
    pub fn lazy(aws: &crate::AwsConfig, settings: &DynamoDbSettings) -> Result<Self, PortError> {
        Self::with_client(
            crate::aws::SdkClient::lazy(aws, aws_sdk_dynamodb::Client::new),
            settings,
        )
    }

    fn with_client(
        client: crate::aws::SdkClient<aws_sdk_dynamodb::Client>,
        settings: &DynamoDbSettings,
    ) -> Result<Self, PortError> {
        Ok(Self {
            client,
            table: table_name(settings)?,
            ttl: settings.ttl,
        })
    }

    /// Turn items of a session whose sort key starts with `prefix`, newest first, page by page,
    /// until `more` says enough.
    async fn query_turns(
        &self,
        session_id: &str,
        prefix: &str,
        mut more: impl FnMut(&Item) -> bool,
    ) -> Result<(), PortError> {
        let mut start: Option<Item> = None;
        loop {
            let request = self
                .client
                .get()
                .await
                .query()
                .table_name(&self.table)
                .key_condition_expression("session_id = :s AND begins_with(#k, :p)")
                .expression_attribute_names("#k", "key")
                .expression_attribute_values(":s", s(session_id))
                .expression_attribute_values(":p", s(prefix))
                .scan_index_forward(false)
                .consistent_read(true)
                .set_exclusive_start_key(start.take());
            let page = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
                request.send().await.map_err(unavailable)
            })
            .await?;
            for item in page.items() {
                if !more(item) {
                    return Ok(());
                }
            }
            match page.last_evaluated_key() {
                Some(key) if !key.is_empty() => start = Some(key.clone()),
                _ => return Ok(()),
            }
        }
    }
}

/// The items of one turn as read: its number, its parts (`(part, value)`), and whether all of
/// them are still live (none past `expiry_time`).
struct TurnItems {
    seq: u64,
    parts: Vec<(usize, String)>,
    alive: bool,
}

impl TurnItems {
    fn assemble(mut self) -> Result<Turn, PortError> {
        self.parts.sort_by_key(|(part, _)| *part);
        let text: String = self.parts.iter().map(|(_, v)| v.as_str()).collect();
        serde_json::from_str(&text).map_err(|e| corrupt(&format!("session turn: {e}")))
    }
}

/// Collects turn items (newest first, a turn's parts together) into whole turns.
#[derive(Default)]
struct TurnAssembler {
    current: Option<TurnItems>,
}

impl TurnAssembler {
    /// Adds an item; when it starts another turn, returns the one before.
    fn push(&mut self, item: &Item) -> Option<TurnItems> {
        let (seq, part) = get_s(item, "key").and_then(turn_position)?;
        let value = get_s(item, "value").unwrap_or_default().to_owned();
        let live = !expired(item);
        match &mut self.current {
            Some(current) if current.seq == seq => {
                current.parts.push((part, value));
                current.alive &= live;
                None
            }
            _ => self.current.replace(TurnItems {
                seq,
                parts: vec![(part, value)],
                alive: live,
            }),
        }
    }

    fn finish(&mut self) -> Option<TurnItems> {
        self.current.take()
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn load(
        &self,
        session_id: &str,
        limits: HistoryLimits,
    ) -> Result<Option<SessionHistory>, PortError> {
        let mut next_seq = None;
        let mut assembler = TurnAssembler::default();
        let mut finished = Vec::new();
        let (mut items, mut bytes) = (0usize, 0usize);
        let mut error = None;
        // Set when the limits stop the query: the turn being assembled then may lack parts.
        let mut stopped = false;
        let mut take = |turn: TurnItems| -> bool {
            if !turn.alive {
                return true;
            }
            match turn.assemble() {
                Ok(turn) => {
                    items += turn.items.len();
                    bytes += turn.size();
                    let within = items <= limits.max_items && bytes <= limits.max_bytes;
                    finished.push(turn);
                    within
                }
                Err(e) => {
                    error = Some(e);
                    false
                }
            }
        };
        self.query_turns(session_id, TURN_PREFIX, |item| {
            if let Some((seq, _)) = get_s(item, "key").and_then(turn_position) {
                next_seq.get_or_insert(seq + 1);
            }
            match assembler.push(item) {
                Some(done) => {
                    let more = take(done);
                    stopped = !more;
                    more
                }
                None => true,
            }
        })
        .await?;
        if let Some(last) = assembler.finish().filter(|_| !stopped) {
            take(last);
        }
        if let Some(e) = error {
            return Err(e);
        }
        let Some(next_seq) = next_seq else {
            return Ok(None);
        };
        // The newest turn is first; `take` keeps those within the limits, oldest first.
        let user_id = finished.first().and_then(|t| t.user_id.clone());
        Ok(Some(SessionHistory {
            has_turns: !finished.is_empty(),
            turns: limits.take(finished),
            next_seq,
            user_id,
        }))
    }

    async fn append(&self, session_id: &str, seq: u64, turn: &Turn) -> Result<Appended, PortError> {
        use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
        use aws_sdk_dynamodb::types::{Put, TransactWriteItem};
        let text = serde_json::to_string(turn)
            .map_err(|e| PortError::Rejected(format!("the turn is not serializable: {e}")))?;
        if text.len() > MAX_TURN_BYTES {
            return Err(PortError::TooLarge {
                what: "turn",
                request_id: turn.request_id.clone(),
                size: text.len(),
                limit: format!(
                    "the DynamoDB session store holds turns of at most {MAX_TURN_BYTES} bytes \
                     (a transaction writes at most 4 MB)"
                ),
            });
        }
        let now = now_epoch_secs();
        let expiry = (self.ttl > 0).then(|| n(now + self.ttl));
        let put = |key: String, mut attributes: Item| -> Result<TransactWriteItem, PortError> {
            attributes.insert("session_id".to_owned(), s(session_id));
            attributes.insert("key".to_owned(), s(key));
            if let Some(expiry) = &expiry {
                attributes.insert("expiry_time".to_owned(), expiry.clone());
            }
            let put = Put::builder()
                .table_name(&self.table)
                .set_item(Some(attributes))
                .condition_expression("attribute_not_exists(session_id) OR expiry_time <= :now")
                .expression_attribute_values(":now", n(now))
                .build()
                .map_err(|e| PortError::Rejected(e.to_string()))?;
            Ok(TransactWriteItem::builder().put(put).build())
        };
        // The request index first: its cancellation reason tells a duplicate from a conflict.
        let mut writes = vec![put(
            format!("{REQUEST_PREFIX}{}", turn.request_id),
            HashMap::from([("seq".to_owned(), n(seq))]),
        )?];
        let parts = split_utf8(&text, PART_BYTES);
        for (index, part) in parts.iter().enumerate() {
            let mut attributes = HashMap::from([("value".to_owned(), s(*part))]);
            if index == 0 {
                attributes.insert("parts".to_owned(), n(parts.len()));
                attributes.insert("request_id".to_owned(), s(&turn.request_id));
                if let Some(user) = &turn.user_id {
                    attributes.insert("user_id".to_owned(), s(user));
                }
            }
            writes.push(put(turn_key(seq, index), attributes)?);
        }
        let request = self
            .client
            .get()
            .await
            .transact_write_items()
            .set_transact_items(Some(writes));
        let sent = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            Ok(request.send().await)
        })
        .await?;
        let Err(e) = sent else {
            return Ok(Appended::Stored);
        };
        let code = e
            .as_service_error()
            .and_then(ProvideErrorMetadata::code)
            .map(str::to_owned);
        match e.into_service_error() {
            TransactWriteItemsError::TransactionCanceledException(cancelled) => {
                let failed = |i: usize| {
                    cancelled
                        .cancellation_reasons()
                        .get(i)
                        .and_then(|r| r.code())
                        == Some("ConditionalCheckFailed")
                };
                if failed(0) {
                    Ok(Appended::Duplicate)
                } else if (1..=parts.len()).any(failed) {
                    Err(PortError::Conflict {
                        session_id: session_id.to_owned(),
                    })
                } else {
                    Err(unavailable(cancelled))
                }
            }
            other if code.as_deref() == Some("ValidationException") => {
                Err(PortError::Rejected(format!(
                    "DynamoDB refused the session write: {}",
                    other.meta().message().unwrap_or("validation error")
                )))
            }
            other => Err(unavailable(other)),
        }
    }

    async fn find(&self, session_id: &str, request_id: &str) -> Result<Option<Turn>, PortError> {
        let request = self
            .client
            .get()
            .await
            .get_item()
            .table_name(&self.table)
            .key("session_id", s(session_id))
            .key("key", s(format!("{REQUEST_PREFIX}{request_id}")))
            .consistent_read(true);
        let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await?;
        let Some(seq) = output
            .item
            .filter(|item| !expired(item))
            .and_then(|item| get_n::<u64>(&item, "seq"))
        else {
            return Ok(None);
        };
        let mut assembler = TurnAssembler::default();
        let prefix = format!("{TURN_PREFIX}{seq:012}#");
        self.query_turns(session_id, &prefix, |item| {
            assembler.push(item);
            true
        })
        .await?;
        match assembler.finish() {
            Some(turn) if turn.alive => turn.assemble().map(Some),
            _ => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn turns_split_at_character_boundaries_and_keys_sort_by_number() {
        let text = "é".repeat(10);
        let parts = split_utf8(&text, 3);
        assert!(parts.iter().all(|p| p.len() <= 3 && !p.is_empty()));
        assert_eq!(parts.concat(), text);
        assert_eq!(split_utf8("abc", 10), vec!["abc"]);
        assert!(turn_key(9, 0) < turn_key(10, 0));
        assert!(turn_key(10, 1) > turn_key(10, 0));
        assert_eq!(turn_position(&turn_key(42, 7)), Some((42, 7)));
        assert_eq!(turn_position("req#x"), None);
    }
}
