//! Lambda function behind API Gateway or a function URL: the chat endpoint in the configured
//! execution mode, and the custom routes and tools of `agent-app`.

use ak_adapters::{AwsCalls, AwsConfig, check_aws_environment, check_shared_backends};
use ak_agents::AgentRuntime;
use ak_core::Settings;
use ak_http::{Api, RoutePaths, Router};
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<Api, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    ak_lambda::before_reply(ak_core::otel::flush_boxed);
    check_shared_backends(&settings)?;
    let aws = AwsConfig::default();
    // Agents run here only in direct mode; in the queue modes the agent runner has them.
    let runner = AgentRuntime::for_request_handler(&settings, &agent_app::tools(), &aws).await?;
    let routes = agent_app::routes(Router::builder(RoutePaths::from_env()?)).build()?;
    let api = Api::from_settings(&settings, &aws, runner, routes, false).await?;
    check_aws_environment(&settings, AwsCalls::request_handler(&settings))?;
    Ok(api)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let api = Arc::new(ak_lambda::start(setup()).await);
    // Every event, however odd, gets an HTTP answer in its front door's format, streamed where
    // the deployment and the front door allow it.
    ak_lambda::serve(move |invocation| {
        let api = api.clone();
        let deadline = Some(invocation.deadline);
        async move {
            Ok(api
                .respond_raw_event(invocation.event.get(), deadline)
                .await)
        }
    })
    .await
}
