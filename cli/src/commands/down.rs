//! `shoplog down`: stop every process `shoplog up` started in this data directory, the supervisor
//! first (and, with `--wipe`, delete the data).

use std::time::Duration;

use anyhow::Context;

use super::{exit, StackArgs};
use crate::layout::StackSettings;
use crate::{process, supervise};

/// Arguments of `shoplog down`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog down            stop the stack; the data stays (AOF) for the next `up`\n  \
    shoplog down --wipe     stop it and delete the data directory")]
pub struct DownArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Also delete the data directory (all orders, items, users and logs).
    #[arg(long)]
    pub wipe: bool,
}

/// Runs `shoplog down`.
pub fn run(args: DownArgs) -> anyhow::Result<u8> {
    let s = args.stack.settings(None, 0);
    stop_all(&s, args.wipe)?;
    Ok(exit::OK)
}

/// Stops the supervisor first (so that it restarts nothing stopped here), then the gateway and
/// services, databases last (so nothing acknowledged is in flight when a database stops); forgets
/// the restart counts; then optionally deletes the data directory.
pub fn stop_all(s: &StackSettings, wipe: bool) -> anyhow::Result<()> {
    let run_dir = s.run_dir();
    let mut stopped = 0;
    if let Some(pid) = supervise::stop(&run_dir, Duration::from_secs(10)) {
        eprintln!("  {:<12} stopped (pid {pid})", supervise::NAME);
        stopped += 1;
    }
    let mut names: Vec<String> = s
        .components()
        .iter()
        .rev()
        .map(|c| c.name.clone())
        .collect();
    // Components started by an earlier `up` with more replicas.
    for extra in process::recorded(&run_dir) {
        if !names.contains(&extra) {
            names.insert(0, extra);
        }
    }
    for name in names {
        if let Some(pid) = process::stop(&run_dir, &name, Duration::from_secs(10)) {
            eprintln!("  {name:<12} stopped (pid {pid})");
            stopped += 1;
        }
    }
    process::clear_restarts(&run_dir);
    if stopped == 0 {
        eprintln!("nothing was running in {}", s.data_dir.display());
    }
    if wipe && s.data_dir.exists() {
        // Only delete what is recognisably a shoplog data directory.
        let marker = run_dir.join("stack.json");
        if !marker.exists() {
            anyhow::bail!(
                "refusing to delete {}: it has no run/stack.json, so it is not a shoplog data directory",
                s.data_dir.display()
            );
        }
        std::fs::remove_dir_all(&s.data_dir)
            .with_context(|| format!("cannot delete {}", s.data_dir.display()))?;
        eprintln!("deleted {}", s.data_dir.display());
    }
    Ok(())
}
