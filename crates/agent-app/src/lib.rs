//! Your agent application: the Rust side of the agents `config.yaml` defines. This is the one
//! file to edit; every binary — the `request-handler`, `agent-runner` and `authorizer` Lambda
//! functions and `ak-local` — takes its tools, routes and token validation from here.
//!
//! - **Add a tool**: write a function returning a [`FnTool`] (a name, a description for the
//!   model, a JSON schema of its arguments, and an async body), add it in [`tools`], and list
//!   its name under an agent's `tools` in `config.yaml`.
//! - **Add a route**: write an `async fn(Request) -> Result<impl Into<ApiResponse>, ApiError>`
//!   and register it in [`routes`]; it is served under `/{API_BASE_PATH}/{API_VERSION}` (and add
//!   its path to `gateway_endpoints` in Terraform so API Gateway forwards it).
//! - **Validate tokens your way**: return your own [`AuthValidator`] from [`auth_validator`]
//!   (`None` keeps the built-in JWT validator configured under `auth.jwt`).

use ak_agents::{FnTool, ToolError, ToolRegistry};
use ak_auth::AuthValidator;
use ak_core::{ApiError, Settings};
use ak_http::router::{RouterBuilder, request_summary};
use lambda_http::Request;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

/// The tools agents may use, by the names `config.yaml` lists under each agent's `tools`.
pub fn tools() -> ToolRegistry {
    ToolRegistry::new()
        .with(multiply())
        .with(country_facts())
        .with(issue_refund())
}

/// Refunds above this many (currency units) wait for a person's approval.
pub const REFUND_APPROVAL_ABOVE: f64 = 100.0;

/// `issue_refund(order_id, amount)`: an example of a tool with consequences. Refunds above
/// [`REFUND_APPROVAL_ABOVE`] wait for a person's approval (the run pauses; see
/// `docs/approvals.md`); smaller ones run at once. Answers `{"refunded": amount, "order_id",
/// "refund_id"}`: the refund's id is the request and call ids, the idempotency key a real
/// payment API would get (this example moves no money).
pub fn issue_refund() -> FnTool {
    FnTool::new(
        "issue_refund",
        "Refunds an amount of an order to the customer.",
        json!({
            "type": "object",
            "properties": {
                "order_id": {"type": "string", "description": "the order"},
                "amount": {"type": "number", "description": "how much to refund"}
            },
            "required": ["order_id", "amount"]
        }),
        |args: Value, context| async move {
            let order = args["order_id"]
                .as_str()
                .ok_or_else(|| ToolError("order_id must be a string".to_owned()))?;
            let amount = args["amount"]
                .as_f64()
                .filter(|a| *a > 0.0)
                .ok_or_else(|| ToolError("amount must be a positive number".to_owned()))?;
            Ok(json!({"refunded": amount, "order_id": order,
                      "refund_id": format!("rf-{}-{}", context.request_id, context.call_id)}))
        },
    )
    .needs_approval(|args, _context| {
        args["amount"].as_f64().unwrap_or(f64::INFINITY) > REFUND_APPROVAL_ABOVE
    })
}

/// `multiply(a, b)`: the product of two integers, `{"product": a × b}` (the `math` agent's tool
/// in `config.yaml`). Arguments that are not integers, or a product beyond 64 bits, are an
/// error the model reads and can correct.
pub fn multiply() -> FnTool {
    FnTool::new(
        "multiply",
        "Multiplies two integers and returns their product.",
        json!({
            "type": "object",
            "properties": {
                "a": {"type": "integer", "description": "the first factor"},
                "b": {"type": "integer", "description": "the second factor"}
            },
            "required": ["a", "b"]
        }),
        |args: Value, _context| async move {
            let factor = |name: &str| {
                args[name]
                    .as_i64()
                    .ok_or_else(|| ToolError(format!("{name} must be an integer")))
            };
            let (a, b) = (factor("a")?, factor("b")?);
            let product = a
                .checked_mul(b)
                .ok_or_else(|| ToolError(format!("{a} × {b} is too large")))?;
            Ok(json!({"product": product}))
        },
    )
}

