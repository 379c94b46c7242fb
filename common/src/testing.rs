//! Test helpers: a real, throw-away `redis-server` on a free port.
//!
//! Integration tests start one per test (they are cheap: a few milliseconds), so tests never share
//! state and run in parallel. Needs `redis-server` on `PATH` (`apt-get install redis-server`).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process that is killed when dropped.
pub struct RedisServer {
    /// Its port on 127.0.0.1.
    pub port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Its process id (to stop it with SIGSTOP in a test, as a frozen host would be).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Starts a server on a free port and waits until it answers.
    ///
    /// # Panics
    /// When `redis-server` is missing or does not come up within 10 s — the test cannot run.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    /// Starts a one-node Redis Cluster that serves every hash slot. A script whose keys fall in
    /// two slots fails there (`CROSSSLOT`), as does one that touches a key of another slot than
    /// its declared keys: tests run the scripts against it to prove that each touches one slot.
    ///
    /// # Panics
    /// As [`RedisCluster::start`].
    pub fn start_cluster() -> RedisServer {
        RedisCluster::start(1).nodes.remove(0)
    }

    fn start_with(extra: &[&str]) -> RedisServer {
        for _ in 0..5 {
            if let Some(server) = Self::try_start(extra) {
                return server;
            }
        }
        panic!("could not start redis-server (is it installed? apt-get install redis-server)");
    }

    fn try_start(extra: &[&str]) -> Option<RedisServer> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
            ])
            .args(["--appendonly", "no"])
            .args(extra)
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut server = RedisServer {
            port,
            child,
            _dir: dir,
        };
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(10) {
            if let Ok(Some(_)) = server.child.try_wait() {
                return None; // port taken meanwhile
            }
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(server);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    /// `redis://127.0.0.1:<port>/`
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// A connection to this server.
    pub async fn conn(&self) -> crate::db::Conn {
        match crate::db::connect(&self.url(), "test").await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to the test redis: {e}"),
        }
    }
}

/// What `redis-cli -p <port> <args>` prints (empty when it cannot run).
fn redis_cli(port: u16, args: &[&str]) -> String {
    Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default()
}

/// A Redis Cluster of `n` primaries, each a [`RedisServer`], the hash slots split evenly between
/// them, optionally each with replicas: a service database spread over several nodes, as on a
/// real cluster.
pub struct RedisCluster {
    /// Its primaries, in slot order.
    pub nodes: Vec<RedisServer>,
    /// Replicas: `replicas[i]` replicate `nodes[i % nodes.len()]`.
    pub replicas: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts `n` cluster-enabled servers, gives each an equal range of the 16,384 slots, makes
    /// them meet, and waits until every node reports the cluster ready.
    ///
    /// # Panics
    /// As [`RedisServer::start`], or when the cluster is not ready within 20 s.
    pub fn start(n: usize) -> RedisCluster {
        Self::start_with_replicas(n, 0)
    }

    /// As [`RedisCluster::start`], and `r` replicas for each primary, each in sync before this
    /// returns.
    ///
    /// # Panics
    /// As [`RedisCluster::start`], or when a replica is not in sync within 20 s.
    pub fn start_with_replicas(n: usize, r: usize) -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..n.max(1))
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes"]))
            .collect();
        let replicas: Vec<RedisServer> = (0..nodes.len() * r)
            .map(|_| RedisServer::start_with(&["--cluster-enabled", "yes"]))
            .collect();
        let per = 16384 / nodes.len();
        for (i, node) in nodes.iter().enumerate() {
            let first = i * per;
            let last = if i + 1 == nodes.len() {
                16383
            } else {
                first + per - 1
            };
            redis_cli(
                node.port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            );
            if i > 0 {
                redis_cli(
                    node.port,
                    &["CLUSTER", "MEET", "127.0.0.1", &nodes[0].port.to_string()],
                );
            }
        }
        let first = nodes[0].port.to_string();
        for replica in &replicas {
            redis_cli(replica.port, &["CLUSTER", "MEET", "127.0.0.1", &first]);
        }
        let total = nodes.len() + replicas.len();
        let started = Instant::now();
        let ready = |port: u16| {
            let info = redis_cli(port, &["CLUSTER", "INFO"]);
            info.contains("cluster_state:ok")
                && info.contains(&format!("cluster_known_nodes:{total}"))
        };
        while !nodes.iter().chain(&replicas).all(|n| ready(n.port)) {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the {total}-node cluster did not become ready"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        for (i, replica) in replicas.iter().enumerate() {
            let primary = redis_cli(nodes[i % nodes.len()].port, &["CLUSTER", "MYID"]);
            redis_cli(replica.port, &["CLUSTER", "REPLICATE", primary.trim()]);
        }
        let started = Instant::now();
        while !replicas
            .iter()
            .all(|n| redis_cli(n.port, &["INFO", "replication"]).contains("master_link_status:up"))
        {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the replicas did not get in sync"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        RedisCluster { nodes, replicas }
    }

    /// `redis+cluster://127.0.0.1:<port>,...`: every node as a seed.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        format!("{}{}", crate::db::CLUSTER_SCHEME, seeds.join(","))
    }

    /// A cluster connection to it.
    pub async fn conn(&self) -> crate::db::Conn {
        match crate::db::connect(&self.url(), "test cluster").await {
            Ok(c) => c,
            Err(e) => panic!("cannot connect to the test cluster: {e}"),
        }
    }
}

/// Polls `check` every 50 ms until it holds or `timeout` passes; whether it held. For tests that
/// wait on background work (consumers, sagas).
pub async fn until(timeout: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A saga's order-side record as a unit test needs it: saga `s-<order>` in partition 0 of order
/// `order` by `user`, total 3, no items, no reason, no pending participant. One constructor for
/// every test that judges a record (the list's filters, the recovery pass's decisions), so that
/// a field added to [`crate::saga::SagaRecord`] is filled in one place.
pub fn saga_record(
    order: &str,
    user: &str,
    decision: crate::saga::Decision,
    done: bool,
    started_ms: u64,
) -> crate::saga::SagaRecord {
    crate::saga::SagaRecord {
        id: format!("s-{order}"),
        part: 0,
        order: order.into(),
        user: user.into(),
        total: 3,
        items: "[]".into(),
        decision,
        reason: String::new(),
        started_ms,
        pending: Vec::new(),
        done,
    }
}
