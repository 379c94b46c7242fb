//! The log parser's lease: only one daemon acts at a time.
//!
//! The active instance holds the Redlock `lock:logparser` and extends it every third of its TTL.
//! A standby tries to take it on the same rhythm, so it takes over within about one TTL after the
//! active instance dies. Losing the lease (a failed extension) turns an instance back to standby.
//!
//! Being active is a deadline, not a flag: the validity Redlock granted at the last acquisition or
//! extension ([`Lease::valid_until`]). An instance frozen past it (SIGSTOP, a VM pause, a GC-like
//! stall) is no longer active the moment it resumes, before its holder task has even run: the
//! recovery loop checks [`Leadership::is_active`] before each pass, so a resumed instance starts
//! none while a standby may hold the lease, until it has extended or retaken it. A pass that was
//! running when the instance froze may finish its current steps; they are safe to race with the
//! other instance's: an abort takes the order's Redlock, and every step is a fenced, idempotent
//! script.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::lock::{Lease, Redlock};

/// The lock resource of the lease.
pub const RESOURCE: &str = common::keys::LOGPARSER_LEASE;

/// Whether this instance currently holds the lease; shared with the recovery loop and the health
/// endpoint.
#[derive(Debug, Default)]
pub struct Leadership {
    /// Until when the held lease is valid; `None` while standing by.
    valid_until: Mutex<Option<Instant>>,
}

impl Leadership {
    /// Whether this instance is the active one: it holds a lease that is still valid now.
    pub fn is_active(&self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() < d)
    }

    fn deadline(&self) -> Option<Instant> {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the lease held now (`None`: standing by).
    pub fn set(&self, lease: Option<&Lease>) {
        *self.valid_until.lock().unwrap_or_else(|p| p.into_inner()) = lease.map(Lease::valid_until);
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
            // Frozen past its validity, the lease may be someone else's now: take it anew.
            Some(lease) if !lease.is_valid() => {
                tracing::warn!(
                    "the log-parser lease expired while this instance was not running; standing by"
                );
                None
            }
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
        leadership.set(held.as_ref());
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(tick) => {}
        }
    }
    leadership.set(None);
    if let Some(lease) = held {
        locks.release(lease).await;
        tracing::info!("released the log-parser lease");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leadership_ends_at_the_leases_validity_not_at_the_next_tick() {
        let l = Leadership::default();
        assert!(!l.is_active());
        *l.valid_until.lock().unwrap() = Some(Instant::now() + Duration::from_secs(60));
        assert!(l.is_active());
        // As after a freeze that outlasted the lease: nothing ran, yet the instance is not active.
        *l.valid_until.lock().unwrap() = Some(Instant::now() - Duration::from_millis(1));
        assert!(!l.is_active());
        l.set(None);
        assert!(!l.is_active());
    }
}
