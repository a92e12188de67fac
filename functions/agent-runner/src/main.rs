//! Lambda function: SQS input batch → agents → SQS output, with per-record failures.

use ak_agents::AgentRuntime;
use ak_core::Settings;
use ak_core::adapters::{
    AwsConfig, check_shared_backends, required_output_queue, required_response_store,
};
use ak_core::pipeline::{AgentRunnerHandler, deadline_from_epoch_ms};
use ak_core::ports::sqs_records;
use aws_lambda_events::sqs::SqsBatchResponse;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<AgentRunnerHandler, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    check_shared_backends(&settings)?;
    let aws = AwsConfig::default();
    let runtime = AgentRuntime::load(&settings, &agent_app::tools(), &aws, false).await?;
    Ok(AgentRunnerHandler::new(
        Arc::new(runtime),
        required_output_queue(&settings, &aws).await?,
        required_response_store(&settings, &aws).await?,
        settings.execution.queues.input.max_receive_count,
    )
    .with_event_log(settings.execution.response_store.event_log))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = Arc::new(ak_core::lambda::start(setup()).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        let handler = handler.clone();
        async move {
            let deadline = deadline_from_epoch_ms(event.context.deadline);
            Ok::<SqsBatchResponse, Infallible>(
                handler
                    .handle(sqs_records(event.payload.get()), Some(deadline))
                    .await,
            )
        }
    }))
    .await
}
