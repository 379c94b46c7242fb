//! `shoplog up`: start whatever part of the local stack is not running, wait until every
//! component is healthy, then supervise it: restart a component that exits (in the foreground
//! until Ctrl-C; with `--detach` through a small detached `shoplog supervise` process).
//!
//! [`Launcher::start`] is the one way a component is started, used by `up` and by the
//! supervisor alike, so that a restarted component gets exactly the command line, environment
//! and log file `up` gave it.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;

use super::{exit, StackArgs};
use crate::health::{self, Health};
use crate::layout::{Component, Kind, StackSettings};
use crate::supervise::{self, PidLock, Stop, Supervisor};
use crate::{nginx, process};

/// Arguments of `shoplog up`.
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog up                      run the stack in the foreground; Ctrl-C stops it\n  \
    shoplog up --detach             start it in the background and return once healthy\n  \
    shoplog up --detach --replicas 2\n  \
    shoplog up --detach --cluster   each database a Redis Cluster of 3 primaries + 3 replicas\n  \
    shoplog up --detach --no-supervise   nothing restarts a component that exits\n  \
    SHOPLOG_DATA_DIR=/tmp/s shoplog up --detach --port-offset 1000 --gateway-port 9000\n\n\
    Run it again while part of the stack is up to start only what is missing.\n\n\
    Supervision: once the stack is healthy, a component whose process exits (it crashed, or was\n\
    killed) is started again the way `up` started it, after 0.5 s, then 1, 2, 4 ... 30 s if it\n\
    keeps exiting (back to 0.5 s once it stayed up 60 s). In the foreground `up` does it itself\n\
    and logs to stderr; `--detach` leaves a small `shoplog supervise` process that does it\n\
    (pid file <data>/run/supervisor.pid, log <data>/logs/supervisor.log); `shoplog down` stops\n\
    it first. `shoplog status` shows the restarts. --no-supervise, or SHOPLOG_SUPERVISE=0 in\n\
    the environment, turns this off: a component that exits then stays down until `up` runs\n\
    again.")]
pub struct UpArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// Return once every component is healthy instead of staying in the foreground.
    #[arg(long, short)]
    pub detach: bool,
    /// Do not restart components that exit: no supervisor in the foreground, none left behind
    /// by `--detach` (also SHOPLOG_SUPERVISE=0). A supervisor already running keeps running.
    #[arg(long)]
    pub no_supervise: bool,
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
    /// Redis AOF fsync policy of every service database: `always` (the default: an fsync before
    /// each answer, so that neither a killed Redis nor a lost machine loses an acknowledged write)
    /// or `everysec` (faster; but a Redis killed while its background fsync runs loses the writes
    /// it answered meanwhile, up to ~2 s on a busy disk — docs/FAULTS.md). Lock nodes: everysec.
    #[arg(long, env = "SHOPLOG_APPENDFSYNC", default_value = "always",
          value_parser = ["everysec", "always"])]
    pub appendfsync: String,
}

