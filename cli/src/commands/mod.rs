//! One module per `shoplog` subcommand.

pub mod archive;
pub mod audit;
pub mod bench;
pub mod cost;
pub mod down;
pub mod ops;
pub mod recover;
pub mod replay;
pub mod saga;
pub mod status;
pub mod tail;
pub mod up;

use std::path::PathBuf;

use crate::layout::StackSettings;

/// Exit codes that mean something to scripts.
pub mod exit {
    /// Everything went as asked.
    pub const OK: u8 = 0;
    /// The command ran but found a problem (a component down, a check failed).
    pub const PROBLEM: u8 = 1;
    /// The command could not run: bad usage, missing tool, unreadable data directory.
    pub const CANNOT_RUN: u8 = 2;
}

/// Options shared by the stack commands (`up`, `down`, `status`).
#[derive(Debug, Clone, clap::Args)]
pub struct StackArgs {
    /// Directory for all data, logs and pid files.
    #[arg(long, env = "SHOPLOG_DATA_DIR", default_value = ".shoplog")]
    pub data_dir: PathBuf,
    /// Port of the gateway.
    #[arg(long, env = "SHOPLOG_GATEWAY_PORT", default_value_t = common::config::defaults::GATEWAY_PORT)]
    pub gateway_port: u16,
    /// Added to every component's default port (run a second stack beside the first).
    #[arg(long, env = "SHOPLOG_PORT_OFFSET", default_value_t = 0)]
    pub port_offset: u16,
}

impl StackArgs {
    /// The settings of the stack: those saved by the last `up` in this data directory when there
    /// are any (so `status`/`down` need no flags), else these arguments with `replicas` and
    /// `shards` (0: standalone databases). The shards of a data directory never change: its
    /// databases were created standalone or as clusters.
    pub fn settings(&self, replicas: Option<u16>, shards: u16) -> StackSettings {
        let data_dir = absolute(&self.data_dir);
        let saved = StackSettings::load(&data_dir);
        match (saved, replicas) {
            (Some(saved), None) => saved,
            (Some(saved), Some(r)) => StackSettings {
                replicas: r,
                ..saved
            },
            (None, r) => StackSettings {
                data_dir,
                port_offset: self.port_offset,
                gateway_port: self.gateway_port,
                replicas: r.unwrap_or(1),
                shards,
            },
        }
    }
}

impl StackArgs {
    /// Whether `shoplog up` ran a stack in this data directory (it saved its settings there).
    pub fn started_here(&self) -> bool {
        StackSettings::load(&absolute(&self.data_dir)).is_some()
    }
}

fn absolute(p: &std::path::Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}
