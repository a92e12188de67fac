//! Typed configuration: built-in defaults < YAML file < `AK_` environment variables.
//!
//! The file is `$AK_CONFIG_PATH_OVERRIDE`, else `./config.yaml`, else `$LAMBDA_TASK_ROOT/config.yaml`.
//! Environment variables nest with `__` (`AK_EXECUTION__QUEUES__INPUT__URL`), are case-insensitive,
//! ignore empty values and deep-merge over the file. [`Settings::load`] validates everything at
//! once, so a bad value stops a cold start with one message naming the key, the value, where it
//! came from and what is allowed.

use crate::lenient;
mod sources;

pub use sources::{CONFIG_PATH_VAR, Origin, find_config_file};

use crate::secret::{REDACTED, Secret, SecretUrl, redact_url_password};
use serde::{Deserialize, Serialize};
use sources::{Layers, lookup};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// rest_sync never waits longer than this: API Gateway cuts integrations off at 29 s.
pub const MAX_SYNC_WAIT: Duration = Duration::from_secs(28);

/// A configuration that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists (or was named) but cannot be read.
    #[error("cannot read config file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not YAML, or not a mapping.
    #[error("config file {}{} is not valid YAML: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line, where known.
        line: Option<usize>,
        /// The parser's message.
        message: String,
    },
    /// A value is present but wrong, or a required one is missing.
    #[error("invalid configuration: {key} = {value} (from {origin}): {problem}")]
    Invalid {
        /// Dotted key, e.g. `execution.mode`.
        key: String,
        /// The offending value (redacted for secrets), or `(not set)`.
        value: String,
        /// Where the value came from.
        origin: Origin,
        /// What is wrong and what is allowed.
        problem: String,
    },
}

impl ConfigError {
    fn invalid(
        key: impl Into<String>,
        value: Option<&serde_json::Value>,
        origin: Origin,
        problem: &str,
    ) -> Self {
        let key = key.into();
        let value = match value {
            None => "(not set)".to_owned(),
            Some(_) if is_secret_key(&key) => REDACTED.to_owned(),
            Some(serde_json::Value::String(s)) => format!("{:?}", redact_url_password(s)),
            Some(v) => lenient::describe(v),
        };
        ConfigError::Invalid {
            key,
            value,
            origin,
            problem: problem.to_owned(),
        }
    }

    /// The dotted key at fault, for `Invalid` errors.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Invalid { key, .. } => Some(key),
            _ => None,
        }
    }
}

fn is_secret_key(key: &str) -> bool {
    let last = key.rsplit('.').next().unwrap_or(key);
    matches!(last, "secret" | "api_key" | "password" | "token") || last.ends_with("_secret")
}

macro_rules! keyword_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every accepted keyword.
            pub const ALLOWED: &'static [&'static str] = &[$($text),+];

            /// The configuration keyword.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),+ }
            }
        }

        impl std::str::FromStr for $name {
            type Err = String;
            fn from_str(s: &str) -> Result<Self, String> {
                match s.trim().to_ascii_lowercase().as_str() {
                    $($text => Ok(Self::$variant),)+
                    _ => Err(format!("unknown value {s:?}; allowed: {}", Self::ALLOWED.join(", "))),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                lenient::keyword(d)
            }
        }
    };
}

keyword_enum! {
    /// How the request handler gets an answer.
    ExecutionMode {
        /// Run the agent inside the request handler.
        Direct = "direct",
        /// Enqueue, then wait for the answer in the response store.
        RestSync = "rest_sync",
        /// Enqueue and answer 202; the client polls.
        RestAsync = "rest_async",
    }
}

impl ExecutionMode {
    /// Whether requests travel through the queues.
    pub fn uses_queues(self) -> bool {
        self != ExecutionMode::Direct
    }
}

keyword_enum! {
    /// Response store backend.
    StoreKind {
        /// Redis (ElastiCache).
        Redis = "redis",
        /// DynamoDB.
        DynamoDb = "dynamodb",
        /// In-process map, for local runs.
        Memory = "memory",
    }
}

keyword_enum! {
    /// Session store backend.
    SessionKind {
        /// In-process map, for local runs and tests.
        InMemory = "in_memory",
        /// Redis (ElastiCache).
        Redis = "redis",
        /// DynamoDB.
        DynamoDb = "dynamodb",
    }
}

keyword_enum! {
    /// Where model answers come from.
    ModelProvider {
        /// Any OpenAI-compatible Chat Completions endpoint.
        OpenAi = "openai",
        /// Amazon Bedrock's Converse API, authorised by the function's IAM role.
        Bedrock = "bedrock",
        /// The deterministic offline model, for local runs without a key.
        Offline = "offline",
    }
}

keyword_enum! {
    /// Log verbosity.
    LogLevel {
        /// Everything.
        Trace = "trace",
        /// Diagnostics.
        Debug = "debug",
        /// Normal operation.
        Info = "info",
        /// Problems that were handled.
        Warn = "warn",
        /// Failures.
        Error = "error",
    }
}

