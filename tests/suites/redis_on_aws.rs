//! Redis as AWS sells it, on real servers `scripts/test.sh` starts: TLS only (`rediss://`, a
//! test CA; a wrong CA must be refused), a cluster-mode node owning every slot without the
//! commands ElastiCache Serverless refuses (`PSUBSCRIBE`, `PUNSUBSCRIBE`, `CONFIG`, `KEYS`), and
//! ElastiCache IAM authentication (tokens equal to botocore's; an ACL user whose password is
//! rotated stands in for ElastiCache's token check). The stores' own suites run on these
//! servers and on a three-node cluster too (`response_store::redis_*`, `session_store::redis_*`).

use ak_adapters::redis::iam::{IamAuth, elasticache_token};
use ak_adapters::redis::{RedisResponseStore, RedisSessionStore};
use ak_core::config::RedisSettings;
use ak_core::ports::{HistoryLimits, ResponseRecord, ResponseStore, SessionStore, now_epoch_secs};
use ak_core::secret::SecretUrl;
use ak_tests::runtime_api::function_binary;
use ak_tests::{
    PrivateRedis, get_streaming, http_json, post_streaming, redis_cluster_settings,
    redis_tls_settings, redis_wrong_ca, unique_name,
};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

fn record() -> ResponseRecord {
    ResponseRecord {
        request_id: unique_name("req"),
        session_id: "s".into(),
        user_id: None,
        status_code: 200,
        body: json!({"result": "over TLS"}),
        created_at: now_epoch_secs(),
        attempt: 1,
    }
}

#[tokio::test]
async fn tls_works_with_the_servers_ca_and_refuses_any_other_clearly() {
    let store = RedisResponseStore::new(&redis_tls_settings(60)).unwrap_or_else(|e| panic!("{e}"));
    let r = record();
    store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(store.get(&r.request_id).await.ok().flatten(), Some(r));

    for (label, ca_file) in [
        ("a wrong CA", Some(redis_wrong_ca())),
        ("the platform's roots alone", None),
    ] {
        let settings = RedisSettings {
            ca_file,
            ..redis_tls_settings(60)
        };
        let store = RedisResponseStore::new(&settings).unwrap_or_else(|e| panic!("{e}"));
        let error = store
            .get("anything")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_else(|| panic!("{label}: the server's certificate was accepted"));
        assert!(
            error.contains("TLS") && error.contains("certificate"),
            "{label}: the error says the certificate was refused: {error}"
        );
        assert!(error.contains("UnknownIssuer"), "{label}: {error}");
    }
}

/// botocore's token for the same user, cache, region, credentials and time (AWS's reference
/// implementation: its request signer presigning the ElastiCache `connect` request).
fn botocore_token(serverless: bool, session_token: Option<&str>) -> String {
    let script = r#"
import datetime, sys
from unittest import mock
from urllib.parse import ParseResult, urlencode, urlunparse
import botocore.auth, botocore.session
from botocore.credentials import Credentials
from botocore.model import ServiceId
from botocore.signers import RequestSigner
serverless, token = sys.argv[1] == "1", (sys.argv[2] or None)
creds = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", token)
signer = RequestSigner(ServiceId("elasticache"), "eu-west-1", "elasticache", "v4", creds,
                       botocore.session.get_session().get_component("event_emitter"))
query = {"Action": "connect", "User": "app-user"}
if serverless:
    query["ResourceType"] = "ServerlessCache"
url = urlunparse(ParseResult(scheme="https", netloc="my-cache", path="/", query=urlencode(query),
                             params="", fragment=""))
now = datetime.datetime(2026, 12, 6, 10, 30, 15)
with mock.patch("botocore.auth.get_current_datetime", return_value=now):
    signed = signer.generate_presigned_url(
        {"method": "GET", "url": url, "body": {}, "headers": {}, "context": {}},
        operation_name="connect", expires_in=900, region_name="eu-west-1")
print(signed.removeprefix("https://"))
"#;
    let output = Command::new(ak_tests::python())
        .arg("-c")
        .arg(script)
        .arg(if serverless { "1" } else { "0" })
        .arg(session_token.unwrap_or_default())
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A token's host and path, and its query as a sorted list (the signer and botocore order the
/// security token differently; the server does not care).
fn parts(token: &str) -> (String, Vec<String>) {
    let (head, query) = token.split_once('?').unwrap_or((token, ""));
    let mut query: Vec<String> = query.split('&').map(str::to_owned).collect();
    query.sort();
    (head.to_owned(), query)
}

#[test]
fn iam_tokens_equal_botocores() {
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_553_015); // 2026-12-06T10:30:15Z
    for (serverless, session_token) in [
        (false, None),
        (true, None),
        (true, Some("FQoGZXIvYXdzEXAMPLE/TOKEN+=")),
    ] {
        let credentials = aws_credential_types::Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            session_token.map(str::to_owned),
            None,
            "test",
        );
        let ours = elasticache_token(
            "my-cache",
            "app-user",
            "eu-west-1",
            serverless,
            &credentials,
            now,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let reference = botocore_token(serverless, session_token);
        assert_eq!(
            parts(&ours),
            parts(&reference),
            "ours {ours}\nbotocore {reference}"
        );
    }
}

