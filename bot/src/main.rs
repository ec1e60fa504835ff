//! `omemo-bot`: an OMEMO echo bot and command-line tool for XMPP.
//!
//! A thin user of the [`omemo_tokio`] driver: the driver moves the stanzas, the
//! [`omemo`] library does every OMEMO step in both versions, and the SQLite store keeps
//! the state (committed before anything is sent, so a killed bot loses nothing it
//! answered). This crate holds the command line and what the echo bot answers.

mod bookmarks;
mod cli;
mod commands;
mod error;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn init_logging(json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Fails only when a subscriber is already installed.
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let log_json = cli.log_json;
    init_logging(log_json);
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("omemo-bot: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(commands::dispatch(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if log_json {
                tracing::error!(%error, "failed");
            } else {
                eprintln!("omemo-bot: {error}");
            }
            ExitCode::from(error.exit_code())
        }
    }
}
