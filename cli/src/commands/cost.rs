//! `shoplog cost`: the cost report for load generators other than `shoplog bench` (wrk in
//! `bench/checkout.sh`): `snapshot` before and after the run, then `report` with the checkouts it
//! made. The same computation as `shoplog bench`'s own cost section ([`crate::cost`]).

use std::path::PathBuf;

use super::{exit, StackArgs};
use crate::cost::{self, CostReport, Snapshot};

/// Arguments of `shoplog cost`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog cost snapshot > before.json\n  \
    wrk ... (the load)\n  \
    shoplog cost snapshot > after.json\n  \
    shoplog cost report before.json after.json --checkouts 110769\n  \
    shoplog cost report before.json after.json --checkouts 110769 --json | jq .total_cpu_s_per_1k\n\n\
    CPU: utime + stime of each component's process and its live descendants (/proc).\n\
    Commands: INFO commandstats deltas of every Redis. Round trips: counted from the servers'\n\
    side (HTTP requests the services answered, commands and read events of every Redis).")]
pub struct CostArgs {
    #[command(subcommand)]
    pub action: Action,
}

/// What `shoplog cost` does.
#[derive(Debug, clap::Subcommand)]
pub enum Action {
    /// Print every component's counters now, as JSON (CPU time, Redis commands, HTTP requests).
    Snapshot {
        #[command(flatten)]
        stack: StackArgs,
    },
    /// Print the cost per checkout between two snapshots.
    Report {
        /// The snapshot taken before the run.
        before: PathBuf,
        /// The snapshot taken after it.
        after: PathBuf,
        /// Checkouts the run made (the divisor).
        #[arg(long, short = 'n')]
        checkouts: u64,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        stack: StackArgs,
    },
}

/// Runs `shoplog cost`.
pub async fn run(args: CostArgs) -> anyhow::Result<u8> {
    match args.action {
        Action::Snapshot { stack } => {
            let snap = cost::snapshot(&stack.settings(None, 0)).await;
            if !snap.any_running() {
                anyhow::bail!(
                    "no component of the stack in {} is running (start it with `shoplog up`, or \
                     pass its --data-dir)",
                    stack.data_dir.display()
                );
            }
            println!("{}", serde_json::to_string(&snap)?);
            Ok(exit::OK)
        }
        Action::Report {
            before,
            after,
            checkouts,
            json,
            stack,
        } => {
            if checkouts == 0 {
                anyhow::bail!("--checkouts 0: no checkouts were made, nothing to divide by");
            }
            let read = |p: &PathBuf| -> anyhow::Result<Snapshot> {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", p.display()))?;
                serde_json::from_str(&text)
                    .map_err(|e| anyhow::anyhow!("{} is not a snapshot: {e}", p.display()))
            };
            let (b, a) = (read(&before)?, read(&after)?);
            let order: Vec<String> = stack
                .settings(None, 0)
                .components()
                .into_iter()
                .map(|c| c.name)
                .collect();
            let report = CostReport::between(&b, &a, checkouts, &order, None);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                report.print();
            }
            let restarted = report.components.iter().any(|c| c.restarted);
            Ok(if restarted { exit::PROBLEM } else { exit::OK })
        }
    }
}
