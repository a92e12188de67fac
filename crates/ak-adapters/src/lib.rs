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

/// What a function calls in AWS besides its response store, for [`check_aws_environment`].
#[derive(Debug, Clone, Copy)]
pub struct AwsCalls {
    /// It sends to the SQS queues (the request handler in the queue modes, the agent runner);
    /// the response handler only receives the output queue's events.
    pub queues: bool,
    /// It runs agents: sessions and the model (Bedrock).
    pub agents: bool,
}

impl AwsCalls {
    /// The agent runner's: it sends answers to the output queue and runs agents.
    pub const AGENT_RUNNER: Self = Self {
        queues: true,
        agents: true,
    };
    /// The response handler's: it only stores answers (the output queue's events come from the
    /// event source mapping).
    pub const RESPONSE_HANDLER: Self = Self {
        queues: false,
        agents: false,
    };

    /// The request handler's: it sends to the input queue in the queue modes and runs agents
    /// in direct mode.
    pub fn request_handler(settings: &Settings) -> Self {
        let queues = settings.execution.mode().uses_queues();
        Self {
            queues,
            agents: !queues,
        }
    }
}

/// What of these settings this function calls in AWS, each with the setting that asks for it:
/// SQS queues, DynamoDB stores, ElastiCache IAM authentication, Bedrock.
fn aws_uses(settings: &Settings, calls: AwsCalls) -> Vec<String> {
    use ak_core::config::{ModelProvider, RedisAuth, RedisSettings};
    let mut uses = Vec::new();
    let execution = &settings.execution;
    if calls.queues
        && execution.mode().uses_queues()
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
    if calls.agents {
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
/// and what needs them, instead of failing every request. With `aws-config` the SDK's chain has
/// other sources, and nothing is checked. A function calls it last in its set-up, so that a
/// setting its build cannot serve (a feature left out) is said first.
///
/// # Errors
/// The missing variables and the settings that need them.
pub fn check_aws_environment(settings: &Settings, calls: AwsCalls) -> Result<(), SetupError> {
    if cfg!(feature = "aws-config") {
        return Ok(());
    }
    let var = |name: &str| std::env::var(name).is_ok_and(|v| !v.trim().is_empty());
    match missing_aws_environment(settings, calls, &var) {
        Some(message) => Err(SetupError(message)),
        None => Ok(()),
    }
}

/// [`check_aws_environment`]'s message, with `set` telling whether a variable is set.
fn missing_aws_environment(
    settings: &Settings,
    calls: AwsCalls,
    set: &dyn Fn(&str) -> bool,
) -> Option<String> {
    let uses = aws_uses(settings, calls);
    if uses.is_empty() {
        return None;
    }
    let mut missing = Vec::new();
    if !set("AWS_REGION") && !set("AWS_DEFAULT_REGION") {
        missing.push("AWS_REGION");
    }
    missing.extend(
        ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"]
            .into_iter()
            .filter(|name| !set(name)),
    );
    let (last, first) = missing.split_last()?;
    let named = if first.is_empty() {
        format!("{last} is")
    } else {
        format!("{} and {last} are", first.join(", "))
    };
    let (last_use, first_uses) = uses.split_last()?;
    let needed = if first_uses.is_empty() {
        format!("{last_use} needs")
    } else {
        format!("{} and {last_use} need", first_uses.join(", "))
    };
    Some(format!(
        "{named} not set, and {needed} them: Lambda sets the region and the execution role's \
         credentials (with AWS_SESSION_TOKEN) for every function; elsewhere set them (a \
         function takes its AWS configuration from the environment only)"
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

    const RUNNER: AwsCalls = AwsCalls {
        queues: true,
        agents: true,
    };

    fn message(settings: &Settings, calls: AwsCalls, set: &[&str]) -> Option<String> {
        missing_aws_environment(settings, calls, &|name| set.contains(&name))
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

        let Some(all) = message(&settings, RUNNER, &[]) else {
            panic!("nothing missing")
        };
        for named in [
            "AWS_REGION, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
            "SQS (execution.queues)",
            "DynamoDB (execution.response_store.type)",
            "Bedrock (model.provider)",
        ] {
            assert!(all.contains(named), "{named}: {all}");
        }
        // The request handler of a queue mode runs no agents: Bedrock is not its concern. Only
        // what is missing is named.
        let handler = AwsCalls {
            queues: true,
            agents: false,
        };
        let set = ["AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID"];
        let Some(said) = message(&settings, handler, &set) else {
            panic!("the secret not asked for")
        };
        let expected = "AWS_SECRET_ACCESS_KEY is not set, and SQS (execution.queues) and DynamoDB (execution.response_store.type) need them";
        assert!(said.starts_with(expected), "{said}");
        // The response handler only stores answers: without a DynamoDB store it needs nothing.
        settings.execution.response_store.kind = Some(StoreKind::Redis);
        let responses = AwsCalls {
            queues: false,
            agents: false,
        };
        assert_eq!(message(&settings, responses, &[]), None);
        let set = ["AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];
        assert_eq!(message(&settings, RUNNER, &set), None);
    }

    #[test]
    fn settings_without_aws_need_nothing_and_redis_iam_does() {
        let mut settings = Settings::default();
        settings.session.kind = SessionKind::Redis;
        assert_eq!(message(&settings, RUNNER, &[]), None);
        settings.session.redis.auth = RedisAuth::Iam;
        let Some(iam) = message(&settings, RUNNER, &["AWS_REGION"]) else {
            panic!("IAM authentication without credentials")
        };
        assert!(
            iam.contains("ElastiCache IAM authentication (session.redis.auth)"),
            "{iam}"
        );
    }
}
