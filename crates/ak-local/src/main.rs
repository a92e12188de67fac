//! `ak-local`: the agent runtime on a developer's machine.
//!
//! - `ak-local serve [--addr 127.0.0.1:9000]`: the HTTP API of API Gateway + the request handler,
//!   and in the queue modes the agent runner and response handler polling their queues.
//! - `ak-local config`: the effective configuration (defaults < config.yaml < `AK_` env) as JSON
//!   with secrets redacted, or the validation message and exit code 1.

mod server;

use ak_core::Settings;
use ak_core::config::find_config_file;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ak-local", version, about = "Run the agent runtime locally")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the HTTP API (and, in queue modes, the runner and response handler).
    Serve {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9000")]
        addr: SocketAddr,
        /// Agent-runner and response-handler workers polling the queues.
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Print each request's trace spans as a tree on stderr (what
        /// OTEL_TRACES_EXPORTER=console does); with OTEL_EXPORTER_OTLP_ENDPOINT set instead,
        /// spans go to that collector.
        #[arg(long)]
        trace: bool,
    },
    /// Print the effective configuration as JSON (secrets redacted); exit 1 if it is invalid.
    Config,
}

fn print_config() -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let cwd = std::env::current_dir()?;
    match find_config_file(&env, &cwd)? {
        Some(path) => eprintln!("config file: {}", path.display()),
        None => eprintln!("config file: none (defaults and AK_ environment variables only)"),
    }
    let settings = Settings::load()?;
    // What `serve` would refuse at start: an MCP header whose variable or file is missing.
    ak_agents::mcp::McpServers::from_settings(&settings.mcp, &|name| std::env::var(name).ok())?;
    println!("{}", serde_json::to_string_pretty(&settings)?);
    Ok(())
}

async fn serve(addr: SocketAddr, workers: usize, trace: bool) -> anyhow::Result<()> {
    let settings = Settings::load()?;
    ak_core::logging::init_local(settings.log.level, trace);
    // Spans for an OTLP collector go out every second (a Lambda function sends its own before
    // each reply).
    tokio::spawn(async {
        loop {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            ak_core::otel::flush(None).await;
        }
    });
    let server = server::LocalServer::start(&settings, addr, workers).await?;
    let base = format!("http://{}", server.addr);
    let paths = ak_http::RoutePaths::from_env()?;
    eprintln!("ak-local listening on {base} (mode {})", server.mode);
    eprintln!("playground: {base}/ (in a browser)");
    if server.provider == "offline" {
        eprintln!(
            "model: the offline model (canned, clearly labelled answers); set OPENAI_API_KEY (and OPENAI_BASE_URL for another server) for real ones"
        );
    } else {
        eprintln!("model: {} ({})", settings.model.name, server.provider);
    }
    eprintln!(
        "try: curl -X POST {base}{} -H 'Content-Type: application/json' -d '{{\"prompt\": \"what is 12 * 7\"}}'",
        paths.chat()
    );
    tokio::signal::ctrl_c().await?;
    eprintln!("ak-local: stopping");
    // The last second's spans, before the process ends.
    ak_core::otel::flush(None).await;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config => print_config(),
        Command::Serve {
            addr,
            workers,
            trace,
        } => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(anyhow::Error::from)
            .and_then(|rt| rt.block_on(serve(addr, workers, trace))),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
