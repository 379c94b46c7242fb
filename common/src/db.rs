//! Connecting to a service's Redis and running its Lua scripts.
//!
//! A database is one Redis (`redis://host:port/`, the default) or a Redis Cluster named by some of
//! its nodes (`redis+cluster://host:port,host:port,...`, see [`DbUrl`]). Either way a service holds
//! one [`Conn`], cloned into every request: a `ConnectionManager` (one multiplexed connection,
//! reconnecting by itself after the database restarts) or redis-rs's async cluster connection
//! (one multiplexed connection per node, commands and scripts routed by the slot of their keys,
//! `MOVED`/`ASK` followed, the slot map refreshed after a failover), inside a [`ClusterLink`]
//! that replaces it when it wedges. Scripts are `redis::Script`s,
//! which call `EVALSHA` and upload the script only when Redis answers `NOSCRIPT`.

use std::time::Duration;

use std::collections::HashMap;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};

use crate::cluster_link::ClusterLink;

use crate::error::ApiError;

/// The scheme of a Redis Cluster URL: `redis+cluster://host:port,host:port,...` (seed nodes: any
/// reachable one tells the client where every slot lives).
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// Where a database lives, as configured (`ORDER_DB_URL`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbUrl {
    /// One Redis: `redis://host:port/` (any URL redis-rs reads).
    Single(String),
    /// A Redis Cluster, by seed nodes, each as `redis://host:port/`.
    Cluster(Vec<String>),
}

impl DbUrl {
    /// Reads a database URL; a cluster URL must name at least one `host:port`.
    pub fn parse(url: &str) -> Result<DbUrl, String> {
        let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) else {
            return Ok(DbUrl::Single(url.to_string()));
        };
        let nodes: Vec<String> = rest
            .trim_end_matches('/')
            .split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| format!("redis://{n}/"))
            .collect();
        if nodes.is_empty() || nodes.iter().any(|n| !n[8..].contains(':')) {
            return Err(format!(
                "`{url}` names no cluster nodes: write {CLUSTER_SCHEME}host:port,host:port,..."
            ));
        }
        Ok(DbUrl::Cluster(nodes))
    }

    /// Every node URL it names (one for a single Redis): where to subscribe to pub/sub, which a
    /// cluster delivers to clients of every node.
    pub fn nodes(&self) -> Vec<String> {
        match self {
            DbUrl::Single(url) => vec![url.clone()],
            DbUrl::Cluster(nodes) => nodes.clone(),
        }
    }
}

/// How many replicas must hold a change before it is acknowledged (`REPLICA_ACKS`, 0: none,
/// the default for a database without replicas), and how long to wait for them
/// (`REPLICA_ACK_TIMEOUT_MS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replication {
    /// Replicas that must confirm (`WAIT` count).
    pub acks: u32,
    /// How long to wait for them.
    pub timeout: Duration,
}

/// A connection to a service's database, single or cluster; cheap to clone (every clone shares
/// the same multiplexed connections), with the replication that its writes need before they
/// are acknowledged ([`Conn::replicated`]).
#[derive(Clone)]
pub struct Conn {
    link: Link,
    replication: Replication,
}

#[derive(Clone)]
enum Link {
    /// One Redis.
    Single(ConnectionManager),
    /// A Redis Cluster, through a connection that replaces itself when it wedges.
    Cluster(ClusterLink),
}

impl Conn {
    /// Whether this is a cluster, where one command may only name keys of one slot (a consumer
    /// then reads each partition's stream with its own command).
    pub fn is_cluster(&self) -> bool {
        matches!(self.link, Link::Cluster(_))
    }

    /// The self-replacing cluster connection underneath, when this is a cluster.
    pub fn cluster_link(&self) -> Option<&ClusterLink> {
        match &self.link {
            Link::Cluster(link) => Some(link),
            Link::Single(_) => None,
        }
    }

