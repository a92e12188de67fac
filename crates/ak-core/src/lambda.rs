//! Cold-start failures of a Lambda function, reported the way Lambda expects: one clear line in
//! the log and an `init/error` call to the Runtime API, so the invoker sees the reason
//! (`Runtime.InitError`) instead of a bare "Runtime exited".

use std::fmt;
use std::future::Future;

/// A function could not start; `Debug` prints the plain message (it is what `main` shows).
pub struct InitFailed(String);

impl fmt::Debug for InitFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for InitFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for InitFailed {}

/// Runs a function's set-up; on failure logs the message, reports it to the Runtime API (when
/// running under one) and returns it for `main` to exit with.
pub async fn start<T, E: fmt::Display>(
    setup: impl Future<Output = Result<T, E>>,
) -> Result<T, InitFailed> {
    match setup.await {
        Ok(state) => Ok(state),
        Err(e) => {
            let message = e.to_string();
            tracing::error!(error = %message, "cold start failed");
            eprintln!("cold start failed: {message}");
            if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
                report_init_error(&message).await;
            }
            Err(InitFailed(message))
        }
    }
}

async fn report_init_error(message: &str) {
    use lambda_runtime_api_client::{Client, body::Body, build_request};
    let body = serde_json::json!({"errorType": "Runtime.InitError", "errorMessage": message});
    let request = build_request()
        .method(http::Method::POST)
        .uri("/2018-06-01/runtime/init/error")
        .header("lambda-runtime-function-error-type", "Runtime.InitError")
        .body(Body::from(body.to_string()));
    let (Ok(client), Ok(request)) = (Client::builder().build(), request) else {
        return;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), client.call(request)).await;
}
