//! A Redis Cluster connection that replaces itself when it stops making progress.
//!
//! redis-rs's async cluster connection repairs itself after a node dies: it refreshes the slot
//! map and reconnects. But under load, after a primary was killed and its replica promoted, the
//! fault suite saw it wedge for good (redis-rs 1.8.1 and 1.8.2): its slot refresh began and never
//! ended, nothing more was sent to any node, every command timed out, and the service stayed
//! unhealthy until restarted (docs/FAULTS.md, "Redis Cluster"). A fresh connection to the same
//! cluster worked at once. So a [`ClusterLink`] watches its own replies: when commands keep
//! failing and none has succeeded for [`STUCK_AFTER`], it opens a new connection from the seed
//! nodes and puts it in place of the old one, for every clone at once.
//!
//! A shard failing over is not mistaken for this: commands to the other shards keep succeeding
//! meanwhile. A whole cluster down makes it try a new connection every [`STUCK_AFTER`], which
//! fails until the cluster is back and changes nothing.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redis::aio::ConnectionLike;
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;

/// How long commands may keep failing, with none succeeding, before the connection is replaced.
pub const STUCK_AFTER: Duration = Duration::from_secs(10);

/// How long opening a replacement may take.
const REOPEN_TIMEOUT: Duration = Duration::from_secs(5);

/// A shared, self-replacing cluster connection; clones share it (and its replacements).
#[derive(Clone)]
pub struct ClusterLink {
    inner: Arc<Inner>,
}

struct Inner {
    client: ClusterClient,
    /// Names the database in log lines.
    what: String,
    current: RwLock<ClusterConnection>,
    progress: Progress,
    replacing: AtomicBool,
    replaced: AtomicU64,
}

impl ClusterLink {
    /// Opens the first connection of `client`; `what` names the database in log lines.
    pub async fn open(client: ClusterClient, what: &str) -> redis::RedisResult<ClusterLink> {
        let first = client.get_async_connection().await?;
        Ok(ClusterLink {
            inner: Arc::new(Inner {
                client,
                what: what.to_string(),
                current: RwLock::new(first),
                progress: Progress::new(STUCK_AFTER),
                replacing: AtomicBool::new(false),
                replaced: AtomicU64::new(0),
            }),
        })
    }

    /// The connection in use now (a cheap clone of a handle).
    pub fn connection(&self) -> ClusterConnection {
        match self.inner.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// How many times the connection was replaced.
    pub fn replaced(&self) -> u64 {
        self.inner.replaced.load(Ordering::Relaxed)
    }

    /// Takes note of a command's outcome; after [`STUCK_AFTER`] of failures only, starts
    /// replacing the connection (in the background, once at a time).
    pub fn observe<T>(&self, outcome: &redis::RedisResult<T>) {
        let stuck = match outcome {
            Ok(_) => {
                self.inner.progress.succeeded();
                false
            }
            Err(_) => self.inner.progress.failed(),
        };
        if stuck && !self.inner.replacing.swap(true, Ordering::AcqRel) {
            let link = self.clone();
            tokio::spawn(async move {
                let _ = link.replace().await;
                link.inner.replacing.store(false, Ordering::Release);
            });
        }
    }

    /// Opens a new connection from the seed nodes and puts it in place of the current one;
    /// the old one is dropped with its last clone. On failure the current one stays (the next
    /// failures try again).
    pub async fn replace(&self) -> redis::RedisResult<()> {
        let silent = self.inner.progress.silent_for();
        let opened =
            tokio::time::timeout(REOPEN_TIMEOUT, self.inner.client.get_async_connection()).await;
        let fresh = match opened {
            Ok(Ok(fresh)) => fresh,
            Ok(Err(e)) => {
                tracing::warn!(database = %self.inner.what, error = %e, "cannot open a new cluster connection yet; keeping the old one");
                self.inner.progress.retry_later();
                return Err(e);
            }
            Err(_) => {
                tracing::warn!(database = %self.inner.what, "opening a new cluster connection timed out; keeping the old one");
                self.inner.progress.retry_later();
                return Err(redis::RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "opening a new cluster connection timed out",
                )));
            }
        };
        match self.inner.current.write() {
            Ok(mut c) => *c = fresh,
            Err(poisoned) => *poisoned.into_inner() = fresh,
        }
        self.inner.progress.succeeded();
        self.inner.replaced.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            database = %self.inner.what,
            silent_ms = silent.as_millis() as u64,
            "the cluster connection answered nothing but errors; replaced it with a new one"
        );
        Ok(())
    }
}

impl ConnectionLike for ClusterLink {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        let mut conn = self.connection();
        Box::pin(async move {
            let outcome = conn.req_packed_command(cmd).await;
            self.observe(&outcome);
            outcome
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        let mut conn = self.connection();
        Box::pin(async move {
            let outcome = conn.req_packed_commands(cmd, offset, count).await;
            self.observe(&outcome);
            outcome
        })
    }

    fn get_db(&self) -> i64 {
        0
    }
}

/// Whether a connection makes progress: since when its commands have failed with none
/// succeeding (none: the last one succeeded). Milliseconds since `born` in an atomic, so that
/// every command can note its outcome without a lock.
struct Progress {
    born: Instant,
    limit: Duration,
    /// 0: not failing; otherwise 1 + the milliseconds at the first failure since a success.
    failing_since: AtomicU64,
}

impl Progress {
    fn new(limit: Duration) -> Progress {
        Progress {
            born: Instant::now(),
            limit,
            failing_since: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        1 + self.born.elapsed().as_millis() as u64
    }

    fn succeeded(&self) {
        // Most commands succeed: a load, and a store only to end a run of failures.
        if self.failing_since.load(Ordering::Relaxed) != 0 {
            self.failing_since.store(0, Ordering::Relaxed);
        }
    }

    /// Notes a failure; whether failures only have lasted `limit`.
    fn failed(&self) -> bool {
        let now = self.now();
        let since =
            match self
                .failing_since
                .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => now,
                Err(since) => since,
            };
        now - since >= self.limit.as_millis() as u64
    }

    /// How long failures only have lasted.
    fn silent_for(&self) -> Duration {
        match self.failing_since.load(Ordering::Relaxed) {
            0 => Duration::ZERO,
            since => Duration::from_millis(self.now().saturating_sub(since)),
        }
    }

    /// After a failed replacement: wait another `limit` of failures before the next attempt.
    fn retry_later(&self) {
        self.failing_since.store(self.now(), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_for_the_whole_limit_call_for_a_new_connection() {
        let p = Progress::new(Duration::from_millis(300));
        std::thread::sleep(Duration::from_millis(350));
        assert!(
            !p.failed(),
            "the first failure after a long quiet is not a stall"
        );
        std::thread::sleep(Duration::from_millis(150));
        p.succeeded();
        assert!(!p.failed(), "failing again right after a success");
        std::thread::sleep(Duration::from_millis(150));
        assert!(!p.failed(), "150 ms of failures: not stuck yet");
        std::thread::sleep(Duration::from_millis(200));
        assert!(p.failed(), "350 ms of failures only: stuck");
        assert!(p.silent_for() >= Duration::from_millis(300));
        p.retry_later();
        assert!(!p.failed(), "a failed replacement waits for another limit");
        p.succeeded();
        assert_eq!(p.silent_for(), Duration::ZERO);
    }
}
