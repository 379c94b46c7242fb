//! `shoplog up`: start whatever part of the local stack is not running, then wait until every
//! component is healthy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{exit, StackArgs};
use crate::health::{self, Health};
use crate::layout::{Component, Kind, StackSettings};
use crate::{nginx, process};

/// Arguments of `shoplog up`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog up                      run the stack in the foreground; Ctrl-C stops it\n  \
    shoplog up --detach             start it in the background and return once healthy\n  \
    shoplog up --detach --replicas 2\n  \
    shoplog up --detach --cluster   each database a Redis Cluster of 3 primaries + 3 replicas\n  \
    SHOPLOG_DATA_DIR=/tmp/s shoplog up --detach --port-offset 1000 --gateway-port 9000\n\n\
    Run it again while part of the stack is up to start only what is missing.")]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Return once every component is healthy instead of staying in the foreground.
    #[arg(long, short)]
    pub detach: bool,
    /// Instances of the order, stock and payment services behind the gateway.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=8))]
    pub replicas: u16,
    /// Run each service database as a Redis Cluster (primaries with one replica each, AOF on
    /// every node, failover within a few seconds) instead of one Redis. Chosen when a data
    /// directory is first used; later runs keep what its databases are.
    #[arg(long)]
    pub cluster: bool,
    /// Primaries per cluster with `--cluster`.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u16).range(1..=crate::layout::MAX_SHARDS as i64))]
    pub shards: u16,
    /// How long to wait for the stack to become healthy, in seconds.
    #[arg(long, default_value_t = 60)]
    pub timeout: u64,
    /// Redis AOF fsync policy of every database: `everysec` (the default: a killed Redis process
    /// loses nothing acknowledged; a lost machine up to 1 s) or `always` (fsync per write).
    #[arg(long, env = "SHOPLOG_APPENDFSYNC", default_value = "everysec",
          value_parser = ["everysec", "always"])]
    pub appendfsync: String,
}

/// Runs `shoplog up`.
pub async fn run(args: UpArgs) -> anyhow::Result<u8> {
    let shards = if args.cluster { args.shards } else { 0 };
    let s = args.stack.settings(Some(args.replicas), shards);
    if args.cluster && s.shards == 0 {
        eprintln!(
            "error: {} holds standalone databases; --cluster needs a new data directory (--data-dir)",
            s.data_dir.display()
        );
        return Ok(exit::CANNOT_RUN);
    }
    let Some(tools) = find_tools()? else {
        return Ok(exit::CANNOT_RUN);
    };
    prepare_dirs(&s)?;
    s.save().context("cannot save the stack settings")?;
    let nginx_conf = s.component_dir("gateway").join("nginx.conf");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    std::fs::write(&nginx_conf, nginx::config(&s, root)).context("cannot write nginx.conf")?;

    let run_dir = s.run_dir();
    let mut clusters_formed = s.shards == 0;
    for c in s.components() {
        if !clusters_formed && !is_redis(&c.kind) {
            // Every database node runs: make each service's nodes one cluster (a no-op when they
            // already are, after a restart), before the services connect to it.
            crate::cluster::form_all(&s, &tools.redis_cli, Duration::from_secs(args.timeout))?;
            clusters_formed = true;
        }
        if c.kind == Kind::Gateway {
            // The gateway last, once its upstreams answer, so that its first requests find them.
            let others: Vec<Component> = s
                .components()
                .into_iter()
                .filter(|c| c.kind != Kind::Gateway)
                .collect();
            wait_healthy(&others, Duration::from_secs(args.timeout));
        }
        if let Some(pid) = process::running_pid(&run_dir, &c.name) {
            if c.kind == Kind::Gateway {
                // Reload: the set of replicas may have changed.
                process::signal(pid, libc::SIGHUP);
            }
            eprintln!("  {:<12} already running (pid {pid})", c.name);
            continue;
        }
        process::clear_leftovers(&run_dir, &c.name);
        if health::check(&c) != Health::Down {
            anyhow::bail!(
                "port {} (for {}) is in use by a process shoplog did not start; stop it, or move \
                 this stack with --port-offset / --gateway-port",
                c.port,
                c.name
            );
        }
        let (program, argv) = command_line(&c, &s, &tools, &nginx_conf, &args.appendfsync);
        let env = if matches!(c.kind, Kind::Service { .. }) {
            c.env.clone()
        } else {
            Vec::new()
        };
        let pid = process::spawn(
            &run_dir,
            &c.name,
            &program,
            &argv,
            &env,
            &s.log_file(&c.name),
        )?;
        eprintln!("  {:<12} started (pid {pid}, port {})", c.name, c.port);
    }

    let unhealthy = wait_healthy(&s.components(), Duration::from_secs(args.timeout));
    if !unhealthy.is_empty() {
        for c in &unhealthy {
            eprintln!(
                "error: {} is not healthy after {} s; see {}",
                c.name,
                args.timeout,
                s.log_file(&c.name).display()
            );
        }
        return Ok(exit::PROBLEM);
    }
    eprintln!(
        "shoplog is up: gateway on http://127.0.0.1:{}  (data in {})",
        s.gateway_port,
        s.data_dir.display()
    );
    if args.detach {
        return Ok(exit::OK);
    }
    eprintln!("press Ctrl-C to stop");
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("stopping…");
    super::down::stop_all(&s, false)?;
    Ok(exit::OK)
}

