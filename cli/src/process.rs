//! Starting, finding and stopping the stack's processes.
//!
//! Each component started by `shoplog up` has a pid file `<data>/run/<name>.pid`. A component is
//! "running" when its pid file names a live process. Processes are started in their own process
//! group, so a Ctrl-C aimed at `shoplog up` does not reach them; `shoplog` stops them itself.
//! A pid file whose process is dead means the component exited without being stopped (stopping
//! removes the pid file): that is what the supervisor restarts, and `<name>.restarts` counts how
//! often it did since the last `shoplog down`.

use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// The pid file of component `name`.
pub fn pid_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.pid"))
}

/// The pid recorded for `name`, if its process is alive.
pub fn running_pid(run_dir: &Path, name: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pid_file(run_dir, name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    alive(pid).then_some(pid)
}

/// The name of the supervisor's pid file (`run/supervisor.pid`); the supervisor is not a
/// component, so [`recorded`] leaves it out.
pub const SUPERVISOR: &str = "supervisor";

/// Names of all components with a pid file in `run_dir` (not the supervisor).
pub fn recorded(run_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(run_dir)
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter_map(|e| {
                    e.file_name()
                        .to_str()
                        .and_then(|n| n.strip_suffix(".pid"))
                        .filter(|n| *n != SUPERVISOR)
                        .map(String::from)
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Whether process `pid` exists (and is not a zombie we could reap).
pub fn alive(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid, 0) } == 0;
    if !exists {
        return false;
    }
    // A zombie child of ours is dead for our purposes.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => true,
    }
}

/// Starts `program` with `args` and `env`, output appended to `log`, pid written to `run_dir`.
pub fn spawn(
    run_dir: &Path,
    name: &str,
    program: &Path,
    args: &[String],
    env: &[(String, String)],
    log: &Path,
) -> anyhow::Result<i32> {
    let out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("cannot open log file {}", log.display()))?;
    let err = out.try_clone()?;
    let child = Command::new(program)
        .args(args)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {} ({})", name, program.display()))?;
    let pid = child.id() as i32;
    fs::write(pid_file(run_dir, name), pid.to_string())
        .with_context(|| format!("cannot write the pid file of {name}"))?;
    // The child outlives us (`--detach`); we never wait on it, `stop` signals it by pid.
    std::mem::forget(child);
    Ok(pid)
}

/// Sends `signal` to `pid`.
pub fn signal(pid: i32, signal: i32) -> bool {
    // SAFETY: sending a signal to a pid has no memory-safety implications.
    unsafe { libc::kill(pid, signal) == 0 }
}

/// The pid recorded for `name`, alive or not: a component whose pid file names a dead process
/// exited without being stopped.
pub fn recorded_pid(run_dir: &Path, name: &str) -> Option<i32> {
    fs::read_to_string(pid_file(run_dir, name))
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Whether any live (non-zombie) process of the group `pgid` is left — nginx workers outlive a
/// killed master. Reads `/proc`, because zombies waiting for a reaper also count as members of
/// their group for `kill(-pgid, 0)`.
fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = fs::read_dir("/proc") else {
        // SAFETY: signal 0 to a process group only checks that it exists.
        return unsafe { libc::kill(-pgid, 0) == 0 };
    };
    dir.filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| fs::read_to_string(e.path().join("stat")).ok())
        .any(|stat| {
            // After the command's closing parenthesis: state, ppid, pgrp, ...
            let fields: Vec<&str> = stat
                .rsplit_once(')')
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.len() > 2 && fields[0] != "Z" && fields[2] == pgid.to_string()
        })
}

/// Stops component `name` — its whole process group, so that children such as nginx workers go
/// too: SIGTERM, then SIGKILL after `grace`. Removes its pid file. Returns the pid that was
/// stopped, if it was running.
pub fn stop(run_dir: &Path, name: &str, grace: Duration) -> Option<i32> {
    let pid = running_pid(run_dir, name);
    if let Some(pid) = pid {
        signal(-pid, libc::SIGTERM);
        let started = Instant::now();
        while (alive(pid) || group_alive(pid)) && started.elapsed() < grace {
            reap();
            std::thread::sleep(Duration::from_millis(20));
        }
        if alive(pid) || group_alive(pid) {
            signal(-pid, libc::SIGKILL);
            while alive(pid) && started.elapsed() < grace + Duration::from_secs(5) {
                reap();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    } else {
        clear_leftovers(run_dir, name);
    }
    let _ = fs::remove_file(pid_file(run_dir, name));
    pid
}

/// Kills what is left of a component whose main process died (e.g. nginx workers orphaned by a
/// killed master, which would keep its port), so that it can be started again.
pub fn clear_leftovers(run_dir: &Path, name: &str) {
    if let Some(pid) = recorded_pid(run_dir, name) {
        if !alive(pid) && group_alive(pid) {
            signal(-pid, libc::SIGKILL);
            let started = Instant::now();
            while group_alive(pid) && started.elapsed() < Duration::from_secs(5) {
                reap();
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// How child `pid` ended, reaping it: `Some("killed by signal 9 (SIGKILL)")` or
/// `Some("exited with status 1")` once it has ended; `None` while it runs, or when it is not a
/// child of this process (then nobody here can know).
pub fn exit_status(pid: i32) -> Option<String> {
    if pid <= 0 {
        return None;
    }
    let mut status = 0;
    // SAFETY: waitpid on one pid with WNOHANG, writing only to `status`.
    if unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } != pid {
        return None;
    }
    Some(if libc::WIFEXITED(status) {
        format!("exited with status {}", libc::WEXITSTATUS(status))
    } else if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        format!("killed by signal {sig}{}", signal_name(sig))
    } else {
        format!("ended (wait status {status})")
    })
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGINT => " (SIGINT)",
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGHUP => " (SIGHUP)",
        _ => "",
    }
}

/// The file counting how often the supervisor restarted `name`.
fn restarts_file(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(format!("{name}.restarts"))
}

/// How often the supervisor restarted `name` since the last `shoplog down` (0 if never).
pub fn restarts(run_dir: &Path, name: &str) -> u32 {
    fs::read_to_string(restarts_file(run_dir, name))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// Counts one more restart of `name`; returns the new count. Written to a temporary file and
/// renamed, so that `shoplog status` never reads half a number.
pub fn count_restart(run_dir: &Path, name: &str) -> anyhow::Result<u32> {
    let n = restarts(run_dir, name).saturating_add(1);
    let tmp = run_dir.join(format!(".{name}.restarts.tmp"));
    fs::write(&tmp, n.to_string())
        .and_then(|()| fs::rename(&tmp, restarts_file(run_dir, name)))
        .with_context(|| format!("cannot write the restart count of {name}"))?;
    Ok(n)
}

/// Forgets every restart count in `run_dir` (`shoplog down`: the counts are per run of the stack).
pub fn clear_restarts(run_dir: &Path) {
    let Ok(dir) = fs::read_dir(run_dir) else {
        return;
    };
    for e in dir.filter_map(Result::ok) {
        if e.file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(".restarts"))
        {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Reaps any of our exited children (when `up` runs in the foreground they are ours).
fn reap() {
    // SAFETY: waitpid with WNOHANG on any child; no memory is shared.
    unsafe { while libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) > 0 {} }
}

/// Finds an executable on `PATH` (or in the usual sbin directories, where nginx lives).
pub fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"])
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file());
    found
}
