//! The official clients of the protocols the API serves, run by the tests: Python scripts in
//! `tests/clients/` with the venv `scripts/test.sh` installs (`TEST_PYTHON`), and Node scripts
//! in `tests/clients/js/` with the packages its lockfile pins (`npm ci`, also by
//! `scripts/test.sh`). Each script prints what its client saw as one JSON document.

use serde_json::Value;
use std::path::PathBuf;

fn clients_dir() -> PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

async fn run(
    program: &str,
    script: PathBuf,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let output = tokio::time::timeout(
        std::time::Duration::from_secs(180),
        tokio::process::Command::new(program)
            .arg(&script)
            .args(args)
            .envs(env.iter().copied())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .map_err(|_| anyhow::anyhow!("{} did not finish within 180 s", script.display()))??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(
        output.status.success(),
        "{} {args:?} failed ({}):\n{stderr}\n{stdout}",
        script.display(),
        output.status
    );
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).map_err(|e| {
        anyhow::anyhow!(
            "{} printed no JSON ({e}):\n{stdout}\n{stderr}",
            script.display()
        )
    })
}

/// Runs `tests/clients/<script>` with the test venv's Python; its JSON output.
pub async fn python(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    run(&crate::python(), clients_dir().join(script), args, &[]).await
}

/// Runs `tests/clients/js/<script>` with Node; its JSON output.
pub async fn node(script: &str, args: &[&str]) -> anyhow::Result<Value> {
    node_with_env(script, args, &[]).await
}

/// [`node`] with these environment variables added (a client's token).
pub async fn node_with_env(
    script: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<Value> {
    let dir = clients_dir().join("js");
    anyhow::ensure!(
        dir.join("node_modules").is_dir(),
        "{}/node_modules is missing: scripts/test.sh installs it (npm ci)",
        dir.display()
    );
    run("node", dir.join(script), args, env).await
}
