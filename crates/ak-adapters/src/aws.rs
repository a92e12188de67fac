//! The AWS SDK configuration every adapter shares: region, credentials and endpoint from the SDK's
//! usual chain (so `AWS_ENDPOINT_URL` points every client at a local emulator), TLS through
//! rustls with ring, and a connect timeout so an unreachable endpoint fails fast.

use aws_config::{BehaviorVersion, SdkConfig, timeout::TimeoutConfig};
use aws_smithy_http_client::tls::{Provider, rustls_provider::CryptoMode};
use std::time::Duration;

/// How long opening a connection to an AWS endpoint may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Loads the shared SDK configuration. Resolves no credentials yet: that happens on first use,
/// so a cold start does not wait on the network.
pub async fn load_sdk_config() -> SdkConfig {
    let http_client = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    aws_config::defaults(BehaviorVersion::latest())
        .http_client(http_client)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(CONNECT_TIMEOUT)
                .build(),
        )
        .load()
        .await
}
