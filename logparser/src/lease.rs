//! The log parser's lease: only one daemon acts at a time.
//!
//! The active instance holds the Redlock `lock:logparser` and extends it every third of its TTL.
//! A standby tries to take it on the same rhythm, so it takes over within about one TTL after the
//! active instance dies. Losing the lease (a failed extension) turns an instance back to standby.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::lock::{Lease, Redlock};

/// The lock resource of the lease.
pub const RESOURCE: &str = common::keys::LOGPARSER_LEASE;

/// Whether this instance currently holds the lease; shared with the health endpoint.
#[derive(Debug, Default)]
pub struct Leadership {
    active: AtomicBool,
}

impl Leadership {
    /// Whether this instance is the active one.
    pub fn is_active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }
}

/// Holds (or waits for) the lease until `stop` resolves, then releases it.
pub async fn hold(
    locks: Redlock,
    ttl: Duration,
    leadership: Arc<Leadership>,
    stop: impl std::future::Future<Output = ()>,
) {
    let tick = ttl / 3;
    let mut held: Option<Lease> = None;
    tokio::pin!(stop);
    loop {
        held = match held.take() {
            Some(lease) => match locks.extend(&lease, ttl).await {
                Ok(extended) => Some(extended),
                Err(e) => {
                    tracing::warn!(error = %e, "lost the log-parser lease; standing by");
                    None
                }
            },
            None => match locks.try_lock(RESOURCE, ttl).await {
                Ok(Some(lease)) => {
                    tracing::info!("took the log-parser lease; this instance is active");
                    Some(lease)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot reach the lock nodes");
                    None
                }
            },
        };
        leadership.active.store(held.is_some(), Ordering::Release);
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    leadership.active.store(false, Ordering::Release);
    if let Some(lease) = held {
        locks.release(lease).await;
        tracing::info!("released the log-parser lease");
    }
}
