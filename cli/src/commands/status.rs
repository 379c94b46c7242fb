//! `shoplog status`: each component of the local stack with its pid, port and health.

use super::{exit, StackArgs};
use crate::health::{self, Health};
use crate::output::{self, Tone};
use crate::process;

/// Arguments of `shoplog status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog status\n  \
    shoplog status --json | jq '.[] | select(.health != \"ok\")'\n\n\
    Exit status: 0 when every component is healthy, 1 otherwise.")]
pub struct StatusArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Print JSON (one object per component) instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// One row of the status.
#[derive(Debug, serde::Serialize)]
pub struct Row {
    /// Component name.
    pub name: String,
    /// Its pid, when `shoplog up` started it and it is alive.
    pub pid: Option<i32>,
    /// Its port.
    pub port: u16,
    /// What the health check found.
    pub health: Health,
    /// Its log file.
    pub log: String,
    /// A cluster node's role and slots (`shoplog up --cluster`), when it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::NodeRole>,
}

/// Runs `shoplog status`.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let s = args.stack.settings(None, 0);
    let redis_cli = process::which("redis-cli");
    let rows: Vec<Row> = s
        .components()
        .iter()
        .map(|c| Row {
            name: c.name.clone(),
            pid: process::running_pid(&s.run_dir(), &c.name),
            port: c.port,
            health: health::check(c),
            log: s.log_file(&c.name).display().to_string(),
            cluster: match (&c.kind, &redis_cli) {
                (crate::layout::Kind::ClusterNode { .. }, Some(cli)) => {
                    crate::cluster::role(cli, c.port)
                }
                _ => None,
            },
        })
        .collect();
    let all_ok = rows.iter().all(|r| r.health == Health::Ok);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let (word, tone) = match r.health {
                    Health::Ok => ("ok", Tone::Good),
                    Health::Unhealthy => ("unhealthy", Tone::Warn),
                    Health::Down => ("down", Tone::Bad),
                };
                let role = r.cluster.as_ref().map_or_else(String::new, |n| {
                    format!("{} {}", n.role, n.slots.join(","))
                        .trim()
                        .to_string()
                });
                vec![
                    r.name.clone(),
                    r.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
                    r.port.to_string(),
                    output::paint(word, tone),
                    role,
                    r.log.clone(),
                ]
            })
            .collect();
        output::table(
            &["COMPONENT", "PID", "PORT", "HEALTH", "ROLE", "LOG"],
            &table,
        );
    }
    Ok(if all_ok { exit::OK } else { exit::PROBLEM })
}
