//! Redlock over the lock nodes, with the two sharp edges of `rslock` filed off.
//!
//! `rslock`'s `acquire` retries forever and dropping a guard does not release the lock. Here every
//! acquisition is bounded by a deadline ([`Redlock::lock_within`]) and a [`Lease`] must be given
//! back with [`Redlock::release`]. With three nodes the quorum is two, so one node may be down.

use std::time::{Duration, Instant};

use rslock::{Lock, LockManager};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockFailure {
    /// No quorum of nodes granted it before the deadline: another holder has it, or too few lock
    /// nodes answer (`rslock` does not tell the two apart).
    #[error("could not take `{0}`: held elsewhere, or fewer than a quorum of lock nodes answer")]
    Busy(String),
    /// Fewer than a quorum of lock nodes answered.
    #[error("cannot reach a quorum of lock nodes for `{resource}`: {source}")]
    Nodes {
        /// The resource asked for.
        resource: String,
        /// What `rslock` said.
        source: rslock::LockError,
    },
}

/// A held lock. Give it back with [`Redlock::release`]; dropping it leaves the key until its TTL.
#[derive(Debug)]
pub struct Lease {
    inner: Lock,
    valid_until: Instant,
}

impl Lease {
    /// The instant until which this holder may rely on the lease: the time the request was sent
    /// plus the validity Redlock granted (its TTL less the time the request took and the clock
    /// drift). Past it another holder may have the lock, whatever this process believes — for
    /// example after this process was frozen (SIGSTOP, a long pause) while holding it.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// Whether the lease is still valid now.
    pub fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    fn granted(inner: Lock, asked_at: Instant) -> Lease {
        let valid_until = asked_at + Duration::from_millis(inner.validity_time as u64);
        Lease { inner, valid_until }
    }
}

/// A Redlock client over the configured lock nodes.
#[derive(Clone)]
pub struct Redlock {
    manager: LockManager,
}

impl Redlock {
    /// A client for the nodes at `urls` (e.g. `LOCK_URLS`). Connects lazily; fails only on a
    /// malformed URL.
    pub fn new(urls: &[String]) -> anyhow::Result<Redlock> {
        if urls.is_empty() {
            anyhow::bail!(
                "LOCK_URLS is empty: give the Redis URLs of the lock nodes, comma-separated"
            );
        }
        let mut clients = Vec::new();
        for url in urls {
            clients.push(
                redis::Client::open(url.as_str())
                    .map_err(|e| anyhow::anyhow!("LOCK_URLS: `{url}` is not a Redis URL: {e}"))?,
            );
        }
        let mut manager = LockManager::from_clients(clients);
        // One quick attempt per call; the deadline loop in `lock_within` does the retrying.
        manager.set_retry(1, Duration::from_millis(10));
        Ok(Redlock { manager })
    }

    /// Tries once to take `resource` for `ttl`; `Ok(None)` when someone else holds it.
    pub async fn try_lock(
        &self,
        resource: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockFailure> {
        let asked_at = Instant::now();
        let attempt = tokio::time::timeout(ttl, self.manager.lock(resource.as_bytes(), ttl)).await;
        match attempt {
            Ok(Ok(inner)) => Ok(Some(Lease::granted(inner, asked_at))),
            Ok(Err(rslock::LockError::Unavailable)) => Ok(None),
            Ok(Err(source)) => Err(LockFailure::Nodes {
                resource: resource.to_string(),
                source,
            }),
            Err(_) => Err(LockFailure::Nodes {
                resource: resource.to_string(),
                source: rslock::LockError::TtlExceeded,
            }),
        }
    }

    /// Takes `resource` for `ttl`, retrying with short random pauses until `wait` has passed.
    pub async fn lock_within(
        &self,
        resource: &str,
        ttl: Duration,
        wait: Duration,
    ) -> Result<Lease, LockFailure> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let last = match self.try_lock(resource, ttl).await {
                Ok(Some(lease)) => return Ok(lease),
                Ok(None) => LockFailure::Busy(resource.to_string()),
                Err(e) => e,
            };
            if tokio::time::Instant::now() + pause >= deadline {
                return Err(last);
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Extends a held lease to `ttl` from now; fails if the lease was lost meanwhile.
    pub async fn extend(&self, lease: &Lease, ttl: Duration) -> Result<Lease, LockFailure> {
        let resource = String::from_utf8_lossy(&lease.inner.resource).to_string();
        let asked_at = Instant::now();
        match tokio::time::timeout(ttl, self.manager.extend(&lease.inner, ttl)).await {
            Ok(Ok(inner)) => Ok(Lease::granted(inner, asked_at)),
            Ok(Err(rslock::LockError::Unavailable)) => Err(LockFailure::Busy(resource)),
            Ok(Err(source)) => Err(LockFailure::Nodes { resource, source }),
            Err(_) => Err(LockFailure::Nodes {
                resource,
                source: rslock::LockError::TtlExceeded,
            }),
        }
    }

    /// Releases a lease on every node that answers within a second (best effort: the TTL cleans
    /// up nodes that do not).
    pub async fn release(&self, lease: Lease) {
        let _ =
            tokio::time::timeout(Duration::from_secs(1), self.manager.unlock(&lease.inner)).await;
    }
}
