//! ElastiCache IAM authentication: the password of an IAM-enabled user is a token — a SigV4
//! presigned `GET http://<cache-name>/?Action=connect&User=<user-id>` (plus
//! `&ResourceType=ServerlessCache` for Serverless), service `elasticache`, valid 15 minutes,
//! without its scheme — made from the function's own AWS credentials with `aws-sigv4` (the
//! SDK's signer). A token is made on first use and again every [`RENEW_AFTER`]; connections
//! authenticate with the newest, and live connections authenticate again whenever it changes,
//! which also resets ElastiCache's 12-hour connection limit. Source: the ElastiCache user
//! guide, "Authenticating with IAM", and botocore's request signer (the reference the tests
//! compare with).

use crate::AwsConfig;
use ak_core::config::RedisIamSettings;
use ak_core::ports::{Backend, PortError};
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use std::time::{Duration, SystemTime};
use tokio::sync::Mutex;
use tokio::time::Instant;

/// How long a token is valid (ElastiCache's rule).
pub const TOKEN_LIFETIME: Duration = Duration::from_secs(900);

/// A token is made anew after this long, well before it expires.
pub const RENEW_AFTER: Duration = Duration::from_secs(600);

/// Characters a SigV4 query keeps as they are (RFC 3986 unreserved); everything else is %XX.
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// The IAM authentication token for `user_id` on `cache_name` in `region`, signed with
/// `credentials` at `now` (see the module documentation).
///
/// # Errors
/// When the signer refuses the parameters (an empty region, say).
pub fn elasticache_token(
    cache_name: &str,
    user_id: &str,
    region: &str,
    serverless: bool,
    credentials: &Credentials,
    now: SystemTime,
) -> Result<String, String> {
    use aws_sigv4::http_request::{
        SignableBody, SignableRequest, SignatureLocation, SigningSettings, sign,
    };
    use aws_sigv4::sign::v4;
    let mut url = format!(
        "http://{cache_name}/?Action=connect&User={}",
        percent_encoding::utf8_percent_encode(user_id, UNRESERVED)
    );
    if serverless {
        url.push_str("&ResourceType=ServerlessCache");
    }
    let mut settings = SigningSettings::default();
    settings.signature_location = SignatureLocation::QueryParams;
    settings.expires_in = Some(TOKEN_LIFETIME);
    let identity = credentials.clone().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name("elasticache")
        .time(now)
        .settings(settings)
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new("GET", &url, std::iter::empty(), SignableBody::Bytes(&[]))
        .map_err(|e| e.to_string())?;
    let (instructions, _) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let mut token = url["http://".len()..].to_owned();
    for (name, value) in instructions.params() {
        token.push('&');
        token.push_str(name);
        token.push('=');
        token.extend(percent_encoding::utf8_percent_encode(value, UNRESERVED));
    }
    Ok(token)
}

/// Where tokens come from.
enum Tokens {
    /// Signed with the function's AWS credentials.
    Signed {
        cache_name: String,
        serverless: bool,
        region: Option<String>,
        aws: AwsConfig,
    },
    /// These, in order, then the last again (a stand-in for ElastiCache in tests: an ACL
    /// user's rotated passwords).
    Given(std::sync::Mutex<std::collections::VecDeque<String>>),
}

/// IAM authentication of one Redis URL: makes, caches and renews its tokens.
pub struct IamAuth {
    user_id: String,
    tokens: Tokens,
    renew_after: Duration,
    /// The newest token and when it was made.
    current: Mutex<Option<(String, Instant)>>,
    /// Tokens made so far.
    made: std::sync::atomic::AtomicU64,
}

impl IamAuth {
    /// Authentication for these settings (`user_id` and `cache_name` required), with the
    /// credentials and region of `aws`.
    ///
    /// # Errors
    /// When the user id or the cache's name is missing.
    pub fn new(settings: &RedisIamSettings, aws: AwsConfig) -> Result<Self, String> {
        let required = |value: &Option<String>, name: &str| {
            value
                .clone()
                .filter(|v| !v.trim().is_empty())
                .ok_or_else(|| format!("redis.iam.{name} is required"))
        };
        Ok(Self {
            user_id: required(&settings.user_id, "user_id")?,
            tokens: Tokens::Signed {
                cache_name: required(&settings.cache_name, "cache_name")?,
                serverless: settings.serverless,
                region: settings.region.clone(),
                aws,
            },
            renew_after: RENEW_AFTER,
            current: Mutex::new(None),
            made: std::sync::atomic::AtomicU64::new(0),
        })
    }

