//! `logparser` — the log-parser daemon.
//!
//! One active instance at a time holds the Redlock lease `lock:logparser` (a standby takes over
//! within about one `LEASE_TTL` after the active one dies). The active instance runs a recovery
//! pass when it becomes active, then one every `RECOVERY_INTERVAL` (see `logparser::recovery`).
//! `GET /logparser/status` says whether this instance is active and what its last pass did;
//! `GET /logparser/metrics` has the counters. After each pass, unless `LOG_RETAIN=off`, it runs an
//! archiving pass (`logparser::archive`); `POST /logparser/archive` runs one now and answers its
//! report (`shoplog archive --now`). Under `/console/` it serves the operator console
//! (`logparser::console`): every instance serves its pages, only the active one runs actions.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{self, HandlerResult, Method, Service};
use common::metrics::Metrics;
use logparser::archive::{ArchiveReport, Archiver};
use logparser::console::{Console, DaemonStatus};
use logparser::lease::{self, Leadership};
use logparser::recovery::{Recovery, Settings};

struct Daemon {
    /// Name, lease, last passes: shared with the console.
    state: Arc<DaemonStatus>,
    leadership: Arc<Leadership>,
    console: Arc<Console>,
    metrics: Arc<Metrics>,
    /// The archiving engine, once the databases are connected (`None` with `LOG_RETAIN=off`);
    /// the lock serialises the daemon's passes and those asked for over HTTP.
    archiver: tokio::sync::Mutex<Option<Archiver>>,
}

impl Daemon {
    /// Runs an archiving pass if this instance is active and archiving is on; keeps its report.
    async fn archive_pass(&self) -> Result<Option<ArchiveReport>, String> {
        let mut guard = self.archiver.lock().await;
        let Some(archiver) = guard.as_mut() else {
            return Ok(None);
        };
        if !self.leadership.is_active() {
            return Err("this log parser is not the active instance".into());
        }
        let leadership = &self.leadership;
        let report = archiver
            .pass(|| leadership.is_active())
            .await
            .map_err(|e| e.to_string())?;
        if report.archived > 0 || report.retired > 0 || !report.errors.is_empty() {
            tracing::info!(archived = report.archived, trimmed = report.trimmed, retired = report.retired,
                lag_ms = report.lag_ms, errors = ?report.errors, duration_ms = report.duration_ms, "archiving pass");
        }
        *self
            .state
            .last_archive
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(report.clone());
        Ok(Some(report))
    }
}

