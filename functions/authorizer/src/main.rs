//! Lambda function: API Gateway Lambda authorizer (REQUEST and TOKEN events).
//!
//! Not implemented yet: it loads and validates the configuration at cold start, then answers
//! every invocation with a clear `NotImplemented` error.

use ak_core::Settings;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;

/// The error every invocation gets until this function is implemented.
#[derive(Debug, thiserror::Error)]
#[error("authorizer is not implemented yet")]
struct NotImplemented;

impl From<NotImplemented> for Diagnostic {
    fn from(e: NotImplemented) -> Self {
        Diagnostic {
            error_type: "NotImplemented".to_owned(),
            error_message: e.to_string(),
        }
    }
}

async fn function_handler(_event: LambdaEvent<Value>) -> Result<Value, NotImplemented> {
    tracing::warn!("authorizer invoked before it is implemented");
    Err(NotImplemented)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let settings = ak_core::lambda::start(async { Settings::load() }).await?;
    ak_core::logging::init(settings.log.level);
    lambda_runtime::run(service_fn(function_handler)).await
}
