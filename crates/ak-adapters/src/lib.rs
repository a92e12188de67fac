//! Adapters for the ports of `ak-core`: SQS, Redis and DynamoDB (the in-process ones are
//! `ak_core::ports::memory`), the shared AWS SDK configuration ([`aws`]), and the functions that
//! pick one from the configuration.
//!
//! Layer: adapters. Uses `ak-core` only; SDK and Redis types never leave this crate.

pub mod aws;
#[cfg(feature = "dynamodb")]
pub mod dynamodb;
#[cfg(feature = "redis")]
pub mod redis;
pub mod sqs;

use ak_core::config::{QueueUrl, SessionKind, Settings, StoreKind};
use ak_core::ports::{Backend, PortError, Queue, ResponseStore, SessionStore};
use aws_types::SdkConfig;
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
    /// A configuration with these credentials (static ones, or any provider) in `us-east-1`, the
    /// functions' HTTPS client and no endpoint of its own (tests and benchmarks).
    pub fn with_credentials(
        credentials: impl aws_credential_types::provider::ProvideCredentials + 'static,
    ) -> Self {
        let mut config = SdkConfig::builder()
            .credentials_provider(
                aws_credential_types::provider::SharedCredentialsProvider::new(credentials),
            )
            .region(aws_types::region::Region::new("us-east-1"))
            .behavior_version(
                aws_smithy_runtime_api::client::behavior_version::BehaviorVersion::latest(),
            )
            .http_client(aws::http_client());
        config.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
        let config = config.build();
        Self(Arc::new(OnceCell::new_with(Some(config))))
    }

    /// The shared configuration.
    pub async fn get(&self) -> &SdkConfig {
        self.0.get_or_init(aws::load_sdk_config).await
    }
}

/// The queue behind a URL: `memory://NAME` is the process-wide in-memory queue of that name.
pub async fn queue(url: &QueueUrl, aws: &AwsConfig) -> Arc<dyn Queue> {
    match url {
        QueueUrl::Memory(name) => ak_core::ports::memory::MemoryQueue::named(name),
        QueueUrl::Sqs(url) => Arc::new(sqs::SqsQueue::lazy(aws, url)),
    }
}