/// A queue: an SQS URL, or `memory://NAME` for an in-process queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueUrl {
    /// In-process queue of this name.
    Memory(String),
    /// SQS queue URL.
    Sqs(String),
}

impl QueueUrl {
    /// Parses `memory://NAME` or an `http(s)://` SQS URL.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        const HINT: &str = "expected an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME) or memory://NAME";
        if let Some(name) = s.strip_prefix("memory://") {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
            return if ok {
                Ok(QueueUrl::Memory(name.to_owned()))
            } else {
                Err(format!(
                    "{HINT}; a memory queue name uses letters, digits, - _ ."
                ))
            };
        }
        let rest = s
            .strip_prefix("https://")
            .or_else(|| s.strip_prefix("http://"));
        match rest {
            Some(rest) if rest.contains('/') && !rest.starts_with('/') => {
                Ok(QueueUrl::Sqs(s.to_owned()))
            }
            _ => Err(HINT.to_owned()),
        }
    }

    /// The URL as configured.
    pub fn as_str(&self) -> String {
        match self {
            QueueUrl::Memory(name) => format!("memory://{name}"),
            QueueUrl::Sqs(url) => url.clone(),
        }
    }

    /// FIFO queues end in `.fifo`; their messages carry group and deduplication ids.
    pub fn is_fifo(&self) -> bool {
        match self {
            QueueUrl::Memory(name) | QueueUrl::Sqs(name) => name.ends_with(".fifo"),
        }
    }
}

impl Serialize for QueueUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

impl<'de> Deserialize<'de> for QueueUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = lenient::string(d)?;
        QueueUrl::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Execution mode, queues and response store.
    pub execution: ExecutionSettings,
    /// Conversation session store.
    pub session: SessionSettings,
    /// Agent definitions.
    pub agents: AgentsSettings,
    /// Model provider.
    pub model: ModelSettings,
    /// Authorizer settings.
    pub auth: AuthSettings,
    /// HTTP API limits.
    pub api: ApiSettings,
    /// Logging.
    pub log: LogSettings,
    /// MCP servers whose tools agents may use.
    pub mcp: McpSettings,
}

/// `mcp.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct McpSettings {
    /// MCP servers (streamable HTTP) agents may name in their `mcp_servers`.
    pub servers: Vec<McpServerSettings>,
    /// Whether images in MCP tool results reach the model as images (an image part after the
    /// tool results; Converse image blocks) — `true` — or as a placeholder naming their type
    /// and size, for models that take no images.
    #[serde(deserialize_with = "lenient::boolean")]
    pub attach_images: bool,
}

impl Default for McpSettings {
    fn default() -> Self {
        Self {
            servers: Vec::new(),
            attach_images: true,
        }
    }
}

/// One MCP server: `mcp.servers[]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerSettings {
    /// The name agents use (1–32 of letters, digits, `_`, `-`); it prefixes the tools' names.
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    /// The streamable HTTP endpoint (`https://host/mcp`); printed without its path, query or
    /// credentials, which may carry a key.
    #[serde(
        deserialize_with = "lenient::string",
        serialize_with = "crate::secret::serialize_redacted_url"
    )]
    pub url: String,
    /// Headers sent with every request (`Authorization`, API keys), each a value or where to
    /// read it; always printed redacted.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, HeaderSource>,
    /// Only these of the server's tools are offered (absent: all of them).
    #[serde(default, deserialize_with = "lenient::opt_string_list")]
    pub allowed_tools: Option<Vec<String>>,
    /// Seconds one request to the server may take (listing tools, or one call).
    #[serde(default = "default_mcp_timeout", deserialize_with = "lenient::seconds")]
    pub timeout: f64,
    /// The server's tools (by the server's own names; `"*"`: all) whose calls wait for a
    /// person's approval.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub approval: Vec<String>,
}

fn default_mcp_timeout() -> f64 {
    10.0
}

/// A header value: the value itself, or where to read it when the server is first used:
/// `{env: NAME}` (an environment variable) or `{file: /path}` (a secret file, trimmed).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HeaderSource {
    /// From an environment variable.
    Env {
        /// Its name.
        env: String,
    },
    /// From a file.
    File {
        /// Its path.
        file: PathBuf,
    },
    /// The value itself.
    Value(Secret),
}

