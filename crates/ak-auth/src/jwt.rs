//! The built-in JWT validator (`auth.jwt`).
//!
//! The signature is always verified: with the HMAC secret, the PEM public key, or the key of the
//! JWKS whose `kid` the token names. Only the configured algorithms are accepted (never `none`,
//! never HMAC and public-key together, so a public key cannot be used as an HMAC secret). `exp`
//! is required; `nbf` is honoured; `iss` and `aud` are checked when configured; every configured
//! claim rule must hold. The JWKS is fetched on first use and cached; a token naming an unknown
//! `kid` triggers a refetch, at most once per [`JWKS_REFRESH_INTERVAL`] (30 s).

use crate::{AuthValidator, ValidationContext, ValidationResult};
use ak_core::config::JwtSettings;
use ak_core::https::{HttpsClient, root_cause};
use async_trait::async_trait;
use http_body_util::{BodyExt, Full};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation, decode, decode_header};
use serde_json::{Map, Value};
use std::collections::HashSet;
use std::str::FromStr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// Least time between two JWKS fetches caused by unknown key ids: a rotated-in key is picked
/// up within this long, and a flood of made-up key ids costs at most one fetch per interval.
pub const JWKS_REFRESH_INTERVAL: Duration = Duration::from_secs(30);
const JWKS_TIMEOUT: Duration = Duration::from_secs(3);

/// The validator cannot be built from its settings.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwt: {0}")]
pub struct JwtConfigError(pub String);

enum KeySource {
    Static(DecodingKey),
    Jwks(Box<Jwks>),
}

struct Jwks {
    url: http::Uri,
    client: OnceLock<Result<HttpsClient, String>>,
    cache: Mutex<JwksCache>,
}

#[derive(Default)]
struct JwksCache {
    set: Option<JwkSet>,
    fetched_at: Option<Instant>,
}

/// Validates JWTs as configured in `auth.jwt`.
pub struct JwtValidator {
    keys: KeySource,
    refresh_interval: Duration,
    validation: Validation,
    subject_claim: String,
    required_claims: Vec<(String, Vec<String>)>,
}