fn is_redis(k: &Kind) -> bool {
    matches!(k, Kind::Redis | Kind::ClusterNode { .. })
}

/// Paths of the external programs the stack needs.
struct Tools {
    redis: PathBuf,
    redis_cli: PathBuf,
    nginx: PathBuf,
    bin_dir: PathBuf,
}

/// Finds redis-server, nginx and the service binaries; prints what is missing and how to get it.
fn find_tools() -> anyhow::Result<Option<Tools>> {
    let mut missing = Vec::new();
    let redis = process::which("redis-server");
    if redis.is_none() {
        missing.push("redis-server not found: install it with `sudo apt-get install -y redis-server` (or run `make up`)".to_string());
    }
    let nginx = process::which("nginx");
    if nginx.is_none() {
        missing.push(
            "nginx not found: install it with `sudo apt-get install -y nginx` (or run `make up`)"
                .to_string(),
        );
    }
    let exe = std::env::current_exe().context("cannot locate the shoplog executable")?;
    let bin_dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for b in ["ids", "order", "stock", "payment", "logparser"] {
        if !bin_dir.join(b).is_file() {
            missing.push(format!(
                "the `{b}` binary is not next to shoplog in {}: build the workspace with `cargo build --release`",
                bin_dir.display()
            ));
        }
    }
    let redis_cli = process::which("redis-cli");
    if redis_cli.is_none() {
        missing.push("redis-cli not found: install it with `sudo apt-get install -y redis-tools` (or run `make up`)".to_string());
    }
    if missing.is_empty() {
        if let (Some(redis), Some(redis_cli), Some(nginx)) = (redis, redis_cli, nginx) {
            return Ok(Some(Tools {
                redis,
                redis_cli,
                nginx,
                bin_dir,
            }));
        }
    }
    for m in missing {
        eprintln!("error: {m}");
    }
    Ok(None)
}

fn prepare_dirs(s: &StackSettings) -> anyhow::Result<()> {
    let mut dirs = vec![
        s.run_dir(),
        s.log_dir(),
        s.component_dir("gateway").join("tmp"),
    ];
    dirs.extend(
        s.components()
            .iter()
            .filter(|c| is_redis(&c.kind))
            .map(|c| s.component_dir(&c.name)),
    );
    for d in dirs {
        std::fs::create_dir_all(&d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    Ok(())
}

fn command_line(
    c: &Component,
    s: &StackSettings,
    t: &Tools,
    nginx_conf: &Path,
    appendfsync: &str,
) -> (PathBuf, Vec<String>) {
    match &c.kind {
        Kind::Redis | Kind::ClusterNode { .. } => {
            let (port, dir) = (
                c.port.to_string(),
                s.component_dir(&c.name).display().to_string(),
            );
            let mut args = vec![
                "--port",
                &port,
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir,
                "--appendonly",
                "yes",
                "--appendfsync",
                appendfsync,
                "--save",
                "",
                "--daemonize",
                "no",
                "--protected-mode",
                "no",
            ];
            if let Kind::ClusterNode { .. } = c.kind {
                // Failover within a few seconds of a primary's death; its own node table file.
                args.extend(crate::cluster::NODE_ARGS);
            }
            (
                t.redis.clone(),
                args.iter().map(|a| a.to_string()).collect(),
            )
        }
        Kind::Service { binary, .. } => (t.bin_dir.join(binary), Vec::new()),
        Kind::Gateway => {
            let prefix = s.component_dir("gateway");
            let args = vec![
                "-p".to_string(),
                format!("{}/", prefix.display()),
                "-c".to_string(),
                nginx_conf.display().to_string(),
                "-e".to_string(),
                s.log_file("gateway").display().to_string(),
            ];
            (t.nginx.clone(), args)
        }
    }
}

/// Waits until every component is healthy; returns those that are not by the deadline.
fn wait_healthy(components: &[Component], timeout: Duration) -> Vec<Component> {
    let started = Instant::now();
    loop {
        let pending: Vec<Component> = components
            .iter()
            .filter(|c| health::check(c) != Health::Ok)
            .cloned()
            .collect();
        if pending.is_empty() || started.elapsed() >= timeout {
            return pending;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
