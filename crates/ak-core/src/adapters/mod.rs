//! Adapters for the [ports](crate::ports): SQS, Redis, DynamoDB and in-process versions, and
//! the functions that pick one from the configuration.

pub mod dynamodb;
pub mod memory;
pub mod redis;
pub mod sqs;

use crate::config::{QueueUrl, SessionKind, Settings, StoreKind};
use crate::ports::{Backend, PortError, Queue, ResponseStore, SessionStore};
use aws_config::SdkConfig;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::OnceCell;

/// How long one call to a queue or store may take before it counts as unavailable.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// Runs a backend call with a deadline; a timeout is an `Unavailable` error.
pub(crate) async fn with_timeout<T>(
    backend: Backend,
    limit: Duration,
    call: impl Future<Output = Result<T, PortError>>,
) -> Result<T, PortError> {
    match tokio::time::timeout(limit, call).await {
        Ok(result) => result,
        Err(_) => Err(PortError::unavailable(
            backend,
            format!("no answer within {} ms", limit.as_millis()),
        )),
    }
}

/// The AWS SDK configuration, loaded once on first use so a cold start that needs no AWS
/// client does not pay for it.
#[derive(Clone, Default)]
pub struct AwsConfig(Arc<OnceCell<SdkConfig>>);

impl AwsConfig {
    /// The shared configuration.
    pub async fn get(&self) -> &SdkConfig {
        self.0.get_or_init(crate::aws::load_sdk_config).await
    }
}

/// The queue behind a URL: `memory://NAME` is the process-wide in-memory queue of that name.
pub async fn queue(url: &QueueUrl, aws: &AwsConfig) -> Arc<dyn Queue> {
    match url {
        QueueUrl::Memory(name) => memory::MemoryQueue::named(name),
        QueueUrl::Sqs(url) => Arc::new(sqs::SqsQueue::new(
            aws_sdk_sqs::Client::new(aws.get().await),
            url,
        )),
    }
}

/// The configured response store; `None` when `execution.response_store.type` is unset.
pub async fn response_store(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Option<Arc<dyn ResponseStore>>, PortError> {
    let config = &settings.execution.response_store;
    Ok(match config.kind {
        None => None,
        Some(StoreKind::Memory) => Some(Arc::new(memory::MemoryResponseStore::default())),
        Some(StoreKind::Redis) => Some(Arc::new(redis::RedisResponseStore::new(&config.redis)?)),
        Some(StoreKind::DynamoDb) => Some(Arc::new(dynamodb::DynamoResponseStore::new(
            aws_sdk_dynamodb::Client::new(aws.get().await),
            &config.dynamodb,
        )?)),
    })
}

/// The configured session store.
pub async fn session_store(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Arc<dyn SessionStore>, PortError> {
    let config = &settings.session;
    Ok(match config.kind {
        SessionKind::InMemory => Arc::new(memory::MemorySessionStore::default()),
        SessionKind::Redis => Arc::new(redis::RedisSessionStore::new(&config.redis)?),
        SessionKind::DynamoDb => Arc::new(dynamodb::DynamoSessionStore::new(
            aws_sdk_dynamodb::Client::new(aws.get().await),
            &config.dynamodb,
        )?),
    })
}
