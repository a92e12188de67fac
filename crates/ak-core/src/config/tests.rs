use super::*;
use std::path::PathBuf;

struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, text: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("ak-config-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{e}"));
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

fn load(yaml: Option<&str>, vars: &[(&str, &str)]) -> Result<Settings, ConfigError> {
    let file = yaml.map(|y| TempFile::new("config.yaml", y));
    Settings::load_from(file.as_ref().map(|f| f.0.as_path()), &env(vars))
}

fn ok(yaml: Option<&str>, vars: &[(&str, &str)]) -> Settings {
    load(yaml, vars).unwrap_or_else(|e| panic!("{e}"))
}

fn err(yaml: Option<&str>, vars: &[(&str, &str)]) -> String {
    match load(yaml, vars) {
        Ok(s) => panic!("expected an error, got {s:?}"),
        Err(e) => e.to_string(),
    }
}

const QUEUE_YAML: &str = "\
execution:
  mode: rest_async
  queues:
    input:
      url: memory://in
    output:
      url: memory://out
  response_store:
    type: redis
    redis:
      url: redis://cache:6379
      ttl: 3600
";

#[test]
fn defaults_apply_without_file_or_env() {
    let s = ok(None, &[]);
    assert_eq!(s.execution.mode(), ExecutionMode::Direct);
    assert_eq!(s.execution.queues.input.max_receive_count, 3);
    assert_eq!(s.execution.response_store.retry_count, 5);
    assert_eq!(s.execution.response_store.delay, 5.0);
    assert_eq!(
        s.execution.response_store.redis.url.expose(),
        "redis://localhost:6379"
    );
    assert_eq!(s.execution.response_store.redis.prefix(), "ak:responses:");
    assert_eq!(s.execution.response_store.redis.ttl, 604_800);
    assert_eq!(s.execution.response_store.dynamodb.ttl, 604_800);
    assert_eq!(s.session.kind, SessionKind::InMemory);
    assert_eq!(s.session.redis.prefix(), "ak:sessions:");
    assert_eq!(s.api.max_body_bytes, 1_048_576);
    assert_eq!(s.agents.max_turns, 10);
    assert_eq!(s.log.level, LogLevel::Info);
}

#[test]
fn environment_overrides_yaml_and_merges_deeply() {
    let s = ok(
        Some(QUEUE_YAML),
        &[
            ("AK_EXECUTION__MODE", "rest_sync"),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__PREFIX", "myapp:"),
            ("ak_execution__queues__input__max_receive_count", "7"),
            ("AK_EXECUTION__RESPONSE_STORE__REDIS__TTL", ""),
            ("AK_EXECUTION__RESPONSE_STORE__DELAY", "0.25"),
            ("UNRELATED", "x"),
        ],
    );
    assert_eq!(
        s.execution.mode(),
        ExecutionMode::RestSync,
        "env beats yaml"
    );
    assert_eq!(s.execution.response_store.redis.prefix(), "myapp:");
    assert_eq!(
        s.execution.queues.input.max_receive_count, 7,
        "names are case-insensitive"
    );
    assert_eq!(
        s.execution.response_store.redis.ttl, 3600,
        "empty env values are ignored"
    );
    assert_eq!(
        s.execution.response_store.redis.url.expose(),
        "redis://cache:6379",
        "yaml kept"
    );
    assert_eq!(s.execution.response_store.delay, 0.25);
    assert_eq!(
        s.execution.queues.input.url,
        Some(QueueUrl::Memory("in".into()))
    );
}

#[test]
fn yaml_beats_defaults_and_mode_follows_the_input_queue() {
    let s = ok(
        Some(
            "execution:\n  queues:\n    input: {url: 'memory://a'}\n    output: {url: 'memory://b'}\n  response_store: {type: memory}\n",
        ),
        &[],
    );
    assert_eq!(s.execution.mode(), ExecutionMode::RestSync);
    let s = ok(
        None,
        &[
            ("AK_EXECUTION__MODE", "REST_ASYNC"),
            (
                "AK_EXECUTION__QUEUES__INPUT__URL",
                "https://sqs.us-east-1.amazonaws.com/123456789012/in.fifo",
            ),
            (
                "AK_EXECUTION__QUEUES__OUTPUT__URL",
                "http://127.0.0.1:5000/123456789012/out",
            ),
            ("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb"),
            (
                "AK_EXECUTION__RESPONSE_STORE__DYNAMODB__TABLE_NAME",
                "ak-responses",
            ),
        ],
    );
    assert_eq!(s.execution.mode(), ExecutionMode::RestAsync);
    assert!(
        s.execution
            .queues
            .input
            .url
            .as_ref()
            .is_some_and(QueueUrl::is_fifo)
    );
    assert!(
        !s.execution
            .queues
            .output
            .url
            .as_ref()
            .is_some_and(QueueUrl::is_fifo)
    );
}

