//! `shoplog recover`: run one full recovery pass now and say what it did (or would do).

use std::sync::Arc;

use super::{exit, ops, StackArgs};
use crate::output;
use logparser::recovery::{Recovery, Settings};

/// Arguments of `shoplog recover`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog recover --dry-run     what a pass would abort and re-drive\n  \
    shoplog recover               do it (safe beside a running log parser: every transition is fenced)\n  \
    SAGA_TIMEOUT_MS=5000 shoplog recover")]
pub struct RecoverArgs {
    /// Say what would be done; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub stack: StackArgs,
}

/// Runs `shoplog recover`.
pub async fn run(args: RecoverArgs) -> anyhow::Result<u8> {
    let (config, dbs) = ops::connect(&args.stack).await?;
    let metrics = Arc::new(common::metrics::Metrics::new("shoplog"));
    let ids = common::ids::IdPool::new(&config.ids_url, 100, metrics.clone());
    ids.prefill().await;
    let locks = common::lock::Redlock::new(&config.lock_urls)?;
    let settings = Settings {
        saga_timeout: config.saga_timeout,
        redrive_after: config.redrive_after,
    };
    let mut recovery = Recovery::new(dbs, locks, ids, settings, metrics);
    let report = recovery.full_pass(args.dry_run).await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(if report.errors.is_empty() {
            exit::OK
        } else {
            exit::PROBLEM
        });
    }
    let (verb, redrive) = if args.dry_run {
        ("would abort", "would re-drive")
    } else {
        ("aborted", "re-drove")
    };
    println!(
        "{} unfinished saga(s) checked in {} ms; {verb} {} stalled; {redrive} {}",
        report.sagas_checked,
        report.duration_ms,
        report.aborted.len(),
        report.redriven.len()
    );
    for s in &report.aborted {
        println!("  {verb} {s}");
    }
    for s in &report.redriven {
        println!("  re-drive {s}");
    }
    // One row per log and group, summed over its partitions (`--json` has each partition).
    /// Lag, pending, stuck consumers and dead letters of one log and group.
    type Sums = (i64, i64, Vec<String>, i64);
    let mut summed: std::collections::BTreeMap<(&str, &str), Sums> =
        std::collections::BTreeMap::new();
    for g in &report.groups {
        let row = summed.entry((&g.log, &g.group)).or_default();
        row.0 += g.lag;
        row.1 += g.pending;
        row.2.extend(
            g.stuck
                .iter()
                .map(|(n, p, _)| format!("{n}:{p}@{}", g.stream)),
        );
        row.3 += g.dead_letters;
    }
    let rows: Vec<Vec<String>> = summed
        .into_iter()
        .map(|((log, group), (lag, pending, stuck, dead))| {
            vec![
                log.to_string(),
                group.to_string(),
                lag.to_string(),
                pending.to_string(),
                stuck.join(" "),
                dead.to_string(),
            ]
        })
        .collect();
    output::table(
        &["LOG", "GROUP", "LAG", "PENDING", "STUCK ON", "DEAD LETTERS"],
        &rows,
    );
    for e in &report.errors {
        eprintln!("error: {e}");
    }
    Ok(if report.errors.is_empty() {
        exit::OK
    } else {
        exit::PROBLEM
    })
}
