//! Supervision of the local stack: a component whose process exits without being stopped is
//! started again, the way `shoplog up` started it, so that a crash does not wait for a person.
//!
//! One loop ([`Supervisor::run`]) serves both modes: the foreground `shoplog up` runs it itself
//! until Ctrl-C; `shoplog up --detach` leaves a small process behind, the hidden `shoplog
//! supervise`, in its own process group, that runs it until `shoplog down`.
//!
//! - **What is restarted.** Every ~500 ms the loop reads `run/stack.json` (so a later `up
//!   --replicas N` is followed) and looks at each component's pid file. A pid file naming a dead
//!   process means the component exited unexpectedly; stopping a component on purpose removes its
//!   pid file, so that is never restarted. The restart goes through
//!   [`Launcher::start`](crate::commands::up::Launcher::start), the function `up` uses.
//! - **Backoff.** A component that keeps exiting waits 0.5 s before its first restart, then 1, 2,
//!   4 … up to 30 s ([`backoff`]); once it stayed up for 60 s the next crash starts again at 0.5 s.
//! - **Records.** Each restart is logged with the component, how it ended (known for the
//!   supervisor's own children, else "unknown") and the attempt number: on stderr in the
//!   foreground, in `<data>/logs/supervisor.log` when detached. The count per component is
//!   `run/<name>.restarts` (shown by `shoplog status`, cleared by `shoplog down`).
//! - **One supervisor per data directory.** It holds an open-file-description lock on
//!   `run/supervisor.pid`, which holds its pid: whoever holds the lock is the supervisor
//!   ([`running`]), with no stale-pid guessing. `shoplog down` removes that file and sends SIGTERM
//!   ([`stop`]) before it stops any component, so that nothing it stops is restarted; a
//!   supervisor whose pid file is gone, or whose stack has no pid file left, exits by itself.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

use crate::commands::up::{Launcher, Start};
use crate::commands::{exit, StackArgs};
use crate::layout::StackSettings;
use crate::process;

/// The supervisor's name: its pid file is `run/supervisor.pid`, its log `logs/supervisor.log`.
pub const NAME: &str = process::SUPERVISOR;

/// How often the supervisor looks at the pid files: a crash is noticed within this.
pub const TICK: Duration = Duration::from_millis(500);

/// The wait before the first restart of a component that exited.
pub const FIRST_DELAY: Duration = Duration::from_millis(500);

/// The longest wait between restarts of a component that keeps exiting.
pub const MAX_DELAY: Duration = Duration::from_secs(30);

/// A component that stayed up this long counts as healthy again: its next crash is attempt 1.
pub const RESET_AFTER: Duration = Duration::from_secs(60);

/// The wait before restart attempt `attempt` (1, 2, …): 0.5 s doubling each time, at most 30 s,
/// so that a component that cannot start does not spin, and one that crashed once is back fast.
pub fn backoff(attempt: u32) -> Duration {
    let doublings = attempt.saturating_sub(1).min(16);
    FIRST_DELAY.saturating_mul(1 << doublings).min(MAX_DELAY)
}

/// Whether `up` should supervise: not with `--no-supervise`, nor with `SHOPLOG_SUPERVISE` set to
/// 0/false/no/off. A value that means neither stops `up` (as the services do with their
/// variables), rather than guessing.
pub fn enabled(no_supervise: bool) -> anyhow::Result<bool> {
    if no_supervise {
        return Ok(false);
    }
    match std::env::var("SHOPLOG_SUPERVISE") {
        Ok(v) => switch(&v).ok_or_else(|| {
            anyhow::anyhow!(
                "SHOPLOG_SUPERVISE=`{v}` is not 0 or 1; unset it, or give 0 to run without a supervisor"
            )
        }),
        Err(_) => Ok(true),
    }
}