#[test]
fn unknown_mode_names_key_value_origin_and_choices() {
    let e = err(None, &[("AK_EXECUTION__MODE", "fast")]);
    assert!(e.contains("execution.mode"), "{e}");
    assert!(e.contains("\"fast\""), "{e}");
    assert!(e.contains("AK_EXECUTION__MODE"), "{e}");
    assert!(e.contains("direct, rest_sync, rest_async"), "{e}");

    let e = err(Some("# comment\nexecution:\n  mode: fast\n"), &[]);
    assert!(
        e.contains("execution.mode") && e.contains("config.yaml:3"),
        "{e}"
    );
}

#[test]
fn queue_modes_need_queues_and_a_store() {
    let e = err(None, &[("AK_EXECUTION__MODE", "rest_sync")]);
    assert!(
        e.contains("execution.queues.input.url") && e.contains("(not set)"),
        "{e}"
    );
    let e = err(
        None,
        &[
            ("AK_EXECUTION__MODE", "rest_async"),
            ("AK_EXECUTION__QUEUES__INPUT__URL", "memory://in"),
        ],
    );
    assert!(
        e.contains("execution.response_store.type") && !e.contains("output"),
        "the request handler needs only the input queue: {e}"
    );
    let e = err(
        None,
        &[
            ("AK_EXECUTION__QUEUES__INPUT__URL", "memory://in"),
            ("AK_EXECUTION__QUEUES__OUTPUT__URL", "memory://out"),
        ],
    );
    assert!(
        e.contains("execution.response_store.type") && e.contains("redis, dynamodb, memory"),
        "{e}"
    );
}

#[test]
fn dynamodb_needs_a_table_name() {
    let e = err(None, &[("AK_SESSION__TYPE", "dynamodb")]);
    assert!(e.contains("session.dynamodb.table_name"), "{e}");
    let e = err(
        Some(QUEUE_YAML),
        &[("AK_EXECUTION__RESPONSE_STORE__TYPE", "dynamodb")],
    );
    assert!(
        e.contains("execution.response_store.dynamodb.table_name"),
        "{e}"
    );
    let e = err(
        None,
        &[
            ("AK_SESSION__TYPE", "dynamodb"),
            ("AK_SESSION__DYNAMODB__TABLE_NAME", "x y"),
        ],
    );
    assert!(e.contains("3–255 characters"), "{e}");
}

#[test]
fn negative_and_malformed_numbers_are_rejected() {
    let e = err(None, &[("AK_SESSION__REDIS__TTL", "-5")]);
    assert!(
        e.contains("session.redis.ttl") && e.contains("≥ 0") && e.contains("-5"),
        "{e}"
    );
    let e = err(
        Some("execution:\n  response_store:\n    dynamodb:\n      ttl: -1\n"),
        &[],
    );
    assert!(
        e.contains("execution.response_store.dynamodb.ttl") && e.contains(":4"),
        "{e}"
    );
    let e = err(
        None,
        &[("AK_EXECUTION__QUEUES__INPUT__MAX_RECEIVE_COUNT", "0")],
    );
    assert!(e.contains("max_receive_count") && e.contains("≥ 1"), "{e}");
    let e = err(None, &[("AK_EXECUTION__RESPONSE_STORE__DELAY", "soon")]);
    assert!(
        e.contains("execution.response_store.delay") && e.contains("seconds"),
        "{e}"
    );
    let e = err(None, &[("AK_API__MAX_BODY_BYTES", "1.5")]);
    assert!(e.contains("api.max_body_bytes"), "{e}");
    // Seconds that would overflow a duration, or make a stream spin, are refused by name.
    for (var, key, value) in [
        ("AK_API__STREAM_HEARTBEAT", "api.stream_heartbeat", "0"),
        ("AK_API__STREAM_HEARTBEAT", "api.stream_heartbeat", "1e20"),
        ("AK_MODEL__TIMEOUT", "model.timeout", "1e20"),
        ("AK_MODEL__TIMEOUT", "model.timeout", "0"),
    ] {
        let e = err(None, &[(var, value)]);
        assert!(e.contains(key) && e.contains("between"), "{value}: {e}");
    }
    let e = err(None, &[("AK_MODEL__PROVIDER", "bedrock")]);
    assert!(
        e.contains("model.name") && e.contains("inference profile"),
        "{e}"
    );
    ok(
        None,
        &[
            ("AK_MODEL__PROVIDER", "bedrock"),
            (
                "AK_MODEL__NAME",
                "us.anthropic.claude-3-5-haiku-20241022-v1:0",
            ),
        ],
    );
}