    /// This connection, its writes to be confirmed by `r.acks` replicas before they count.
    pub fn replicating(mut self, r: Replication) -> Conn {
        self.replication = r;
        self
    }

    /// Waits until the configured number of replicas hold every write this process sent so far to
    /// the primary of `key`'s slot (`WAIT` on that primary; a no-op without `REPLICA_ACKS`). Call
    /// it after a change and before acknowledging it, to a client or with `XACK`: then a primary
    /// killed at any moment loses nothing acknowledged. Fewer replicas within the timeout is an
    /// error (an HTTP 503; a consumer leaves the entry pending and handles it again).
    pub async fn replicated(&mut self, key: &str) -> redis::RedisResult<()> {
        if self.replication.acks == 0 {
            return Ok(());
        }
        self.wait_replicas(key).await
    }

    /// Like [`Conn::replicated`], but covering every write the primary of `key`'s slot holds so
    /// far, whoever sent it: `WAIT` only covers its own client's writes, so this first makes one
    /// (`SET shoplog:sync:<key's hash tag>`, a key of the same slot that holds nothing else).
    /// For an answer that reports a change another process made — a checkout decided by another
    /// order replica's consumer.
    pub async fn replicated_all(&mut self, key: &str) -> redis::RedisResult<()> {
        if self.replication.acks == 0 {
            return Ok(());
        }
        let _: () = redis::cmd("SET")
            .arg(crate::keys::sync(key))
            .arg(1)
            .query_async(self)
            .await?;
        self.wait_replicas(key).await
    }

    /// `WAIT` on the primary of `key`'s slot; an error when fewer replicas confirm in time.
    async fn wait_replicas(&mut self, key: &str) -> redis::RedisResult<()> {
        let Replication { acks, timeout } = self.replication;
        let mut wait = redis::cmd("WAIT");
        wait.arg(acks).arg(timeout.as_millis() as u64);
        let got: i64 = match &mut self.link {
            Link::Single(c) => wait.query_async(c).await?,
            Link::Cluster(link) => {
                // WAIT names no key: send it to the primary of `key`'s slot.
                use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
                let route = Route::new(key_slot(key), SlotAddr::Master);
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(route));
                let answer = link.connection().route_command(wait, route).await;
                link.observe(&answer);
                redis::FromRedisValue::from_redis_value(answer?)?
            }
        };
        if got < i64::from(acks) {
            return Err(redis::RedisError::from(std::io::Error::other(format!(
                "the change to `{key}` is made, but {got} of {acks} replicas confirmed it within {} ms \
                 (REPLICA_ACK_TIMEOUT_MS): it could be lost if its primary failed now",
                timeout.as_millis()
            ))));
        }
        Ok(())
    }
}

