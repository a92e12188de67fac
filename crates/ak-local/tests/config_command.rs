//! `ak-local config`: the effective configuration as JSON, or the validation message and exit 1.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn project_dir(config_yaml: &str) -> Dir {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("ak-local-config-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("config.yaml"), config_yaml).unwrap_or_else(|e| panic!("{e}"));
    Dir(dir)
}

fn run(dir: &Dir, env: &[(&str, &str)]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ak-local"))
        .arg("config")
        .current_dir(&dir.0)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ak-local: {e}"))
}

const YAML: &str = "\
execution:
  mode: rest_sync
  response_store:
    type: redis
    redis:
      url: redis://:cache-password@cache:6379
      ttl: 3600
";

#[test]
fn prints_merged_settings_with_env_over_yaml() {
    let dir = project_dir(YAML);
    let out = run(
        &dir,
        &[
            ("AK_EXECUTION__MODE", "rest_async"),
            (
                "AK_EXECUTION__QUEUES__INPUT__URL",
                "https://sqs.eu-west-1.amazonaws.com/123456789012/in.fifo",
            ),
            ("AK_MODEL__API_KEY", "sk-test-not-for-logs"),
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));
    assert_eq!(
        json["execution"]["mode"], "rest_async",
        "env beats the YAML rest_sync"
    );
    assert_eq!(
        json["execution"]["queues"]["input"]["url"],
        "https://sqs.eu-west-1.amazonaws.com/123456789012/in.fifo"
    );
    assert_eq!(
        json["execution"]["response_store"]["redis"]["ttl"], 3600,
        "YAML kept"
    );
    assert_eq!(
        json["execution"]["response_store"]["retry_count"], 5,
        "default kept"
    );
    assert!(!stdout.contains("sk-test-not-for-logs"), "API key printed");
    assert!(!stdout.contains("cache-password"), "Redis password printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("config.yaml"));
}

#[test]
fn a_bad_value_exits_non_zero_naming_the_key() {
    let dir = project_dir(YAML);
    let out = run(&dir, &[("AK_EXECUTION__RESPONSE_STORE__REDIS__TTL", "-1")]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("execution.response_store.redis.ttl"),
        "{stderr}"
    );
    assert!(
        stderr.contains("AK_EXECUTION__RESPONSE_STORE__REDIS__TTL"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let broken = project_dir("execution:\n  mode: rest_sync\n    bad-indent: x\n");
    let out = run(&broken, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("config.yaml") && stderr.contains("not valid YAML"),
        "{stderr}"
    );
}