impl HeaderSource {
    /// The value, read through `lookup` for environment variables; errors name what is
    /// missing, never a value.
    pub fn resolve(&self, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Secret, String> {
        match self {
            HeaderSource::Value(value) => Ok(value.clone()),
            HeaderSource::Env { env } => lookup(env)
                .filter(|v| !v.trim().is_empty())
                .map(Secret::new)
                .ok_or_else(|| format!("the environment variable {env} is not set")),
            HeaderSource::File { file } => std::fs::read_to_string(file)
                .map(|v| Secret::new(v.trim()))
                .map_err(|e| format!("cannot read {}: {e}", file.display())),
        }
    }
}

/// `execution.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecutionSettings {
    /// `direct`, `rest_sync` or `rest_async`; resolved at load (see [`ExecutionSettings::mode`]).
    mode: Option<ExecutionMode>,
    /// Input and output queues.
    pub queues: QueuesSettings,
    /// Where answers are stored for rest_sync and rest_async.
    pub response_store: ResponseStoreSettings,
}

impl ExecutionSettings {
    /// The mode: as configured, else `rest_sync` when an input queue is set, else `direct`.
    pub fn mode(&self) -> ExecutionMode {
        self.mode.unwrap_or(if self.queues.input.url.is_some() {
            ExecutionMode::RestSync
        } else {
            ExecutionMode::Direct
        })
    }

    /// Sets the mode explicitly.
    pub fn set_mode(&mut self, mode: ExecutionMode) {
        self.mode = Some(mode);
    }
}

/// `execution.queues.*`
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueuesSettings {
    /// Requests to the agent runner.
    pub input: QueueSettings,
    /// Answers to the response handler.
    pub output: QueueSettings,
}

/// One queue.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueSettings {
    /// SQS URL or `memory://NAME`.
    pub url: Option<QueueUrl>,
    /// Receives before a message is answered as a permanent failure.
    #[serde(deserialize_with = "lenient::positive")]
    pub max_receive_count: u32,
    /// The queue's visibility timeout in seconds, when known (Terraform sets it): the agent
    /// runner's claims expire before a message can come back, so a redelivery after a crash
    /// runs.
    #[serde(deserialize_with = "lenient::opt_positive")]
    pub visibility_timeout: Option<u64>,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            url: None,
            max_receive_count: 3,
            visibility_timeout: None,
        }
    }
}

/// `execution.response_store.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResponseStoreSettings {
    /// Backend; required in queue modes.
    #[serde(rename = "type")]
    pub kind: Option<StoreKind>,
    /// With `delay`, bounds how long rest_sync waits.
    #[serde(deserialize_with = "lenient::non_negative")]
    pub retry_count: u32,
    /// Seconds; see `retry_count`.
    #[serde(deserialize_with = "lenient::seconds")]
    pub delay: f64,
    /// Redis backend.
    pub redis: RedisSettings,
    /// DynamoDB backend.
    pub dynamodb: DynamoDbSettings,
    /// Whether the agent runner writes each run's events to the store (queue modes), for
    /// streaming clients and `GET .../stream`. Off, streams carry only the final answer.
    #[serde(deserialize_with = "lenient::boolean")]
    pub event_log: bool,
}

impl Default for ResponseStoreSettings {
    fn default() -> Self {
        Self {
            kind: None,
            retry_count: 5,
            delay: 5.0,
            redis: RedisSettings::default(),
            dynamodb: DynamoDbSettings::default(),
            event_log: true,
        }
    }
}

impl ResponseStoreSettings {
    /// How long rest_sync waits for an answer: `retry_count × delay`, at most 28 s.
    pub fn sync_wait(&self) -> Duration {
        let secs = f64::from(self.retry_count) * self.delay;
        Duration::from_secs_f64(secs.min(MAX_SYNC_WAIT.as_secs_f64()))
    }
}

/// A Redis backend (`*.redis.*`): ElastiCache (Serverless or node-based, Redis OSS or Valkey),
/// MemoryDB, or any Redis 6.2+.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSettings {
    /// `redis://[user:password@]host:port[/db]`, or `rediss://` for TLS (ElastiCache
    /// Serverless and MemoryDB take only TLS).
    pub url: SecretUrl,
    /// Key prefix; defaults to `ak:responses:` or `ak:sessions:`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub prefix: Option<String>,
    /// Seconds before entries expire; 0 keeps them forever.
    #[serde(deserialize_with = "lenient::non_negative")]
    pub ttl: u64,
    /// A PEM file of certificate authorities to trust for `rediss://` besides the platform's
    /// roots (a self-managed Redis with a private CA; ElastiCache's certificates chain to the
    /// platform's roots already).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub ca_file: Option<String>,
    /// How to authenticate: `none` (the URL's user and password, if any) or `iam` (ElastiCache
    /// IAM authentication with the function's own AWS credentials; see `iam`).
    pub auth: RedisAuth,
    /// The ElastiCache user and cache of `auth: iam`.
    pub iam: RedisIamSettings,
    /// Connect with a cluster client that follows the cluster's slots (node-based cluster mode
    /// with several shards, MemoryDB). ElastiCache Serverless and a single node need no
    /// cluster client.
    #[serde(deserialize_with = "lenient::boolean")]
    pub cluster: bool,
}

