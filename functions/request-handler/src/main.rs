//! Lambda function behind API Gateway or a function URL: the chat endpoint in the configured
//! execution mode, and the custom routes and tools of `agent-app`.

use ak_agents::AgentRuntime;
use ak_core::adapters::{AwsConfig, check_shared_backends};
use ak_core::api::Api;
use ak_core::api::EventReply;
use ak_core::chat::ChatService;
use ak_core::config::ExecutionMode;
use ak_core::mcp::{AgentTool, McpEndpoint};
use ak_core::pipeline::deadline_from_epoch_ms;
use ak_core::ports::AgentRunner;
use ak_core::{RoutePaths, Router, Settings};
use lambda_runtime::{FunctionResponse, LambdaEvent, MetadataPrelude, StreamResponse, service_fn};
use serde_json::value::RawValue;
use std::convert::Infallible;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<Api, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    check_shared_backends(&settings)?;
    let aws = AwsConfig::default();
    // Agents run here only in direct mode; in the queue modes the agent runner has them.
    let runner: Option<Arc<dyn AgentRunner>> = match settings.execution.mode() {
        ExecutionMode::Direct => Some(Arc::new(
            AgentRuntime::load(&settings, &agent_app::tools(), &aws, false).await?,
        )),
        _ => None,
    };
    let chat = ChatService::from_settings(&settings, &aws, runner).await?;
    let router = agent_app::routes(Router::builder(RoutePaths::from_env()?)).build()?;
    let mcp = McpEndpoint::new(
        chat.clone(),
        AgentTool::from_settings(&settings),
        settings.api.heartbeat(),
        false,
    );
    Ok(Api::new(router, chat, settings.api.max_body_bytes)
        .with_mcp(mcp)
        .with_principal_claim(&settings.auth.principal_claim)
        .with_alb_oidc_identity(settings.auth.trust_alb_oidc_identity)
        .with_response_streaming(settings.api.response_streaming)
        .with_heartbeat(settings.api.heartbeat()))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let api = Arc::new(ak_core::lambda::start(setup()).await?);
    // A streamed answer whose connection to the Runtime API breaks ends `run` with an error;
    // the function goes on with the next invocation instead of exiting (which would cost a
    // cold start). Errors in a row without one served stop it.
    let mut failures = 0u32;
    loop {
        let served = Arc::new(std::sync::atomic::AtomicBool::new(false));
        match serve(api.clone(), served.clone()).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                if served.load(std::sync::atomic::Ordering::Relaxed) {
                    failures = 0;
                }
                failures += 1;
                tracing::error!(error = %e, "the Runtime API connection failed; going on with the next invocation");
                if failures >= 5 {
                    return Err(e);
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// Serves invocations until the runtime loop ends; `served` is set once one was answered.
async fn serve(
    api: Arc<Api>,
    served: Arc<std::sync::atomic::AtomicBool>,
) -> Result<(), lambda_runtime::Error> {
    // Events are read by the API from their raw JSON, so no event, however odd, fails the
    // invocation: every one gets an HTTP answer in its front door's format, streamed through
    // Lambda response streaming where the deployment and the front door allow it.
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Box<RawValue>>| {
        served.store(true, std::sync::atomic::Ordering::Relaxed);
        let api = api.clone();
        async move {
            let deadline = deadline_from_epoch_ms(event.context.deadline);
            let reply = api
                .respond_raw_event(event.payload.get(), Some(deadline))
                .await;
            Ok::<_, Infallible>(match reply {
                EventReply::Buffered(answer) => FunctionResponse::BufferedResponse(answer),
                EventReply::Streamed {
                    status,
                    mut headers,
                    body,
                } => {
                    let cookies = headers
                        .get_all(http::header::SET_COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok().map(str::to_owned))
                        .collect();
                    headers.remove(http::header::SET_COOKIE);
                    FunctionResponse::StreamingResponse(StreamResponse {
                        metadata_prelude: MetadataPrelude {
                            status_code: status,
                            headers,
                            cookies,
                        },
                        stream: body,
                    })
                }
            })
        }
    }))
    .await
}