/// The Redis Cluster hash slot of `key`: CRC16 (XMODEM) of its hash tag (the part between the
/// first `{` and the next `}`, when not empty) or of the whole key, modulo 16,384.
pub fn key_slot(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let hashed = match key.find('{') {
        Some(open) => match key[open + 1..].find('}') {
            Some(len) if len > 0 => &bytes[open + 1..open + 1 + len],
            _ => bytes,
        },
        None => bytes,
    };
    let mut crc: u16 = 0;
    for b in hashed {
        crc ^= u16::from(*b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

impl From<Link> for Conn {
    fn from(link: Link) -> Conn {
        Conn {
            link,
            replication: Replication::default(),
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match &mut self.link {
            Link::Single(c) => c.req_packed_command(cmd),
            Link::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match &mut self.link {
            Link::Single(c) => c.req_packed_commands(cmd, offset, count),
            Link::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match &self.link {
            Link::Single(c) => c.get_db(),
            Link::Cluster(c) => c.get_db(),
        }
    }
}

/// Connects once to the database at `url` (single or cluster): `timeout` to connect, `answer`
/// to wait for any reply, `retries` of a failed request; `what` names it in log lines.
async fn open(
    url: &DbUrl,
    what: &str,
    timeout: Duration,
    answer: Duration,
    retries: usize,
) -> Result<Conn, String> {
    match url {
        DbUrl::Single(url) => {
            let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(answer))
                .set_number_of_retries(retries)
                .set_max_delay(Duration::from_millis(500));
            ConnectionManager::new_with_config(client, config)
                .await
                .map(|c| Link::Single(c).into())
                .map_err(|e| e.to_string())
        }
        DbUrl::Cluster(nodes) => {
            let client = redis::cluster::ClusterClient::builder(nodes.clone())
                .connection_timeout(timeout)
                .response_timeout(answer)
                .retries(retries.max(3) as u32)
                .min_retry_wait(100)
                .max_retry_wait(1000)
                .build()
                .map_err(|e| e.to_string())?;
            ClusterLink::open(client, what)
                .await
                .map(|c| Link::Cluster(c).into())
                .map_err(|e| e.to_string())
        }
    }
}

/// Runs commands that each name keys of one slot, and answers their replies in order: one
/// pipeline on a single Redis; on a cluster, where a pipeline may name one slot only, each on its
/// own (sent together over the nodes' multiplexed connections).
pub async fn each<T: redis::FromRedisValue>(
    conn: &mut Conn,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    if conn.is_cluster() {
        let sent = cmds.into_iter().map(|cmd| {
            let mut conn = conn.clone();
            async move { cmd.query_async::<T>(&mut conn).await }
        });
        return futures::future::join_all(sent).await.into_iter().collect();
    }
    let mut pipe = redis::pipe();
    for cmd in cmds {
        pipe.add_command(cmd);
    }
    pipe.query_async(conn).await
}

/// One page of `SCAN … MATCH pattern` on one node from `cursor`: the next cursor (0: done) and
/// the keys found. On a cluster, call it on each of [`primaries`].
pub async fn scan_page(
    node: &mut Conn,
    cursor: u64,
    pattern: &str,
) -> redis::RedisResult<(u64, Vec<String>)> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("MATCH")
        .arg(pattern)
        .arg("COUNT")
        .arg(1000)
        .query_async(node)
        .await
}

/// A connection to each primary that holds keys: the database itself when it is one Redis;
/// each primary of a cluster (from `CLUSTER NODES`), for what must visit every node, such as a
/// `SCAN` of all keys.
pub async fn primaries(conn: &mut Conn) -> anyhow::Result<Vec<Conn>> {
    if !conn.is_cluster() {
        return Ok(vec![conn.clone()]);
    }
    let nodes: String = redis::cmd("CLUSTER").arg("NODES").query_async(conn).await?;
    let mut out = Vec::new();
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(addr), Some(flags)) = (fields.get(1), fields.get(2)) else {
            continue;
        };
        let flags: Vec<&str> = flags.split(',').collect();
        if !flags.contains(&"master") || flags.iter().any(|f| f.starts_with("fail")) {
            continue;
        }
        let addr = addr.split('@').next().unwrap_or(addr);
        let url = format!("redis://{addr}/");
        out.push(connect_once(&url, "a cluster primary", Duration::from_secs(5)).await?);
    }
    Ok(out)
}

/// `url` read as a database URL, an error naming `what` when it is not one — before any attempt
/// to connect, so that a typo is said at once instead of retried.
fn checked(url: &str, what: &str) -> anyhow::Result<DbUrl> {
    let parsed = DbUrl::parse(url).map_err(|e| anyhow::anyhow!("{what}: {e}"))?;
    if let DbUrl::Single(u) = &parsed {
        redis::Client::open(u.as_str())
            .map_err(|e| anyhow::anyhow!("{what}: `{url}` is not a Redis URL: {e}"))?;
    }
    Ok(parsed)
}

/// Whether `e` is the database's state, not the request's fault: it did not answer, is loading,
/// busy, failing over, without its replicas, or did not confirm a change replicated (a retry
/// later may succeed). The HTTP layer answers 503 for these; a consumer retries such an entry
/// however long it takes, never dead-letters it.
pub fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_timeout()
        || e.is_cluster_error()
        || matches!(
            e.code(),
            Some("BUSY" | "LOADING" | "TRYAGAIN" | "MASTERDOWN" | "CLUSTERDOWN" | "NOREPLICAS")
        )
}

/// Connects to `url`, retrying every second until it answers (a service may start before its
/// database). `what` names the database in log lines.
pub async fn connect(url: &str, what: &str) -> anyhow::Result<Conn> {
    let parsed = checked(url, what)?;
    let mut attempt = 0u32;
    loop {
        match open(
            &parsed,
            what,
            Duration::from_secs(2),
            Duration::from_secs(10),
            3,
        )
        .await
        {
            Ok(conn) => {
                tracing::info!(database = what, url, "connected");
                return Ok(conn);
            }
            Err(e) => {
                attempt += 1;
                if attempt == 1 || attempt.is_multiple_of(10) {
                    tracing::warn!(database = what, url, error = %e, attempt, "cannot connect yet; retrying every second");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Whether the database answers `PING` within a second. A cluster connection counts a
/// `PING` left unanswered as a failure (see [`ClusterLink`]), as it never sees that reply.
pub async fn ping(conn: &Conn) -> bool {
    let mut conn = conn.clone();
    let cmd = redis::cmd("PING");
    let ping = cmd.query_async::<String>(&mut conn);
    let answered = tokio::time::timeout(Duration::from_secs(1), ping).await;
    if let (Err(_), Some(link)) = (&answered, conn.cluster_link()) {
        link.observe::<()>(&Err(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "PING unanswered for 1 s",
        ))));
    }
    matches!(answered, Ok(Ok(_)))
}

/// What a transition script answers: a status word, then data.
///
/// Scripts never raise errors for business outcomes; they return `{"OK", ...}`, `{"NOT_FOUND"}`,
/// `{"INSUFFICIENT", have}`, `{"OVERFLOW"}` or `{"CONFLICT", state}`, and change nothing unless
/// the status is `OK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied and logged; the payload is script-specific.
    Ok(Vec<String>),
    /// The entity does not exist.
    NotFound,
    /// Not enough stock or credit; carries the current amount.
    Insufficient(String),
    /// The result would not fit in a signed 64-bit integer.
    Overflow,
    /// The entity's state forbids the change; carries the state.
    Conflict(String),
}

/// A script's answer split into its status word and the data after it (every transition script
/// answers `{STATUS, data...}`); an empty answer is an error.
pub fn status_words(v: redis::Value) -> Result<(String, Vec<String>), redis::ParsingError> {
    let mut parts: Vec<String> = redis::FromRedisValue::from_redis_value(v)?;
    if parts.is_empty() {
        return Err("empty script answer".into());
    }
    let status = parts.remove(0);
    Ok((status, parts))
}

impl redis::FromRedisValue for Outcome {
    fn from_redis_value(v: redis::Value) -> Result<Self, redis::ParsingError> {
        let (status, parts) = status_words(v)?;
        let first = parts.first().cloned().unwrap_or_default();
        Ok(match status.as_str() {
            "OK" => Outcome::Ok(parts),
            "NOT_FOUND" => Outcome::NotFound,
            "INSUFFICIENT" => Outcome::Insufficient(first),
            "OVERFLOW" => Outcome::Overflow,
            "CONFLICT" => Outcome::Conflict(first),
            other => return Err(format!("unknown script status `{other}`").into()),
        })
    }
}

/// Connects to `url` once, giving up after `timeout` — for command-line tools, which should say
/// what is wrong instead of waiting forever.
pub async fn connect_once(url: &str, what: &str, timeout: Duration) -> anyhow::Result<Conn> {
    let parsed = checked(url, what)?;
    let opened = open(&parsed, what, timeout, Duration::from_secs(60), 0);
    match tokio::time::timeout(timeout, opened).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(anyhow::anyhow!(
            "cannot reach {what} at {url}: {e} (is the stack up? `shoplog status`; or set the *_DB_URL variables)"
        )),
        Err(_) => Err(anyhow::anyhow!(
            "{what} at {url} did not answer within {} s (is the stack up? `shoplog status`)",
            timeout.as_secs()
        )),
    }
}

/// A stored record that cannot be read: names the key and the field, never a default.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{key}` has no valid `{field}` field (found {found:?}); the record was edited by hand or written by another version")]
pub struct RecordError {
    /// The Redis key.
    pub key: String,
    /// The missing or malformed field.
    pub field: &'static str,
    /// What is there (`None`: missing).
    pub found: Option<String>,
}

impl From<RecordError> for ApiError {
    fn from(e: RecordError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

/// Reads typed fields of one stored hash, each failure naming the key and field.
pub struct Fields<'a> {
    key: &'a str,
    hash: &'a HashMap<String, String>,
}

impl<'a> Fields<'a> {
    /// The fields of `hash`, stored at `key`.
    pub fn new(key: &'a str, hash: &'a HashMap<String, String>) -> Fields<'a> {
        Fields { key, hash }
    }

    fn bad(&self, field: &'static str) -> RecordError {
        RecordError {
            key: self.key.to_string(),
            field,
            found: self.hash.get(field).cloned(),
        }
    }

    /// A required text field (may be empty).
    pub fn text(&self, field: &'static str) -> Result<&'a str, RecordError> {
        self.hash
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| self.bad(field))
    }

    /// A required field parsed by `parse`.
    pub fn parsed<T>(
        &self,
        field: &'static str,
        parse: impl Fn(&str) -> Option<T>,
    ) -> Result<T, RecordError> {
        parse(self.text(field)?).ok_or_else(|| self.bad(field))
    }

    /// A required integer field.
    pub fn int<T: std::str::FromStr>(&self, field: &'static str) -> Result<T, RecordError> {
        self.parsed(field, |s| s.parse().ok())
    }

    /// A required `0`/`1` flag.
    pub fn flag(&self, field: &'static str) -> Result<bool, RecordError> {
        self.parsed(field, |s| match s {
            "0" => Some(false),
            "1" => Some(true),
            _ => None,
        })
    }
}

/// Why reading or changing a stored record failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database did not answer, or answered an error.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Redis(r) => ApiError::from(r),
            StoreError::Record(r) => ApiError::from(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_slots_are_redis_clusters() {
        // Values of CLUSTER KEYSLOT on Redis 7.
        assert_eq!(key_slot("foo"), 12182);
        assert_eq!(key_slot("123456789"), 12739);
        assert_eq!(key_slot("order:{o3.60}:17"), key_slot("log:order:{o3.60}"));
        // An empty tag hashes the whole key.
        assert_ne!(key_slot("{}foo"), key_slot("foo"));
    }

    #[test]
    fn a_database_url_names_one_redis_or_a_cluster_by_its_seed_nodes() {
        assert_eq!(
            DbUrl::parse("redis://127.0.0.1:6401/"),
            Ok(DbUrl::Single("redis://127.0.0.1:6401/".into()))
        );
        assert_eq!(
            DbUrl::parse("redis+cluster://10.0.0.1:7000, 10.0.0.2:7000/"),
            Ok(DbUrl::Cluster(vec![
                "redis://10.0.0.1:7000/".into(),
                "redis://10.0.0.2:7000/".into()
            ]))
        );
        for bad in ["redis+cluster://", "redis+cluster://host-without-port"] {
            let e = DbUrl::parse(bad).unwrap_err();
            assert!(e.contains("host:port"), "{e}");
        }
    }
}
