//! Authentication for the API Gateway Lambda authorizer.
//!
//! - [`AuthValidator`]: the trait a validator implements (write your own in Rust);
//! - [`jwt::JwtValidator`]: the built-in one, configured by `auth.jwt` — signature always
//!   verified, algorithm allow-list, `exp` required, optional `iss`/`aud`, claim rules;
//! - [`authorizer`]: REQUEST and TOKEN events in, an IAM policy (or `Unauthorized`) out.
//!
//! Layer: edge (the authorizer function's). Uses `ak-core` only (configuration, the HTTPS
//! client for JWKS): no queue, store, model or HTTP API code.

pub mod authorizer;
pub mod jwt;

use async_trait::async_trait;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// What a validator knows about the call being authorized.
#[derive(Debug, Clone, Default)]
pub struct ValidationContext {
    /// Request path, when the event carries it (REQUEST events).
    pub path: String,
    /// HTTP method, when the event carries it.
    pub method: String,
    /// Request headers, names lower-cased (REQUEST events).
    pub headers: BTreeMap<String, String>,
}

/// A validator's verdict.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ValidationResult {
    /// Whether the caller may proceed.
    pub is_valid: bool,
    /// Who the caller is (becomes the principal and the `user_id`).
    pub subject: Option<String>,
    /// The token's claims.
    pub claims: Map<String, Value>,
    /// Why the token was refused (for the log; never the token itself).
    pub error: Option<String>,
}

impl ValidationResult {
    /// A refusal with its reason.
    pub fn deny(reason: impl Into<String>) -> Self {
        Self {
            is_valid: false,
            error: Some(reason.into()),
            ..Self::default()
        }
    }

    /// An acceptance for `subject` with `claims`.
    pub fn allow(subject: impl Into<String>, claims: Map<String, Value>) -> Self {
        Self {
            is_valid: true,
            subject: Some(subject.into()),
            claims,
            error: None,
        }
    }
}

/// Decides whether a bearer token may call the API.
#[async_trait]
pub trait AuthValidator: Send + Sync {
    /// Validates `token` (without any `Bearer ` prefix) for the call described by `context`.
    async fn validate(&self, token: &str, context: &ValidationContext) -> ValidationResult;
}
