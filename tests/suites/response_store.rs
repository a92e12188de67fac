//! One behavioural suite for every response store: in-memory, Redis and DynamoDB (moto).

use ak_adapters::dynamodb::DynamoResponseStore;
use ak_adapters::redis::RedisResponseStore;
use ak_core::config::DynamoDbSettings;
use ak_core::ports::memory::MemoryResponseStore;
use ak_core::ports::{ClaimOutcome, Registration, ResponseRecord, ResponseStore, now_epoch_secs};
use ak_tests::{create_response_table, dynamodb_client, redis_settings, unique_name};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

fn record(user: Option<&str>) -> ResponseRecord {
    ResponseRecord {
        request_id: unique_name("req"),
        session_id: unique_name("session"),
        user_id: user.map(str::to_owned),
        status_code: 200,
        attempt: 0,
        body: json!({"result": "84", "agent": "math", "nested": {"list": [1, 2, 3]}}),
        created_at: now_epoch_secs(),
    }
}

async fn memory() -> Arc<dyn ResponseStore> {
    Arc::new(MemoryResponseStore::default())
}

async fn redis() -> Arc<dyn ResponseStore> {
    Arc::new(RedisResponseStore::new(&redis_settings(3600)).unwrap_or_else(|e| panic!("{e}")))
}

