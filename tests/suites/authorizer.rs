//! The authorizer with tokens minted here: what it allows, what it denies, JWKS key rotation
//! from a local server, the function binary, and identities flowing through the pipeline so
//! nobody reads what is not theirs.

use crate::pipeline::{Store, authorized_event, call, handoff_then, system};
use ak_auth::authorizer::{Authorizer, Unauthorized};
use ak_auth::jwt::JwtValidator;
use ak_core::config::{ClaimValues, ExecutionMode, JwtSettings};
use ak_core::ports::now_epoch_secs;
use ak_core::secret::Secret;
use ak_tests::runtime_api::{Outcome, RuntimeApi, function_binary, spawn_function};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "test-only-hmac-secret-0123456789abcdef";
const ARN: &str = "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/agents/POST/api/v1/chat";

fn key_file(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/jwt")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "email": format!("{sub}@example.com"), "exp": now_epoch_secs() + 600, "iat": now_epoch_secs(), "roles": ["a"]})
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

fn rs256(claims: &Value, private: &str, kid: Option<&str>) -> String {
    let mut header = Header::new(Algorithm::RS256);
    header.kid = kid.map(str::to_owned);
    let key =
        EncodingKey::from_rsa_pem(key_file(private).as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    encode(&header, claims, &key).unwrap_or_else(|e| panic!("{e}"))
}

fn hmac_settings() -> JwtSettings {
    JwtSettings {
        algorithms: vec!["HS256".into()],
        secret: Some(Secret::new(SECRET)),
        ..JwtSettings::default()
    }
}

fn rsa_settings() -> JwtSettings {
    JwtSettings {
        algorithms: vec!["RS256".into()],
        public_key_pem: Some(key_file("rsa1_public.pem")),
        ..JwtSettings::default()
    }
}

fn authorizer(settings: &JwtSettings) -> Authorizer {
    Authorizer::new(Arc::new(
        JwtValidator::from_settings(settings).unwrap_or_else(|e| panic!("{e}")),
    ))
}

async fn decide(authorizer: &Authorizer, token: &str) -> Result<Value, Unauthorized> {
    authorizer
        .handle(&json!({"type": "TOKEN", "authorizationToken": format!("Bearer {token}"), "methodArn": ARN}))
        .await
}

fn effect(outcome: &Result<Value, Unauthorized>) -> &str {
    match outcome {
        Ok(policy) => policy["policyDocument"]["Statement"][0]["Effect"]
            .as_str()
            .unwrap_or("?"),
        Err(Unauthorized) => "Unauthorized",
    }
}

fn b64(value: &Value) -> String {
    use std::fmt::Write;
    // base64url without padding, by hand, for tokens the library refuses to make.
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = value.to_string().into_bytes();
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |acc, (i, b)| acc | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            let _ = out.write_char(char::from(TABLE[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

#[tokio::test]
async fn valid_hs256_and_rs256_tokens_are_allowed_with_context() {
    let hs = authorizer(&hmac_settings());
    let allowed = decide(&hs, &hs256(&claims("user-a"))).await;
    assert_eq!(effect(&allowed), "Allow");
    let policy = allowed.unwrap_or_default();
    assert_eq!(policy["principalId"], "user-a");
    assert_eq!(policy["context"]["user_id"], "user-a");
    assert_eq!(policy["context"]["email"], "user-a@example.com");
    assert!(
        policy["context"].get("roles").is_none(),
        "only scalar claims go into the context"
    );
    assert_eq!(
        policy["policyDocument"]["Statement"][0]["Resource"],
        "arn:aws:execute-api:us-east-1:123456789012:a1b2c3d4e5/agents/*/*",
        "a cached Allow covers every route"
    );

    let rs = authorizer(&rsa_settings());
    assert_eq!(
        effect(&decide(&rs, &rs256(&claims("user-r"), "rsa1_private.pem", None)).await),
        "Allow"
    );

    let es = authorizer(&JwtSettings {
        algorithms: vec!["ES256".into()],
        public_key_pem: Some(key_file("ec_public.pem")),
        ..JwtSettings::default()
    });
    let key = EncodingKey::from_ec_pem(key_file("ec_private.pem").as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let token = encode(&Header::new(Algorithm::ES256), &claims("user-e"), &key)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(effect(&decide(&es, &token).await), "Allow");
}

#[tokio::test]
async fn forged_expired_and_malformed_tokens_are_denied() {
    let hs = authorizer(&hmac_settings());
    let rs = authorizer(&rsa_settings());
    let now = now_epoch_secs();

    let unsigned = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims("mallory"))
    );
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(key_file("rsa1_public.pem").as_bytes()),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let wrong_secret = encode(
        &Header::new(Algorithm::HS256),
        &claims("mallory"),
        &EncodingKey::from_secret(b"another-secret"),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let other_rsa = rs256(&claims("mallory"), "rsa2_private.pem", None);
    let mut expired = claims("u");
    expired["exp"] = json!(now - 3600);
    let mut early = claims("u");
    early["nbf"] = json!(now + 3600);
    let mut no_exp = claims("u");
    no_exp.as_object_mut().map(|c| c.remove("exp"));
    let mut tampered = hs256(&claims("user-a"));
    tampered.insert(tampered.find('.').unwrap_or(0) + 1, 'x');

    let cases: Vec<(&str, &Authorizer, String)> = vec![
        ("alg none", &hs, unsigned.clone()),
        ("alg none against RS256", &rs, unsigned),
        ("HS256 signed with the RSA public key", &rs, confused),
        ("bad signature", &hs, wrong_secret),
        ("signed by another RSA key", &rs, other_rsa),
        ("expired", &hs, hs256(&expired)),
        ("not yet valid", &hs, hs256(&early)),
        ("missing exp", &hs, hs256(&no_exp)),
        ("tampered payload", &hs, tampered),
        ("malformed", &hs, "abc.def".into()),
        ("garbage", &hs, "\u{1}\u{2}\u{fffd}\u{0}\u{7f}".into()),
        ("one part", &hs, "eyJhbGciOiJIUzI1NiJ9".into()),
    ];
    for (name, authorizer, token) in cases {
        assert_eq!(effect(&decide(authorizer, &token).await), "Deny", "{name}");
    }
}

#[tokio::test]
async fn issuer_audience_and_claim_rules_are_enforced() {
    let strict = authorizer(&JwtSettings {
        issuer: Some("https://issuer.example".into()),
        audience: vec!["agents-api".into()],
        required_claims: [(
            "email".to_owned(),
            ClaimValues(vec!["user-a@example.com".into()]),
        )]
        .into(),
        ..hmac_settings()
    });
    let mut good = claims("user-a");
    good["iss"] = json!("https://issuer.example");
    good["aud"] = json!("agents-api");
    assert_eq!(effect(&decide(&strict, &hs256(&good)).await), "Allow");

    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.example");
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("other-api");
    let mut no_iss = good.clone();
    no_iss.as_object_mut().map(|c| c.remove("iss"));
    let mut wrong_email = good.clone();
    wrong_email["email"] = json!("user-b@example.com");
    let mut no_sub = good.clone();
    no_sub.as_object_mut().map(|c| c.remove("sub"));
    for (name, token) in [
        ("wrong issuer", wrong_iss),
        ("wrong audience", wrong_aud),
        ("missing issuer", no_iss),
        ("claim rule not met", wrong_email),
        ("no subject", no_sub),
    ] {
        assert_eq!(
            effect(&decide(&strict, &hs256(&token)).await),
            "Deny",
            "{name}"
        );
    }
}

#[tokio::test]
async fn missing_or_empty_credentials_are_unauthorized() {
    let hs = authorizer(&hmac_settings());
    let mut event: Value =
        serde_json::from_str(include_str!("../fixtures/authorizer_request_event.json"))
            .unwrap_or_default();
    event["headers"]
        .as_object_mut()
        .map(|h| h.remove("authorization"));
    assert_eq!(hs.handle(&event).await, Err(Unauthorized), "missing header");
    event["headers"]["Authorization"] = json!("");
    assert_eq!(hs.handle(&event).await, Err(Unauthorized), "empty header");
    event["headers"]["Authorization"] = json!(format!("Bearer {}", hs256(&claims("user-a"))));
    assert_eq!(
        effect(&hs.handle(&event).await),
        "Allow",
        "REQUEST event, header in another case"
    );
}

/// A JWKS endpoint whose keys can be swapped, counting fetches.
struct JwksServer {
    url: String,
    keys: Arc<Mutex<Vec<Value>>>,
    fetches: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn jwks_server(keys: Vec<Value>) -> JwksServer {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let url = format!(
        "http://{}/.well-known/jwks.json",
        listener.local_addr().unwrap_or_else(|e| panic!("{e}"))
    );
    let keys = Arc::new(Mutex::new(keys));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (k, f) = (keys.clone(), fetches.clone());
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let (k, f) = (k.clone(), f.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req| {
                    f.fetch_add(1, Ordering::SeqCst);
                    let body = json!({"keys": k.lock().map(|k| k.clone()).unwrap_or_default()})
                        .to_string();
                    async move {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    JwksServer {
        url,
        keys,
        fetches,
        task,
    }
}

fn jwk(name: &str) -> Value {
    serde_json::from_str(&key_file(name)).unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn jwks_keys_are_cached_and_rotated_with_bounded_refreshes() {
    let server = jwks_server(vec![jwk("rsa1.jwk.json")]).await;
    let settings = JwtSettings {
        algorithms: vec!["RS256".into()],
        jwks_url: Some(server.url.clone()),
        ..JwtSettings::default()
    };
    let interval = Duration::from_secs(2);
    let validator = JwtValidator::from_settings(&settings)
        .unwrap_or_else(|e| panic!("{e}"))
        .with_jwks_refresh_interval(interval);
    let authz = Authorizer::new(Arc::new(validator));
    // Signing is slow in debug builds: mint everything before the clock matters.
    let old = rs256(&claims("user-a"), "rsa1_private.pem", Some("key-1"));
    let new = rs256(&claims("user-a"), "rsa2_private.pem", Some("key-2"));
    let forged: Vec<String> = (0..20)
        .map(|i| {
            rs256(
                &claims("mallory"),
                "rsa1_private.pem",
                Some(&format!("made-up-{i}")),
            )
        })
        .collect();
    let fetches = || server.fetches.load(Ordering::SeqCst);

    assert_eq!(fetches(), 0, "nothing fetched before the first token");
    let first_fetch = tokio::time::Instant::now();
    assert_eq!(effect(&decide(&authz, &old).await), "Allow");
    assert_eq!(effect(&decide(&authz, &old).await), "Allow");
    assert_eq!(fetches(), 1, "the key set is cached");

    // Rotation: the issuer now signs with key-2 only.
    *server.keys.lock().unwrap_or_else(|p| p.into_inner()) = vec![jwk("rsa2.jwk.json")];
    for token in &forged {
        assert_eq!(effect(&decide(&authz, token).await), "Deny");
    }
    assert_eq!(
        effect(&decide(&authz, &new).await),
        "Deny",
        "within the refresh interval"
    );
    assert!(
        first_fetch.elapsed() < interval,
        "the checks above ran inside the interval"
    );
    assert_eq!(fetches(), 1, "unknown key ids do not cause a fetch each");

    tokio::time::sleep_until(first_fetch + interval + Duration::from_millis(100)).await;
    assert_eq!(
        effect(&decide(&authz, &new).await),
        "Allow",
        "the rotated-in key is picked up"
    );
    assert_eq!(fetches(), 2);
    assert_eq!(effect(&decide(&authz, &new).await), "Allow");
    assert_eq!(fetches(), 2, "and cached again");
    assert_eq!(
        effect(&decide(&authz, &old).await),
        "Deny",
        "the retired key no longer works"
    );
}

#[tokio::test]
async fn the_authorizer_function_answers_token_and_request_events() {
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("authorizer", "debug").unwrap_or_else(|e| panic!("{e}"));
    let child = spawn_function(
        &binary,
        &api,
        &[
            ("AK_AUTH__JWT__SECRET", SECRET),
            ("AK_AUTH__JWT__ALGORITHMS", "HS256"),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _child = Kill(child);
    let token = hs256(&claims("user-a"));
    let mut token_event: Value =
        serde_json::from_str(include_str!("../fixtures/authorizer_token_event.json"))
            .unwrap_or_default();
    token_event["authorizationToken"] = json!(format!("Bearer {token}"));
    let id = api.invoke(token_event);
    let outcome = api
        .outcome(&id, Duration::from_secs(20))
        .await
        .map(|(o, _)| o);
    let Some(Outcome::Response(policy)) = outcome else {
        panic!("{outcome:?} / {:?}", api.init_error())
    };
    assert_eq!(policy["principalId"], "user-a");
    assert_eq!(policy["policyDocument"]["Statement"][0]["Effect"], "Allow");

    let mut request_event: Value =
        serde_json::from_str(include_str!("../fixtures/authorizer_request_event.json"))
            .unwrap_or_default();
    request_event["headers"]["authorization"] = json!(format!("Bearer {token}x"));
    let id = api.invoke(request_event.clone());
    let outcome = api
        .outcome(&id, Duration::from_secs(20))
        .await
        .map(|(o, _)| o);
    let Some(Outcome::Response(policy)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(policy["policyDocument"]["Statement"][0]["Effect"], "Deny");

    request_event["headers"]
        .as_object_mut()
        .map(|h| h.remove("authorization"));
    let id = api.invoke(request_event);
    let outcome = api
        .outcome(&id, Duration::from_secs(20))
        .await
        .map(|(o, _)| o);
    let Some(Outcome::Error(error)) = outcome else {
        panic!("{outcome:?}")
    };
    assert_eq!(
        error["errorMessage"], "Unauthorized",
        "API Gateway answers 401 for this"
    );
}

/// The authorizer's answer as API Gateway passes it on to the request handler.
async fn identity(authz: &Authorizer, sub: &str) -> Value {
    let policy = decide(authz, &hs256(&claims(sub)))
        .await
        .unwrap_or_default();
    let mut context = policy["context"].clone();
    context["principalId"] = policy["principalId"].clone();
    context
}

#[tokio::test]
async fn user_b_cannot_read_user_a_answer() {
    let authz = authorizer(&hmac_settings());
    let (a, b) = (
        identity(&authz, "user-a").await,
        identity(&authz, "user-b").await,
    );
    let s = system(
        ExecutionMode::RestAsync,
        Store::Redis,
        handoff_then("for A only"),
        |_| {},
    )
    .await;
    let (status, _, accepted) = call(
        &s.api,
        authorized_event(
            "POST",
            Some(r#"{"prompt": "what is 12 * 7", "user_id": "user-b"}"#),
            None,
            Some(a.clone()),
        ),
    )
    .await;
    assert_eq!(status, 202);
    let id = accepted["request_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    while s.run_runner().await == 0 {}
    s.run_responses().await;

    let as_b = call(
        &s.api,
        authorized_event("GET", None, Some(("request_id", &id)), Some(b)),
    )
    .await;
    assert_eq!(
        (as_b.0, as_b.2),
        (404, json!({"status": "NOT_FOUND", "request_id": id})),
        "exactly like an unknown id"
    );
    let as_a = call(
        &s.api,
        authorized_event("GET", None, Some(("request_id", &id)), Some(a)),
    )
    .await;
    assert_eq!(as_a.0, 200);
    assert_eq!(as_a.2["result"], "for A only");
}

#[tokio::test]
async fn a_session_started_by_one_user_cannot_be_continued_by_another() {
    let authz = authorizer(&hmac_settings());
    let (a, b) = (
        identity(&authz, "user-a").await,
        identity(&authz, "user-b").await,
    );
    let s = system(
        ExecutionMode::Direct,
        Store::Redis,
        vec![Reply::Text("hello A".into()), Reply::Text("again".into())],
        |_| {},
    )
    .await;
    let session = ak_tests::unique_name("session");
    let body = json!({"prompt": "hi", "agent": "history", "session_id": session}).to_string();
    let first = call(
        &s.api,
        authorized_event("POST", Some(&body), None, Some(a.clone())),
    )
    .await;
    assert_eq!(first.0, 200, "{}", first.2);
    let stolen = call(&s.api, authorized_event("POST", Some(&body), None, Some(b))).await;
    assert_eq!(stolen.0, 403, "{}", stolen.2);
    assert!(
        stolen.2["error"]
            .as_str()
            .unwrap_or_default()
            .contains("belongs to another user")
    );
    let anonymous = call(&s.api, authorized_event("POST", Some(&body), None, None)).await;
    assert_eq!(anonymous.0, 403);
    let again = call(&s.api, authorized_event("POST", Some(&body), None, Some(a))).await;
    assert_eq!((again.0, again.2["result"].as_str()), (200, Some("again")));
}

use ak_tests::model_server::Reply;
