//! One behavioural suite for every session store: in-memory, Redis and DynamoDB (moto).

use ak_adapters::dynamodb::DynamoSessionStore;
use ak_adapters::redis::RedisSessionStore;
use ak_core::config::DynamoDbSettings;
use ak_core::ports::memory::MemorySessionStore;
use ak_core::ports::{Appended, HistoryLimits, PortError, SessionStore, Turn};
use ak_http::ErrorResponse;
use ak_tests::{create_session_table, dynamodb_client, redis_settings, unique_name};
use serde_json::json;
use std::sync::Arc;

async fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemorySessionStore::default())
}

async fn redis() -> Arc<dyn SessionStore> {
    Arc::new(RedisSessionStore::new(&redis_settings(3600)).unwrap_or_else(|e| panic!("{e}")))
}

/// Redis over TLS only, the test CA in `ca_file`.
async fn redis_tls() -> Arc<dyn SessionStore> {
    Arc::new(
        RedisSessionStore::new(&ak_tests::redis_tls_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A cluster-mode node owning every slot, without the commands ElastiCache Serverless
/// refuses, reached with a plain client as Serverless is.
async fn redis_serverless() -> Arc<dyn SessionStore> {
    Arc::new(
        RedisSessionStore::new(&ak_tests::redis_cluster_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

/// A three-node cluster through the cluster client (`cluster: true`).
async fn redis_cluster() -> Arc<dyn SessionStore> {
    Arc::new(
        RedisSessionStore::new(&ak_tests::redis_cluster3_settings(3600))
            .unwrap_or_else(|e| panic!("{e}")),
    )
}

async fn dynamodb() -> Arc<dyn SessionStore> {
    let client = dynamodb_client().await;
    let table = unique_name("sessions");
    create_session_table(&client, &table)
        .await
        .unwrap_or_else(|e| panic!("create table: {e}"));
    let settings = DynamoDbSettings {
        table_name: Some(table),
        ttl: 3600,
    };
    Arc::new(DynamoSessionStore::new(client, &settings).unwrap_or_else(|e| panic!("{e}")))
}

const ALL: HistoryLimits = HistoryLimits {
    max_items: usize::MAX,
    max_bytes: usize::MAX,
};

/// A turn of two messages whose answer is `answer`.
pub(crate) fn turn(request_id: &str, user: Option<&str>, answer: &str) -> Turn {
    Turn {
        request_id: request_id.to_owned(),
        fingerprint: format!("fp-{request_id}"),
        user_id: user.map(str::to_owned),
        items: vec![
            json!({"role": "user", "content": format!("question of {request_id}")}),
            json!({"role": "assistant", "content": answer, "agent": "history"}),
        ],
        created_at: 1,
    }
}

async fn append(store: &dyn SessionStore, id: &str, seq: u64, t: &Turn) -> Appended {
    store
        .append(id, seq, t)
        .await
        .unwrap_or_else(|e| panic!("append {seq}: {e}"))
}

async fn turns_append_and_load_in_order(store: Arc<dyn SessionStore>) {
    let id = unique_name("session");
    assert_eq!(
        store.load(&id, ALL).await.unwrap_or_else(|e| panic!("{e}")),
        None
    );
    for (seq, answer) in ["first", "second", "third"].iter().enumerate() {
        let t = turn(&format!("r{seq}"), Some("user-a"), answer);
        assert_eq!(
            append(store.as_ref(), &id, seq as u64, &t).await,
            Appended::Stored
        );
    }
    let loaded = store
        .load(&id, ALL)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("saved session not found"));
    assert_eq!(loaded.next_seq, 3);
    assert_eq!(loaded.user_id.as_deref(), Some("user-a"));
    let answers: Vec<&str> = loaded
        .turns
        .iter()
        .map(|t| t.items[1]["content"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(answers, ["first", "second", "third"]);
    assert_eq!(loaded.turns[0], turn("r0", Some("user-a"), "first"));
}

async fn a_taken_number_is_a_conflict_and_a_known_request_a_duplicate(
    store: Arc<dyn SessionStore>,
) {
    let id = unique_name("session");
    append(store.as_ref(), &id, 0, &turn("r0", None, "a")).await;
    let stale = store.append(&id, 0, &turn("r1", None, "b")).await;
    assert!(
        matches!(stale, Err(PortError::Conflict { ref session_id }) if *session_id == id),
        "{stale:?}"
    );
    assert!(stale.err().is_some_and(|e| e.is_transient()));
    append(store.as_ref(), &id, 1, &turn("r1", None, "b")).await;
    // The same request again, whatever number it is given: not stored a second time.
    for seq in [0, 2, 9] {
        assert_eq!(
            append(store.as_ref(), &id, seq, &turn("r0", None, "again")).await,
            Appended::Duplicate,
            "seq {seq}"
        );
    }
    let loaded = store
        .load(&id, ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(loaded.next_seq, 2);
    assert_eq!(loaded.turns.len(), 2);
}

async fn loads_stop_at_the_limits_with_whole_turns_and_find_reaches_further(
    store: Arc<dyn SessionStore>,
) {
    let id = unique_name("session");
    for seq in 0..12u64 {
        let t = turn(&format!("r{seq}"), None, &"x".repeat(100));
        append(store.as_ref(), &id, seq, &t).await;
    }
    let by_items = HistoryLimits {
        max_items: 5,
        max_bytes: usize::MAX,
    };
    let loaded = store
        .load(&id, by_items)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    let ids: Vec<&str> = loaded.turns.iter().map(|t| t.request_id.as_str()).collect();
    assert_eq!(ids, ["r10", "r11"], "two whole turns fit in five messages");
    assert_eq!(loaded.next_seq, 12);
    let size = turn("r0", None, &"x".repeat(100)).size();
    let by_bytes = HistoryLimits {
        max_items: usize::MAX,
        max_bytes: 3 * size + size / 2,
    };
    let loaded = store
        .load(&id, by_bytes)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(loaded.turns.len(), 3);
    let none = HistoryLimits {
        max_items: 1,
        max_bytes: usize::MAX,
    };
    let loaded = store
        .load(&id, none)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert!(loaded.turns.is_empty(), "a turn is never cut");
    assert_eq!(loaded.next_seq, 12);

    let old = store
        .find(&id, "r1")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(old.map(|t| t.request_id), Some("r1".to_owned()));
    assert_eq!(store.find(&id, "nope").await.ok().flatten(), None);
}

async fn large_turns_are_kept_whole(store: Arc<dyn SessionStore>) {
    let id = unique_name("session");
    // Larger than a DynamoDB item may be; multi-byte characters on every part boundary.
    let answer = "ü".repeat(600_000);
    let big = turn("big", Some("u"), &answer);
    assert_eq!(append(store.as_ref(), &id, 0, &big).await, Appended::Stored);
    let loaded = store
        .load(&id, ALL)
        .await
        .ok()
        .flatten()
        .unwrap_or_default();
    assert_eq!(loaded.turns, vec![big.clone()]);
    assert_eq!(
        store.find(&id, "big").await.ok().flatten(),
        Some(big),
        "found whole too"
    );
}

macro_rules! suite {
    ($($backend:ident),+) => {
        $(mod $backend {
            use super::*;
            #[tokio::test]
            async fn turns_append_and_load_in_order() {
                super::turns_append_and_load_in_order($backend().await).await
            }
            #[tokio::test]
            async fn a_taken_number_is_a_conflict_and_a_known_request_a_duplicate() {
                super::a_taken_number_is_a_conflict_and_a_known_request_a_duplicate($backend().await).await
            }
            #[tokio::test]
            async fn loads_stop_at_the_limits_with_whole_turns_and_find_reaches_further() {
                super::loads_stop_at_the_limits_with_whole_turns_and_find_reaches_further($backend().await).await
            }
            #[tokio::test]
            async fn large_turns_are_kept_whole() {
                super::large_turns_are_kept_whole($backend().await).await
            }
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
async fn a_turn_dynamodb_can_never_hold_is_a_permanent_error_naming_the_limit() {
    let store = dynamodb().await;
    let huge = turn("huge", None, &"y".repeat(5_000_000));
    let err = store.append(&unique_name("session"), 0, &huge).await.err();
    let Some(err) = err else {
        panic!("a 5 MB turn was accepted")
    };
    assert!(!err.is_transient(), "{err}");
    assert!(matches!(err, PortError::TooLarge { .. }), "{err:?}");
    let response = ak_core::ApiError::from(err).to_response();
    assert_eq!(response.status.as_u16(), 413);
    let message = response.body["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        message.contains("4 MB") && !message.contains("unavailable"),
        "{message}"
    );
}

#[tokio::test]
async fn the_in_memory_store_is_bounded() {
    let store = MemorySessionStore::with_capacity(2);
    for id in ["a", "b", "c"] {
        store
            .append(id, 0, &turn("r", None, "x"))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let kept = [
        store.load("a", ALL).await.ok().flatten().is_some(),
        store.load("b", ALL).await.ok().flatten().is_some(),
        store.load("c", ALL).await.ok().flatten().is_some(),
    ];
    assert_eq!(
        kept,
        [false, true, true],
        "the least recently used session is evicted"
    );
}