/// Redis over TLS only, the test CA in `ca_file`.
async fn redis_tls() -> Arc<dyn ResponseStore> {
    Arc::new(
        RedisResponseStore::new(&ak_tests::redis_tls_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A cluster-mode node owning every slot, without the commands ElastiCache Serverless
/// refuses, reached with a plain client as Serverless is.
async fn redis_serverless() -> Arc<dyn ResponseStore> {
    Arc::new(
        RedisResponseStore::new(&ak_tests::redis_cluster_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A three-node cluster through the cluster client (`cluster: true`).
async fn redis_cluster() -> Arc<dyn ResponseStore> {
    Arc::new(
        RedisResponseStore::new(&ak_tests::redis_cluster3_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn dynamodb_with_table() -> (Arc<dyn ResponseStore>, String) {
    let client = dynamodb_client().await;
    let table = unique_name("responses");
    create_response_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("create table: {e}"));
    let settings = DynamoDbSettings {
        table_name: Some(table.clone()),
        ttl: 3600,
    };
    let store = DynamoResponseStore::new(client, &settings).unwrap_or_else(|e| panic!("{e}"));
    (Arc::new(store), table)
}

async fn dynamodb() -> Arc<dyn ResponseStore> {
    dynamodb_with_table().await.0
}

async fn round_trip_keeps_every_field(store: Arc<dyn ResponseStore>) {
    for user in [Some("user-a"), None] {
        let r = record(user);
        store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
        let got = store
            .get(&r.request_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.as_ref(), Some(&r));
    }
    let missing = store
        .get(&unique_name("nobody"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(missing, None);
}

async fn get_is_non_destructive_and_first_answer_wins(store: Arc<dyn ResponseStore>) {
    let first = record(Some("u"));
    store.put(&first).await.unwrap_or_else(|e| panic!("{e}"));
    let mut second = first.clone();
    second.body = json!({"result": "a different answer from a duplicate run"});
    second.status_code = 500;
    store.put(&second).await.unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..3 {
        let got = store
            .get(&first.request_id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.as_ref(), Some(&first), "read again, same first answer");
    }
}

async fn wait_for_returns_soon_after_a_put(store: Arc<dyn ResponseStore>) {
    let r = record(None);
    let putter = {
        let store = store.clone();
        let r = r.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(400)).await;
            store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
            Instant::now()
        })
    };
    let started = Instant::now();
    let got = store
        .wait_for(&r.request_id, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = Instant::now();
    let stored = putter.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_ref(), Some(&r));
    assert!(
        answered >= started + Duration::from_millis(350),
        "it did wait for the put"
    );
    let lag = answered.saturating_duration_since(stored);
    assert!(
        lag < Duration::from_millis(100),
        "answered {lag:?} after the put"
    );
}

async fn wait_for_gives_up_at_its_bound(store: Arc<dyn ResponseStore>) {
    let started = Instant::now();
    let got = store
        .wait_for(&unique_name("never"), Duration::from_millis(300))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let waited = started.elapsed();
    assert_eq!(got, None);
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    assert!(waited < Duration::from_secs(2), "{waited:?}");
}

/// How far apart the two competing claims start. moto serves requests on threads without
/// locking an item between a condition check and the write, so two conditional writes that
/// arrive at the same instant can both pass there; DynamoDB itself makes each conditional
/// write atomic. Against moto the second claim therefore starts a moment after the first.
fn claim_stagger(backend: &str) -> Duration {
    if backend == "dynamodb" {
        Duration::from_millis(50)
    } else {
        Duration::ZERO
    }
}

async fn claims_are_exclusive_and_lapse(store: Arc<dyn ResponseStore>, stagger: Duration) {
    let id = unique_name("req");
    let ttl = Duration::from_millis(600);
    let second = async {
        tokio::time::sleep(stagger).await;
        store.claim(&id, "runner-b", ttl).await
    };
    let (a, b) = tokio::join!(store.claim(&id, "runner-a", ttl), second);
    let outcomes = [
        a.unwrap_or_else(|e| panic!("{e}")),
        b.unwrap_or_else(|e| panic!("{e}")),
    ];
    let acquired = outcomes
        .iter()
        .filter(|o| **o == ClaimOutcome::Acquired { attempt: 1 })
        .count();
    let held = outcomes
        .iter()
        .filter(|o| **o == ClaimOutcome::HeldByOther)
        .count();
    assert_eq!((acquired, held), (1, 1), "{outcomes:?}");

    tokio::time::sleep(Duration::from_millis(900)).await;
    let late = store
        .claim(&id, "runner-c", ttl)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        late,
        ClaimOutcome::Acquired { attempt: 2 },
        "an expired claim lapses; the next claim is the next attempt"
    );
    assert_eq!(
        store
            .claim(&id, "runner-c", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Acquired { attempt: 2 },
        "the holder's claim again is a renewal, not another attempt"
    );
    let blocked = store
        .claim(&id, "runner-d", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(blocked, ClaimOutcome::HeldByOther);
    store
        .release(&id, "runner-d")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .claim(&id, "runner-d", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::HeldByOther,
        "releasing someone else's claim does nothing"
    );
    store
        .release(&id, "runner-c")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store
            .claim(&id, "runner-d", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Acquired { attempt: 3 },
        "a released claim is free at once"
    );

    let mut answer = record(None);
    answer.request_id = id.clone();
    store.put(&answer).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get(&id).await.unwrap_or_else(|e| panic!("{e}")),
        Some(answer),
        "storing the answer works while a claim is held"
    );
    assert_eq!(
        store
            .claim(&id, "runner-e", ttl)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::AlreadyAnswered
    );
}

async fn a_claim_alone_is_not_an_answer(store: Arc<dyn ResponseStore>) {
    let id = unique_name("req");
    store
        .claim(&id, "runner", Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get(&id).await.unwrap_or_else(|e| panic!("{e}")), None);
}

async fn answers_of_megabytes_are_stored_whole(store: Arc<dyn ResponseStore>) {
    // Larger than a DynamoDB item (400 KB) and than a Redis bulk reply one would expect, with
    // multi-byte characters across every cut.
    let mut r = record(Some("u"));
    r.body = json!({"result": "ü€😀".repeat(120_000), "agent": "writer"});
    assert!(r.body.to_string().len() > 1_000_000);
    store
        .register(&r.request_id, "fp-big", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
    let got = store
        .get(&r.request_id)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(got.as_ref(), Some(&r));
    let again = store
        .register(&r.request_id, "fp-big", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(again, Registration::Repeat(Some(r.clone())));
    // A small answer for another request is not mixed with it.
    let small = record(None);
    store.put(&small).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get(&small.request_id).await.ok().flatten(),
        Some(small)
    );
}

async fn a_forgotten_failure_makes_room_for_the_next_answer(store: Arc<dyn ResponseStore>) {
    let mut failed = record(None);
    failed.status_code = 502;
    store
        .register(&failed.request_id, "fp", None)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store
        .claim(&failed.request_id, "runner-a", Duration::from_secs(60))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    store.put(&failed).await.unwrap_or_else(|e| panic!("{e}"));
    // Forgetting another answer than the stored one changes nothing.
    let mut other = failed.clone();
    other.created_at += 1;
    store.forget(&other).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get(&failed.request_id).await.ok().flatten().as_ref(),
        Some(&failed)
    );
    store
        .forget(&failed)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get(&failed.request_id).await.ok().flatten(), None);
    assert_eq!(
        store
            .register(&failed.request_id, "fp", None)
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        Registration::Repeat(None),
        "the registration stays"
    );
    assert_eq!(
        store
            .claim(&failed.request_id, "runner-b", Duration::from_secs(60))
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        ClaimOutcome::Acquired { attempt: 2 },
        "the claim went with the answer; the rerun is the next attempt"
    );
    // The failure redelivered late (its output message again) is not stored again.
    store.put(&failed).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get(&failed.request_id).await.ok().flatten(), None);
    let fixed = ResponseRecord {
        status_code: 200,
        attempt: 2,
        ..failed.clone()
    };
    store.put(&fixed).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        store.get(&failed.request_id).await.ok().flatten(),
        Some(fixed)
    );
}

macro_rules! suite {
    ($($backend:ident),+) => {
        $(mod $backend {
            use super::*;
            #[tokio::test]
            async fn round_trip_keeps_every_field() { super::round_trip_keeps_every_field($backend().await).await }
            #[tokio::test]
            async fn get_is_non_destructive_and_first_answer_wins() { super::get_is_non_destructive_and_first_answer_wins($backend().await).await }
            #[tokio::test]
            async fn wait_for_returns_soon_after_a_put() { super::wait_for_returns_soon_after_a_put($backend().await).await }
            #[tokio::test]
            async fn wait_for_gives_up_at_its_bound() { super::wait_for_gives_up_at_its_bound($backend().await).await }
            #[tokio::test]
            async fn claims_are_exclusive_and_lapse() {
                super::claims_are_exclusive_and_lapse($backend().await, claim_stagger(stringify!($backend))).await
            }
            #[tokio::test]
            async fn a_claim_alone_is_not_an_answer() { super::a_claim_alone_is_not_an_answer($backend().await).await }
            #[tokio::test]
            async fn answers_of_megabytes_are_stored_whole() { super::answers_of_megabytes_are_stored_whole($backend().await).await }
            #[tokio::test]
            async fn a_forgotten_failure_makes_room_for_the_next_answer() { super::a_forgotten_failure_makes_room_for_the_next_answer($backend().await).await }
        })+
    };
}

suite!(
    memory,
    redis,
    redis_tls,
    redis_serverless,
    redis_cluster,
    dynamodb
);

#[tokio::test]
async fn a_redis_registration_lives_as_long_as_its_answer_and_then_the_id_is_new() {
    // A TTL of 2 s, and a run of 1.5 s: the answer is stored 1.5 s after the registration.
    let store = RedisResponseStore::new(&redis_settings(2)).unwrap_or_else(|e| panic!("{e}"));
    let r = record(None);
    let id = &r.request_id;
    assert_eq!(
        store.register(id, "first", None).await.ok(),
        Some(Registration::New)
    );
    assert_eq!(
        store
            .claim(id, "runner", Duration::from_secs(300))
            .await
            .ok(),
        Some(ClaimOutcome::Acquired { attempt: 1 })
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // 2.5 s after the registration, 1 s after the answer: another request is still told apart.
    assert_eq!(
        store.register(id, "second", None).await.ok(),
        Some(Registration::Mismatch)
    );
    tokio::time::sleep(Duration::from_millis(1600)).await;
    // Both expired: the id is new, and nothing of its first use (the 300 s claim) is in the way.
    assert_eq!(
        store.register(id, "second", None).await.ok(),
        Some(Registration::New)
    );
    assert_eq!(store.get(id).await.ok(), Some(None));
    assert!(
        store
            .claim(id, "runner-2", Duration::from_secs(30))
            .await
            .ok()
            .is_some_and(|o| matches!(o, ClaimOutcome::Acquired { .. }))
    );
}

#[tokio::test]
async fn redis_entries_expire_by_ttl() -> anyhow::Result<()> {
    let settings = redis_settings(120);
    let store = RedisResponseStore::new(&settings)?;
    let r = record(None);
    store.put(&r).await?;
    let mut conn = ak_tests::redis_connection().await?;
    let key = format!("{}{{{}}}", settings.prefix(), r.request_id);
    let ttl: i64 = ::redis::cmd("TTL").arg(&key).query_async(&mut conn).await?;
    assert!((1..=120).contains(&ttl), "TTL {ttl}");
    let raw: String = ::redis::cmd("GET").arg(&key).query_async(&mut conn).await?;
    assert!(!raw.contains("user_id"), "absent user_id is omitted: {raw}");
    Ok(())
}

#[tokio::test]
async fn dynamodb_items_carry_expiry_and_omit_absent_fields() -> anyhow::Result<()> {
    let (store, table) = dynamodb_with_table().await;
    let r = record(None);
    store.put(&r).await?;
    let item = dynamodb_client()
        .await
        .get_item()
        .table_name(&table)
        .key(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S(r.request_id.clone()),
        )
        .send()
        .await?
        .item
        .ok_or_else(|| anyhow::anyhow!("item not stored"))?;
    let expiry: u64 = item
        .get("expiry_time")
        .and_then(|v| v.as_n().ok())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no expiry_time"))?;
    let expected = now_epoch_secs() + 3600;
    assert!(
        expiry.abs_diff(expected) <= 5,
        "expiry_time {expiry}, expected ≈ {expected}"
    );
    assert!(
        !item.contains_key("user_id"),
        "absent user_id is not written as null"
    );
    assert!(
        item.values().all(|v| !v.is_null()),
        "no NULL attributes: {item:?}"
    );
    Ok(())
}

#[tokio::test]
async fn dynamodb_without_ttl_writes_no_expiry() -> anyhow::Result<()> {
    let client = dynamodb_client().await;
    let table = unique_name("responses");
    create_response_table(&client, &table).await?;
    let settings = DynamoDbSettings {
        table_name: Some(table.clone()),
        ttl: 0,
    };
    let store = DynamoResponseStore::new(client.clone(), &settings)?;
    let r = record(Some("u"));
    store.put(&r).await?;
    let item = client
        .get_item()
        .table_name(&table)
        .key(
            "request_id",
            aws_sdk_dynamodb::types::AttributeValue::S(r.request_id.clone()),
        )
        .send()
        .await?
        .item
        .unwrap_or_default();
    assert!(!item.contains_key("expiry_time"));
    assert_eq!(
        item.get("user_id")
            .and_then(|v| v.as_s().ok())
            .map(String::as_str),
        Some("u")
    );
    Ok(())
}
