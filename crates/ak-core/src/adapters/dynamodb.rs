//! DynamoDB adapters.
//!
//! Responses: partition key `request_id` (S); attributes `session_id`, `user_id` (only when
//! known), `status_code` (N), `body` (S, the client's JSON), `created_at` (N) and `expiry_time`
//! (N, epoch seconds, only when ttl > 0). A claim is `claim_owner` / `claim_until` on the same
//! item, written only while no `body` exists; storing the answer replaces the item. Items past
//! `expiry_time` count as absent even before DynamoDB's TTL sweep removes them.
//!
//! Sessions: partition `session_id` (S), sort `key` (S, `conversation`), `value` (S, JSON),
//! `version` (N), `user_id`, `expiry_time`; saves are conditional on the version.

use super::{CALL_TIMEOUT, with_timeout};
use crate::config::DynamoDbSettings;
use crate::ports::{
    Backend, ClaimOutcome, PortError, ResponseRecord, ResponseStore, SessionStore, StoredSession,
    now_epoch_secs,
};
use async_trait::async_trait;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

type Item = HashMap<String, AttributeValue>;

const SESSION_SORT_KEY: &str = "conversation";
/// First and longest pause between reads while waiting for an answer.
const POLL_FIRST: Duration = Duration::from_millis(20);
const POLL_MAX: Duration = Duration::from_millis(50);

fn unavailable(e: impl std::error::Error) -> PortError {
    PortError::unavailable(Backend::DynamoDb, DisplayErrorContext(e))
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
    R: std::fmt::Debug,
{
    with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
        match send.await {
            Ok(_) => Ok(true),
            Err(e) if is_condition_failure(&e) => Ok(false),
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
    client: aws_sdk_dynamodb::Client,
    table: String,
    ttl: u64,
}

impl DynamoResponseStore {
    /// A store on the configured table.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
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

fn decode_record(item: &Item) -> Result<ResponseRecord, PortError> {
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
        body: serde_json::from_str(&text("body")?)
            .map_err(|e| corrupt(&format!("response body is not JSON: {e}")))?,
        created_at: get_n(item, "created_at").unwrap_or_default(),
    })
}

#[async_trait]
impl ResponseStore for DynamoResponseStore {
    async fn put(&self, record: &ResponseRecord) -> Result<(), PortError> {
        let mut item: Item = HashMap::from([
            ("request_id".to_owned(), s(&record.request_id)),
            ("session_id".to_owned(), s(&record.session_id)),
            ("status_code".to_owned(), n(record.status_code)),
            ("body".to_owned(), s(record.body.to_string())),
            ("created_at".to_owned(), n(record.created_at)),
        ]);
        if let Some(user) = &record.user_id {
            item.insert("user_id".to_owned(), s(user));
        }
        if let Some(expiry) = self.expiry() {
            item.insert("expiry_time".to_owned(), expiry);
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(body)");
        // A failed condition means it was already answered: the first answer stays.
        conditional(request.send()).await.map(drop)
    }

    async fn get(&self, request_id: &str) -> Result<Option<ResponseRecord>, PortError> {
        match self.read(request_id).await? {
            Some(item) if item.contains_key("body") => decode_record(&item).map(Some),
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
        let now = now_millis();
        let until = now.saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .condition_expression(
                "attribute_not_exists(body) AND (attribute_not_exists(claim_until) \
                 OR claim_until < :now OR claim_owner = :owner)",
            )
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":until", n(until))
            .expression_attribute_values(":now", n(now));
        request = match self.expiry() {
            Some(expiry) => request
                .update_expression(
                    "SET claim_owner = :owner, claim_until = :until, expiry_time = :expiry",
                )
                .expression_attribute_values(":expiry", expiry),
            None => request.update_expression("SET claim_owner = :owner, claim_until = :until"),
        };
        if conditional(request.send()).await? {
            return Ok(ClaimOutcome::Acquired);
        }
        match self.read(request_id).await? {
            Some(item) if item.contains_key("body") => Ok(ClaimOutcome::AlreadyAnswered),
            _ => Ok(ClaimOutcome::HeldByOther),
        }
    }

    async fn release(&self, request_id: &str, owner: &str) -> Result<(), PortError> {
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("request_id", s(request_id))
            .update_expression("REMOVE claim_owner, claim_until")
            .condition_expression("claim_owner = :owner AND attribute_not_exists(body)")
            .expression_attribute_values(":owner", s(owner));
        // Not held by `owner` (any more): nothing to release.
        conditional(request.send()).await.map(drop)
    }
}

/// Session store on DynamoDB.
pub struct DynamoSessionStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
    ttl: u64,
}

impl DynamoSessionStore {
    /// A store on the configured table.
    pub fn new(
        client: aws_sdk_dynamodb::Client,
        settings: &DynamoDbSettings,
    ) -> Result<Self, PortError> {
        Ok(Self {
            client,
            table: table_name(settings)?,
            ttl: settings.ttl,
        })
    }
}

#[async_trait]
impl SessionStore for DynamoSessionStore {
    async fn load(&self, session_id: &str) -> Result<Option<StoredSession>, PortError> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("session_id", s(session_id))
            .key("key", s(SESSION_SORT_KEY))
            .consistent_read(true);
        let output = with_timeout(Backend::DynamoDb, CALL_TIMEOUT, async {
            request.send().await.map_err(unavailable)
        })
        .await?;
        let Some(item) = output.item.filter(|item| !expired(item)) else {
            return Ok(None);
        };
        let items = get_s(&item, "value")
            .ok_or_else(|| corrupt("session item has no value"))
            .and_then(|v| {
                serde_json::from_str(v).map_err(|e| corrupt(&format!("session value: {e}")))
            })?;
        Ok(Some(StoredSession {
            items,
            user_id: get_s(&item, "user_id").map(str::to_owned),
            version: get_n(&item, "version").unwrap_or_default(),
        }))
    }

    async fn save(&self, session_id: &str, session: &StoredSession) -> Result<u64, PortError> {
        let version = session.version + 1;
        let value = serde_json::to_string(&session.items)
            .map_err(|e| PortError::Rejected(format!("session is not serializable: {e}")))?;
        let mut item: Item = HashMap::from([
            ("session_id".to_owned(), s(session_id)),
            ("key".to_owned(), s(SESSION_SORT_KEY)),
            ("value".to_owned(), s(value)),
            ("version".to_owned(), n(version)),
        ]);
        if let Some(user) = &session.user_id {
            item.insert("user_id".to_owned(), s(user));
        }
        if self.ttl > 0 {
            item.insert("expiry_time".to_owned(), n(now_epoch_secs() + self.ttl));
        }
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let request = if session.version == 0 {
            request
                .condition_expression("attribute_not_exists(session_id) OR expiry_time <= :now")
                .expression_attribute_values(":now", n(now_epoch_secs()))
        } else {
            request
                .condition_expression("version = :expected")
                .expression_attribute_values(":expected", n(session.version))
        };
        if conditional(request.send()).await? {
            Ok(version)
        } else {
            Err(PortError::Conflict {
                session_id: session_id.to_owned(),
            })
        }
    }
}
