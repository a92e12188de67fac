//! The AWS SDK configuration every adapter shares: region, credentials and endpoint from the SDK's
//! usual chain (so `AWS_ENDPOINT_URL` points every client at a local emulator), TLS through
//! rustls with ring, and timeouts so a dead connection costs one short attempt, not a request:
//! a connect timeout (an unreachable endpoint fails fast) and an attempt timeout (a pooled
//! connection that went silent — dropped by a NAT gateway, frozen with the function — is given
//! up and the SDK's retry tries again on a new one). Each adapter call is also bounded as a
//! whole (`CALL_TIMEOUT`), well within any invocation's deadline.

use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
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

/// Loads the shared SDK configuration. Resolves no credentials yet: that happens on first use,
/// so a cold start does not wait on the network.
pub async fn load_sdk_config() -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(timeouts(ATTEMPT_TIMEOUT))
        .load()
        .await
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
