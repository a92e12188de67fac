//! Harness for the integration tests: the endpoints of the services `scripts/test.sh` starts on
//! 127.0.0.1, and names unique to each test so tests run in parallel without sharing state.
//!
//! `scripts/test.sh` exports `TEST_REDIS_URL` and `AWS_ENDPOINT_URL` (moto, serving SQS and
//! DynamoDB) with dummy credentials. Run the suite through it; `cargo test` alone fails with a
//! message saying so, rather than skipping.

use std::time::Duration;

/// A variable `scripts/test.sh` sets, or a panic explaining how to get it.
fn required_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: run the integration tests through scripts/test.sh, \
             which starts Redis and moto on 127.0.0.1 and exports their endpoints"
        ),
    }
}

/// The Redis server for this run.
pub fn redis_url() -> String {
    required_env("TEST_REDIS_URL")
}

/// The AWS endpoint (moto) for this run; refuses anything but loopback, so no test can reach a
/// real AWS account.
pub fn aws_endpoint() -> String {
    let url = required_env("AWS_ENDPOINT_URL");
    let host = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    assert!(
        host == "127.0.0.1" || host == "localhost" || host == "[::1]",
        "AWS_ENDPOINT_URL={url} is not on loopback; the tests only talk to local emulators"
    );
    url
}

/// A name no other test uses: `<prefix>-<8 hex digits>`.
pub fn unique_name(prefix: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{prefix}-{}", &id[..8])
}

/// An SQS client for moto, configured the way the functions configure theirs.
pub async fn sqs_client() -> aws_sdk_sqs::Client {
    aws_endpoint();
    aws_sdk_sqs::Client::new(&ak_core::aws::load_sdk_config().await)
}

/// A multiplexed Redis connection with a short response timeout.
pub async fn redis_connection() -> anyhow::Result<redis::aio::MultiplexedConnection> {
    let client = redis::Client::open(redis_url())?;
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)));
    Ok(client
        .get_multiplexed_async_connection_with_config(&config)
        .await?)
}
