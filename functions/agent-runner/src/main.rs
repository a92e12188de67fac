//! Lambda function: SQS input batch → agents → SQS output, with per-record failures.

use ak_adapters::{AwsCalls, AwsConfig, check_aws_environment, check_shared_backends};
use ak_agents::AgentRuntime;
use ak_core::Settings;
use ak_core::ports::sqs_records;
use ak_lambda::Reply;
use ak_runtime::AgentRunnerHandler;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<AgentRunnerHandler, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    ak_lambda::before_reply(ak_core::otel::flush_boxed);
    check_shared_backends(&settings)?;
    let aws = AwsConfig::default();
    let runtime = AgentRuntime::load(&settings, &agent_app::tools(), &aws, false).await?;
    let handler = AgentRunnerHandler::from_settings(&settings, &aws, Arc::new(runtime)).await?;
    check_aws_environment(&settings, AwsCalls::AGENT_RUNNER)?;
    Ok(handler)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let handler = Arc::new(ak_lambda::start(setup()).await);
    ak_lambda::serve(move |invocation| {
        let handler = handler.clone();
        async move {
            let records = sqs_records(invocation.event.get());
            let failures = handler.handle(records, Some(invocation.deadline)).await;
            Ok(Reply::json(&failures))
        }
    })
    .await
}
