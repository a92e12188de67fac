//! The AWS SDK configuration every adapter shares: region, credentials and endpoint — from the
//! SDK's usual chain with the `aws-config` feature (ak-local, the tests), else from the
//! environment Lambda gives a function (see [`load_sdk_config`]); `AWS_ENDPOINT_URL` points every
//! client at a local emulator either way — TLS through rustls with ring, the SDK's standard
//! retries, and timeouts so a dead connection costs one short attempt, not a request:
//! a connect timeout (an unreachable endpoint fails fast) and an attempt timeout (a pooled
//! connection that went silent — dropped by a NAT gateway, frozen with the function — is given
//! up and the SDK's retry tries again on a new one). Each adapter call is also bounded as a
//! whole (`CALL_TIMEOUT`), well within any invocation's deadline.

use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::timeout::TimeoutConfig;
use aws_types::SdkConfig;
use std::time::Duration;

/// How long opening a connection to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long one attempt of a call may wait for its answer (DynamoDB and SQS answer in
/// milliseconds; a long poll sets its own).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(2);

/// The timeouts of the shared configuration, with this attempt timeout.
pub fn timeouts(attempt: Duration) -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(attempt)
        .build()
}

/// The HTTPS client of every SDK client: hyper with rustls and ring.
pub(crate) fn http_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https()
}

/// Loads the shared SDK configuration with the SDK's whole chain (environment, profiles, SSO,
/// web identity, container and instance metadata). Resolves no credentials yet: that happens
/// on first use, so a cold start does not wait on the network.
#[cfg(feature = "aws-config")]
pub async fn load_sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client())
        .timeout_config(timeouts(ATTEMPT_TIMEOUT))
        .load()
        .await
}

/// Loads the shared SDK configuration from the environment, as Lambda sets it for a function
/// (<https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html>), with the SDK's
/// environment variables (<https://docs.aws.amazon.com/sdkref/latest/guide/settings-reference.html>):
/// the region from `AWS_REGION` (else `AWS_DEFAULT_REGION`); the execution role's credentials
/// from `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN`; endpoints from
/// `AWS_ENDPOINT_URL_<SERVICE>` (`_SQS`, `_DYNAMODB`, `_BEDROCK_RUNTIME`) else `AWS_ENDPOINT_URL`,
/// unless `AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true`; `AWS_USE_FIPS_ENDPOINT`,
/// `AWS_USE_DUALSTACK_ENDPOINT`; `AWS_RETRY_MODE` (standard, adaptive) and `AWS_MAX_ATTEMPTS`
/// (standard, 3 attempts, by default). Profiles (`AWS_PROFILE`, the shared files), SSO, web
/// identity and the metadata endpoints need the `aws-config` feature: a set `AWS_PROFILE` is
/// logged as ignored. Without credentials, each call fails naming the variables.
#[cfg(not(feature = "aws-config"))]
pub async fn load_sdk_config() -> SdkConfig {
    let vars = std::env::vars()
        .filter(|(k, v)| k.starts_with("AWS_") && !v.is_empty())
        .collect();
    from_environment(vars)
}

