//! Lambda function: SQS output batch → response store, with per-record failures.

use ak_adapters::{
    AwsCalls, AwsConfig, check_aws_environment, check_shared_backends, required_response_store,
};
use ak_core::Settings;
use ak_core::ports::sqs_records;
use ak_lambda::Reply;
use ak_runtime::ResponseHandler;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<ResponseHandler, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    ak_lambda::before_reply(ak_core::otel::flush_boxed);
    check_shared_backends(&settings)?;
    let store = required_response_store(&settings, &AwsConfig::default()).await?;
    check_aws_environment(&settings, AwsCalls::RESPONSE_HANDLER)?;
    Ok(ResponseHandler::new(store))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = Arc::new(ak_lambda::start(setup()).await);
    ak_lambda::serve(move |invocation| {
        let handler = handler.clone();
        async move {
            let failures = handler.handle(sqs_records(invocation.event.get())).await;
            Ok(Reply::json(&failures))
        }
    })
    .await
}
