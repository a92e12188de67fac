//! The API Gateway Lambda authorizer: REQUEST events (the `Authorization` header, any case, or
//! the header `auth.token_header` names) and TOKEN events (`authorizationToken`), `Bearer `
//! prefix optional.
//!
//! Allow: an IAM policy for every method and path of the API's stage (derived from `methodArn`,
//! so a cached Allow serves every route), principal = the token's subject, context = its scalar
//! claims as strings plus `user_id`. A missing token is `Unauthorized` (API Gateway answers 401);
//! anything else that is not valid gets a Deny policy (403). The token is never logged.

use crate::{AuthValidator, ValidationContext};
use serde_json::{Map, Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Longest token looked at; anything longer is refused unread.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;
/// Most claims copied into the authorizer context.
const MAX_CONTEXT_ENTRIES: usize = 32;

/// API Gateway should answer 401: there was no credential at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("Unauthorized")]
pub struct Unauthorized;

/// Turns authorizer events into policies with an [`AuthValidator`].
#[derive(Clone)]
pub struct Authorizer {
    validator: Arc<dyn AuthValidator>,
    token_header: String,
}

impl Authorizer {
    /// An authorizer asking `validator`, reading REQUEST events' `Authorization` header.
    pub fn new(validator: Arc<dyn AuthValidator>) -> Self {
        Self {
            validator,
            token_header: "authorization".to_owned(),
        }
    }

    /// The authorizer `settings` describe: the application's own `validator` when it has one,
    /// else the JWT validator of `auth.jwt`; the token header of `auth.token_header`.
    pub fn from_settings(
        settings: &ak_core::Settings,
        validator: Option<Arc<dyn AuthValidator>>,
    ) -> Result<Self, String> {
        let validator = match validator {
            Some(validator) => validator,
            None => {
                let jwt = settings.auth.jwt.as_ref().ok_or(
                    "auth.jwt is not configured: set AK_AUTH__JWT__SECRET (or __SECRET_FILE, __PUBLIC_KEY_PEM, __JWKS_URL)",
                )?;
                Arc::new(crate::jwt::JwtValidator::from_settings(jwt).map_err(|e| e.to_string())?)
            }
        };
        Ok(Self::new(validator).with_token_header(&settings.auth.token_header))
    }

    /// Reads the token of REQUEST events from this header (any case) instead: HTTP API and
    /// REST authorizers can name another identity source.
    pub fn with_token_header(mut self, header: &str) -> Self {
        self.token_header = header.trim().to_ascii_lowercase();
        self
    }

    /// Answers one authorizer event: a policy document, or [`Unauthorized`].
    pub async fn handle(&self, event: &Value) -> Result<Value, Unauthorized> {
        let arn = event
            .get("methodArn")
            .or_else(|| event.get("routeArn"))
            .and_then(Value::as_str)
            .unwrap_or_default();
        let Some(resource) = api_wide_resource(arn) else {
            tracing::warn!("authorizer event has no usable methodArn; refusing");
            return Err(Unauthorized);
        };
        let headers = headers(event);
        let raw = match event.get("type").and_then(Value::as_str) {
            Some(kind) if kind.eq_ignore_ascii_case("TOKEN") => event
                .get("authorizationToken")
                .and_then(Value::as_str)
                .map(str::to_owned),
            _ => headers.get(&self.token_header).cloned(),
        };
        let Some(token) = raw.as_deref().map(strip_bearer).filter(|t| !t.is_empty()) else {
            tracing::info!(reason = "no token", "denied");
            return Err(Unauthorized);
        };
        if token.len() > MAX_TOKEN_LEN {
            tracing::info!(reason = "token too long", "denied");
            return Ok(policy("unauthorized", "Deny", &resource, None));
        }
        let context = ValidationContext {
            path: text(event, "path")
                .or_else(|| {
                    event
                        .pointer("/requestContext/http/path")
                        .and_then(Value::as_str)
                })
                .unwrap_or_default()
                .to_owned(),
            method: text(event, "httpMethod")
                .or_else(|| {
                    event
                        .pointer("/requestContext/http/method")
                        .and_then(Value::as_str)
                })
                .unwrap_or_default()
                .to_owned(),
            headers,
        };
        let result = self.validator.validate(token, &context).await;
        match (result.is_valid, result.subject) {
            (true, Some(subject)) => {
                tracing::info!(user_id = %subject, "allowed");
                let mut context = Map::new();
                for (name, value) in result.claims.iter().take(MAX_CONTEXT_ENTRIES) {
                    let text = match value {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        Value::Bool(b) => b.to_string(),
                        _ => continue,
                    };
                    context.insert(name.clone(), Value::String(text));
                }
                context.insert("user_id".into(), Value::String(subject.clone()));
                Ok(policy(&subject, "Allow", &resource, Some(context)))
            }
            _ => {
                let reason = result
                    .error
                    .unwrap_or_else(|| "validator refused".to_owned());
                tracing::info!(reason = %reason, "denied");
                Ok(policy("unauthorized", "Deny", &resource, None))
            }
        }
    }
}

fn text<'a>(event: &'a Value, key: &str) -> Option<&'a str> {
    event.get(key).and_then(Value::as_str)
}

