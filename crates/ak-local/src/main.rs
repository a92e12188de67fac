//! `ak-local`: the agent runtime on a developer's machine.
//!
//! `ak-local config` prints the effective configuration (defaults < config.yaml < `AK_` env) as
//! JSON with secrets redacted, or the validation message and a non-zero exit.

use ak_core::Settings;
use ak_core::config::find_config_file;
use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ak-local", version, about = "Run the agent runtime locally")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
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
    println!("{}", serde_json::to_string_pretty(&settings)?);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Config => print_config(),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
