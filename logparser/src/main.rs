//! `logparser` — the log-parser daemon.
//!
//! One active instance at a time holds the Redlock lease `lock:logparser` (a standby takes over
//! within about one `LEASE_TTL` after the active one dies). The active instance runs a recovery
//! pass when it becomes active, then one every `RECOVERY_INTERVAL` (see `logparser::recovery`).
//! `GET /logparser/status` says whether this instance is active and what its last pass did;
//! `GET /logparser/metrics` has the counters.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::http::{self, HandlerResult, Method, Service};
use common::metrics::Metrics;
use logparser::lease::{self, Leadership};
use logparser::recovery::{PassReport, Recovery, Settings};

struct Daemon {
    leadership: Arc<Leadership>,
    instance: String,
    last_pass: Mutex<Option<PassReport>>,
    metrics: Arc<Metrics>,
}

impl Service for Daemon {
    const PREFIX: &'static str = "logparser";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        match segments.as_slice() {
            [_, s] if s == "status" => {
                http::allow(&method, Method::GET)?;
                let last = self
                    .last_pass
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                http::json(&serde_json::json!({
                    "instance": self.instance,
                    "active": self.leadership.is_active(),
                    "last_pass": last,
                }))
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
    let mut recovery = Recovery::new(dbs, locks, ids, settings, daemon.metrics.clone());
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
                    *daemon.last_pass.lock().unwrap_or_else(|p| p.into_inner()) = Some(report);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "recovery pass failed; retrying next interval")
                }
            }
        } else {
            // Another instance may move the checkpoint meanwhile: start over when active again.
            started = false;
        }
        tokio::time::sleep(config.recovery_interval).await;
    }
}

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
    let daemon = Arc::new(Daemon {
        leadership,
        instance: config.instance.clone(),
        last_pass: Mutex::new(None),
        metrics: Arc::new(Metrics::new("logparser")),
    });
    let recovering = tokio::spawn(recover_while_active(daemon.clone(), config.clone()));
    let served = http::serve(daemon, config.listen_addr()?).await;
    recovering.abort();
    let _ = stop_tx.send(());
    let _ = holder.await;
    served
}