/// [`load_sdk_config`] without `aws-config`, from these `AWS_*` variables.
#[cfg(not(feature = "aws-config"))]
fn from_environment(vars: std::collections::HashMap<String, String>) -> SdkConfig {
    use aws_credential_types::Credentials;
    use aws_credential_types::provider::SharedCredentialsProvider;
    use aws_smithy_types::retry::{RetryConfig, RetryMode};
    use aws_types::service_config::{LoadServiceConfig, ServiceConfigKey};

    /// Per-service settings from the environment, as the SDK's clients ask for them:
    /// `<KEY>_<SERVICE ID>` (e.g. `AWS_ENDPOINT_URL_BEDROCK_RUNTIME`), else `<KEY>`.
    #[derive(Debug)]
    struct ServiceVars {
        vars: std::collections::HashMap<String, String>,
        ignore_endpoints: bool,
    }
    impl LoadServiceConfig for ServiceVars {
        fn load_config(&self, key: ServiceConfigKey<'_>) -> Option<String> {
            if self.ignore_endpoints && key.env() == "AWS_ENDPOINT_URL" {
                return None;
            }
            let service = key
                .service_id()
                .to_ascii_uppercase()
                .replace([' ', '-'], "_");
            self.vars
                .get(&format!("{}_{service}", key.env()))
                .or_else(|| self.vars.get(key.env()))
                .cloned()
        }
    }

    let var = |name: &str| vars.get(name).cloned();
    let flag = |name: &str| var(name).is_some_and(|v| v.eq_ignore_ascii_case("true"));
    if let Some(profile) = var("AWS_PROFILE") {
        tracing::warn!(
            profile = %profile,
            "AWS_PROFILE is ignored: this build takes its AWS configuration from the environment \
             (the functions' build has no aws-config)"
        );
    }
    let credentials = match (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY")) {
        (Some(id), Some(secret)) => SharedCredentialsProvider::new(Credentials::new(
            id,
            secret,
            var("AWS_SESSION_TOKEN"),
            None,
            "Environment",
        )),
        _ => SharedCredentialsProvider::new(MissingCredentials),
    };
    let mut retry = match var("AWS_RETRY_MODE").map(|m| m.parse::<RetryMode>()) {
        Some(Ok(RetryMode::Adaptive)) => RetryConfig::adaptive(),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "AWS_RETRY_MODE is not standard or adaptive: standard");
            RetryConfig::standard()
        }
        _ => RetryConfig::standard(),
    };
    match var("AWS_MAX_ATTEMPTS").map(|n| n.parse::<u32>()) {
        Some(Ok(n)) if n >= 1 => retry = retry.with_max_attempts(n),
        Some(_) => tracing::warn!("AWS_MAX_ATTEMPTS is not a whole number of at least 1: 3"),
        None => {}
    }
    let ignore_endpoints = flag("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
    let mut config = SdkConfig::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(
            var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .map(aws_types::region::Region::new),
        )
        .credentials_provider(credentials)
        .use_fips(flag("AWS_USE_FIPS_ENDPOINT"))
        .use_dual_stack(flag("AWS_USE_DUALSTACK_ENDPOINT"))
        .retry_config(retry)
        .timeout_config(timeouts(ATTEMPT_TIMEOUT))
        .http_client(http_client());
    config.set_sleep_impl(aws_smithy_async::rt::sleep::default_async_sleep());
    if !ignore_endpoints {
        config.set_endpoint_url(var("AWS_ENDPOINT_URL"));
    }
    config
        .service_config(ServiceVars {
            vars,
            ignore_endpoints,
        })
        .build()
}

/// The credentials of an environment that has none: every call fails before it is sent, with
/// a [`CredentialsError::CredentialsNotLoaded`] naming the variables Lambda sets.
///
/// [`CredentialsError::CredentialsNotLoaded`]: aws_credential_types::provider::error::CredentialsError
#[derive(Debug)]
pub struct MissingCredentials;

impl aws_credential_types::provider::ProvideCredentials for MissingCredentials {
    fn provide_credentials<'a>(
        &'a self,
    ) -> aws_credential_types::provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        aws_credential_types::provider::future::ProvideCredentials::ready(Err(
            aws_credential_types::provider::error::CredentialsError::not_loaded(
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set (Lambda sets them from \
                 the function's execution role)",
            ),
        ))
    }
}

/// Whether an AWS SDK error is the configuration's doing — no credentials (or a credentials
/// provider set up wrong), no region or an invalid one, endpoint settings the rules refuse —
/// rather than a passing outage: the innermost cause, which names what to set. `None` for
/// anything else, timeouts of a credentials provider included.
pub fn configuration_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    use aws_credential_types::provider::error::CredentialsError;
    use aws_smithy_runtime_api::client::interceptors::error::ContextAttachedError;
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(credentials) = error.downcast_ref::<CredentialsError>() {
            return match credentials {
                CredentialsError::CredentialsNotLoaded(_)
                | CredentialsError::InvalidConfiguration(_) => {
                    Some(ak_core::https::root_cause(credentials))
                }
                _ => None,
            };
        }
        // The endpoint rules refuse the configuration ("Invalid Configuration: Missing Region",
        // FIPS with a custom endpoint, ...). Their error type comes from aws-smithy-http, of
        // which the SDK crates use more than one version: by its words (a unit test holds them).
        let text = error.to_string();
        if text.starts_with("Invalid Configuration") {
            return Some(format!(
                "{text} (check AWS_REGION and the AWS_* endpoint settings)"
            ));
        }
        // The endpoint's parameters (the region, a FIPS or dual-stack flag) are invalid.
        if let Some(context) = error.downcast_ref::<ContextAttachedError>()
            && context.to_string() == "endpoint params could not be built"
        {
            return Some(format!(
                "no endpoint can be made: {} (check AWS_REGION)",
                ak_core::https::root_cause(error)
            ));
        }
        next = error.source();
    }
    // With an endpoint URL the endpoint needs no region, but signing does; the SDK's signer
    // says so with an error type of its own that is not public, so by its words (a unit test
    // holds them).
    (ak_core::https::root_cause(e) == "missing signing region").then(|| {
        "no AWS region to sign requests for: set AWS_REGION (Lambda sets it for every function)"
            .to_owned()
    })
}