impl Service for Daemon {
    const PREFIX: &'static str = "logparser";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        match segments.as_slice() {
            [_, s] if s == "status" => {
                http::allow(&method, Method::GET)?;
                // `log_retain_ms`: this daemon's `LOG_RETAIN` (`None`: off), so that `shoplog
                // archive` measures the lag against the retention actually in force.
                http::json(&serde_json::json!({
                    "instance": self.state.instance,
                    "active": self.leadership.is_active(),
                    "last_pass": self.state.last_pass(),
                    "last_archive": self.state.last_archive(),
                    "log_retain_ms": self.state.log_retain_ms,
                }))
            }
            [_, s] if s == "archive" => {
                http::allow(&method, Method::POST)?;
                match self.archive_pass().await {
                    Ok(Some(report)) => http::json(&report),
                    Ok(None) => Err(common::error::ApiError::Conflict(
                        "archiving is off (LOG_RETAIN=off) or the databases are not connected yet"
                            .into(),
                    )),
                    Err(e) => Err(common::error::ApiError::Unavailable(e)),
                }
            }
            _ => Err(http::not_found(&segments)),
        }
    }

    async fn healthy(self: Arc<Self>) -> http::Health {
        Ok(())
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

/// Runs recovery passes while this instance holds the lease.
async fn recover_while_active(daemon: Arc<Daemon>, config: common::config::Config) {
    let dbs = loop {
        match logparser::dbs::Dbs::connect(&config).await {
            Ok(d) => break d,
            Err(e) => {
                tracing::warn!(error = %e, "databases not reachable yet; retrying in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    daemon.console.attach(dbs.clone()).await;
    let locks = match common::lock::Redlock::new(&config.lock_urls) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "no recovery passes without lock nodes");
            return;
        }
    };
    let ids = common::ids::IdPool::new(&config.ids_url, 100, daemon.metrics.clone());
    ids.prefill().await;
    let settings = Settings {
        saga_timeout: config.saga_timeout,
        redrive_after: config.redrive_after,
    };
    // What the recovery pass reads of log:order, noted for the archiver's retirement queue
    // (only when archiving: nothing else takes the notes).
    let sightings = config
        .log_retain
        .map(|_| logparser::sightings::Sightings::default());
    if let Some(retain) = config.log_retain {
        let ids = common::ids::IdPool::new(&config.ids_url, 100, daemon.metrics.clone());
        let settings = logparser::archive::Settings {
            retain,
            root: config.archive_dir.clone(),
        };
        tracing::info!(archive = %config.archive_dir.display(), retain_ms = retain.as_millis() as u64, "archiving on");
        let mut archiver = Archiver::new(dbs.clone(), settings, ids, daemon.metrics.clone());
        if let Some(s) = &sightings {
            archiver = archiver.with_sightings(s.clone());
        }
        *daemon.archiver.lock().await = Some(archiver);
    }
    let mut recovery = Recovery::new(dbs, locks, ids, settings, daemon.metrics.clone());
    if let Some(s) = sightings {
        recovery = recovery.with_sightings(s);
    }
    let mut started = false;
    loop {
        if daemon.leadership.is_active() {
            let pass = if started {
                recovery.incremental_pass().await
            } else {
                recovery.startup().await
            };
            match pass {
                Ok(report) => {
                    started = true;
                    if !report.aborted.is_empty()
                        || !report.redriven.is_empty()
                        || !report.errors.is_empty()
                    {
                        tracing::info!(mode = report.mode, aborted = report.aborted.len(), redriven = report.redriven.len(),
                            errors = ?report.errors, duration_ms = report.duration_ms, "recovery pass");
                    }
                    *daemon
                        .state
                        .last_pass
                        .lock()
                        .unwrap_or_else(|p| p.into_inner()) = Some(report);
                    // After the recovery pass: its checkpoint bounds what may leave log:order.
                    if let Err(e) = daemon.archive_pass().await {
                        tracing::warn!(error = %e, "archiving pass failed; retrying next interval");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recovery pass failed; retrying next interval")
                }
            }
        } else {
            // Another instance may move the checkpoint meanwhile: start over when active again.
            started = false;
        }
        // Until the startup pass has run, look again soon: it builds the saga index the console
        // and `shoplog sagas` read, and a lease taken just after a look must not wait a whole
        // interval (tests and operators set long ones).
        let wait = if started {
            config.recovery_interval
        } else {
            config.recovery_interval.min(STARTUP_RETRY)
        };
        tokio::time::sleep(wait).await;
    }
}

/// How often an instance that has not run its startup pass yet looks at its lease again.
const STARTUP_RETRY: std::time::Duration = std::time::Duration::from_millis(500);

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("logparser");
    let config = common::config::Config::from_env(common::config::defaults::LOGPARSER_PORT)?;
    let leadership = Arc::new(Leadership::default());
    let locks = common::lock::Redlock::new(&config.lock_urls)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(lease::hold(
        locks,
        config.lease_ttl,
        leadership.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let state = Arc::new(DaemonStatus {
        instance: config.instance.clone(),
        leadership: leadership.clone(),
        last_pass: Mutex::new(None),
        last_archive: Mutex::new(None),
        log_retain_ms: config.log_retain.map(|d| d.as_millis() as u64),
        lease_ttl_ms: config.lease_ttl.as_millis() as u64,
    });
    let metrics = Arc::new(Metrics::new("logparser"));
    let console = Arc::new(Console::new(&config, state.clone(), metrics.clone()));
    if console.read_only() {
        tracing::info!("console at /console/ is read-only (no CONSOLE_TOKEN)");
    }
    let daemon = Arc::new(Daemon {
        state,
        leadership,
        console: console.clone(),
        metrics,
        archiver: tokio::sync::Mutex::new(None),
    });
    let recovering = tokio::spawn(recover_while_active(daemon.clone(), config.clone()));
    let sampling = tokio::spawn(console.clone().sample_forever());
    let routes = logparser::console::routes(console);
    let served = http::serve_with(daemon, config.listen_addr()?, routes).await;
    recovering.abort();
    sampling.abort();
    let _ = stop_tx.send(());
    let _ = holder.await;
    served
}
