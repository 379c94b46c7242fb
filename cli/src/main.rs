//! `shoplog` — run the shoplog stack locally and operate it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::commands::{down, exit, status, up};

/// Run the shoplog stack locally and operate it.
#[derive(Parser)]
#[command(
    name = "shoplog",
    version,
    about,
    after_help = "Examples:\n  \
    shoplog up --detach     start everything (Redis, services, gateway on :8000)\n  \
    shoplog status          what runs, on which port, healthy or not\n  \
    shoplog down --wipe     stop everything and delete the data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack (only what is not running yet).
    Up(up::UpArgs),
    /// Stop the local stack.
    Down(down::DownArgs),
    /// Show each component's pid, port and health.
    Status(status::StatusArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => up::run(a).await,
        Command::Down(a) => down::run(a),
        Command::Status(a) => status::run(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::CANNOT_RUN)
        }
    }
}
