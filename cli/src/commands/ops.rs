//! What the operator commands (`audit`, `replay`, `saga`, `sagas`, `tail`, `recover`) share: the
//! configuration to connect with, and a progress line on long scans.

use std::io::{IsTerminal, Write};

use common::config::Config;
use logparser::dbs::Dbs;

use super::StackArgs;

/// The services' configuration: the environment (same variables as the services), and, for
/// variables left unset, the local stack's settings when `shoplog up` ran in this data directory.
pub fn config(stack: &StackArgs) -> anyhow::Result<Config> {
    let mut config = Config::from_env(0)?;
    // The saved settings of this data directory's stack, else the ones the flags describe (so
    // that `--port-offset` reaches a stack started elsewhere).
    {
        let settings = stack.settings(None, 0);
        let started_here = stack.started_here();
        for (var, value) in settings.service_env() {
            if std::env::var_os(&var).is_some() {
                continue;
            }
            match var.as_str() {
                "ORDER_DB_URL" => config.order_db_url = value,
                "STOCK_DB_URL" => config.stock_db_url = value,
                "PAYMENT_DB_URL" => config.payment_db_url = value,
                "LOCK_URLS" => config.lock_urls = value.split(',').map(String::from).collect(),
                "IDS_URL" => config.ids_url = value,
                // `<data dir>/archive` is where `shoplog up` puts a stack's archive; a stack it
                // did not start here (a container's, one the environment describes) keeps the
                // log parser's own default, `archive` in the working directory — as the log
                // parser beside this CLI in a container writes it.
                "ARCHIVE_DIR" if started_here => config.archive_dir = value.into(),
                _ => {}
            }
        }
    }
    Ok(config)
}

/// Connects to the three databases.
pub async fn connect(stack: &StackArgs) -> anyhow::Result<(Config, Dbs)> {
    let config = config(stack)?;
    let dbs = Dbs::connect(&config).await?;
    Ok((config, dbs))
}

/// A one-line progress indicator on stderr, shown only on a terminal.
pub struct Progress {
    on: bool,
}

impl Progress {
    /// A progress line (silent when stderr is not a terminal or `quiet`).
    pub fn new(quiet: bool) -> Progress {
        Progress {
            on: !quiet && std::io::stderr().is_terminal(),
        }
    }

    /// Shows `what`.
    pub fn say(&self, what: &str) {
        if self.on {
            eprint!("\r\x1b[2K{what}…");
            let _ = std::io::stderr().flush();
        }
    }

    /// Clears the line.
    pub fn done(&self) {
        if self.on {
            eprint!("\r\x1b[2K");
        }
    }
}

/// Parses a duration such as `500ms`, `30s`, `5m`, `2h`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration like 30s, 5m, 2h"))?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n * 1000,
        "m" => n * 60_000,
        "h" => n * 3_600_000,
        _ => return Err(format!("`{s}`: unknown unit `{unit}` (use ms, s, m or h)")),
    };
    Ok(std::time::Duration::from_millis(ms))
}

pub use logparser::timeline::clock;