/// What a service's error code says about the deployment's configuration: credentials AWS does
/// not accept, a role without the permission, a table or queue that does not exist. These fail
/// the same way on every retry; `None` for any other code.
pub fn refused_for_configuration(code: &str) -> Option<&'static str> {
    const CREDENTIALS: &[&str] = &[
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "InvalidSignatureException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "IncompleteSignatureException",
        "MissingAuthenticationToken",
        "MissingAuthenticationTokenException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    ];
    const MISSING: &[&str] = &[
        "ResourceNotFoundException",
        "QueueDoesNotExist",
        "AWS.SimpleQueueService.NonExistentQueue",
    ];
    if CREDENTIALS.contains(&code) {
        Some(
            "AWS does not accept the function's credentials: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN, or the execution role",
        )
    } else if code.contains("AccessDenied") {
        Some(
            "the function's role lacks a permission: the Terraform module grants what the settings need; check the role's policies (and the key policy of a KMS-encrypted queue or table)",
        )
    } else if MISSING.contains(&code) {
        Some(
            "the table or queue does not exist in this region: check the setting's name or URL and AWS_REGION",
        )
    } else {
        None
    }
}

/// The error for a failed SDK call to `backend`: [`PortError::Misconfigured`] when the
/// configuration is at fault (see [`configuration_problem`] and [`refused_for_configuration`]),
/// else unavailable (a retry may pass). The SDK's error context is kept for the log.
///
/// [`PortError::Misconfigured`]: ak_core::ports::PortError::Misconfigured
pub fn sdk_failure(
    backend: ak_core::ports::Backend,
    e: impl aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
) -> ak_core::ports::PortError {
    if let Some(detail) = configuration_problem(&e) {
        return ak_core::ports::PortError::Misconfigured { backend, detail };
    }
    if let Some(code) = e.code()
        && let Some(what) = refused_for_configuration(code)
    {
        return ak_core::ports::PortError::Misconfigured {
            backend,
            detail: format!(
                "{backend} refused the call ({code}: {}); {what}",
                e.message().unwrap_or("no message")
            ),
        };
    }
    ak_core::ports::PortError::unavailable(
        backend,
        aws_smithy_types::error::display::DisplayErrorContext(e),
    )
}

/// An SDK client: one given, or one made from the shared configuration on first use — so a
/// cold start reads no AWS configuration files and loads no trust roots before the first
/// invocation needs them.
pub struct SdkClient<C>(Source<C>);

enum Source<C> {
    Ready(C),
    Lazy {
        aws: crate::AwsConfig,
        make: fn(&SdkConfig) -> C,
        cell: tokio::sync::OnceCell<C>,
    },
}

impl<C> SdkClient<C> {
    /// This client.
    pub fn ready(client: C) -> Self {
        Self(Source::Ready(client))
    }

    /// A client `make` builds from `aws` when it is first used.
    pub fn lazy(aws: &crate::AwsConfig, make: fn(&SdkConfig) -> C) -> Self {
        Self(Source::Lazy {
            aws: aws.clone(),
            make,
            cell: tokio::sync::OnceCell::new(),
        })
    }

    /// The client (made now, the first time).
    pub async fn get(&self) -> &C {
        match &self.0 {
            Source::Ready(client) => client,
            Source::Lazy { aws, make, cell } => {
                cell.get_or_init(|| async { make(aws.get().await) }).await
            }
        }
    }
}

