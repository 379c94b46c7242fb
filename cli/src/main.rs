//! `shoplog` — run the shoplog stack locally and operate it.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cli::commands::{
    archive, audit, bench, cost, down, exit, recover, replay, saga, status, tail, up,
};
use cli::supervise;

/// Run the shoplog stack locally and operate it.
#[derive(Parser)]
#[command(
    name = "shoplog",
    version,
    about,
    after_help = "Examples:\n  \
    shoplog up --detach     start everything (Redis, services, gateway on :8000), supervised\n  \
    shoplog status          what runs, on which port, healthy or not\n  \
    shoplog down --wipe     stop everything and delete the data"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start the local stack (only what is not running yet) and restart what exits.
    Up(up::UpArgs),
    /// Stop the local stack.
    Down(down::DownArgs),
    /// Show each component's pid, port, health and restarts, and the supervisor.
    Status(status::StatusArgs),
    /// Check every invariant over the logs and databases (exit 1 on any violation).
    Audit(audit::AuditArgs),
    /// Rebuild a service's state from its log; compare it or copy it elsewhere.
    Replay(replay::ReplayArgs),
    /// Show a saga's timeline across the three logs (by saga id or order id).
    Saga(saga::SagaArgs),
    /// List sagas by state and age (find the stuck ones).
    Sagas(saga::SagasArgs),
    /// Follow the logs live, one line per entry.
    Tail(tail::TailArgs),
    /// Run one recovery pass now and say what it did (or would do).
    Recover(recover::RecoverArgs),
    /// The log archive: segments, bytes, lag; `--now` runs an archiving pass.
    Archive(archive::ArchiveArgs),
    /// Load-test checkouts through the gateway: throughput, latency percentiles, then an audit.
    Bench(bench::BenchArgs),
    /// What a checkout costs: snapshots of every component's CPU and Redis commands, and the
    /// report between two of them (for load generators other than `bench`).
    Cost(cost::CostArgs),
    /// Restart the stack's components that exit, until `shoplog down` (started by `up --detach`).
    #[command(hide = true)]
    Supervise(supervise::SuperviseArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Up(a) => up::run(a).await,
        Command::Down(a) => down::run(a),
        Command::Status(a) => status::run(a),
        Command::Audit(a) => audit::run(a).await,
        Command::Replay(a) => replay::run(a).await,
        Command::Saga(a) => saga::run_one(a).await,
        Command::Sagas(a) => saga::run_list(a).await,
        Command::Tail(a) => tail::run(a).await,
        Command::Recover(a) => recover::run(a).await,
        Command::Bench(a) => bench::run(a).await,
        Command::Cost(a) => cost::run(a).await,
        Command::Archive(a) => archive::run(a).await,
        Command::Supervise(a) => supervise::command(a).await,
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit::CANNOT_RUN)
        }
    }
}