/// Where [`country_facts`] asks (REST Countries, v3.1); `COUNTRY_API_URL` points it elsewhere.
pub const COUNTRY_API_URL: &str = "https://restcountries.com/v3.1";

/// How long [`country_facts`] waits for the web API before it gives up.
pub const COUNTRY_API_TIMEOUT: Duration = Duration::from_secs(5);

/// `country_facts(name)`: the capital, region and population of a country, from a public web
/// API — the pattern for a tool that calls out over HTTP: a base URL from the environment, a
/// timeout, and failures (no answer in time, an unknown country) returned as errors the model
/// reads instead of a failed run. Answers `{"name", "capital", "region", "population"}`.
pub fn country_facts() -> FnTool {
    let base = std::env::var("COUNTRY_API_URL")
        .ok()
        .filter(|u| !u.trim().is_empty())
        .unwrap_or_else(|| COUNTRY_API_URL.to_owned());
    country_facts_from(base, COUNTRY_API_TIMEOUT)
}

/// [`country_facts`] asking the API at `base`, waiting at most `timeout`.
pub fn country_facts_from(base: String, timeout: Duration) -> FnTool {
    FnTool::new(
        "country_facts",
        "Looks up a country's capital, region and population.",
        json!({
            "type": "object",
            "properties": {"name": {"type": "string", "description": "the country, e.g. France"}},
            "required": ["name"]
        }),
        move |args: Value, _context| {
            let base = base.clone();
            async move {
                let name = args["name"]
                    .as_str()
                    .map(str::trim)
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ToolError("name must be a country's name".into()))?;
                let url = format!(
                    "{}/name/{}?fields=name,capital,region,population",
                    base.trim_end_matches('/'),
                    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
                );
                let found = ak_core::https::get_json(&url, timeout)
                    .await
                    .map_err(|e| ToolError(format!("no facts about {name}: {e}")))?;
                let country = found
                    .as_array()
                    .and_then(|all| all.first())
                    .ok_or_else(|| ToolError(format!("no country named {name}")))?;
                Ok(json!({
                    "name": country["name"]["common"],
                    "capital": country["capital"].get(0).cloned().unwrap_or(Value::Null),
                    "region": country["region"],
                    "population": country["population"],
                }))
            }
        },
    )
}

/// The custom routes, served under `/{API_BASE_PATH}/{API_VERSION}` beside the chat endpoint.
pub fn routes(router: RouterBuilder) -> RouterBuilder {
    router.get("/app", app).post("/app_info", app_info)
}

/// `GET /api/v1/app`: echoes what it received (credentials left out).
async fn app(request: Request) -> Result<Value, ApiError> {
    Ok(json!({
        "receivedEventPayload": request_summary(&request),
        "response": "Hello! from AK 'app'",
    }))
}

/// `POST /api/v1/app_info`: echoes what it received and the JSON body; a body that is not JSON
/// is a 400 saying so.
async fn app_info(request: Request) -> Result<Value, ApiError> {
    let payload: Value = serde_json::from_slice(request.body().as_ref())
        .map_err(|e| ApiError::bad_request(format!("body must be JSON: {e}")))?;
    Ok(json!({
        "receivedEventPayload": request_summary(&request),
        "request": payload,
        "response": "Hello! from AK 'app_info'",
    }))
}

