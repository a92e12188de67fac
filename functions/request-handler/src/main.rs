//! Lambda function behind API Gateway or a function URL: the chat endpoint and custom routes.
//!
//! The chat endpoint is wired to the execution modes in a later step; until then it answers 501.

use ak_core::router::request_summary;
use ak_core::{ApiError, ApiResponse, Route, RoutePaths, Router, Settings};
use lambda_http::{Body, Request, Response, service_fn};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;

async fn app(event: Request) -> Result<Value, ApiError> {
    Ok(json!({
        "receivedEventPayload": request_summary(&event),
        "response": "Hello! from AK 'app'",
    }))
}

async fn app_info(event: Request) -> Result<Value, ApiError> {
    let payload: Value = serde_json::from_slice(event.body().as_ref())
        .map_err(|e| ApiError::bad_request(format!("body must be JSON: {e}")))?;
    Ok(json!({
        "receivedEventPayload": request_summary(&event),
        "request": payload,
        "response": "Hello! from AK 'app_info'",
    }))
}

async fn function_handler(router: &Router, settings: &Settings, event: Request) -> Response<Body> {
    let size = event.body().len();
    let limit = settings.api.max_body_bytes;
    let result = if size > limit {
        Err(ApiError::PayloadTooLarge { size, limit })
    } else {
        match router.resolve(&event) {
            Ok(Route::Custom(handler)) => handler.call(event).await,
            Ok(Route::Chat) => Err(ApiError::NotImplemented("the chat endpoint".to_owned())),
            Err(e) => Err(e),
        }
    };
    result.unwrap_or_else(ApiResponse::from).into_http()
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), lambda_http::Error> {
    let settings = Settings::load()?;
    ak_core::logging::init(settings.log.level);
    let router = Router::builder(RoutePaths::from_env()?)
        .get("/app", app)
        .post("/app_info", app_info)
        .build()?;
    let state = Arc::new((router, settings));
    lambda_http::run(service_fn(move |event: Request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(function_handler(&state.0, &state.1, event).await) }
    }))
    .await
}
