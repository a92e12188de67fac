//! Lambda function: the API Gateway authorizer (REQUEST and TOKEN events), validating tokens
//! with `agent-app`'s validator, or JWTs as configured under `auth.jwt`.

use ak_core::Settings;
use ak_core::auth::AuthValidator;
use ak_core::auth::authorizer::Authorizer;
use ak_core::auth::jwt::JwtValidator;
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::Value;
use std::sync::Arc;

/// API Gateway turns exactly this error message into a 401.
#[derive(Debug)]
struct Unauthorized;

impl From<Unauthorized> for Diagnostic {
    fn from(_: Unauthorized) -> Self {
        Diagnostic {
            error_type: "Unauthorized".to_owned(),
            error_message: "Unauthorized".to_owned(),
        }
    }
}

/// Everything built once per cold start.
async fn setup() -> Result<Authorizer, Box<dyn std::error::Error>> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    // The application's own validator, else the JWT validator of `auth.jwt`.
    let validator: Arc<dyn AuthValidator> = match agent_app::auth_validator(&settings) {
        Some(validator) => validator,
        None => {
            let jwt = settings.auth.jwt.as_ref().ok_or(
                "auth.jwt is not configured: set AK_AUTH__JWT__SECRET (or __SECRET_FILE, __PUBLIC_KEY_PEM, __JWKS_URL)",
            )?;
            Arc::new(JwtValidator::from_settings(jwt)?)
        }
    };
    Ok(Authorizer::new(validator).with_token_header(&settings.auth.token_header))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_runtime::Error> {
    let authorizer = Arc::new(ak_core::lambda::start(setup()).await?);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let authorizer = authorizer.clone();
        async move {
            authorizer
                .handle(&event.payload)
                .await
                .map_err(|_| Unauthorized)
        }
    }))
    .await
}