impl Default for RedisSettings {
    fn default() -> Self {
        Self {
            url: SecretUrl::new("redis://localhost:6379"),
            prefix: None,
            ttl: DEFAULT_TTL,
            ca_file: None,
            auth: RedisAuth::None,
            iam: RedisIamSettings::default(),
            cluster: false,
        }
    }
}

keyword_enum! {
    /// How a Redis connection authenticates (`*.redis.auth`).
    RedisAuth {
        /// With the URL's user and password, if any.
        None = "none",
        /// ElastiCache IAM authentication: a SigV4 token of the function's credentials.
        Iam = "iam",
    }
}

/// ElastiCache IAM authentication (`*.redis.iam`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisIamSettings {
    /// The ElastiCache user's id (with authentication mode IAM; its id and name are the same).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub user_id: Option<String>,
    /// The replication group's or serverless cache's name.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub cache_name: Option<String>,
    /// Whether the cache is ElastiCache Serverless.
    #[serde(deserialize_with = "lenient::boolean")]
    pub serverless: bool,
    /// The cache's region; by default the function's (`AWS_REGION`).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub region: Option<String>,
}

impl RedisSettings {
    /// The key prefix (filled in at load).
    pub fn prefix(&self) -> &str {
        self.prefix.as_deref().unwrap_or_default()
    }
}

/// Seven days.
pub const DEFAULT_TTL: u64 = 604_800;

/// A DynamoDB backend (`*.dynamodb.*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DynamoDbSettings {
    /// Table name; required when this backend is selected.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub table_name: Option<String>,
    /// Seconds until `expiry_time`; 0 writes no expiry.
    #[serde(deserialize_with = "lenient::non_negative")]
    pub ttl: u64,
}

impl Default for DynamoDbSettings {
    fn default() -> Self {
        Self {
            table_name: None,
            ttl: DEFAULT_TTL,
        }
    }
}

/// `session.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionSettings {
    /// Backend.
    #[serde(rename = "type")]
    pub kind: SessionKind,
    /// Redis backend.
    pub redis: RedisSettings,
    /// DynamoDB backend.
    pub dynamodb: DynamoDbSettings,
}

impl Default for SessionSettings {
    fn default() -> Self {
        Self {
            kind: SessionKind::InMemory,
            redis: RedisSettings::default(),
            dynamodb: DynamoDbSettings::default(),
        }
    }
}

/// `agents.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentsSettings {
    /// The agent a request without `agent` goes to; defaults to the first definition.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub default: Option<String>,
    /// Model calls one run may make.
    #[serde(deserialize_with = "lenient::positive")]
    pub max_turns: u32,
    /// Most conversation messages of a session sent to the model (whole turns).
    #[serde(deserialize_with = "lenient::positive")]
    pub history_window: u32,
    /// Most bytes of earlier messages (their JSON) sent to the model (whole turns).
    #[serde(deserialize_with = "lenient::positive")]
    pub history_max_bytes: usize,
    /// The agents.
    pub definitions: Vec<AgentDefinition>,
    /// Seconds a run paused for approval waits for a decision; later, it ends as expired.
    #[serde(deserialize_with = "lenient::seconds")]
    pub approval_timeout: f64,
}

impl Default for AgentsSettings {
    fn default() -> Self {
        Self {
            default: None,
            max_turns: 10,
            history_window: 100,
            history_max_bytes: 200_000,
            definitions: Vec::new(),
            approval_timeout: 86_400.0,
        }
    }
}

impl AgentsSettings {
    /// The name of the agent a request without `agent` goes to.
    pub fn default_agent(&self) -> Option<&str> {
        self.default
            .as_deref()
            .or_else(|| self.definitions.first().map(|d| d.name.as_str()))
    }

    /// Whether an agent of this name is defined.
    pub fn contains(&self, name: &str) -> bool {
        self.definitions.iter().any(|d| d.name == name)
    }

    /// The defined names, for error messages.
    pub fn names(&self) -> Vec<&str> {
        self.definitions.iter().map(|d| d.name.as_str()).collect()
    }
}

/// One agent in `agents.definitions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentDefinition {
    /// Unique name; what requests put in `agent`.
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    /// System instructions.
    #[serde(default, deserialize_with = "lenient::string")]
    pub instructions: String,
    /// What a handing-off agent is told about this one.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub handoff_description: Option<String>,
    /// Agents this one may hand off to.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub handoffs: Vec<String>,
    /// Tools (registered in Rust) this agent may call.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub tools: Vec<String>,
    /// Model name for this agent, overriding `model.name`.
    #[serde(default, deserialize_with = "lenient::opt_string")]
    pub model: Option<String>,
    /// MCP servers (`mcp.servers[].name`) whose tools this agent may call.
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub mcp_servers: Vec<String>,
    /// Tools of this agent whose every call waits for a person's approval (besides those whose
    /// code asks for it).
    #[serde(default, deserialize_with = "lenient::string_list")]
    pub approval: Vec<String>,
}

