//! `ak-local serve` (the binary `scripts/dev.sh` runs) started by a test: the whole system in
//! one process on a free loopback port, with only the environment a test gives it (plus the
//! AWS endpoints of this run), from the repository root so `config.yaml` is read.

use crate::runtime_api::function_binary;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The embedded defaults `scripts/dev.sh` exports: in-memory queues, store and sessions.
pub const DEV_ENV: &[(&str, &str)] = &[
    ("AK_EXECUTION__QUEUES__INPUT__URL", "memory://input"),
    ("AK_EXECUTION__QUEUES__OUTPUT__URL", "memory://output"),
    ("AK_EXECUTION__RESPONSE_STORE__TYPE", "memory"),
    ("AK_SESSION__TYPE", "in_memory"),
];

/// A running `ak-local`; killed when dropped.
pub struct LocalServer {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl LocalServer {
    /// Starts `ak-local serve` with `env` and waits until it listens.
    pub async fn start(env: &[(&str, &str)]) -> anyhow::Result<Self> {
        Self::start_with(&[], env, None).await
    }

    /// [`LocalServer::start`] with more `serve` arguments (`--trace`), its stderr written to
    /// `log` when given.
    pub async fn start_with(
        args: &[&str],
        env: &[(&str, &str)],
        log: Option<&std::path::Path>,
    ) -> anyhow::Result<Self> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let binary = function_binary("ak-local", "debug")?;
        let mut command = Command::new(binary);
        command
            .args(["serve", "--addr", &format!("127.0.0.1:{port}")])
            .args(args)
            .current_dir(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".."))
            .env_clear()
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        for (name, value) in std::env::vars() {
            if name.starts_with("AWS_") || name == "PATH" {
                command.env(name, value);
            }
        }
        command.envs(env.iter().copied());
        if let Some(path) = log {
            command.stderr(std::fs::File::create(path)?);
        }
        let server = Self {
            child: command.spawn()?,
            base: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(server);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("ak-local did not listen on {port}")
    }

    /// The environment of an execution mode: `direct`, or a queue mode over the in-memory
    /// queues and store of [`DEV_ENV`].
    pub fn mode_env(mode: &'static str) -> Vec<(&'static str, &'static str)> {
        let mut env = vec![("AK_EXECUTION__MODE", mode)];
        if mode != "direct" {
            env.extend_from_slice(DEV_ENV);
        }
        env
    }
}
