//! The id pool: log ids (and entity ids) leased from the ID service in blocks.
//!
//! A request never waits on the ID service: [`IdPool::next`] pops a leased id, and a background
//! task refills the pool when it runs below half a block. If the pool is empty because the ID
//! service is unreachable, the pool makes a ULID locally (unique without coordination), counts it in
//! `shoplog_ids_local_fallback_total` and warns once per outage.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::metrics::Metrics;

/// A pool of ids leased from the ID service.
pub struct IdPool {
    ids_url: String,
    block: usize,
    http: reqwest::Client,
    queue: Mutex<VecDeque<String>>,
    refilling: AtomicBool,
    in_fallback: AtomicBool,
    metrics: Arc<Metrics>,
}

#[derive(serde::Deserialize)]
struct Batch {
    ids: Vec<String>,
}

impl IdPool {
    /// A pool leasing `block` ids at a time from the ID service at `ids_url`. Starts empty; call
    /// [`IdPool::prefill`] at startup to avoid local fallbacks on the first requests.
    pub fn new(ids_url: &str, block: usize, metrics: Arc<Metrics>) -> Arc<IdPool> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap_or_default();
        Arc::new(IdPool {
            ids_url: ids_url.trim_end_matches('/').to_string(),
            block: block.max(1),
            http,
            queue: Mutex::new(VecDeque::new()),
            refilling: AtomicBool::new(false),
            in_fallback: AtomicBool::new(false),
            metrics,
        })
    }

    /// Fills the pool once, waiting for the answer (at startup). Errors are logged, not returned:
    /// a service must start even while the ID service is down.
    pub async fn prefill(self: &Arc<Self>) {
        if let Err(e) = self.refill().await {
            tracing::warn!(error = %e, ids_url = %self.ids_url, "cannot lease ids yet; using local ULIDs until the ID service answers");
        }
    }

    /// The next id. Never waits on the network.
    pub fn next(self: &Arc<Self>) -> String {
        let (id, remaining) = {
            let mut q = self.queue.lock().unwrap_or_else(|p| p.into_inner());
            (q.pop_front(), q.len())
        };
        if remaining <= self.block / 2 {
            self.spawn_refill();
        }
        match id {
            Some(id) => id,
            None => {
                self.metrics.incr("ids_local_fallback_total", 1);
                if !self.in_fallback.swap(true, Ordering::Relaxed) {
                    tracing::warn!(ids_url = %self.ids_url, "id pool empty and the ID service is not answering; generating ULIDs locally");
                }
                ulid::Ulid::new().to_string()
            }
        }
    }

    fn spawn_refill(self: &Arc<Self>) {
        if self.refilling.swap(true, Ordering::AcqRel) {
            return;
        }
        let pool = self.clone();
        tokio::spawn(async move {
            if let Err(e) = pool.refill().await {
                tracing::debug!(error = %e, "id refill failed");
            }
            pool.refilling.store(false, Ordering::Release);
        });
    }

    async fn refill(&self) -> Result<(), reqwest::Error> {
        let url = format!("{}/ids/batch/{}", self.ids_url, self.block);
        let batch: Batch = self
            .http
            .post(&url)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(batch.ids);
        if self.in_fallback.swap(false, Ordering::Relaxed) {
            tracing::info!("ID service answers again; leasing ids");
        }
        Ok(())
    }
}