/// The configured response store; `None` when `execution.response_store.type` is unset. The
/// in-memory store is one per process, shared by everything in it.
#[cfg_attr(
    not(any(feature = "redis", feature = "dynamodb")),
    allow(unused_variables)
)]
pub async fn response_store(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Option<Arc<dyn ResponseStore>>, PortError> {
    let config = &settings.execution.response_store;
    Ok(match config.kind {
        None => None,
        Some(StoreKind::Memory) => Some(ak_core::ports::memory::MemoryResponseStore::shared()),
        #[cfg(feature = "redis")]
        Some(StoreKind::Redis) => Some(Arc::new(redis::RedisResponseStore::with_aws(
            &config.redis,
            aws,
        )?)),
        #[cfg(feature = "dynamodb")]
        Some(StoreKind::DynamoDb) => Some(Arc::new(dynamodb::DynamoResponseStore::lazy(
            aws,
            &config.dynamodb,
        )?)),
        #[allow(unreachable_patterns)]
        Some(other) => return Err(not_built("execution.response_store.type", other.as_str())),
    })
}

/// A component cannot start because the configuration lacks something it needs.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The response store, which the agent runner and response handler cannot work without.
pub async fn required_response_store(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Arc<dyn ResponseStore>, SetupError> {
    response_store(settings, aws)
        .await
        .map_err(|e| SetupError(e.to_string()))?
        .ok_or_else(|| {
            SetupError(
                "execution.response_store.type is not set (AK_EXECUTION__RESPONSE_STORE__TYPE); \
                 allowed: redis, dynamodb"
                    .to_owned(),
            )
        })
}

/// The output queue, which the agent runner cannot work without.
pub async fn required_output_queue(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Arc<dyn Queue>, SetupError> {
    match &settings.execution.queues.output.url {
        Some(url) => Ok(queue(url, aws).await),
        None => Err(SetupError(
            "execution.queues.output.url is not set (AK_EXECUTION__QUEUES__OUTPUT__URL); the agent \
             runner sends its answers there"
                .to_owned(),
        )),
    }
}

/// In a Lambda function, in-process queues and stores cannot work: each function is its own
/// process. Refuse them at cold start instead of losing requests.
pub fn check_shared_backends(settings: &Settings) -> Result<(), SetupError> {
    let execution = &settings.execution;
    if !execution.mode().uses_queues() {
        return Ok(());
    }
    let memory_queue = [&execution.queues.input.url, &execution.queues.output.url]
        .into_iter()
        .flatten()
        .find(|url| matches!(url, QueueUrl::Memory(_)));
    if let Some(url) = memory_queue {
        return Err(SetupError(format!(
            "{} is an in-process queue; Lambda functions need SQS queue URLs (memory:// works only in ak-local)",
            url.as_str()
        )));
    }
    if execution.response_store.kind == Some(StoreKind::Memory) {
        return Err(SetupError(
            "execution.response_store.type memory is in-process; Lambda functions need redis or dynamodb"
                .to_owned(),
        ));
    }
    Ok(())
}

/// What of these settings calls AWS, each with the setting that asks for it: SQS queues,
/// DynamoDB stores, ElastiCache IAM authentication and, where agents run, Bedrock.
fn aws_uses(settings: &Settings, runs_agents: bool) -> Vec<String> {
    use ak_core::config::{ModelProvider, RedisAuth, RedisSettings};
    let mut uses = Vec::new();
    let execution = &settings.execution;
    if execution.mode().uses_queues()
        && [&execution.queues.input.url, &execution.queues.output.url]
            .into_iter()
            .flatten()
            .any(|url| matches!(url, QueueUrl::Sqs(_)))
    {
        uses.push("SQS (execution.queues)".to_owned());
    }
    let mut store = |redis: &RedisSettings, dynamodb: bool, setting: &str| {
        if dynamodb {
            uses.push(format!("DynamoDB ({setting}.type)"));
        } else if redis.auth == RedisAuth::Iam {
            uses.push(format!(
                "ElastiCache IAM authentication ({setting}.redis.auth)"
            ));
        }
    };
    let response = &execution.response_store;
    match response.kind {
        Some(StoreKind::DynamoDb) => store(&response.redis, true, "execution.response_store"),
        Some(StoreKind::Redis) => store(&response.redis, false, "execution.response_store"),
        _ => {}
    }
    if runs_agents {
        let session = &settings.session;
        match session.kind {
            SessionKind::DynamoDb => store(&session.redis, true, "session"),
            SessionKind::Redis => store(&session.redis, false, "session"),
            SessionKind::InMemory => {}
        }
        if settings.model.provider == Some(ModelProvider::Bedrock) {
            uses.push("Bedrock (model.provider)".to_owned());
        }
    }
    uses
}

/// Lambda gives every function its region and its role's credentials in the environment; a
/// function built without `aws-config` has no other source. Outside Lambda (a container, the
/// Runtime Interface Emulator) they may be missing: refuse to start then, naming the variables
/// and what needs them, instead of failing every request. `runs_agents`: this function runs
/// agents (sessions and the model). With `aws-config` the SDK's chain has other sources, and
/// nothing is checked.
///
/// # Errors
/// The missing variables and the settings that need them.
pub fn check_aws_environment(settings: &Settings, runs_agents: bool) -> Result<(), SetupError> {
    if cfg!(feature = "aws-config") {
        return Ok(());
    }
    let var = |name: &str| std::env::var(name).is_ok_and(|v| !v.is_empty());
    match missing_aws_environment(settings, runs_agents, &var) {
        Some(message) => Err(SetupError(message)),
        None => Ok(()),
    }
}

/// [`check_aws_environment`]'s message, with `set` telling whether a variable is set.
fn missing_aws_environment(
    settings: &Settings,
    runs_agents: bool,
    set: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let uses = aws_uses(settings, runs_agents);
    if uses.is_empty() {
        return None;
    }
    let mut missing = Vec::new();
    if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
        missing.push("AWS_REGION");
    }
    if !set("AWS_ACCESS_KEY_ID") || !set("AWS_SECRET_ACCESS_KEY") {
        missing.push("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN with temporary credentials)");
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "{} {} not set, and {} need{} them: Lambda sets them for every function; elsewhere \
         set them (a function takes its AWS configuration from the environment only)",
        missing.join(" and "),
        if missing.len() > 1 { "are" } else { "is" },
        uses.join(", "),
        if uses.len() > 1 { "" } else { "s" },
    ))
}

/// The configured session store.
#[cfg_attr(
    not(any(feature = "redis", feature = "dynamodb")),
    allow(unused_variables)
)]
pub async fn session_store(
    settings: &Settings,
    aws: &AwsConfig,
) -> Result<Arc<dyn SessionStore>, PortError> {
    let config = &settings.session;
    Ok(match config.kind {
        SessionKind::InMemory => ak_core::ports::memory::MemorySessionStore::shared(),
        #[cfg(feature = "redis")]
        SessionKind::Redis => Arc::new(redis::RedisSessionStore::with_aws(&config.redis, aws)?),
        #[cfg(feature = "dynamodb")]
        SessionKind::DynamoDb => {
            Arc::new(dynamodb::DynamoSessionStore::lazy(aws, &config.dynamodb)?)
        }
        #[allow(unreachable_patterns)]
        other => return Err(not_built("session.type", other.as_str())),
    })
}

