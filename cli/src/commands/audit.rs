//! `shoplog audit`: check every invariant over the three logs and databases.

use super::{exit, ops, StackArgs};
use crate::output::{self, Tone};

/// Arguments of `shoplog audit`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog audit\n  \
    shoplog audit --json | jq '.violations[] | .entity'\n\n\
    Exit status: 0 when every invariant holds, 1 with a list of violations, 2 when it cannot run.")]
pub struct AuditArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `shoplog audit`.
pub async fn run(args: AuditArgs) -> anyhow::Result<u8> {
    let (_, dbs) = ops::connect(&args.stack).await?;
    let progress = ops::Progress::new(args.json);
    let report = logparser::audit::audit(&dbs, |what| progress.say(what)).await?;
    progress.done();
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
