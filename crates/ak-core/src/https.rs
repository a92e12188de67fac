//! One HTTPS client stack for the project's own HTTP calls (the model provider, JWKS): hyper
//! with rustls and ring — what the AWS SDK already links, so no second TLS library — and the
//! system's root certificates, loaded when the client is built (callers build it on first use,
//! not at cold start).

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::time::Duration;

/// A pooled HTTP/1.1 client for `http://` and `https://` URLs.
pub type HttpsClient = Client<HttpsConnector<HttpConnector>, Full<Bytes>>;

/// How long opening a connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes ring the process's default rustls crypto provider (once; a provider set before
/// stays), for libraries that build their TLS from the default (the MCP client's reqwest).
pub fn install_crypto_provider() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Builds a client; fails only when the system has no usable root certificates.
pub fn client() -> Result<HttpsClient, String> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    http.enforce_http(false);
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_provider_and_native_roots(rustls::crypto::ring::default_provider())
        .map_err(|e| format!("no TLS root certificates: {e}"))?
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(https))
}

/// The innermost cause of an error, which says what happened (refused, reset, DNS).
pub fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

/// Largest answer [`get_json`] reads.
pub const MAX_JSON_BYTES: usize = 1 << 20;

/// GETs `url` and reads the answer as JSON, all within `timeout` (connecting, waiting and
/// reading): the pattern for tools that call a web API. Errors say what went wrong in words a
/// model can pass on — the status, a timeout, a body that is not JSON or is over
/// [`MAX_JSON_BYTES`] — never with the body itself. The client is built on first use and
/// shared.
pub async fn get_json(url: &str, timeout: Duration) -> Result<serde_json::Value, String> {
    use http_body_util::{BodyExt, Limited};
    static CLIENT: std::sync::OnceLock<Result<HttpsClient, String>> = std::sync::OnceLock::new();
    let client = CLIENT.get_or_init(client).as_ref().map_err(Clone::clone)?;
    let request = http::Request::get(url)
        .header(http::header::ACCEPT, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("{url} is not a usable URL: {e}"))?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| format!("cannot reach {}: {}", host_of(url), root_cause(&e)))?;
        let status = response.status();
        let body = Limited::new(response.into_body(), MAX_JSON_BYTES)
            .collect()
            .await
            .map_err(|e| format!("the answer from {} broke off: {e}", host_of(url)))?
            .to_bytes();
        if !status.is_success() {
            return Err(format!("{} answered {status}", host_of(url)));
        }
        serde_json::from_slice(&body)
            .map_err(|e| format!("{} answered something that is not JSON: {e}", host_of(url)))
    };
    tokio::time::timeout(timeout, exchange).await.map_err(|_| {
        format!(
            "{} did not answer within {} s",
            host_of(url),
            timeout.as_secs_f64()
        )
    })?
}

/// The host part of a URL, for messages (never its path or query, which may carry keys).
fn host_of(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or(rest);
    // `user:password@host`: the credentials stay out.
    authority.rsplit('@').next().unwrap_or(authority)
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_name_the_host_only() {
        for (url, host) in [
            (
                "https://restcountries.com/v3.1/name/x?key=secret",
                "restcountries.com",
            ),
            ("http://user:pw@127.0.0.1:8080/a", "127.0.0.1:8080"),
            ("example.org#frag", "example.org"),
        ] {
            assert_eq!(super::host_of(url), host);
        }
    }
}