/// `model.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ModelSettings {
    /// `openai`, `bedrock` or `offline`; when unset, `openai` with a key, else `offline` (local
    /// runs only).
    pub provider: Option<ModelProvider>,
    /// Model name sent to the provider.
    #[serde(deserialize_with = "lenient::string")]
    pub name: String,
    /// Base URL of an OpenAI-compatible API (`OPENAI_BASE_URL` also works); with `bedrock`,
    /// another Bedrock Runtime endpoint (a VPC endpoint's URL).
    #[serde(deserialize_with = "lenient::opt_string")]
    pub base_url: Option<String>,
    /// API key; `OPENAI_API_KEY` also works.
    pub api_key: Option<Secret>,
    /// Seconds one model call may take.
    #[serde(deserialize_with = "lenient::seconds")]
    pub timeout: f64,
    /// Retries on 429, 5xx and connection errors.
    #[serde(deserialize_with = "lenient::non_negative")]
    pub max_retries: u32,
}

impl Default for ModelSettings {
    fn default() -> Self {
        Self {
            provider: None,
            name: "gpt-4o-mini".to_owned(),
            base_url: None,
            api_key: None,
            timeout: 30.0,
            max_retries: 3,
        }
    }
}

/// `auth.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The built-in JWT validator used by the authorizer function.
    pub jwt: Option<JwtSettings>,
    /// The header the authorizer reads the token from in REQUEST events (any case); HTTP API
    /// authorizers may use another identity source than `Authorization`.
    #[serde(deserialize_with = "lenient::string")]
    pub token_header: String,
    /// The claim of a Cognito user pool (REST), JWT (HTTP API) or Lambda authorizer that names
    /// the user in the request handler.
    #[serde(deserialize_with = "lenient::string")]
    pub principal_claim: String,
    /// Behind an ALB that authenticates (OIDC or Cognito) on every listener rule: take its
    /// `x-amzn-oidc-identity` header as the user.
    #[serde(deserialize_with = "lenient::boolean")]
    pub trust_alb_oidc_identity: bool,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            jwt: None,
            token_header: "Authorization".to_owned(),
            principal_claim: "sub".to_owned(),
            trust_alb_oidc_identity: false,
        }
    }
}

/// Algorithms the JWT validator can be allowed to accept. `none` is never one of them.
pub const JWT_ALGORITHMS: &[&str] = &[
    "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
    "ES384", "EdDSA",
];

/// `auth.jwt.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JwtSettings {
    /// Accepted algorithms; all HMAC (HS*) or all public-key, never mixed.
    #[serde(deserialize_with = "lenient::string_list")]
    pub algorithms: Vec<String>,
    /// HMAC secret.
    pub secret: Option<Secret>,
    /// File holding the HMAC secret.
    pub secret_file: Option<PathBuf>,
    /// PEM public key for RS*/PS*/ES*/EdDSA.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub public_key_pem: Option<String>,
    /// JWKS URL, fetched once and cached.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub jwks_url: Option<String>,
    /// Required `iss`.
    #[serde(deserialize_with = "lenient::opt_string")]
    pub issuer: Option<String>,
    /// Accepted `aud` values.
    #[serde(deserialize_with = "lenient::string_list")]
    pub audience: Vec<String>,
    /// Seconds of clock skew tolerated on `exp` and `nbf`.
    #[serde(deserialize_with = "lenient::non_negative")]
    pub leeway: u64,
    /// Claim that names the user.
    #[serde(deserialize_with = "lenient::string")]
    pub subject_claim: String,
    /// Claim → allowed values.
    pub required_claims: BTreeMap<String, ClaimValues>,
}

impl Default for JwtSettings {
    fn default() -> Self {
        Self {
            algorithms: Vec::new(),
            secret: None,
            secret_file: None,
            public_key_pem: None,
            jwks_url: None,
            issuer: None,
            audience: Vec::new(),
            leeway: 30,
            subject_claim: "sub".to_owned(),
            required_claims: BTreeMap::new(),
        }
    }
}

/// Allowed values of one required claim (a list, or comma-separated text).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ClaimValues(#[serde(deserialize_with = "lenient::string_list")] pub Vec<String>);

/// `api.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Largest request body accepted (413 above).
    #[serde(deserialize_with = "lenient::positive")]
    pub max_body_bytes: usize,
    /// Answer function URLs and REST APIs through Lambda response streaming, every request
    /// alike (the function URL's invoke mode is `RESPONSE_STREAM`, the REST integrations'
    /// transfer mode `STREAM`; Terraform sets both together).
    #[serde(deserialize_with = "lenient::boolean")]
    pub response_streaming: bool,
    /// Seconds of silence after which a streamed answer sends an SSE comment.
    #[serde(deserialize_with = "lenient::seconds")]
    pub stream_heartbeat: f64,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            response_streaming: false,
            stream_heartbeat: 5.0,
        }
    }
}