    /// Authentication of `user_id` with `tokens` given in order, each used for `renew_after`
    /// (the last one then for good): what an ACL user whose password is rotated asks of a
    /// client, standing in for ElastiCache's IAM tokens in tests.
    pub fn with_tokens(user_id: &str, tokens: Vec<String>, renew_after: Duration) -> Self {
        Self {
            user_id: user_id.to_owned(),
            tokens: Tokens::Given(std::sync::Mutex::new(tokens.into())),
            renew_after,
            current: Mutex::new(None),
            made: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The user the token authenticates.
    pub fn user_id(&self) -> &str {
        &self.user_id
    }

    /// How many tokens were made so far.
    pub fn tokens_made(&self) -> u64 {
        self.made.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The current token, made anew when the last is [`RENEW_AFTER`] old.
    ///
    /// # Errors
    /// When the function's credentials cannot be had or the token cannot be signed.
    pub async fn token(&self) -> Result<String, PortError> {
        let mut current = self.current.lock().await;
        if let Some((token, made)) = current.as_ref()
            && made.elapsed() < self.renew_after
        {
            return Ok(token.clone());
        }
        let token = self.make().await?;
        self.made.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *current = Some((token.clone(), Instant::now()));
        Ok(token)
    }

    async fn make(&self) -> Result<String, PortError> {
        let failed = |detail: String| {
            PortError::unavailable(
                Backend::Redis,
                format!("cannot make the IAM authentication token: {detail}"),
            )
        };
        let (cache_name, serverless, region, aws) = match &self.tokens {
            Tokens::Given(tokens) => {
                let mut tokens = tokens.lock().unwrap_or_else(|p| p.into_inner());
                let next = if tokens.len() > 1 {
                    tokens.pop_front()
                } else {
                    tokens.front().cloned()
                };
                return next.ok_or_else(|| failed("no token was given".to_owned()));
            }
            Tokens::Signed {
                cache_name,
                serverless,
                region,
                aws,
            } => (cache_name, *serverless, region, aws),
        };
        // Without credentials or a region no retry can help: the configuration must change.
        let misconfigured = |detail: String| PortError::Misconfigured {
            backend: Backend::Redis,
            detail: format!("cannot make the IAM authentication token: {detail}"),
        };
        let config = aws.get().await;
        let provider = config
            .credentials_provider()
            .ok_or_else(|| misconfigured("no AWS credentials are configured".to_owned()))?;
        let credentials = provider.provide_credentials().await.map_err(|e| {
            match crate::aws::configuration_problem(&e) {
                Some(detail) => misconfigured(detail),
                None => failed(ak_core::https::root_cause(&e)),
            }
        })?;
        let region = region
            .clone()
            .or_else(|| config.region().map(ToString::to_string))
            .ok_or_else(|| {
                misconfigured("no AWS region (set AWS_REGION or redis.iam.region)".to_owned())
            })?;
        elasticache_token(
            cache_name,
            &self.user_id,
            &region,
            serverless,
            &credentials,
            SystemTime::now(),
        )
        .map_err(failed)
    }

    /// The credentials of connections, for `redis`'s token-based authentication: the current
    /// token at once, then a new one every [`RENEW_AFTER`].
    pub fn credentials(self: &std::sync::Arc<Self>) -> Credentialer {
        Credentialer(self.clone())
    }
}

/// [`IamAuth`] as `redis`'s streaming credentials provider.
pub struct Credentialer(std::sync::Arc<IamAuth>);

impl redis::auth::StreamingCredentialsProvider for Credentialer {
    fn subscribe(
        &self,
    ) -> std::pin::Pin<
        Box<dyn futures_util::Stream<Item = redis::RedisResult<redis::auth::BasicAuth>> + Send>,
    > {
        let auth = self.0.clone();
        Box::pin(futures_util::stream::unfold(
            (auth, true),
            |(auth, first)| async move {
                if !first {
                    tokio::time::sleep(auth.renew_after).await;
                }
                let item = auth
                    .token()
                    .await
                    .map(|token| redis::auth::BasicAuth::new(auth.user_id.clone(), token))
                    .map_err(|e| {
                        redis::RedisError::from((
                            redis::ErrorKind::AuthenticationFailed,
                            "IAM token",
                            e.to_string(),
                        ))
                    });
                Some((item, (auth, false)))
            },
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credentials(token: Option<&str>) -> Credentials {
        Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            token.map(str::to_owned),
            None,
            "test",
        )
    }

    #[test]
    fn tokens_name_the_cache_the_user_and_the_kind() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_704_164_645);
        let token = elasticache_token(
            "my-cache",
            "iam-user-01",
            "us-east-1",
            false,
            &credentials(None),
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            token.starts_with("my-cache/?Action=connect&User=iam-user-01&"),
            "{token}"
        );
        assert!(token.contains("X-Amz-Expires=900"), "{token}");
        assert!(
            token.contains(
                "X-Amz-Credential=AKIDEXAMPLE%2F20240102%2Fus-east-1%2Felasticache%2Faws4_request"
            ),
            "{token}"
        );
        assert!(!token.contains("ResourceType"));
        let serverless = elasticache_token(
            "my-cache",
            "iam-user-01",
            "us-east-1",
            true,
            &credentials(Some("TOKEN/+=")),
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            serverless.contains("&ResourceType=ServerlessCache"),
            "{serverless}"
        );
        assert!(
            serverless.contains("X-Amz-Security-Token=TOKEN%2F%2B%3D"),
            "{serverless}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_token_is_renewed_before_it_expires() {
        // SAFETY-free: the credentials come from the environment of the AWS SDK's chain.
        let settings = RedisIamSettings {
            user_id: Some("u".into()),
            cache_name: Some("c".into()),
            serverless: true,
            region: Some("us-east-1".into()),
        };
        let aws = AwsConfig::with_credentials(credentials(None));
        let auth = IamAuth::new(&settings, aws).unwrap_or_else(|e| panic!("{e}"));
        let first = auth.token().await.unwrap_or_else(|e| panic!("{e}"));
        tokio::time::advance(Duration::from_secs(9 * 60)).await;
        assert_eq!(auth.token().await.ok().as_deref(), Some(first.as_str()));
        assert_eq!(auth.tokens_made(), 1, "a 9-minute-old token is still used");
        tokio::time::advance(Duration::from_secs(2 * 60)).await;
        auth.token().await.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            auth.tokens_made(),
            2,
            "an 11-minute-old token is made anew, 4 minutes before it expires"
        );
    }
}