impl JwtValidator {
    /// Builds the validator; reads `secret_file` now. Nothing is fetched until the first token.
    pub fn from_settings(settings: &JwtSettings) -> Result<Self, JwtConfigError> {
        let err = |m: String| JwtConfigError(m);
        let secret = match (&settings.secret, &settings.secret_file) {
            (Some(secret), _) => Some(secret.expose().as_bytes().to_vec()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| err(format!("cannot read secret_file {}: {e}", path.display())))?;
                Some(text.trim_end_matches(['\n', '\r']).as_bytes().to_vec())
            }
            (None, None) => None,
        };
        let mut algorithms = Vec::new();
        for name in &settings.algorithms {
            let alg = Algorithm::from_str(name)
                .map_err(|_| err(format!("unknown algorithm {name:?}")))?;
            algorithms.push(alg);
        }
        if algorithms.is_empty() {
            algorithms.push(if secret.is_some() {
                Algorithm::HS256
            } else {
                Algorithm::RS256
            });
        }
        let families: HashSet<String> = algorithms
            .iter()
            .map(|a| format!("{:?}", a.family()))
            .collect();
        if families.len() > 1
            && algorithms
                .iter()
                .any(|a| a.family() == AlgorithmFamily::Hmac)
        {
            return Err(err(
                "HMAC and public-key algorithms cannot be allowed together".to_owned(),
            ));
        }
        let keys = if let Some(secret) = secret {
            if algorithms
                .iter()
                .any(|a| a.family() != AlgorithmFamily::Hmac)
            {
                return Err(err(
                    "an HMAC secret works only with HS256, HS384 or HS512".to_owned()
                ));
            }
            KeySource::Static(DecodingKey::from_secret(&secret))
        } else if let Some(pem) = &settings.public_key_pem {
            let family = algorithms[0].family();
            if algorithms.iter().any(|a| a.family() != family) {
                return Err(err(
                    "one PEM key serves one algorithm family (RS*/PS*, ES* or EdDSA)".to_owned(),
                ));
            }
            let key = match family {
                AlgorithmFamily::Rsa => DecodingKey::from_rsa_pem(pem.as_bytes()),
                AlgorithmFamily::Ec => DecodingKey::from_ec_pem(pem.as_bytes()),
                AlgorithmFamily::Ed => DecodingKey::from_ed_pem(pem.as_bytes()),
                _ => {
                    return Err(err(
                        "a public key needs an RS*, PS*, ES* or EdDSA algorithm".to_owned(),
                    ));
                }
            }
            .map_err(|e| err(format!("public_key_pem is not a usable key: {e}")))?;
            KeySource::Static(key)
        } else if let Some(url) = &settings.jwks_url {
            let url: http::Uri = url
                .parse()
                .map_err(|e| err(format!("jwks_url {url:?} is not a URL: {e}")))?;
            KeySource::Jwks(Box::new(Jwks {
                url,
                client: OnceLock::new(),
                cache: Mutex::new(JwksCache::default()),
            }))
        } else {
            return Err(err(
                "no key: set secret, secret_file, public_key_pem or jwks_url".to_owned(),
            ));
        };

        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms;
        validation.leeway = settings.leeway;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.required_spec_claims = HashSet::from(["exp".to_owned()]);
        if let Some(issuer) = &settings.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".to_owned());
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&settings.audience);
            validation.required_spec_claims.insert("aud".to_owned());
        }
        Ok(Self {
            keys,
            refresh_interval: JWKS_REFRESH_INTERVAL,
            validation,
            subject_claim: settings.subject_claim.clone(),
            required_claims: settings
                .required_claims
                .iter()
                .map(|(claim, values)| (claim.clone(), values.0.clone()))
                .collect(),
        })
    }

    /// Sets the least time between JWKS refetches caused by unknown key ids.
    pub fn with_jwks_refresh_interval(mut self, interval: Duration) -> Self {
        self.refresh_interval = interval;
        self
    }

    async fn key_for(&self, kid: Option<&str>) -> Result<DecodingKey, String> {
        let jwks = match &self.keys {
            KeySource::Static(key) => return Ok(key.clone()),
            KeySource::Jwks(jwks) => jwks,
        };
        let kid = kid.ok_or("token has no kid; the JWKS needs one")?;
        let mut cache = jwks.cache.lock().await;
        if let Some(jwk) = cache.set.as_ref().and_then(|set| set.find(kid)) {
            return DecodingKey::from_jwk(jwk)
                .map_err(|e| format!("JWKS key {kid} is unusable: {e}"));
        }
        let may_fetch = cache
            .fetched_at
            .is_none_or(|at| at.elapsed() >= self.refresh_interval);
        if !may_fetch {
            return Err(format!(
                "unknown key id {kid:?} (the JWKS was refreshed moments ago)"
            ));
        }
        cache.fetched_at = Some(Instant::now());
        let set = jwks.fetch().await?;
        let key = set.find(kid).map(|jwk| {
            DecodingKey::from_jwk(jwk).map_err(|e| format!("JWKS key {kid} is unusable: {e}"))
        });
        cache.set = Some(set);
        key.unwrap_or_else(|| Err(format!("unknown key id {kid:?}")))
    }

    fn check_claims(&self, claims: &Map<String, Value>) -> Result<String, String> {
        for (claim, allowed) in &self.required_claims {
            let ok = match claims.get(claim) {
                Some(Value::String(s)) => allowed.contains(s),
                Some(Value::Array(items)) => items
                    .iter()
                    .any(|v| v.as_str().is_some_and(|s| allowed.contains(&s.to_owned()))),
                Some(Value::Bool(b)) => allowed.contains(&b.to_string()),
                Some(Value::Number(n)) => allowed.contains(&n.to_string()),
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "claim {claim:?} is missing or not an allowed value"
                ));
            }
        }
        match claims.get(&self.subject_claim) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            _ => Err(format!(
                "token has no {:?} claim to identify the user",
                self.subject_claim
            )),
        }
    }
}

impl Jwks {
    async fn fetch(&self) -> Result<JwkSet, String> {
        let client = self
            .client
            .get_or_init(ak_core::https::client)
            .as_ref()
            .map_err(Clone::clone)?;
        let request = http::Request::get(&self.url)
            .header(http::header::ACCEPT, "application/json")
            .body(Full::new(bytes::Bytes::new()))
            .map_err(|e| e.to_string())?;
        let fetch = async {
            let response = client.request(request).await.map_err(|e| root_cause(&e))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            if !status.is_success() {
                return Err(format!("JWKS answered HTTP {status}"));
            }
            serde_json::from_slice::<JwkSet>(&body)
                .map_err(|e| format!("JWKS is not a key set: {e}"))
        };
        match tokio::time::timeout(JWKS_TIMEOUT, fetch).await {
            Ok(result) => result,
            Err(_) => Err("JWKS did not answer in time".to_owned()),
        }
    }
}

#[async_trait]
impl AuthValidator for JwtValidator {
    async fn validate(&self, token: &str, _context: &ValidationContext) -> ValidationResult {
        let header = match decode_header(token) {
            Ok(header) => header,
            Err(e) => return ValidationResult::deny(format!("malformed token: {e}")),
        };
        if !self.validation.algorithms.contains(&header.alg) {
            return ValidationResult::deny(format!("algorithm {:?} is not allowed", header.alg));
        }
        let key = match self.key_for(header.kid.as_deref()).await {
            Ok(key) => key,
            Err(reason) => return ValidationResult::deny(reason),
        };
        let claims = match decode::<Map<String, Value>>(token, &key, &self.validation) {
            Ok(data) => data.claims,
            Err(e) => return ValidationResult::deny(format!("rejected: {e}")),
        };
        match self.check_claims(&claims) {
            Ok(subject) => ValidationResult::allow(subject, claims),
            Err(reason) => ValidationResult::deny(reason),
        }
    }
}