impl ApiSettings {
    /// The heartbeat interval (at least 10 ms).
    pub fn heartbeat(&self) -> Duration {
        Duration::from_secs_f64(self.stream_heartbeat.max(0.01))
    }
}

/// `log.*`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    /// Verbosity.
    pub level: LogLevel,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            level: LogLevel::Info,
        }
    }
}

impl Settings {
    /// Loads from the process environment and the config file it points at.
    pub fn load() -> Result<Settings, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars_os()
            .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
            .collect();
        let cwd = std::env::current_dir().unwrap_or_default();
        let file = find_config_file(&env, &cwd)?;
        Self::load_from(file.as_deref(), &env)
    }

    /// Loads from an explicit file (or none) and environment.
    pub fn load_from(
        file: Option<&Path>,
        env: &[(String, String)],
    ) -> Result<Settings, ConfigError> {
        let layers = Layers::load(file, env)?;
        let mut settings: Settings = serde_path_to_error::deserialize(&layers.tree)
            .map_err(|e| deserialize_error(&layers, e))?;
        settings.resolve(&layers)?;
        Ok(settings)
    }

    /// Fills derived values and checks rules that span keys.
    fn resolve(&mut self, layers: &Layers) -> Result<(), ConfigError> {
        let err = |key: &str, problem: &str| {
            ConfigError::invalid(key, lookup(&layers.tree, key), layers.origin(key), problem)
        };

        let mode = self.execution.mode();
        self.execution.mode = Some(mode);
        if mode.uses_queues() {
            let needs = |what: &str| {
                format!("execution.mode {mode} needs {what}; set it, or use mode direct")
            };
            if self.execution.queues.input.url.is_none() {
                return Err(err(
                    "execution.queues.input.url",
                    &needs("the input queue URL (SQS URL or memory://NAME)"),
                ));
            }
            if self.execution.response_store.kind.is_none() {
                return Err(err(
                    "execution.response_store.type",
                    &format!(
                        "execution.mode {mode} needs a response store; allowed: {}",
                        StoreKind::ALLOWED.join(", ")
                    ),
                ));
            }
        }

        let store = &mut self.execution.response_store;
        store
            .redis
            .prefix
            .get_or_insert_with(|| "ak:responses:".to_owned());
        match store.kind {
            Some(StoreKind::DynamoDb) => {
                check_table_name(&store.dynamodb, "execution.response_store.dynamodb", &err)?
            }
            Some(StoreKind::Redis) => {
                check_redis_url(&store.redis, "execution.response_store.redis.url", &err)?
            }
            _ => {}
        }
        let session = &mut self.session;
        session
            .redis
            .prefix
            .get_or_insert_with(|| "ak:sessions:".to_owned());
        match session.kind {
            SessionKind::DynamoDb => check_table_name(&session.dynamodb, "session.dynamodb", &err)?,
            SessionKind::Redis => check_redis_url(&session.redis, "session.redis.url", &err)?,
            SessionKind::InMemory => {}
        }

        self.check_agents(&err)?;
        self.check_mcp(&err)?;
        if self.model.provider == Some(ModelProvider::Bedrock)
            && !(self.model.name.contains('.') || self.model.name.starts_with("arn:"))
        {
            return Err(err(
                "model.name",
                &format!(
                    "{:?} is not a Bedrock model: with model.provider bedrock, name a model id (anthropic.claude-3-5-haiku-20241022-v1:0), an inference profile id (us.anthropic.claude-3-5-haiku-20241022-v1:0) or an ARN",
                    self.model.name
                ),
            ));
        }
        // Seconds that become durations: bounded, so none overflows and none spins.
        for (key, value, min, max) in [
            ("model.timeout", self.model.timeout, 0.001, 3600.0),
            (
                "agents.approval_timeout",
                self.agents.approval_timeout,
                1.0,
                30.0 * 86_400.0,
            ),
            (
                "api.stream_heartbeat",
                self.api.stream_heartbeat,
                0.1,
                3600.0,
            ),
        ] {
            if !(min..=max).contains(&value) {
                return Err(err(
                    key,
                    &format!("must be between {min} and {max} seconds, got {value}"),
                ));
            }
        }
        for (key, value) in [
            ("auth.token_header", &self.auth.token_header),
            ("auth.principal_claim", &self.auth.principal_claim),
        ] {
            if value.trim().is_empty() {
                return Err(err(key, "must not be empty"));
            }
        }
        if http::HeaderName::from_bytes(self.auth.token_header.trim().as_bytes()).is_err() {
            return Err(err("auth.token_header", "is not an HTTP header name"));
        }
        if let Some(jwt) = &self.auth.jwt {
            check_jwt(jwt, &err)?;
        }
        Ok(())
    }

    fn check_mcp(&self, err: &dyn Fn(&str, &str) -> ConfigError) -> Result<(), ConfigError> {
        let servers = &self.mcp.servers;
        for (i, server) in servers.iter().enumerate() {
            let key = |field: &str| format!("mcp.servers[{i}].{field}");
            let name_ok = (1..=32).contains(&server.name.len())
                && server
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            if !name_ok {
                return Err(err(
                    &key("name"),
                    "use 1–32 letters, digits, _ or - (it prefixes the server's tool names)",
                ));
            }
            if servers[..i].iter().any(|s| s.name == server.name) {
                return Err(err(
                    &key("name"),
                    &format!("{:?} is defined twice", server.name),
                ));
            }
            if !(server.url.starts_with("http://") || server.url.starts_with("https://"))
                || server.url.parse::<http::Uri>().is_err()
            {
                return Err(err(
                    &key("url"),
                    "must be the server's streamable HTTP endpoint, http:// or https:// (e.g. https://mcp.example.com/mcp)",
                ));
            }
            if !(0.1..=900.0).contains(&server.timeout) {
                return Err(err(&key("timeout"), "must be between 0.1 and 900 seconds"));
            }
            for header in server.headers.keys() {
                if http::HeaderName::from_bytes(header.as_bytes()).is_err() {
                    return Err(err(
                        &key("headers"),
                        &format!("{header:?} is not an HTTP header name"),
                    ));
                }
            }
        }
        for (i, def) in self.agents.definitions.iter().enumerate() {
            for name in &def.mcp_servers {
                if !servers.iter().any(|s| &s.name == name) {
                    let known: Vec<&str> = servers.iter().map(|s| s.name.as_str()).collect();
                    return Err(err(
                        &format!("agents.definitions[{i}].mcp_servers"),
                        &format!(
                            "{name:?} is not one of mcp.servers ({})",
                            if known.is_empty() {
                                "none defined".to_owned()
                            } else {
                                known.join(", ")
                            }
                        ),
                    ));
                }
            }
        }
        Ok(())
    }

    fn check_agents(&self, err: &dyn Fn(&str, &str) -> ConfigError) -> Result<(), ConfigError> {
        let agents = &self.agents;
        for (i, def) in agents.definitions.iter().enumerate() {
            let key = format!("agents.definitions[{i}].name");
            if let Err(problem) = crate::request::check_agent_name(&def.name) {
                return Err(err(&key, &problem));
            }
            if agents.definitions[..i].iter().any(|d| d.name == def.name) {
                return Err(err(
                    &key,
                    &format!(
                        "agent {:?} is defined twice; names must be unique",
                        def.name
                    ),
                ));
            }
        }
        for (i, def) in agents.definitions.iter().enumerate() {
            for tool in &def.approval {
                if !def.tools.contains(tool) {
                    return Err(err(
                        &format!("agents.definitions[{i}].approval"),
                        &format!(
                            "agent {:?} has no tool {tool:?} to approve; its tools: {} (an MCP server's tools are approved under mcp.servers[].approval)",
                            def.name,
                            def.tools.join(", ")
                        ),
                    ));
                }
            }
            for target in &def.handoffs {
                if !agents.contains(target) {
                    return Err(err(
                        &format!("agents.definitions[{i}].handoffs"),
                        &format!(
                            "agent {:?} hands off to {target:?}, which is not defined; defined: {}",
                            def.name,
                            agents.names().join(", ")
                        ),
                    ));
                }
                if target == &def.name {
                    return Err(err(
                        &format!("agents.definitions[{i}].handoffs"),
                        &format!("agent {:?} cannot hand off to itself", def.name),
                    ));
                }
            }
        }
        if let Some(default) = &agents.default
            && !agents.definitions.is_empty()
            && !agents.contains(default)
        {
            return Err(err(
                "agents.default",
                &format!(
                    "no agent of that name is defined; defined: {}",
                    agents.names().join(", ")
                ),
            ));
        }
        Ok(())
    }
}

