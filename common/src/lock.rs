//! Redlock over the lock nodes, with the sharp edges of `rslock` filed off.
//!
//! `rslock`'s `acquire` retries forever and dropping a guard does not release the lock. Here every
//! acquisition is bounded by a deadline ([`Redlock::lock_within`]) and a [`Lease`] must be given
//! back with [`Redlock::release`]. With three nodes the quorum is two, so one node may be down.
//!
//! `rslock` asks every node and waits for all of them, so a node that stops answering (cut off by
//! the network, frozen) makes every acquisition wait for its response timeout (500 ms) — a
//! 7× drop in checkouts/s in the lock-node-cut scenario of docs/FAULTS.md. So each node is probed
//! ([`NodeHealth`]); while exactly one is suspected, locks are taken on the others, still a
//! majority of *all* nodes (2 of 3): the same safety, without the wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// How often each lock node is probed, and how long a probe may take before the node is suspected.
const PROBE_EVERY: Duration = Duration::from_millis(250);
const PROBE_TIMEOUT: Duration = Duration::from_millis(200);

/// A Redlock client over the configured lock nodes.
#[derive(Clone)]
pub struct Redlock {
    /// Every node: extensions, releases, and acquisitions while no node is suspected.
    manager: LockManager,
    /// `without[i]`: every node but node `i`, whose majority is a majority of all nodes too (an odd
    /// number of nodes, at least three; empty otherwise, and nothing is ever skipped).
    without: Vec<LockManager>,
    health: Arc<NodeHealth>,
}

/// Which lock nodes answer: probed with `PING` every 250 ms by a task started at the first lock,
/// a node failing to answer within 200 ms is suspected until it answers again.
pub struct NodeHealth {
    clients: Vec<redis::Client>,
    suspected: Vec<AtomicBool>,
    probing: OnceLock<()>,
}

impl NodeHealth {
    /// Starts the probe task, once (it needs a Tokio runtime, hence not in [`Redlock::new`]); it
    /// ends when the last clone of the [`Redlock`] is dropped.
    fn probe_from_now_on(self: &Arc<Self>) {
        self.probing.get_or_init(|| {
            let health = Arc::downgrade(self);
            tokio::spawn(async move {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(PROBE_TIMEOUT))
                    .set_response_timeout(Some(PROBE_TIMEOUT));
                let mut conns = Vec::new();
                let mut ticks = tokio::time::interval(PROBE_EVERY);
                ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    ticks.tick().await;
                    let Some(health) = health.upgrade() else {
                        return;
                    };
                    conns.resize_with(health.clients.len(), || None);
                    let probes = health.clients.iter().zip(conns.iter_mut()).map(|(c, conn)| {
                        probe(c, conn, &config)
                    });
                    let answered = futures::future::join_all(probes).await;
                    for (i, ok) in answered.into_iter().enumerate() {
                        let was = health.suspected[i].swap(!ok, Ordering::Relaxed);
                        if was == ok {
                            if ok {
                                tracing::info!(node = i + 1, "lock node answers again");
                            } else {
                                tracing::warn!(
                                    node = i + 1,
                                    "lock node does not answer within 200 ms: locks are taken on the others (a majority of all nodes) until it does"
                                );
                            }
                        }
                    }
                }
            });
        });
    }

    /// The one suspected node, if exactly one is (with more, nothing can be skipped).
    fn the_one_suspected(&self) -> Option<usize> {
        let mut suspected =
            (0..self.suspected.len()).filter(|&i| self.suspected[i].load(Ordering::Relaxed));
        match (suspected.next(), suspected.next()) {
            (Some(i), None) => Some(i),
            _ => None,
        }
    }
}

/// Whether the node answers `PING` in time, on a connection of its own (kept between probes,
/// replaced after a failure).
async fn probe(
    client: &redis::Client,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    config: &redis::AsyncConnectionConfig,
) -> bool {
    if conn.is_none() {
        *conn = client
            .get_multiplexed_async_connection_with_config(config)
            .await
            .ok();
    }
    let Some(c) = conn.as_mut() else {
        return false;
    };
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(c);
    let ok = matches!(tokio::time::timeout(PROBE_TIMEOUT, ping).await, Ok(Ok(_)));
    if !ok {
        *conn = None;
    }
    ok
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
        let manager_of = |clients: Vec<redis::Client>| {
            let mut manager = LockManager::from_clients(clients);
            // One quick attempt per call; the deadline loop in `lock_within` does the retrying.
            manager.set_retry(1, Duration::from_millis(10));
            manager
        };
        // Without node i, rslock's quorum over the others ((n-1)/2 + 1) equals the quorum over
        // all (n/2 + 1) only for an odd n: only then may a node be skipped.
        let without = if clients.len() >= 3 && clients.len() % 2 == 1 {
            (0..clients.len())
                .map(|i| {
                    let mut others = clients.clone();
                    others.remove(i);
                    manager_of(others)
                })
                .collect()
        } else {
            Vec::new()
        };
        let health = Arc::new(NodeHealth {
            suspected: clients.iter().map(|_| AtomicBool::new(false)).collect(),
            clients: clients.clone(),
            probing: OnceLock::new(),
        });
        Ok(Redlock {
            manager: manager_of(clients),
            without,
            health,
        })
    }

    /// Which nodes are suspected now (by position in `LOCK_URLS`), for status and tests.
    pub fn suspected(&self) -> Vec<bool> {
        self.health
            .suspected
            .iter()
            .map(|s| s.load(Ordering::Relaxed))
            .collect()
    }

    /// The nodes to ask (to lock, extend or release): all, or all but the one suspected node — a
    /// majority of those is a majority of all.
    fn acquiring(&self) -> &LockManager {
        self.health.probe_from_now_on();
        match self.health.the_one_suspected() {
            Some(i) if i < self.without.len() => &self.without[i],
            _ => &self.manager,
        }
    }

    /// Tries once to take `resource` for `ttl`; `Ok(None)` when someone else holds it.
    pub async fn try_lock(
        &self,
        resource: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, LockFailure> {
        let asked_at = Instant::now();
        let manager = self.acquiring();
        let attempt = tokio::time::timeout(ttl, manager.lock(resource.as_bytes(), ttl)).await;
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
        let manager = self.acquiring();
        match tokio::time::timeout(ttl, manager.extend(&lease.inner, ttl)).await {
            Ok(Ok(inner)) => Ok(Lease::granted(inner, asked_at)),
            Ok(Err(rslock::LockError::Unavailable)) => Err(LockFailure::Busy(resource)),
            Ok(Err(source)) => Err(LockFailure::Nodes { resource, source }),
            Err(_) => Err(LockFailure::Nodes {
                resource,
                source: rslock::LockError::TtlExceeded,
            }),
        }
    }

    /// Releases a lease on every node that answers within a second, skipping a suspected node
    /// (best effort: the TTL cleans up nodes that do not).
    pub async fn release(&self, lease: Lease) {
        let manager = self.acquiring();
        let _ = tokio::time::timeout(Duration::from_secs(1), manager.unlock(&lease.inner)).await;
    }
}