fn strip_bearer(value: &str) -> &str {
    let value = value.trim();
    if value.eq_ignore_ascii_case("bearer") {
        return "";
    }
    match value.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case("bearer ") => value[7..].trim(),
        _ => value,
    }
}

fn headers(event: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Some(map) = event.get("headers").and_then(Value::as_object) {
        for (name, value) in map {
            if let Some(v) = value.as_str() {
                out.insert(name.to_ascii_lowercase(), v.to_owned());
            }
        }
    }
    out
}

/// `arn:aws:execute-api:REGION:ACCOUNT:API/STAGE/METHOD/PATH` → `…:API/STAGE/*/*`.
fn api_wide_resource(arn: &str) -> Option<String> {
    let mut parts = arn.splitn(3, '/');
    let api = parts.next()?;
    let stage = parts.next()?;
    let ok = api.starts_with("arn:") && api.split(':').count() == 6 && !stage.is_empty();
    ok.then(|| format!("{api}/{stage}/*/*"))
}

fn policy(
    principal: &str,
    effect: &str,
    resource: &str,
    context: Option<Map<String, Value>>,
) -> Value {
    let mut out = json!({
        "principalId": principal,
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{"Action": "execute-api:Invoke", "Effect": effect, "Resource": resource}],
        },
    });
    if let Some(context) = context {
        out["context"] = Value::Object(context);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ValidationResult;
    use async_trait::async_trait;
    use proptest::prelude::*;

    /// Accepts exactly the token "good".
    struct Fixed;

    #[async_trait]
    impl AuthValidator for Fixed {
        async fn validate(&self, token: &str, _context: &ValidationContext) -> ValidationResult {
            if token == "good" {
                let mut claims = Map::new();
                claims.insert("email".into(), json!("a@example.com"));
                claims.insert("admin".into(), json!(true));
                claims.insert("nested".into(), json!({"x": 1}));
                ValidationResult::allow("user-a", claims)
            } else {
                ValidationResult::deny("not good")
            }
        }
    }

    const ARN: &str =
        "arn:aws:execute-api:us-east-1:123456789012:abcdef123/agents/POST/api/v1/chat";

    fn run(event: Value) -> Result<Value, Unauthorized> {
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let rt = rt.unwrap_or_else(|e| panic!("{e}"));
        rt.block_on(Authorizer::new(Arc::new(Fixed)).handle(&event))
    }

    #[test]
    fn allow_covers_the_whole_api_with_context() {
        let out =
            run(json!({"type": "TOKEN", "authorizationToken": "Bearer good", "methodArn": ARN}))
                .unwrap_or_default();
        assert_eq!(out["principalId"], "user-a");
        let statement = &out["policyDocument"]["Statement"][0];
        assert_eq!(statement["Effect"], "Allow");
        assert_eq!(
            statement["Resource"],
            "arn:aws:execute-api:us-east-1:123456789012:abcdef123/agents/*/*"
        );
        assert_eq!(
            out["context"],
            json!({"email": "a@example.com", "admin": "true", "user_id": "user-a"})
        );
    }

    #[test]
    fn request_events_read_the_header_in_any_case() {
        for name in ["Authorization", "authorization", "AUTHORIZATION"] {
            let out =
                run(json!({"type": "REQUEST", "methodArn": ARN, "headers": {name: "bearer good"}}));
            assert_eq!(
                out.map(|o| o["principalId"].clone()),
                Ok(json!("user-a")),
                "{name}"
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread().build();
        let rt = rt.unwrap_or_else(|e| panic!("{e}"));
        let custom = Authorizer::new(Arc::new(Fixed)).with_token_header("X-Api-Token");
        let event = |name: &str| json!({"type": "REQUEST", "methodArn": ARN, "headers": {name: "good", "authorization": "bad"}});
        let out = rt.block_on(custom.handle(&event("x-api-token")));
        assert_eq!(
            out.map(|o| o["principalId"].clone()),
            Ok(json!("user-a")),
            "a configured header is read instead of Authorization"
        );
        assert_eq!(
            rt.block_on(custom.handle(
                &json!({"type": "REQUEST", "methodArn": ARN, "headers": {"authorization": "good"}})
            )),
            Err(Unauthorized),
            "and Authorization is not read then"
        );
        let bare =
            run(json!({"type": "REQUEST", "methodArn": ARN, "headers": {"authorization": "good"}}));
        assert_eq!(
            bare.map(|o| o["principalId"].clone()),
            Ok(json!("user-a")),
            "Bearer is optional"
        );
    }

    #[test]
    fn missing_tokens_are_unauthorized_and_bad_ones_denied() {
        assert_eq!(
            run(json!({"type": "REQUEST", "methodArn": ARN, "headers": {}})),
            Err(Unauthorized)
        );
        assert_eq!(
            run(json!({"type": "REQUEST", "methodArn": ARN})),
            Err(Unauthorized)
        );
        assert_eq!(
            run(json!({"type": "TOKEN", "methodArn": ARN, "authorizationToken": "Bearer "})),
            Err(Unauthorized)
        );
        assert_eq!(
            run(json!({"type": "TOKEN", "authorizationToken": "good"})),
            Err(Unauthorized),
            "no methodArn"
        );
        let denied = run(json!({"type": "TOKEN", "methodArn": ARN, "authorizationToken": "bad"}))
            .unwrap_or_default();
        assert_eq!(denied["policyDocument"]["Statement"][0]["Effect"], "Deny");
        assert!(denied.get("context").is_none());
        let huge = "x".repeat(MAX_TOKEN_LEN + 1);
        let denied = run(json!({"type": "TOKEN", "methodArn": ARN, "authorizationToken": huge}))
            .unwrap_or_default();
        assert_eq!(denied["policyDocument"]["Statement"][0]["Effect"], "Deny");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_events_never_panic(
            kind in prop_oneof![Just("TOKEN".to_owned()), Just("REQUEST".to_owned()), ".{0,12}"],
            token in proptest::option::of(".{0,300}"),
            arn in proptest::option::of(prop_oneof![Just(ARN.to_owned()), ".{0,80}"]),
            header_name in "[A-Za-z-]{0,20}",
            header_value in ".{0,200}",
        ) {
            let event = json!({
                "type": kind,
                "methodArn": arn,
                "authorizationToken": token,
                "headers": {header_name: header_value},
            });
            let _ = run(event);
        }

        #[test]
        fn arbitrary_json_never_panics(value in arbitrary_json()) {
            let _ = run(value);
        }
    }

    fn arbitrary_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            ".{0,40}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("type".to_owned()),
                        Just("methodArn".to_owned()),
                        Just("headers".to_owned()),
                        Just("authorizationToken".to_owned()),
                        "[a-z]{1,8}"
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