#[test]
fn bad_queue_urls_say_what_is_expected() {
    let e = err(None, &[("AK_EXECUTION__QUEUES__INPUT__URL", "sqs-queue")]);
    assert!(
        e.contains("execution.queues.input.url") && e.contains("memory://NAME"),
        "{e}"
    );
    let e = err(None, &[("AK_EXECUTION__QUEUES__INPUT__URL", "memory://")]);
    assert!(e.contains("execution.queues.input.url"), "{e}");
}

#[test]
fn unknown_keys_are_errors_with_their_line() {
    let e = err(Some("execution:\n  mdoe: rest_sync\n"), &[]);
    assert!(
        e.contains("execution.mdoe") && e.contains("config.yaml:2"),
        "{e}"
    );
    assert!(e.contains("expected one of"), "{e}");
    let e = err(None, &[("AK_SESION__TYPE", "redis")]);
    assert!(e.contains("sesion") && e.contains("AK_SESION__TYPE"), "{e}");
    let e = err(None, &[("AK_EXECUTION____MODE", "direct")]);
    assert!(e.contains("empty segment"), "{e}");
}

#[test]
fn broken_yaml_names_file_and_line() {
    let e = err(Some("execution:\n  mode: [unclosed\n  other: 1\n"), &[]);
    assert!(
        e.contains("config.yaml") && e.contains("not valid YAML"),
        "{e}"
    );
    assert!(matches!(
        load(Some("execution:\n  mode: [unclosed\n"), &[]),
        Err(ConfigError::Syntax { line: Some(_), .. })
    ));
    let e = err(Some("- just\n- a list\n"), &[]);
    assert!(e.contains("must be a mapping"), "{e}");
    assert!(load(Some(""), &[]).is_ok(), "an empty file is fine");
}

#[test]
fn agent_definitions_are_checked() {
    let agents = "\
agents:
  default: triage
  definitions:
    - name: triage
      instructions: route
      handoffs: [math, history]
    - name: math
      handoff_description: Specialist agent for math questions
    - name: history
";
    let s = ok(Some(agents), &[]);
    assert_eq!(s.agents.default_agent(), Some("triage"));
    assert_eq!(s.agents.definitions[0].handoffs, vec!["math", "history"]);

    let e = err(
        Some(&agents.replace("[math, history]", "[math, poetry]")),
        &[],
    );
    assert!(
        e.contains("agents.definitions[0].handoffs") && e.contains("poetry"),
        "{e}"
    );
    let e = err(
        Some(&agents.replace("- name: history", "- name: math")),
        &[],
    );
    assert!(e.contains("defined twice"), "{e}");
    let e = err(Some(agents), &[("AK_AGENTS__DEFAULT", "nobody")]);
    assert!(
        e.contains("agents.default") && e.contains("triage, math, history"),
        "{e}"
    );
    let e = err(
        Some(&agents.replace("- name: history", "- name: his tory")),
        &[],
    );
    assert!(e.contains("agents.definitions[2].name"), "{e}");
    let e = err(
        Some("agents:\n  definitions:\n    - instructions: x\n"),
        &[],
    );
    assert!(
        e.contains("agents.definitions[0].name") && e.contains("missing"),
        "{e}"
    );
}

