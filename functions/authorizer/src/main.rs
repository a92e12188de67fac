//! Lambda function: the API Gateway authorizer (REQUEST and TOKEN events), validating tokens
//! with `agent-app`'s validator, or JWTs as configured under `auth.jwt`.

use ak_auth::authorizer::Authorizer;
use ak_core::Settings;
use ak_lambda::Reply;
use lambda_runtime::Diagnostic;
use std::sync::Arc;

/// Everything built once per cold start.
async fn setup() -> Result<Authorizer, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    Ok(Authorizer::from_settings(
        &settings,
        agent_app::auth_validator(&settings),
    )?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let authorizer = Arc::new(ak_lambda::start(setup()).await);
    ak_lambda::serve(move |invocation| {
        let authorizer = authorizer.clone();
        async move {
            let event = serde_json::from_str(invocation.event.get()).unwrap_or_default();
            // API Gateway turns exactly this error into a 401.
            let unauthorized = |_| Diagnostic {
                error_type: "Unauthorized".to_owned(),
                error_message: "Unauthorized".to_owned(),
            };
            let policy = authorizer.handle(&event).await.map_err(unauthorized)?;
            Ok(Reply::Buffered(policy))
        }
    })
    .await
}
