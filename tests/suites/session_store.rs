//! One behavioural suite for every session store: in-memory, Redis and DynamoDB (moto).

use ak_core::adapters::dynamodb::DynamoSessionStore;
use ak_core::adapters::memory::MemorySessionStore;
use ak_core::adapters::redis::RedisSessionStore;
use ak_core::config::DynamoDbSettings;
use ak_core::ports::{PortError, SessionStore, StoredSession};
use ak_tests::{create_session_table, dynamodb_client, redis_settings, unique_name};
use serde_json::json;
use std::sync::Arc;

async fn memory() -> Arc<dyn SessionStore> {
    Arc::new(MemorySessionStore::default())
}

async fn redis() -> Arc<dyn SessionStore> {
    Arc::new(RedisSessionStore::new(&redis_settings(3600)).unwrap_or_else(|e| panic!("{e}")))
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

async fn save_then_load(store: Arc<dyn SessionStore>) {
    let id = unique_name("session");
    assert_eq!(
        store.load(&id).await.unwrap_or_else(|e| panic!("{e}")),
        None
    );
    let first = StoredSession {
        items: vec![
            json!({"role": "user", "content": "what is 12 * 7"}),
            json!({"role": "assistant", "content": "84", "agent": "math"}),
        ],
        user_id: Some("user-a".into()),
        version: 0,
    };
    let v1 = store
        .save(&id, &first)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v1, 1);
    let loaded = store.load(&id).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        loaded,
        Some(StoredSession {
            version: 1,
            ..first.clone()
        })
    );

    let mut next = loaded.unwrap_or_default();
    next.items
        .push(json!({"role": "user", "content": "and 13 * 7?"}));
    let v2 = store
        .save(&id, &next)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(v2, 2);
    let loaded = store
        .load(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(loaded.items.len(), 3);
    assert_eq!(loaded.version, 2);
}

async fn a_stale_save_is_a_conflict(store: Arc<dyn SessionStore>) {
    let id = unique_name("session");
    let base = StoredSession {
        items: vec![json!({"role": "user", "content": "hi"})],
        user_id: None,
        version: 0,
    };
    store
        .save(&id, &base)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let loaded = store
        .load(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();

    let mut turn_a = loaded.clone();
    turn_a
        .items
        .push(json!({"role": "user", "content": "from request A"}));
    let mut turn_b = loaded.clone();
    turn_b
        .items
        .push(json!({"role": "user", "content": "from request B"}));
    store
        .save(&id, &turn_a)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let err = store.save(&id, &turn_b).await.err();
    assert!(matches!(err, Some(PortError::Conflict { .. })), "{err:?}");
    let after = store
        .load(&id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    assert_eq!(
        after.items, turn_a.items,
        "A's turn is kept, B's did not overwrite it"
    );

    let fresh = StoredSession {
        items: vec![],
        user_id: None,
        version: 0,
    };
    let err = store.save(&id, &fresh).await.err();
    assert!(
        matches!(err, Some(PortError::Conflict { .. })),
        "creating over an existing session: {err:?}"
    );
}

macro_rules! suite {
    ($($backend:ident),+) => {
        $(mod $backend {
            use super::*;
            #[tokio::test]
            async fn save_then_load() { super::save_then_load($backend().await).await }
            #[tokio::test]
            async fn a_stale_save_is_a_conflict() { super::a_stale_save_is_a_conflict($backend().await).await }
        })+
    };
}

suite!(memory, redis, dynamodb);

#[tokio::test]
async fn the_in_memory_store_is_bounded() {
    let store = MemorySessionStore::with_capacity(2);
    for id in ["a", "b", "c"] {
        store
            .save(id, &StoredSession::default())
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let kept = [
        store.load("a").await.ok().flatten().is_some(),
        store.load("b").await.ok().flatten().is_some(),
        store.load("c").await.ok().flatten().is_some(),
    ];
    assert_eq!(
        kept,
        [false, true, true],
        "the least recently used session is evicted"
    );
}