/// Runs `shoplog up`.
pub async fn run(args: UpArgs) -> anyhow::Result<u8> {
    let supervised = supervise::enabled(args.no_supervise)?;
    let shards = if args.cluster { args.shards } else { 0 };
    let s = args.stack.settings(Some(args.replicas), shards);
    if args.cluster && s.shards == 0 {
        eprintln!(
            "error: {} holds standalone databases; --cluster needs a new data directory (--data-dir)",
            s.data_dir.display()
        );
        return Ok(exit::CANNOT_RUN);
    }
    let Some(launcher) = Launcher::new(&args.appendfsync)? else {
        return Ok(exit::CANNOT_RUN);
    };
    prepare_dirs(&s)?;
    s.save().context("cannot save the stack settings")?;
    let nginx_conf = Launcher::nginx_conf(&s);
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    // The gateway's wait for a checkout follows the services' CHECKOUT_TIMEOUT_MS.
    let checkout_timeout = common::config::Config::from_env(0)
        .map(|c| c.checkout_timeout)
        .unwrap_or_else(|_| nginx::default_checkout_timeout());
    let rendered = nginx::config(&s, root, checkout_timeout);
    // Reload a running gateway only when its configuration changed (a new replica set, a new
    // version): a reload closes the gateway's idle keep-alive connections, and a client that
    // sent a request on one at that instant gets a transport error (seen as bursts of them in
    // the replica-death scenario, where `up` restarts a killed replica mid-storm).
    let gateway_changed =
        std::fs::read_to_string(&nginx_conf).ok().as_deref() != Some(rendered.as_str());
    std::fs::write(&nginx_conf, rendered).context("cannot write nginx.conf")?;

    let mut clusters_formed = s.shards == 0;
    for c in s.components() {
        if !clusters_formed && !is_redis(&c.kind) {
            // Every database node runs: make each service's nodes one cluster (a no-op when they
            // already are, after a restart), before the services connect to it.
            crate::cluster::form_all(
                &s,
                &launcher.tools.redis_cli,
                Duration::from_secs(args.timeout),
            )?;
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
        match launcher.start(&s, &c)? {
            Start::Running(pid) => {
                if c.kind == Kind::Gateway && gateway_changed {
                    // Reload: the set of replicas changed.
                    process::signal(pid, libc::SIGHUP);
                }
                eprintln!("  {:<12} already running (pid {pid})", c.name);
            }
            Start::Started(pid) => {
                eprintln!("  {:<12} started (pid {pid}, port {})", c.name, c.port)
            }
        }
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
    let run_dir = s.run_dir();
    let already = supervise::running(&run_dir);
    if args.detach {
        match (supervised, already) {
            (_, Some(pid)) => eprintln!("  {:<12} already running (pid {pid})", "supervisor"),
            (true, None) => {
                let pid = supervise::spawn_detached(&s, &args.appendfsync)?;
                eprintln!(
                    "  {:<12} started (pid {pid}, log {})",
                    "supervisor",
                    s.log_file(supervise::NAME).display()
                );
            }
            (false, None) => eprintln!(
                "  {:<12} none (--no-supervise / SHOPLOG_SUPERVISE=0): a component that exits stays down",
                "supervisor"
            ),
        }
    }
    eprintln!(
        "shoplog is up: gateway on http://127.0.0.1:{}  (data in {})",
        s.gateway_port,
        s.data_dir.display()
    );
    if args.detach {
        return Ok(exit::OK);
    }
    let lock = if supervised && already.is_none() {
        PidLock::acquire(&run_dir)?
    } else {
        None
    };
    let Some(lock) = lock else {
        match already {
            Some(pid) => eprintln!(
                "press Ctrl-C to stop (the supervisor with pid {pid} restarts what exits)"
            ),
            None if supervised => {
                eprintln!("press Ctrl-C to stop (another supervisor restarts what exits)")
            }
            None => eprintln!(
                "press Ctrl-C to stop (not supervised: a component that exits stays down)"
            ),
        }
        supervise::stop_signal().await?;
        eprintln!("stopping…");
        super::down::stop_all(&s, false)?;
        return Ok(exit::OK);
    };
    eprintln!("press Ctrl-C to stop; a component that exits is restarted (--no-supervise: not)");
    let mut supervisor = Supervisor::new(s.data_dir.clone(), launcher, false);
    match supervisor.run(&lock).await? {
        Stop::Signal(_) if lock.still_ours() => {
            lock.release();
            eprintln!("stopping…");
            super::down::stop_all(&s, false)?;
        }
        Stop::StackGone => eprintln!("{}; exiting", Stop::StackGone),
        stop => {
            // `shoplog down` took over: it removed our pid file and stops the components itself.
            eprintln!("{stop}: `shoplog down` is stopping the stack; exiting");
        }
    }
    Ok(exit::OK)
}

fn is_redis(k: &Kind) -> bool {
    matches!(k, Kind::Redis | Kind::LockNode | Kind::ClusterNode { .. })
}

/// Paths of the external programs the stack needs.
struct Tools {
    redis: PathBuf,
    redis_cli: PathBuf,
    nginx: PathBuf,
    bin_dir: PathBuf,
}

/// What [`Launcher::start`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The component was already running (its pid file names a live process), with this pid.
    Running(i32),
    /// It was started now, with this pid.
    Started(i32),
}

/// Starts components the way `shoplog up` does. The supervisor restarts through the same
/// launcher, so a restarted component gets the same command line, environment and log file.
pub struct Launcher {
    tools: Tools,
    appendfsync: String,
}

impl Launcher {
    /// Finds redis-server, redis-cli, nginx and the service binaries (next to `shoplog`).
    /// Returns `None`, having printed what is missing and how to get it, when something is.
    /// `appendfsync` is the databases' AOF fsync policy.
    pub fn new(appendfsync: &str) -> anyhow::Result<Option<Launcher>> {
        Ok(find_tools()?.map(|tools| Launcher {
            tools,
            appendfsync: appendfsync.to_string(),
        }))
    }

    /// The gateway's configuration file (written by `up`, read by every nginx it starts).
    pub fn nginx_conf(s: &StackSettings) -> PathBuf {
        s.component_dir("gateway").join("nginx.conf")
    }

    /// Starts component `c` of stack `s` unless it is running: clears what is left of a dead
    /// predecessor (orphaned nginx workers), refuses a port held by a process shoplog did not
    /// start, then spawns it with its pid file and log file. Holds the run directory's start
    /// lock meanwhile, so that `up` and the supervisor never start the same component twice.
    pub fn start(&self, s: &StackSettings, c: &Component) -> anyhow::Result<Start> {
        let run_dir = s.run_dir();
        let _lock = start_lock(&run_dir)?;
        if let Some(pid) = process::running_pid(&run_dir, &c.name) {
            return Ok(Start::Running(pid));
        }
        process::clear_leftovers(&run_dir, &c.name);
        if health::check(c) != Health::Down {
            anyhow::bail!(
                "port {} (for {}) is in use by a process shoplog did not start; stop it, or move \
                 this stack with --port-offset / --gateway-port",
                c.port,
                c.name
            );
        }
        let (program, argv) = command_line(c, s, &self.tools, &self.appendfsync);
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
        Ok(Start::Started(pid))
    }
}

/// Takes the run directory's start lock (`run/start.lock`, flock), waiting for it. Released when
/// the returned file is dropped.
fn start_lock(run_dir: &Path) -> anyhow::Result<File> {
    let path = run_dir.join("start.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
    if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&file), libc::LOCK_EX) } != 0 {
        return Err(std::io::Error::last_os_error())
            .with_context(|| format!("cannot lock {}", path.display()));
    }
    Ok(file)
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

/// The lock nodes' AOF fsync policy, whatever `--appendfsync` says: a lock node holds nothing but
/// locks that expire within seconds, and Redlock stays safe when one of its three nodes forgets
/// its last second of locks (the other two still hold them, so nobody wins a majority); an fsync
/// per lock command would only slow every checkout down. docs/FAULTS.md, "Durability".
pub const LOCK_APPENDFSYNC: &str = "everysec";

fn command_line(
    c: &Component,
    s: &StackSettings,
    t: &Tools,
    appendfsync: &str,
) -> (PathBuf, Vec<String>) {
    match &c.kind {
        Kind::Redis | Kind::LockNode | Kind::ClusterNode { .. } => {
            let (port, dir) = (
                c.port.to_string(),
                s.component_dir(&c.name).display().to_string(),
            );
            let appendfsync = match c.kind {
                Kind::LockNode => LOCK_APPENDFSYNC,
                _ => appendfsync,
            };
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
                Launcher::nginx_conf(s).display().to_string(),
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
