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
    let s = args.stack.settings(Some(args.replicas));
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
    for c in s.components() {
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

/// Paths of the external programs the stack needs.
struct Tools {
    redis: PathBuf,
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
    if missing.is_empty() {
        if let (Some(redis), Some(nginx)) = (redis, nginx) {
            return Ok(Some(Tools {
                redis,
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
            .filter(|c| c.kind == Kind::Redis)
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
        Kind::Redis => {
            let dir = s.component_dir(&c.name);
            let args = [
                "--port",
                &c.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                &dir.display().to_string(),
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
