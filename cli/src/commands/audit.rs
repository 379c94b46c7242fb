//! `shoplog audit`: check every invariant over the three logs and databases.

use super::{exit, ops, StackArgs};
use crate::output::{self, Tone};

/// Arguments of `shoplog audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog audit\n  \
    shoplog audit --json | jq '.violations[] | .entity'\n  \
    shoplog audit --memory-budget 128M --spill-dir /var/tmp\n\n\
    Memory: the audit replays a few partitions at a time; a partition whose replayed state\n\
    outgrows its share of --memory-budget is spooled to --spill-dir and replayed again in\n\
    buckets of its keys, so peak memory stays near the budget plus ~20 MB whatever the size of\n\
    the data (slower: one more read of that partition's history, one pass per bucket).\n\n\
    Exit status: 0 when every invariant holds, 1 with a list of violations, 2 when it cannot run.")]
pub struct AuditArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Replayed state held in memory at once, over the partitions audited together: bytes, or
    /// with a K, M or G suffix (powers of 1024).
    #[arg(long, env = "SHOPLOG_AUDIT_MEMORY", default_value = DEFAULT_BUDGET, value_parser = parse_bytes)]
    pub memory_budget: usize,
    /// Directory for the spooled histories of partitions replayed in buckets (removed after).
    #[arg(long, env = "SHOPLOG_AUDIT_SPILL_DIR")]
    pub spill_dir: Option<std::path::PathBuf>,
}

/// `--memory-budget`'s default, as it is written (`logparser::audit::DEFAULT_MEMORY_BUDGET`, the
/// library's default, is the same; a test checks it).
const DEFAULT_BUDGET: &str = "256M";

/// Parses `4096`, `64K`, `192M`, `2G` (powers of 1024).
fn parse_bytes(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (digits, unit) = match t.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((at, _)) => t.split_at(at),
        None => (t, ""),
    };
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches(['B', 'I'])
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => {
            return Err(format!(
                "`{s}`: a number of bytes, with K, M or G after it if you like"
            ))
        }
    };
    digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            format!("`{s}`: a positive number of bytes, with K, M or G after it if you like")
        })
}

/// Runs `shoplog audit`.
pub async fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let (_, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    let mut opts = logparser::audit::AuditOptions {
        memory_budget: args.memory_budget,
        ..Default::default()
    };
    if let Some(dir) = args.spill_dir {
        opts.spill_dir = dir;
    }
    let report = logparser::audit::audit_with(&dbs, &opts, |what| progress.say(what)).await?;
    progress.done();
    // The console's overview shows the last audit's result.
    if let Err(e) = logparser::audit::record_last(&mut dbs.order.clone(), &report).await {
        eprintln!("warning: could not record this audit's summary for the console: {e}");
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        let sagas: Vec<String> = report
            .sagas
            .iter()
            .map(|(k, v)| format!("{v} {k}"))
            .collect();
        let records: Vec<String> = report
            .records
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        println!(
            "audited in {} ms — records: {} — sagas: {}",
            report.duration_ms,
            records.join(", "),
            if sagas.is_empty() {
                "none".to_string()
            } else {
                sagas.join(", ")
            }
        );
        if report.clean() {
            println!(
                "{}",
                output::paint("clean: every invariant holds", Tone::Good)
            );
        } else {
            let rows: Vec<Vec<String>> = report
                .violations
                .iter()
                .map(|v| {
                    vec![
                        v.invariant.clone(),
                        v.saga.clone().unwrap_or_else(|| "-".into()),
                        v.entity.clone(),
                        v.expected.clone(),
                        v.found.clone(),
                    ]
                })
                .collect();
            output::table(&["INVARIANT", "SAGA", "ENTITY", "EXPECTED", "FOUND"], &rows);
            println!(
                "{}",
                output::paint(
                    &format!(
                        "{} violation(s); see docs/OPERATIONS.md",
                        report.violations.len()
                    ),
                    Tone::Bad
                )
            );
        }
    }
    Ok(if report.clean() {
        exit::OK
    } else {
        exit::PROBLEM
    })
}

#[cfg(test)]
mod tests {
    use super::{parse_bytes, DEFAULT_BUDGET};

    #[test]
    fn budgets_parse_with_binary_suffixes_and_refuse_nonsense() {
        assert_eq!(parse_bytes("4096"), Ok(4096));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("192M"), Ok(192 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("1mb"), Ok(1 << 20));
        for bad in ["", "0", "-5", "12X", "M"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_cli_default_budget_is_the_librarys() {
        assert_eq!(
            parse_bytes(DEFAULT_BUDGET),
            Ok(logparser::audit::DEFAULT_MEMORY_BUDGET)
        );
    }
}