fn check_table_name(
    db: &DynamoDbSettings,
    section: &str,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = format!("{section}.table_name");
    match db.table_name.as_deref() {
        None => Err(err(
            &key,
            "the dynamodb backend needs a table name (3–255 characters: letters, digits, _ - .)",
        )),
        Some(name)
            if (3..=255).contains(&name.len())
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')) =>
        {
            Ok(())
        }
        Some(_) => Err(err(
            &key,
            "a DynamoDB table name is 3–255 characters: letters, digits, _ - .",
        )),
    }
}

fn check_redis_url(
    redis: &RedisSettings,
    key: &str,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let base = key.trim_end_matches(".url");
    let url = redis.url.expose();
    let tls = url.starts_with("rediss://") || url.starts_with("valkeys://");
    if url.contains('#') {
        return Err(err(
            key,
            "a Redis URL takes no #fragment (certificate checks cannot be turned off); give a private CA in ca_file instead",
        ));
    }
    let database = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split_once('/'))
        .map(|(_, path)| path.split('?').next().unwrap_or_default())
        .filter(|db| !db.is_empty() && *db != "0");
    if redis.cluster && database.is_some() {
        return Err(err(
            key,
            "a Redis cluster has only database 0: leave the /db out of the URL",
        ));
    }
    if let Some(file) = &redis.ca_file {
        if !tls {
            return Err(err(
                &format!("{base}.ca_file"),
                "a CA file is for TLS: use a rediss:// URL",
            ));
        }
        let text = std::fs::read_to_string(file).map_err(|e| {
            err(
                &format!("{base}.ca_file"),
                &format!("cannot read {file}: {e}"),
            )
        })?;
        if !text.contains("-----BEGIN CERTIFICATE-----") {
            return Err(err(
                &format!("{base}.ca_file"),
                &format!("{file} holds no PEM certificate (-----BEGIN CERTIFICATE-----)"),
            ));
        }
    }
    if redis.auth == RedisAuth::Iam {
        if !tls {
            return Err(err(
                &format!("{base}.auth"),
                "ElastiCache IAM authentication needs TLS: use a rediss:// URL",
            ));
        }
        for (field, value) in [
            ("user_id", &redis.iam.user_id),
            ("cache_name", &redis.iam.cache_name),
        ] {
            if value.as_deref().is_none_or(|v| v.trim().is_empty()) {
                return Err(err(
                    &format!("{base}.iam.{field}"),
                    "required with auth: iam (the ElastiCache user id and the cache's name)",
                ));
            }
        }
    }
    let ok = [
        "redis://",
        "rediss://",
        "valkey://",
        "valkeys://",
        "redis+unix://",
        "unix://",
    ]
    .iter()
    .any(|scheme| url.starts_with(scheme) && url.len() > scheme.len());
    if ok {
        Ok(())
    } else {
        Err(err(
            key,
            "expected redis://[user:password@]host:port[/db] (or rediss:// for TLS)",
        ))
    }
}

