//! A backend that goes away gives a clear 503-class error within the timeout, never a hang.

use ak_adapters::redis::{RedisResponseStore, RedisSessionStore};
use ak_core::ApiError;
use ak_core::config::RedisSettings;
use ak_core::ports::{PortError, ResponseRecord, ResponseStore, SessionStore, now_epoch_secs};
use ak_core::secret::SecretUrl;
use ak_http::ErrorResponse;
use ak_tests::{PrivateRedis, unique_name};
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn redis_stopped_is_a_503_within_the_timeout() -> anyhow::Result<()> {
    let mut server = PrivateRedis::start().await?;
    let settings = RedisSettings {
        url: SecretUrl::new(&server.url),
        prefix: Some("ak:responses:".to_owned()),
        ttl: 60,
        ..RedisSettings::default()
    };
    let store = RedisResponseStore::new(&settings)?;
    let sessions = RedisSessionStore::new(&settings)?;
    let record = ResponseRecord {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: 200,
        attempt: 0,
        body: json!({"result": "ok"}),
        created_at: now_epoch_secs(),
    };
    store.put(&record).await?;
    assert!(store.get(&record.request_id).await?.is_some());

    server.stop();
    for attempt in 0..2 {
        let started = Instant::now();
        let err = store.get(&record.request_id).await.err();
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(6),
            "attempt {attempt} took {took:?}"
        );
        let Some(err) = err else {
            panic!("a stopped Redis answered")
        };
        assert!(matches!(err, PortError::Unavailable { .. }), "{err:?}");
        assert!(err.is_transient());
        let response = ApiError::from(err).to_response();
        assert_eq!(response.status.as_u16(), 503);
        assert_eq!(
            response.body["error"],
            "Redis is unavailable; try again shortly"
        );
    }
    let started = Instant::now();
    let waited = store
        .wait_for(&record.request_id, Duration::from_secs(20))
        .await;
    assert!(
        waited.is_err(),
        "wait_for reports the outage instead of waiting it out"
    );
    assert!(started.elapsed() < Duration::from_secs(6));
    let limits = ak_core::ports::HistoryLimits {
        max_items: 10,
        max_bytes: 10_000,
    };
    let loaded = sessions.load("s", limits).await;
    assert!(
        matches!(loaded, Err(PortError::Unavailable { .. })),
        "{loaded:?}"
    );
    Ok(())
}

#[tokio::test]
async fn nothing_listening_is_a_503_too() -> anyhow::Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let settings = RedisSettings {
        url: SecretUrl::new(format!("redis://:secret-pw@127.0.0.1:{port}")),
        prefix: Some("p:".into()),
        ttl: 60,
        ..RedisSettings::default()
    };
    let store = RedisResponseStore::new(&settings)?;
    let started = Instant::now();
    let err = store.get("x").await.err();
    assert!(started.elapsed() < Duration::from_secs(6));
    let err = err.ok_or_else(|| anyhow::anyhow!("no error"))?;
    assert!(!err.to_string().contains("secret-pw"), "{err}");
    assert_eq!(ApiError::from(err).status_code(), 503);
    Ok(())
}
