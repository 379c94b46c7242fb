//! `shoplog status`: each component of the local stack with its pid, port, health and restarts,
//! and whether a supervisor runs.

use super::{exit, StackArgs};
use crate::health::{self, Health};
use crate::output::{self, Tone};
use crate::{process, supervise};

/// Arguments of `shoplog status`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog status\n  \
    shoplog status --json | jq '.[] | select(.health != \"ok\")'\n  \
    shoplog status --json | jq '.[] | select(.restarts > 0) | {name, restarts}'\n\n\
    RESTARTS counts the supervisor's restarts of each component since the last `shoplog down`;\n\
    the last line says whether a supervisor runs (`shoplog up` starts one unless told not to).\n\n\
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
    /// How often the supervisor restarted it since the last `shoplog down` (a crash loop shows
    /// here, while `health` may look fine between two crashes).
    pub restarts: u32,
    /// A cluster node's role and slots (`shoplog up --cluster`), when it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<crate::cluster::NodeRole>,
}

/// Runs `shoplog status`.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let s = args.stack.settings(None, 0);
    let redis_cli = process::which("redis-cli");
    let run_dir = s.run_dir();
    let rows: Vec<Row> = s
        .components()
        .iter()
        .map(|c| Row {
            name: c.name.clone(),
            pid: process::running_pid(&run_dir, &c.name),
            port: c.port,
            health: health::check(c),
            log: s.log_file(&c.name).display().to_string(),
            restarts: process::restarts(&run_dir, &c.name),
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
                    if r.restarts > 0 {
                        output::paint(&r.restarts.to_string(), Tone::Warn)
                    } else {
                        "0".to_string()
                    },
                    role,
                    r.log.clone(),
                ]
            })
            .collect();
        output::table(
            &[
                "COMPONENT",
                "PID",
                "PORT",
                "HEALTH",
                "RESTARTS",
                "ROLE",
                "LOG",
            ],
            &table,
        );
        match supervise::running(&run_dir) {
            Some(pid) => println!(
                "supervisor: running (pid {pid}), log {}",
                s.log_file(supervise::NAME).display()
            ),
            None => println!(
                "supervisor: {}",
                output::paint(
                    "not running (a component that exits stays down; `shoplog up` starts one)",
                    Tone::Warn
                )
            ),
        }
    }
    Ok(if all_ok { exit::OK } else { exit::PROBLEM })
}
