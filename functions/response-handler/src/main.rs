//! Lambda function: SQS output batch → response store, with per-record failures.

use ak_core::Settings;
use ak_core::adapters::{AwsConfig, check_shared_backends, required_response_store};
use ak_core::pipeline::ResponseHandler;
use ak_core::ports::sqs_records;
use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<ResponseHandler, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    check_shared_backends(&settings)?;
    let store = required_response_store(&settings, &AwsConfig::default()).await?;
    Ok(ResponseHandler::new(store))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = Arc::new(ak_core::lambda::start(setup()).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let handler = handler.clone();
        async move {
            Ok::<SqsBatchResponse, Infallible>(
                handler.handle(sqs_records(event.payload.get())).await,
            )
        }
    }))
    .await
}