/// Reads an on/off value; empty counts as unset (on).
fn switch(v: &str) -> Option<bool> {
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

fn pid_path(run_dir: &Path) -> PathBuf {
    process::pid_file(run_dir, NAME)
}

/// A whole-file record lock request of type `kind` for `fcntl`.
fn whole_file(kind: i32) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all zeroes is a valid value, completed below.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl
}

/// The supervisor's claim on a data directory: `run/supervisor.pid`, holding its pid, locked
/// (an open-file-description lock, released when the process exits however it exits).
#[derive(Debug)]
pub struct PidLock {
    file: File,
    path: PathBuf,
}

impl PidLock {
    /// Becomes the supervisor of the stack whose run directory is `run_dir`: `None` when another
    /// process already is.
    pub fn acquire(run_dir: &Path) -> anyhow::Result<Option<PidLock>> {
        let path = pid_path(run_dir);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut fl = whole_file(libc::F_WRLCK);
        // SAFETY: fcntl on a descriptor we own, with a valid `flock` struct.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) } == -1 {
            let e = std::io::Error::last_os_error();
            if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                return Ok(None);
            }
            return Err(e).with_context(|| format!("cannot lock {}", path.display()));
        }
        file.set_len(0)
            .and_then(|()| file.write_all(std::process::id().to_string().as_bytes()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Some(PidLock { file, path }))
    }

    /// Whether `run/supervisor.pid` is still the file this lock holds: `shoplog down` removes it
    /// to say that the stack is being stopped on purpose, and `down --wipe` removes everything.
    pub fn still_ours(&self) -> bool {
        match (fs::metadata(&self.path), self.file.metadata()) {
            (Ok(now), Ok(held)) => now.dev() == held.dev() && now.ino() == held.ino(),
            _ => false,
        }
    }

    /// Gives the claim up: removes the pid file (if it is still ours) and unlocks it.
    pub fn release(self) {
        if self.still_ours() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// The pid of the supervisor of the stack whose run directory is `run_dir`, if one runs: the
/// process that holds the lock on `run/supervisor.pid` (a pid file alone could be stale).
pub fn running(run_dir: &Path) -> Option<i32> {
    let path = pid_path(run_dir);
    let file = File::open(&path).ok()?;
    let mut fl = whole_file(libc::F_RDLCK);
    // SAFETY: fcntl on a descriptor we own, with a valid `flock` struct; F_OFD_GETLK only asks.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } == -1
        || fl.l_type == libc::F_UNLCK as libc::c_short
    {
        return None;
    }
    // Locked: the holder writes its pid right after taking the lock.
    for _ in 0..100 {
        let pid = fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .filter(|p| *p > 0);
        if pid.is_some() {
            return pid;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// Starts the detached supervisor for stack `s` (`shoplog supervise`, in its own process group,
/// output appended to `logs/supervisor.log`, this process's environment, which its restarts pass
/// on to the services as `up` does), and returns its pid once it holds its lock.
pub fn spawn_detached(s: &StackSettings, appendfsync: &str) -> anyhow::Result<i32> {
    let exe = std::env::current_exe().context("cannot locate the shoplog executable")?;
    let log = s.log_file(NAME);
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out.try_clone()?;
    let mut child = Command::new(&exe)
        .arg("supervise")
        .arg("--data-dir")
        .arg(&s.data_dir)
        .arg("--appendfsync")
        .arg(appendfsync)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start the supervisor ({})", exe.display()))?;
    let started = Instant::now();
    loop {
        if let Some(pid) = running(&s.run_dir()) {
            // It outlives us; nobody waits for it here (`down` signals it by pid).
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            anyhow::bail!(
                "the supervisor exited at once ({status}); see {}",
                log.display()
            );
        }
        if started.elapsed() > Duration::from_secs(10) {
            anyhow::bail!(
                "the supervisor did not start within 10 s; see {}",
                log.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops the supervisor of the stack whose run directory is `run_dir`, if one runs: removes its
/// pid file (so it knows the stop is on purpose), sends SIGTERM, waits up to `grace`, then
/// SIGKILL. Returns its pid. `shoplog down` calls this before it stops any component.
pub fn stop(run_dir: &Path, grace: Duration) -> Option<i32> {
    let pid = running(run_dir)?;
    let _ = fs::remove_file(pid_path(run_dir));
    if pid == std::process::id() as i32 {
        return None;
    }
    process::signal(pid, libc::SIGTERM);
    let started = Instant::now();
    while process::alive(pid) && started.elapsed() < grace {
        std::thread::sleep(Duration::from_millis(20));
    }
    if process::alive(pid) {
        process::signal(pid, libc::SIGKILL);
        while process::alive(pid) && started.elapsed() < grace + Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    Some(pid)
}

/// Waits for Ctrl-C (SIGINT) or SIGTERM; returns the signal's name.
pub async fn stop_signal() -> anyhow::Result<&'static str> {
    let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        _ = int.recv() => Ok("SIGINT"),
    }
}

/// Why [`Supervisor::run`] returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT (Ctrl-C) or SIGTERM.
    Signal(&'static str),
    /// `run/supervisor.pid` is no longer ours: `shoplog down` is stopping the stack.
    Displaced,
    /// The stack is gone: no `run/stack.json`, or no component has a pid file any more.
    StackGone,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Stop::Signal(name) => write!(f, "received {name}"),
            Stop::Displaced => write!(
                f,
                "run/{NAME}.pid was removed: the stack is being stopped (`shoplog down`)"
            ),
            Stop::StackGone => write!(f, "the stack was stopped: no component has a pid file"),
        }
    }
}

/// What the supervisor knows of one component.
#[derive(Debug, Default)]
struct Track {
    /// Restart attempts since the component last stayed up for [`RESET_AFTER`].
    attempt: u32,
    /// When this supervisor last started it.
    started: Option<Instant>,
    /// It is down, and its next restart is due then.
    due: Option<Instant>,
}

/// The supervision loop of one stack (see the module's documentation).
pub struct Supervisor {
    data_dir: PathBuf,
    launcher: Launcher,
    detached: bool,
    tracks: std::collections::HashMap<String, Track>,
}

impl Supervisor {
    /// A supervisor of the stack in `data_dir` that restarts through `launcher`. A `detached`
    /// one ignores SIGHUP (the terminal that started it may close).
    pub fn new(data_dir: PathBuf, launcher: Launcher, detached: bool) -> Supervisor {
        Supervisor {
            data_dir,
            launcher,
            detached,
            tracks: Default::default(),
        }
    }

    /// Supervises until a signal, until `lock` is no longer ours, or until the stack is gone.
    pub async fn run(&mut self, lock: &PidLock) -> anyhow::Result<Stop> {
        let mut term = signal(SignalKind::terminate()).context("cannot handle SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("cannot handle SIGINT")?;
        let mut hup = if self.detached {
            Some(signal(SignalKind::hangup()).context("cannot handle SIGHUP")?)
        } else {
            None
        };
        say(&format!(
            "supervising the stack in {} (pid {}): a component that exits is restarted after {}, \
             doubling up to {} while it keeps exiting",
            self.data_dir.display(),
            std::process::id(),
            secs(FIRST_DELAY),
            secs(MAX_DELAY)
        ));
        loop {
            if !lock.still_ours() {
                return Ok(Stop::Displaced);
            }
            if let Some(stop) = self.tick(lock) {
                return Ok(stop);
            }
            let pause = self.pause();
            tokio::select! {
                _ = term.recv() => return Ok(Stop::Signal("SIGTERM")),
                _ = int.recv() => return Ok(Stop::Signal("SIGINT")),
                _ = async {
                    match hup.as_mut() {
                        Some(h) => h.recv().await,
                        None => std::future::pending().await,
                    }
                } => say("SIGHUP ignored (stop the supervisor with `shoplog down`, or SIGTERM)"),
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    /// Until the next look: a tick, or less when a restart falls due sooner.
    fn pause(&self) -> Duration {
        let now = Instant::now();
        self.tracks
            .values()
            .filter_map(|t| t.due)
            .map(|due| due.saturating_duration_since(now))
            .min()
            .unwrap_or(TICK)
            .clamp(Duration::from_millis(10), TICK)
    }

    /// One look at every component: notices those that exited, restarts those whose wait is up.
    fn tick(&mut self, lock: &PidLock) -> Option<Stop> {
        let Some(s) = StackSettings::load(&self.data_dir) else {
            return Some(Stop::StackGone);
        };
        let run_dir = s.run_dir();
        let components = s.components();
        if !components
            .iter()
            .any(|c| process::pid_file(&run_dir, &c.name).exists())
        {
            return Some(Stop::StackGone);
        }
        for c in &components {
            let Some(pid) = process::recorded_pid(&run_dir, &c.name) else {
                // Never started, or stopped on purpose.
                self.tracks.remove(&c.name);
                continue;
            };
            let ended = process::exit_status(pid);
            let track = self.tracks.entry(c.name.clone()).or_default();
            if ended.is_none() && process::alive(pid) {
                if track.due.take().is_some() {
                    say(&format!(
                        "{} is running again (pid {pid}): something else started it",
                        c.name
                    ));
                }
                continue;
            }
            let now = Instant::now();
            let due = match track.due {
                Some(due) => due,
                None => {
                    if track
                        .started
                        .is_none_or(|t| now.duration_since(t) >= RESET_AFTER)
                    {
                        track.attempt = 0;
                    }
                    track.attempt += 1;
                    let delay = backoff(track.attempt);
                    let how = ended.unwrap_or_else(|| {
                        format!(
                            "exit status unknown (not started by this supervisor; see {})",
                            s.log_file(&c.name).display()
                        )
                    });
                    say(&format!(
                        "{} (pid {pid}) exited: {how}; restarting in {} (attempt {})",
                        c.name,
                        secs(delay),
                        track.attempt
                    ));
                    track.due = Some(now + delay);
                    now + delay
                }
            };
            if now < due {
                continue;
            }
            if !lock.still_ours() {
                return Some(Stop::Displaced);
            }
            match self.launcher.start(&s, c) {
                Ok(Start::Running(pid)) => {
                    track.due = None;
                    say(&format!(
                        "{} is running again (pid {pid}): something else started it",
                        c.name
                    ));
                }
                Ok(Start::Started(pid)) => {
                    track.due = None;
                    track.started = Some(Instant::now());
                    let total = match process::count_restart(&run_dir, &c.name) {
                        Ok(n) => n.to_string(),
                        Err(e) => format!("? ({e:#})"),
                    };
                    say(&format!(
                        "{} restarted (pid {pid}, attempt {}, {total} restart(s) since `up`)",
                        c.name, track.attempt
                    ));
                }
                Err(e) => {
                    track.attempt += 1;
                    let delay = backoff(track.attempt);
                    track.due = Some(Instant::now() + delay);
                    say(&format!(
                        "{} could not be restarted: {e:#}; trying again in {} (attempt {})",
                        c.name,
                        secs(delay),
                        track.attempt
                    ));
                }
            }
        }
        None
    }
}

/// Arguments of `shoplog supervise` (hidden: `shoplog up --detach` starts it).
#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:\n  \
    shoplog up --detach                   starts this supervisor (the usual way)\n  \
    shoplog supervise --data-dir /tmp/s   supervise an already running stack, in the foreground\n\n\
    It exits when `shoplog down` stops the stack (which stops it first), on SIGTERM or SIGINT\n\
    (the stack keeps running, unsupervised), or when the stack has no pid file left. Only one\n\
    supervisor runs per data directory: a second one exits at once.")]
pub struct SuperviseArgs {
    #[command(flatten)]
    pub stack: StackArgs,
    /// The databases' AOF fsync policy when they are restarted (as `shoplog up --appendfsync`).
    #[arg(long, env = "SHOPLOG_APPENDFSYNC", default_value = "always",
          value_parser = ["everysec", "always"])]
    pub appendfsync: String,
}

/// Runs `shoplog supervise`: supervises the stack of a data directory until `down`.
pub async fn command(args: SuperviseArgs) -> anyhow::Result<u8> {
    let s = args.stack.settings(None, 0);
    if StackSettings::load(&s.data_dir).is_none() {
        eprintln!(
            "error: {} holds no stack (no run/stack.json): start one with `shoplog up`",
            s.data_dir.display()
        );
        return Ok(exit::CANNOT_RUN);
    }
    let Some(launcher) = Launcher::new(&args.appendfsync)? else {
        return Ok(exit::CANNOT_RUN);
    };
    let Some(lock) = PidLock::acquire(&s.run_dir())? else {
        let other = running(&s.run_dir()).map_or_else(|| "?".to_string(), |p| p.to_string());
        say(&format!(
            "another supervisor (pid {other}) runs for {}; exiting",
            s.data_dir.display()
        ));
        return Ok(exit::OK);
    };
    let mut supervisor = Supervisor::new(s.data_dir.clone(), launcher, true);
    let stop = supervisor.run(&lock).await?;
    say(&format!("exiting: {stop}"));
    lock.release();
    Ok(exit::OK)
}

/// Prints one supervisor line on stderr (the terminal in the foreground, `logs/supervisor.log`
/// when detached), stamped with the UTC time.
fn say(what: &str) {
    eprintln!("{} supervisor: {what}", stamp(SystemTime::now()));
}

/// `2024-05-01T12:00:00.123Z`.
fn stamp(t: SystemTime) -> String {
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let secs = (ms / 1000) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60,
        ms % 1000
    )
}

/// `0.5 s`, `2 s`.
fn secs(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_half_a_second_up_to_thirty() {
        let waits: Vec<f64> = (1..=9).map(|a| backoff(a).as_secs_f64()).collect();
        assert_eq!(waits, [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]);
        assert_eq!(backoff(0), FIRST_DELAY);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    #[test]
    fn the_switch_reads_the_usual_spellings_and_refuses_the_rest() {
        assert_eq!(switch(""), Some(true));
        assert_eq!(switch("1"), Some(true));
        assert_eq!(switch(" Off "), Some(false));
        assert_eq!(switch("0"), Some(false));
        assert_eq!(switch("sometimes"), None);
    }

    #[test]
    fn one_supervisor_per_run_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(running(dir.path()), None);
        let lock = PidLock::acquire(dir.path()).unwrap().unwrap();
        assert!(lock.still_ours());
        // The lock belongs to the open file, so a second claim fails even from this process.
        assert!(PidLock::acquire(dir.path()).unwrap().is_none());
        assert_eq!(running(dir.path()), Some(std::process::id() as i32));
        lock.release();
        assert_eq!(running(dir.path()), None);
        assert!(!pid_path(dir.path()).exists());
    }

    #[test]
    fn a_removed_pid_file_displaces_the_supervisor() {
        let dir = tempfile::tempdir().unwrap();
        let lock = PidLock::acquire(dir.path()).unwrap().unwrap();
        fs::remove_file(pid_path(dir.path())).unwrap();
        assert!(!lock.still_ours());
        // A new one can take over the directory meanwhile.
        let next = PidLock::acquire(dir.path()).unwrap().unwrap();
        assert!(next.still_ours() && !lock.still_ours());
    }

    #[test]
    fn stamps_are_utc_dates() {
        let t = UNIX_EPOCH + Duration::from_millis(1_709_210_096_789); // 2024-02-29T12:34:56.789Z
        assert_eq!(stamp(t), "2024-02-29T12:34:56.789Z");
        assert_eq!(stamp(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
    }
}