#[test]
fn jwt_settings_are_checked() {
    let e = err(None, &[("AK_AUTH__JWT__ISSUER", "https://issuer")]);
    assert!(e.contains("auth.jwt") && e.contains("needs a key"), "{e}");
    let e = err(
        None,
        &[
            ("AK_AUTH__JWT__SECRET", "s3cret-value"),
            ("AK_AUTH__JWT__ALGORITHMS", "none"),
        ],
    );
    assert!(e.contains("never accepted"), "{e}");
    assert!(!e.contains("s3cret-value"));
    let e = err(
        None,
        &[
            ("AK_AUTH__JWT__SECRET", "s"),
            ("AK_AUTH__JWT__ALGORITHMS", "HS256,RS256"),
        ],
    );
    assert!(e.contains("key confusion"), "{e}");
    let e = err(
        None,
        &[
            ("AK_AUTH__JWT__JWKS_URL", "https://x/jwks"),
            ("AK_AUTH__JWT__ALGORITHMS", "HS256"),
        ],
    );
    assert!(e.contains("public key or JWKS"), "{e}");
    let s = ok(
        None,
        &[
            ("AK_AUTH__JWT__SECRET", "s3cret-value"),
            ("AK_AUTH__JWT__ALGORITHMS", "HS256, HS512"),
            ("AK_AUTH__JWT__REQUIRED_CLAIMS__EMAIL", "a@x.com,b@y.com"),
        ],
    );
    let jwt = s.auth.jwt.as_ref().unwrap_or_else(|| panic!("jwt set"));
    assert_eq!(jwt.algorithms, vec!["HS256", "HS512"]);
    assert_eq!(
        jwt.required_claims.get("email"),
        Some(&ClaimValues(vec!["a@x.com".into(), "b@y.com".into()]))
    );
}

#[test]
fn secrets_never_show_in_debug_json_or_errors() {
    let s = ok(
        Some("model:\n  api_key: 123456789\n"),
        &[
            ("AK_AUTH__JWT__SECRET", "jwt-secret-value"),
            (
                "AK_SESSION__REDIS__URL",
                "redis://admin:redis-password@cache:6379",
            ),
        ],
    );
    assert_eq!(
        s.model.api_key.as_ref().map(Secret::expose),
        Some("123456789")
    );
    let debug = format!("{s:?}");
    let json = serde_json::to_string(&s).unwrap_or_default();
    for text in [&debug, &json] {
        for secret in ["123456789", "jwt-secret-value", "redis-password"] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
    }
    assert!(json.contains("redis://admin:[redacted]@cache:6379"));

    let e = err(
        None,
        &[
            ("AK_SESSION__TYPE", "redis"),
            ("AK_SESSION__REDIS__URL", "http://u:pw-123@x"),
        ],
    );
    assert!(
        e.contains("session.redis.url") && !e.contains("pw-123"),
        "{e}"
    );
}

#[test]
fn sync_wait_is_bounded_by_28_seconds() {
    let s = ok(None, &[]);
    assert_eq!(
        s.execution.response_store.sync_wait(),
        Duration::from_secs(25)
    );
    let s = ok(None, &[("AK_EXECUTION__RESPONSE_STORE__RETRY_COUNT", "10")]);
    assert_eq!(s.execution.response_store.sync_wait(), MAX_SYNC_WAIT);
}

#[test]
fn config_file_discovery_order() {
    let cwd_file = TempFile::new("config.yaml", "log:\n  level: debug\n");
    let cwd = cwd_file
        .0
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let task_file = TempFile::new("config.yaml", "log:\n  level: warn\n");
    let task_root = task_file
        .0
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let other = TempFile::new("custom.yaml", "log:\n  level: error\n");

    let found = find_config_file(&env(&[("LAMBDA_TASK_ROOT", &task_root)]), &cwd);
    assert_eq!(
        found.ok().flatten(),
        Some(cwd_file.0.clone()),
        "./config.yaml first"
    );
    let nowhere = std::env::temp_dir().join("ak-no-such-dir");
    let found = find_config_file(&env(&[("LAMBDA_TASK_ROOT", &task_root)]), &nowhere);
    assert_eq!(
        found.ok().flatten(),
        Some(task_file.0.clone()),
        "then the task root"
    );
    let over = other.0.display().to_string();
    let found = find_config_file(
        &env(&[("LAMBDA_TASK_ROOT", &task_root), (CONFIG_PATH_VAR, &over)]),
        &cwd,
    );
    assert_eq!(
        found.ok().flatten(),
        Some(other.0.clone()),
        "the override wins"
    );
    assert_eq!(
        find_config_file(&env(&[]), &nowhere).ok().flatten(),
        None,
        "no file is fine"
    );
    let missing = find_config_file(&env(&[(CONFIG_PATH_VAR, "/no/such/config.yaml")]), &cwd);
    assert!(
        missing
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default()
            .contains("/no/such/config.yaml")
    );
}