#[cfg(all(test, not(feature = "aws-config")))]
mod tests {
    use super::*;
    use aws_credential_types::provider::ProvideCredentials;

    fn config(vars: &[(&str, &str)]) -> SdkConfig {
        from_environment(
            vars.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    /// The endpoint the SDK's client of `service` resolves (as its generated config does).
    fn endpoint(sdk: &SdkConfig, service: &str) -> Option<String> {
        let key = aws_types::service_config::ServiceConfigKey::builder()
            .service_id(service)
            .env("AWS_ENDPOINT_URL")
            .profile("endpoint_url")
            .build()
            .ok()?;
        sdk.service_config()
            .and_then(|c| c.load_config(key))
            .or_else(|| sdk.endpoint_url().map(str::to_owned))
    }

    #[tokio::test]
    async fn a_function_takes_region_credentials_and_endpoint_from_lambdas_environment() {
        let sdk = config(&[
            ("AWS_REGION", "eu-west-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            ("AWS_SECRET_ACCESS_KEY", "secret"),
            ("AWS_SESSION_TOKEN", "token"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
        ]);
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(sdk.endpoint_url(), Some("http://127.0.0.1:5000"));
        let credentials = match sdk.credentials_provider() {
            Some(provider) => provider.provide_credentials().await,
            None => panic!("no credentials provider"),
        };
        let credentials = credentials.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(credentials.access_key_id(), "AKIDEXAMPLE");
        assert_eq!(credentials.session_token(), Some("token"));
        assert!(sdk.sleep_impl().is_some(), "timeouts need a sleep");
        assert_eq!(
            sdk.timeout_config().and_then(|t| t.connect_timeout()),
            Some(CONNECT_TIMEOUT)
        );

        let sdk = config(&[
            ("AWS_DEFAULT_REGION", "us-east-2"),
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000"),
            ("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true"),
        ]);
        assert_eq!(sdk.region().map(|r| r.as_ref()), Some("us-east-2"));
        assert_eq!(sdk.endpoint_url(), None);
        let missing = match sdk.credentials_provider() {
            Some(provider) => provider.provide_credentials().await,
            None => panic!("no credentials provider"),
        };
        let message = match missing {
            Err(e) => aws_smithy_types::error::display::DisplayErrorContext(e).to_string(),
            Ok(_) => panic!("credentials from nowhere"),
        };
        assert!(message.contains("AWS_ACCESS_KEY_ID"), "{message}");
        assert_eq!(
            endpoint(&sdk, "SQS"),
            None,
            "ignored endpoints stay ignored"
        );
    }

    #[test]
    fn service_endpoints_fips_dual_stack_and_retries_follow_the_sdks_variables() {
        use aws_smithy_types::retry::RetryConfig;
        let sdk = config(&[
            ("AWS_REGION", "us-gov-west-1"),
            ("AWS_ENDPOINT_URL", "http://global:1"),
            ("AWS_ENDPOINT_URL_BEDROCK_RUNTIME", "http://bedrock:2"),
            ("AWS_ENDPOINT_URL_SQS", "http://sqs:3"),
            ("AWS_USE_FIPS_ENDPOINT", "true"),
            ("AWS_USE_DUALSTACK_ENDPOINT", "TRUE"),
            ("AWS_RETRY_MODE", "adaptive"),
            ("AWS_MAX_ATTEMPTS", "5"),
        ]);
        assert_eq!(
            endpoint(&sdk, "Bedrock Runtime").as_deref(),
            Some("http://bedrock:2")
        );
        assert_eq!(endpoint(&sdk, "SQS").as_deref(), Some("http://sqs:3"));
        assert_eq!(
            endpoint(&sdk, "DynamoDB").as_deref(),
            Some("http://global:1")
        );
        assert_eq!(sdk.use_fips(), Some(true));
        assert_eq!(sdk.use_dual_stack(), Some(true));
        let retry = sdk
            .retry_config()
            .cloned()
            .unwrap_or_else(RetryConfig::disabled);
        assert_eq!(retry.max_attempts(), 5);
        assert_eq!(retry.mode(), aws_smithy_types::retry::RetryMode::Adaptive);

        let sdk = config(&[("AWS_MAX_ATTEMPTS", "zero"), ("AWS_RETRY_MODE", "legacy")]);
        let retry = sdk
            .retry_config()
            .cloned()
            .unwrap_or_else(RetryConfig::disabled);
        assert_eq!(
            retry.max_attempts(),
            3,
            "an unreadable value keeps the default"
        );
        assert_eq!(retry.mode(), aws_smithy_types::retry::RetryMode::Standard);
        assert_eq!(sdk.use_fips(), Some(false));
        assert_eq!(endpoint(&sdk, "SQS"), None);
    }

    /// Without a region or credentials a call fails before it is sent, and the failure says
    /// what to set instead of passing for an outage a retry could outlast.
    #[tokio::test]
    async fn missing_region_or_credentials_is_a_configuration_problem_naming_the_variable() {
        let endpoint = ("AWS_ENDPOINT_URL", "http://127.0.0.1:9");
        let cases = [
            (
                vec![
                    endpoint,
                    ("AWS_ACCESS_KEY_ID", "a"),
                    ("AWS_SECRET_ACCESS_KEY", "b"),
                ],
                "AWS_REGION",
            ),
            (
                vec![endpoint, ("AWS_REGION", "eu-west-1")],
                "AWS_ACCESS_KEY_ID",
            ),
            // AWS's own endpoints: no region, no endpoint to resolve.
            (
                vec![("AWS_ACCESS_KEY_ID", "a"), ("AWS_SECRET_ACCESS_KEY", "b")],
                "AWS_REGION",
            ),
            // A region that cannot be part of a host name.
            (
                vec![
                    ("AWS_REGION", "us-east-1!"),
                    ("AWS_ACCESS_KEY_ID", "a"),
                    ("AWS_SECRET_ACCESS_KEY", "b"),
                ],
                "AWS_REGION",
            ),
        ];
        for (vars, named) in cases {
            let client = aws_sdk_sqs::Client::new(&config(&vars));
            let failed = client.list_queues().send().await;
            let Err(e) = failed else {
                panic!("{vars:?}: a call without {named} was sent")
            };
            match sdk_failure(ak_core::ports::Backend::Sqs, e) {
                ak_core::ports::PortError::Misconfigured { detail, .. } => {
                    assert!(detail.contains(named), "{vars:?}: {detail}");
                }
                other => panic!("{vars:?}: {other:?}"),
            }
        }
        // Nothing listening is an outage, not the configuration's fault.
        let client = aws_sdk_sqs::Client::new(&config(&[
            endpoint,
            ("AWS_REGION", "eu-west-1"),
            ("AWS_ACCESS_KEY_ID", "a"),
            ("AWS_SECRET_ACCESS_KEY", "b"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ]));
        let Err(e) = client.list_queues().send().await else {
            panic!("port 9 answered")
        };
        assert!(matches!(
            sdk_failure(ak_core::ports::Backend::Sqs, e),
            ak_core::ports::PortError::Unavailable { .. }
        ));
    }

    /// The environment's configuration works against the SQS wire protocol: moto, which
    /// scripts/test.sh starts and points `AWS_ENDPOINT_URL` at (skipped without it).
    #[tokio::test]
    async fn the_environments_configuration_talks_to_sqs() {
        if std::env::var("AWS_ENDPOINT_URL").is_err() {
            eprintln!("AWS_ENDPOINT_URL is not set (scripts/test.sh sets it): skipped");
            return;
        }
        let sdk = load_sdk_config().await;
        let client = aws_sdk_sqs::Client::new(&sdk);
        let name = format!("env-config-{}", std::process::id());
        let created = client.create_queue().queue_name(&name).send().await;
        let url = match created {
            Ok(out) => out.queue_url.unwrap_or_default(),
            Err(e) => panic!("{}", aws_sdk_sqs::error::DisplayErrorContext(e)),
        };
        assert!(url.ends_with(&name), "{url}");
        let _ = client.delete_queue().queue_url(url).send().await;

        // The SQS client follows AWS_ENDPOINT_URL_SQS when only that one is set.
        let moto = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
        let sdk = config(&[
            ("AWS_REGION", "us-east-1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_ENDPOINT_URL_SQS", &moto),
        ]);
        let listed = aws_sdk_sqs::Client::new(&sdk).list_queues().send().await;
        assert!(
            listed.is_ok(),
            "{:?}",
            listed.map_err(aws_sdk_sqs::error::DisplayErrorContext)
        );
    }
}