/// The error for a store this build was made without (its cargo feature is off): names the
/// setting, the store and the feature. deploy.sh builds each function with the stores the
/// deployment's settings name.
fn not_built(setting: &str, store: &str) -> PortError {
    PortError::Rejected(format!(
        "{setting} is {store}, but this build has no {store} store: build the function with the \
         `{store}` cargo feature (deploy.sh picks the stores from the Terraform variables)"
    ))
}

/// A function built without a store (deploy.sh builds each with the stores the deployment
/// names) refuses that store with an error naming the setting and the feature, instead of
/// failing later or falling back to another store. These run in the feature combinations of
/// scripts/test.sh that leave a store out.
#[cfg(all(test, not(all(feature = "redis", feature = "dynamodb"))))]
mod not_built_tests {
    use super::*;

    fn missing() -> &'static str {
        if cfg!(feature = "redis") {
            "dynamodb"
        } else {
            "redis"
        }
    }

    #[tokio::test]
    async fn a_store_left_out_of_the_build_is_refused_by_name() {
        let store: StoreKind = missing().parse().unwrap_or(StoreKind::Memory);
        let mut settings = Settings::default();
        settings.execution.response_store.kind = Some(store);
        let Err(error) = response_store(&settings, &AwsConfig::default()).await else {
            panic!(
                "a {} response store was made by a build without it",
                missing()
            );
        };
        let text = error.to_string();
        assert!(
            text.contains("execution.response_store.type is")
                && text.contains(&format!("`{}` cargo feature", missing())),
            "{text}"
        );

        let session: SessionKind = missing().parse().unwrap_or(SessionKind::InMemory);
        settings.session.kind = session;
        let Err(error) = session_store(&settings, &AwsConfig::default()).await else {
            panic!(
                "a {} session store was made by a build without it",
                missing()
            );
        };
        assert!(error.to_string().contains("session.type is"), "{error}");
    }
}

#[cfg(test)]
mod aws_environment_tests {
    use super::*;
    use ak_core::config::{ExecutionMode, ModelProvider, QueueUrl, RedisAuth};

    fn message(settings: &Settings, runs_agents: bool, set: &[&str]) -> Option<String> {
        missing_aws_environment(settings, runs_agents, &|name| set.contains(&name))
    }

    #[test]
    fn settings_that_call_aws_need_a_region_and_credentials_and_say_why() {
        let mut settings = Settings::default();
        settings.execution.set_mode(ExecutionMode::RestAsync);
        settings.execution.queues.input.url = Some(QueueUrl::Sqs(
            "https://sqs.eu-west-1.amazonaws.com/1/in".into(),
        ));
        settings.execution.response_store.kind = Some(StoreKind::DynamoDb);
        settings.model.provider = Some(ModelProvider::Bedrock);

        let Some(all) = message(&settings, true, &[]) else {
            panic!("nothing missing")
        };
        for named in [
            "AWS_REGION",
            "AWS_ACCESS_KEY_ID",
            "SQS (execution.queues)",
            "DynamoDB (execution.response_store.type)",
            "Bedrock (model.provider)",
        ] {
            assert!(all.contains(named), "{named}: {all}");
        }
        // The request handler of a queue mode runs no agents: Bedrock is not its concern.
        let Some(handler) = message(&settings, false, &["AWS_DEFAULT_REGION"]) else {
            panic!("credentials not asked for")
        };
        assert!(
            !handler.contains("Bedrock") && !handler.contains("AWS_REGION"),
            "{handler}"
        );
        let set = ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
        assert_eq!(message(&settings, true, &set), None);
    }

    #[test]
    fn settings_without_aws_need_nothing_and_redis_iam_does() {
        let mut settings = Settings::default();
        settings.session.kind = SessionKind::Redis;
        assert_eq!(message(&settings, true, &[]), None);
        settings.session.redis.auth = RedisAuth::Iam;
        let Some(iam) = message(&settings, true, &["AWS_REGION"]) else {
            panic!("IAM authentication without credentials")
        };
        assert!(
            iam.contains("ElastiCache IAM authentication (session.redis.auth)"),
            "{iam}"
        );
    }
}