async fn redis_cli(url: &str, args: &[&str]) -> String {
    let output = Command::new("redis-cli")
        .arg("-u")
        .arg(url)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("redis-cli: {e}"));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

async fn auth_calls(admin: &str) -> u64 {
    redis_cli(
        admin,
        &[
            "--user",
            "admin",
            "--pass",
            "admin-pw",
            "info",
            "commandstats",
        ],
    )
    .await
    .lines()
    .find(|l| l.starts_with("cmdstat_auth:"))
    .and_then(|l| l.split("calls=").nth(1))
    .and_then(|rest| rest.split(',').next())
    .and_then(|n| n.parse().ok())
    .unwrap_or(0)
}

#[tokio::test]
async fn connections_authenticate_with_each_new_token_as_it_rotates() {
    // A Redis that only lets in the ACL user `app-user` with the current password: what
    // ElastiCache does with an IAM user's token.
    let server = PrivateRedis::start()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let admin = server.url.clone();
    redis_cli(
        &admin,
        &[
            "acl",
            "setuser",
            "admin",
            "on",
            ">admin-pw",
            "~*",
            "&*",
            "+@all",
        ],
    )
    .await;
    redis_cli(
        &admin,
        &[
            "acl", "setuser", "app-user", "on", ">token-1", "~*", "&*", "+@all",
        ],
    )
    .await;
    redis_cli(&admin, &["acl", "setuser", "default", "off"]).await;
    let iam = Arc::new(IamAuth::with_tokens(
        "app-user",
        vec!["token-1".into(), "token-2".into()],
        Duration::from_secs(1),
    ));
    let settings = RedisSettings {
        url: SecretUrl::new(&server.url),
        prefix: Some(format!("{}:", unique_name("iam"))),
        ttl: 60,
        ..RedisSettings::default()
    };
    let store =
        RedisResponseStore::with_iam(&settings, iam.clone()).unwrap_or_else(|e| panic!("{e}"));
    let first = record();
    store
        .put(&first)
        .await
        .unwrap_or_else(|e| panic!("authenticated with token-1: {e}"));
    let before = auth_calls(&admin).await;
    // The password is rotated: both valid for a while, then only the new one.
    redis_cli(
        &admin,
        &[
            "--user", "admin", "--pass", "admin-pw", "acl", "setuser", "app-user", ">token-2",
        ],
    )
    .await;
    for _ in 0..50 {
        if iam.tokens_made() >= 2 && auth_calls(&admin).await > before {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(iam.tokens_made() >= 2, "the token was renewed");
    assert!(
        auth_calls(&admin).await > before,
        "the live connection authenticated again"
    );
    redis_cli(
        &admin,
        &[
            "--user", "admin", "--pass", "admin-pw", "acl", "setuser", "app-user", "<token-1",
        ],
    )
    .await;
    // Every connection of the user cut (ElastiCache's 12-hour limit): new ones use the new token.
    redis_cli(
        &admin,
        &[
            "--user", "admin", "--pass", "admin-pw", "client", "kill", "user", "app-user",
        ],
    )
    .await;
    let second = record();
    store
        .put(&second)
        .await
        .unwrap_or_else(|e| panic!("authenticated with token-2: {e}"));
    assert_eq!(
        store.get(&first.request_id).await.ok().flatten(),
        Some(first)
    );
    assert_eq!(
        store.get(&second.request_id).await.ok().flatten(),
        Some(second)
    );
}

struct Local {
    child: Child,
    base: String,
    log: std::path::PathBuf,
}

impl Drop for Local {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ak-local` in `mode` with its response store and sessions on the Redis of `settings`.
async fn local(mode: &str, settings: &RedisSettings) -> Local {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("{e}"));
    let binary = function_binary("ak-local", "debug").unwrap_or_else(|e| panic!("{e}"));
    let log = std::env::temp_dir()
        .join(unique_name("ak-local-redis"))
        .with_extension("log");
    let file = std::fs::File::create(&log).unwrap_or_else(|e| panic!("{e}"));
    let prefix = settings.prefix().to_owned();
    let mut env = vec![
        ("AK_EXECUTION__MODE", mode.to_owned()),
        (
            "AK_EXECUTION__QUEUES__INPUT__URL",
            format!("memory://{}", unique_name("in")),
        ),
        (
            "AK_EXECUTION__QUEUES__OUTPUT__URL",
            format!("memory://{}", unique_name("out")),
        ),
        ("AK_EXECUTION__RESPONSE_STORE__TYPE", "redis".to_owned()),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__URL",
            settings.url.expose().to_owned(),
        ),
        (
            "AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX",
            prefix.clone(),
        ),
        ("AK_SESSION__TYPE", "redis".to_owned()),
        ("AK_SESSION__REDIS__URL", settings.url.expose().to_owned()),
        ("AK_SESSION__REDIS__PREFIX", format!("{prefix}sessions:")),
        ("AK_LOG__LEVEL", "info".to_owned()),
    ];
    if let Some(ca) = &settings.ca_file {
        env.push(("AK_EXECUTION__RESPONSE_STORE__REDIS__CA_FILE", ca.clone()));
        env.push(("AK_SESSION__REDIS__CA_FILE", ca.clone()));
    }
    let child = Command::new(binary)
        .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
        .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env)
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap_or_else(|e| panic!("{e}")))
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let server = Local {
        child,
        base: format!("http://127.0.0.1:{port}"),
        log,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "ak-local did not listen: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

/// The answer to a request in `mode`: the POST's, or (rest_async) the poll's once stored.
async fn answer(server: &Local, mode: &str, body: &Value) -> Value {
    let (status, reply) = http_json(&server.base, "POST", "/api/v1/chat", Some(body))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    if mode != "rest_async" {
        assert_eq!(status, 200, "{reply}");
        return reply;
    }
    assert_eq!(status, 202, "{reply}");
    let id = reply["request_id"].as_str().unwrap_or_default().to_owned();
    for _ in 0..100 {
        let (status, polled) = http_json(
            &server.base,
            "GET",
            &format!("/api/v1/chat?request_id={id}"),
            None,
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        if status == 200 {
            return polled;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no answer for {id}");
}

/// The SSE events of a streamed body: (id, event name, data).
async fn events(mut stream: ak_tests::Streaming) -> Vec<(Option<u64>, String, Value)> {
    let mut text = String::new();
    while let Some((_, chunk)) = stream.next_chunk().await {
        text.push_str(&chunk);
    }
    ak_http::sse::parse_sse(&text)
}

async fn every_mode_works_on(settings: RedisSettings) {
    for mode in ["direct", "rest_sync", "rest_async"] {
        let server = local(mode, &settings).await;
        // A request, and the same request again: one answer.
        let id = unique_name("req");
        let body = json!({"request_id": id, "body": {"prompt": "what is 12 * 7"}});
        let first = answer(&server, mode, &body).await;
        assert_eq!(
            first["result"], "[offline model] math: 12 * 7 = 84",
            "{mode}: {first}"
        );
        let again = answer(&server, mode, &body).await;
        assert_eq!(
            again, first,
            "{mode}: a repeated request gets the first answer"
        );
        // The session goes on.
        let session = first["session_id"].as_str().unwrap_or_default().to_owned();
        let next = answer(
            &server,
            mode,
            &json!({"prompt": "what is 3 * 4", "session_id": session}),
        )
        .await;
        assert_eq!(next["session_id"], session.as_str(), "{mode}");
        let sessions = RedisSessionStore::new(&RedisSettings {
            prefix: Some(format!("{}sessions:", settings.prefix())),
            ..settings.clone()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let history = sessions
            .load(
                &session,
                HistoryLimits {
                    max_items: 100,
                    max_bytes: 1 << 20,
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_default();
        assert_eq!(
            history.turns.len(),
            2,
            "{mode}: the session holds both turns"
        );
        // A streamed answer, then (queue modes) the same stream resumed from its log.
        let streamed_id = unique_name("stream");
        let posted = post_streaming(
            &format!("{}/api/v1/chat", server.base),
            &json!({"request_id": streamed_id, "body": {"prompt": "who won the battle of Hastings"}}),
            "text/event-stream",
        )
        .await
        .unwrap_or_else(|e| panic!("{e}"));
        let streamed = events(posted).await;
        assert_eq!(
            streamed.last().map(|e| e.1.as_str()),
            Some("done"),
            "{mode}: {streamed:?}"
        );
        if mode != "direct" {
            let resumed = get_streaming(
                &format!(
                    "{}/api/v1/chat/stream?request_id={streamed_id}",
                    server.base
                ),
                &[("last-event-id", "1")],
            )
            .await
            .unwrap_or_else(|e| panic!("{e}"));
            let rest = events(resumed).await;
            let expected: Vec<_> = streamed
                .iter()
                .filter(|e| e.0.is_some_and(|id| id > 1))
                .cloned()
                .collect();
            assert_eq!(
                rest, expected,
                "{mode}: the resumed stream is the rest of the log"
            );
        }
        // Nothing went wrong with Redis on the way.
        let log = std::fs::read_to_string(&server.log).unwrap_or_default();
        let trouble: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("Redis") && (l.contains("WARN") || l.contains("ERROR")))
            .collect();
        assert!(trouble.is_empty(), "{mode}: {trouble:#?}");
    }
}

#[tokio::test]
async fn every_mode_works_over_tls() {
    every_mode_works_on(redis_tls_settings(600)).await;
}

#[tokio::test]
async fn every_mode_works_on_a_cluster_mode_node_without_pattern_subscriptions() {
    every_mode_works_on(redis_cluster_settings(600)).await;
}

#[tokio::test]
async fn a_store_on_the_tls_server_waits_on_notifications() {
    // rest_sync's wait is a notification, over TLS too: the waiter returns with the answer.
    let store: Arc<dyn ResponseStore> = Arc::new(
        RedisResponseStore::new(&redis_tls_settings(60)).unwrap_or_else(|e| panic!("{e}")),
    );
    let r = record();
    let waiter = {
        let (store, id) = (store.clone(), r.request_id.clone());
        tokio::spawn(async move { store.wait_for(&id, Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_millis(400)).await;
    store.put(&r).await.unwrap_or_else(|e| panic!("{e}"));
    let found = waiter.await.unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(found.ok().flatten(), Some(r));
}