/// Your own token validation for the authorizer, or `None` for the built-in JWT validator
/// (`auth.jwt` in `config.yaml`). Return `Some(Arc::new(MyValidator))` with a type that
/// implements [`AuthValidator`] to check tokens another way (an API key table, an
/// introspection endpoint).
pub fn auth_validator(_settings: &Settings) -> Option<Arc<dyn AuthValidator>> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use ak_agents::{Tool, ToolContext};

    #[tokio::test]
    async fn multiply_multiplies_and_says_what_is_wrong() {
        let tool = multiply();
        let context = ToolContext::default();
        let product = tool.call(json!({"a": 12, "b": 7}), &context).await;
        assert_eq!(product.ok(), Some(json!({"product": 84})));
        let wrong = tool.call(json!({"a": "12", "b": 7}), &context).await;
        assert!(wrong.is_err_and(|e| e.0.contains("a must be an integer")));
        let huge = tool.call(json!({"a": i64::MAX, "b": 2}), &context).await;
        assert!(huge.is_err_and(|e| e.0.contains("too large")));
    }

    #[tokio::test]
    async fn refunds_above_the_threshold_wait_for_approval() {
        use ak_agents::Tool;
        let tool = issue_refund();
        let context = ToolContext {
            request_id: "r-1".into(),
            call_id: "call_1".into(),
            ..ToolContext::default()
        };
        let asks = |args: Value| Tool::needs_approval(&tool, &args, &context);
        assert!(!asks(json!({"order_id": "o", "amount": 100})));
        assert!(asks(json!({"order_id": "o", "amount": 100.5})));
        assert!(asks(json!({"order_id": "o"})), "no amount: ask");
        let refunded = tool
            .call(json!({"order_id": "o-1", "amount": 20}), &context)
            .await;
        assert_eq!(
            refunded.ok(),
            Some(json!({"refunded": 20.0, "order_id": "o-1", "refund_id": "rf-r-1-call_1"}))
        );
        let bad = tool
            .call(json!({"order_id": "o-1", "amount": -5}), &context)
            .await;
        assert!(bad.is_err_and(|e| e.0.contains("positive")));
    }

    #[test]
    fn every_binary_gets_the_same_tools_and_routes() {
        assert_eq!(
            tools().names(),
            ["country_facts", "issue_refund", "multiply"]
        );
        let router = routes(ak_http::Router::builder(ak_http::RoutePaths::default())).build();
        assert!(router.is_ok());
    }
}

#[cfg(test)]
mod web_tests {
    use super::*;
    use ak_agents::{Tool, ToolContext};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-route web API on loopback: answers every request with `status` and `body`, after
    /// `delay`. Returns its base URL.
    async fn web_api(status: u16, body: &'static str, delay: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut request = [0u8; 4096];
                    let _ = socket.read(&mut request).await;
                    tokio::time::sleep(delay).await;
                    let answer = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                });
            }
        });
        format!("http://{addr}/v3.1")
    }

    #[tokio::test]
    async fn country_facts_reads_the_web_api_and_turns_its_failures_into_tool_errors() {
        let context = ToolContext::default();
        let france = r#"[{"name": {"common": "France", "official": "French Republic"}, "capital": ["Paris"], "region": "Europe", "population": 66351959}]"#;
        let tool = country_facts_from(
            web_api(200, france, Duration::ZERO).await,
            Duration::from_secs(2),
        );
        let facts = tool.call(json!({"name": "France"}), &context).await;
        assert_eq!(
            facts.ok(),
            Some(
                json!({"name": "France", "capital": "Paris", "region": "Europe", "population": 66351959})
            )
        );
        let missing = r#"{"status": 404, "message": "Not Found"}"#;
        let tool = country_facts_from(
            web_api(404, missing, Duration::ZERO).await,
            Duration::from_secs(2),
        );
        let error = tool.call(json!({"name": "Atlantis"}), &context).await.err();
        assert!(error.is_some_and(|e| e.0.contains("Atlantis") && e.0.contains("404")));
        let slow = country_facts_from(
            web_api(200, france, Duration::from_secs(5)).await,
            Duration::from_millis(300),
        );
        let started = std::time::Instant::now();
        let error = slow.call(json!({"name": "France"}), &context).await.err();
        assert!(error.is_some_and(|e| e.0.contains("did not answer within 0.3 s")));
        assert!(started.elapsed() < Duration::from_secs(2));
        let error = slow.call(json!({"name": " "}), &context).await.err();
        assert!(error.is_some_and(|e| e.0.contains("name must be")));
    }
}