fn check_jwt(
    jwt: &JwtSettings,
    err: &dyn Fn(&str, &str) -> ConfigError,
) -> Result<(), ConfigError> {
    let key = "auth.jwt.algorithms";
    for alg in &jwt.algorithms {
        if alg.eq_ignore_ascii_case("none") {
            return Err(err(key, "unsigned tokens (alg none) are never accepted"));
        }
        if !JWT_ALGORITHMS.contains(&alg.as_str()) {
            return Err(err(
                key,
                &format!(
                    "unknown algorithm {alg:?}; allowed: {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            ));
        }
    }
    let hmac = jwt
        .algorithms
        .iter()
        .filter(|a| a.starts_with("HS"))
        .count();
    if hmac > 0 && hmac < jwt.algorithms.len() {
        return Err(err(
            key,
            "mixing HMAC (HS*) and public-key algorithms invites key confusion; allow one family",
        ));
    }
    let has_secret = jwt.secret.is_some() || jwt.secret_file.is_some();
    let has_public = jwt.public_key_pem.is_some() || jwt.jwks_url.is_some();
    if !has_secret && !has_public {
        return Err(err(
            "auth.jwt",
            "the JWT validator needs a key: auth.jwt.secret, auth.jwt.secret_file, \
             auth.jwt.public_key_pem or auth.jwt.jwks_url",
        ));
    }
    if has_secret && has_public {
        return Err(err(
            "auth.jwt",
            "set either an HMAC secret or a public key / JWKS URL, not both",
        ));
    }
    if has_secret && hmac == 0 && !jwt.algorithms.is_empty() {
        return Err(err(
            key,
            "an HMAC secret works only with HS256, HS384 or HS512",
        ));
    }
    if has_public && hmac > 0 {
        return Err(err(
            key,
            "a public key or JWKS works only with RS*, PS*, ES* or EdDSA algorithms",
        ));
    }
    if jwt.subject_claim.trim().is_empty() {
        return Err(err("auth.jwt.subject_claim", "must name a claim, e.g. sub"));
    }
    Ok(())
}

fn deserialize_error(
    layers: &Layers,
    e: serde_path_to_error::Error<serde_json::Error>,
) -> ConfigError {
    let mut key = e.path().to_string();
    let message = e.inner().to_string();
    // serde reports a missing field at the enclosing mapping; point at the field itself.
    if let Some(rest) = message.strip_prefix("missing field `")
        && let Some(end) = rest.find('`')
    {
        let field = &rest[..end];
        key = if key == "." || key.is_empty() {
            field.to_owned()
        } else {
            format!("{key}.{field}")
        };
    }
    let problem = if message.starts_with("unknown field `") {
        format!("not a configuration key ({message})")
    } else {
        message
    };
    ConfigError::invalid(
        key.clone(),
        lookup(&layers.tree, &key),
        layers.origin(&key),
        &problem,
    )
}

#[cfg(test)]
mod tests;
