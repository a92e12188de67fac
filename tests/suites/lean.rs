//! Lean cold starts: no function reads the system's trust roots or the AWS shared
//! configuration before its first invocation needs them. Each built function starts under the
//! local Runtime API with `SSL_CERT_FILE`, `SSL_CERT_DIR`, `AWS_CONFIG_FILE` and
//! `AWS_SHARED_CREDENTIALS_FILE` pointing at FIFOs: opening one blocks until someone writes,
//! so a function that reads any of them at cold start never asks for its first event.

use ak_tests::runtime_api::{RuntimeApi, function_binary, spawn_function};
use std::path::Path;
use std::time::Duration;

/// A directory of FIFOs standing in for the trust roots and the AWS configuration files.
struct Traps(std::path::PathBuf);

impl Traps {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(ak_tests::unique_name("ak-traps"));
        std::fs::create_dir_all(dir.join("certs")).unwrap_or_else(|e| panic!("{e}"));
        for fifo in ["cert.pem", "certs/ca.pem", "aws-config", "aws-credentials"] {
            let made = std::process::Command::new("mkfifo")
                .arg(dir.join(fifo))
                .status()
                .unwrap_or_else(|e| panic!("mkfifo: {e}"));
            assert!(made.success(), "mkfifo {fifo}");
        }
        Self(dir)
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        let path = |p: &str| self.0.join(p).display().to_string();
        vec![
            ("SSL_CERT_FILE", path("cert.pem")),
            ("SSL_CERT_DIR", path("certs")),
            ("AWS_CONFIG_FILE", path("aws-config")),
            ("AWS_SHARED_CREDENTIALS_FILE", path("aws-credentials")),
        ]
    }
}

impl Drop for Traps {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Starts `function` with `env` and the traps; whether it asked for its first event.
async fn reaches_first_next(function: &str, env: &[(&str, &str)]) -> bool {
    let traps = Traps::new();
    let config = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config.yaml")
        .display()
        .to_string();
    let trap_env = traps.env();
    let mut all: Vec<(&str, &str)> = vec![("AK_CONFIG_PATH_OVERRIDE", config.as_str())];
    all.extend(trap_env.iter().map(|(k, v)| (*k, v.as_str())));
    all.extend_from_slice(env);
    let binary = function_binary(function, "debug").unwrap_or_else(|e| panic!("{e}"));
    let api = RuntimeApi::start().await.unwrap_or_else(|e| panic!("{e}"));
    let mut child = spawn_function(&binary, &api, &all).unwrap_or_else(|e| panic!("{e}"));
    let reached = api.first_next(Duration::from_secs(10)).await.is_some();
    let _ = child.kill();
    let _ = child.wait();
    reached
}

/// Environment variables of one case.
type Env = &'static [(&'static str, &'static str)];

const QUEUES: Env = &[
    ("AK_EXECUTION__MODE", "rest_async"),
    (
        "AK_EXECUTION__QUEUES__INPUT__URL",
        "https://sqs.us-east-1.amazonaws.com/123456789012/input.fifo",
    ),
    (
        "AK_EXECUTION__QUEUES__OUTPUT__URL",
        "https://sqs.us-east-1.amazonaws.com/123456789012/output.fifo",
    ),
    ("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb"),
    (
        "AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME",
        "responses",
    ),
    ("AK_SESSION__TYPE", "dynamodb"),
    ("AK_SESSION__DYNAMODB__TABLE_NAME", "sessions"),
    ("OPENAI_API_KEY", "sk-test"),
];

#[tokio::test]
async fn no_function_reads_trust_roots_or_aws_configuration_before_its_first_invocation() {
    let direct: Env = &[
        ("AK_EXECUTION__MODE", "direct"),
        ("OPENAI_API_KEY", "sk-test"),
        ("OPENAI_BASE_URL", "https://api.openai.com/v1"),
    ];
    let tls_redis: Env = &[
        ("AK_EXECUTION__MODE", "rest_async"),
        (
            "AK_EXECUTION__QUEUES__INPUT__URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/input.fifo",
        ),
        (
            "AK_EXECUTION__QUEUES__OUTPUT__URL",
            "https://sqs.us-east-1.amazonaws.com/123456789012/output.fifo",
        ),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis"),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
            "rediss://cache.example.com:6379",
        ),
        ("AK_SESSION__TYPE", "redis"),
        ("AK_SESSION__REDIS__URL", "rediss://cache.example.com:6379"),
        ("OPENAI_API_KEY", "sk-test"),
    ];
    let jwks: Env = &[(
        "AK_AUTH__JWT__JWKS_URL",
        "https://auth.example.com/.well-known/jwks.json",
    )];
    let cases: &[(&str, &str, Env)] = &[
        ("request-handler", "direct mode, an HTTPS model", direct),
        ("request-handler", "rest_async on SQS and DynamoDB", QUEUES),
        ("request-handler", "rest_async on TLS Redis", tls_redis),
        ("agent-runner", "SQS and DynamoDB", QUEUES),
        ("agent-runner", "TLS Redis", tls_redis),
        ("response-handler", "DynamoDB", QUEUES),
        ("authorizer", "a JWKS URL", jwks),
    ];
    let mut failed = Vec::new();
    for (function, case, env) in cases {
        if !reaches_first_next(function, env).await {
            failed.push(format!("{function} ({case})"));
        }
    }
    assert!(
        failed.is_empty(),
        "these read the trust roots or the AWS configuration files at cold start (they never asked for their first event): {failed:?}"
    );
}
