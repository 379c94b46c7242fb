//! Reading another service's log through a consumer group — the saga's delivery mechanism.
//!
//! Delivery is at-least-once and handlers are idempotent, which together make it effectively
//! exactly-once:
//! - entries are read in batches (`XREADGROUP ... COUNT`), handled concurrently, and acknowledged
//!   (`XACK`) only after their handler's script committed;
//! - a restarted consumer (same `INSTANCE` name) first re-reads its own pending entries;
//! - entries idle on any consumer for longer than `claim_idle` (a consumer that died, or a handler
//!   that failed) are taken over with `XAUTOCLAIM` and handled again;
//! - an entry delivered more than `max_attempts` times is moved to the dead-letter stream
//!   `dead:<group>:<stream>`, counted in `shoplog_dead_letters_total` and logged — never dropped
//!   silently.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::ConnectionManager;

use crate::log::LogEntry;
use crate::metrics::Metrics;

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The stream (`log:order`).
    pub stream: &'static str,
    /// The consumer group: the consuming service's name (`stock`).
    pub group: &'static str,
    /// This consumer's name within the group (the process's `INSTANCE`).
    pub name: String,
    /// Entries per read.
    pub batch: usize,
    /// How long a read blocks waiting for new entries.
    pub block: Duration,
    /// How long an entry may stay pending before another consumer takes it over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream.
    pub max_attempts: u64,
}

impl ConsumerConfig {
    /// Defaults suited to the saga: batches of 128, 1 s blocking reads, take-over after 5 s idle,
    /// dead-letter after 10 deliveries.
    pub fn new(stream: &'static str, group: &'static str, name: &str) -> ConsumerConfig {
        ConsumerConfig {
            stream,
            group,
            name: name.to_string(),
            batch: 128,
            block: Duration::from_millis(1000),
            claim_idle: Duration::from_secs(5),
            max_attempts: 10,
        }
    }

    /// The defaults, with `claim_idle` and `max_attempts` from the configuration (`CLAIM_IDLE_MS`,
    /// `MAX_DELIVERIES`) and this process's `INSTANCE` as the consumer name.
    pub fn from_config(
        stream: &'static str,
        group: &'static str,
        config: &crate::config::Config,
    ) -> ConsumerConfig {
        ConsumerConfig {
            claim_idle: config.claim_idle,
            max_attempts: config.max_deliveries.max(1),
            ..ConsumerConfig::new(stream, group, &config.instance)
        }
    }

    /// The dead-letter stream of this group.
    pub fn dead_letter_stream(&self) -> String {
        dead_letter_stream(self.group, self.stream)
    }
}

/// The dead-letter stream of `group` reading `stream`.
pub fn dead_letter_stream(group: &str, stream: &str) -> String {
    format!("dead:{group}:{stream}")
}

/// A handler's failure: the entry stays pending and is retried.
pub type HandlerError = String;

type Fields = Option<Vec<String>>;
type ReadReply = Option<Vec<(String, Vec<(String, Fields)>)>>;
type ClaimReply = (String, Vec<(String, Fields)>, Vec<String>);

fn entry(id: String, fields: Fields) -> LogEntry {
    let mut map = std::collections::BTreeMap::new();
    let flat = fields.unwrap_or_default();
    for pair in flat.chunks(2) {
        if let [k, v] = pair {
            map.insert(k.clone(), v.clone());
        }
    }
    LogEntry {
        stream_id: id,
        fields: map,
    }
}

/// Runs a consumer until the process ends. `read` is a dedicated connection to the database that
/// holds the stream (blocking reads must not share a connection with requests); `handle` is called
/// for every entry and must be idempotent.
pub async fn run<H, F>(
    cfg: ConsumerConfig,
    mut read: ConnectionManager,
    metrics: Arc<Metrics>,
    handle: H,
) where
    H: Fn(LogEntry) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send,
{
    loop {
        match consume(&cfg, &mut read, &metrics, &handle).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(stream = cfg.stream, group = cfg.group, error = %e, "consumer interrupted; resuming in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn consume<H, F>(
    cfg: &ConsumerConfig,
    conn: &mut ConnectionManager,
    metrics: &Metrics,
    handle: &H,
) -> redis::RedisResult<()>
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    ensure_group(conn, cfg).await?;
    // Own pending entries first (a restart of the same instance).
    loop {
        let entries = read_group(conn, cfg, "0", None).await?;
        if entries.is_empty() {
            break;
        }
        let handled = process(conn, cfg, metrics, handle, entries).await?;
        if handled == 0 {
            break; // all of them failed again; the claim pass retries them later
        }
    }
    let mut last_claim = Instant::now();
    loop {
        let entries = read_group(conn, cfg, ">", Some(cfg.block)).await?;
        if !entries.is_empty() {
            process(conn, cfg, metrics, handle, entries).await?;
        }
        if last_claim.elapsed() >= Duration::from_secs(1) {
            last_claim = Instant::now();
            claim(conn, cfg, metrics, handle).await?;
        }
    }
}

async fn ensure_group(
    conn: &mut ConnectionManager,
    cfg: &ConsumerConfig,
) -> redis::RedisResult<()> {
    let created: redis::RedisResult<()> = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(cfg.stream)
        .arg(cfg.group)
        .arg("0")
        .arg("MKSTREAM")
        .query_async(conn)
        .await;
    match created {
        Ok(()) => Ok(()),
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        Err(e) => Err(e),
    }
}

async fn read_group(
    conn: &mut ConnectionManager,
    cfg: &ConsumerConfig,
    from: &str,
    block: Option<Duration>,
) -> redis::RedisResult<Vec<LogEntry>> {
    let mut cmd = redis::cmd("XREADGROUP");
    cmd.arg("GROUP")
        .arg(cfg.group)
        .arg(&cfg.name)
        .arg("COUNT")
        .arg(cfg.batch);
    if let Some(b) = block {
        cmd.arg("BLOCK").arg(b.as_millis() as u64);
    }
    cmd.arg("STREAMS").arg(cfg.stream).arg(from);
    let reply: ReadReply = cmd.query_async(conn).await?;
    Ok(reply
        .unwrap_or_default()
        .into_iter()
        .flat_map(|(_, entries)| entries)
        .map(|(id, f)| entry(id, f))
        .collect())
}

/// Handles entries concurrently, acknowledges those whose handler succeeded; returns how many.
async fn process<H, F>(
    conn: &mut ConnectionManager,
    cfg: &ConsumerConfig,
    metrics: &Metrics,
    handle: &H,
    entries: Vec<LogEntry>,
) -> redis::RedisResult<usize>
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let ids: Vec<String> = entries.iter().map(|e| e.stream_id.clone()).collect();
    let results = futures::future::join_all(entries.into_iter().map(handle)).await;
    let mut acked = Vec::new();
    for (id, result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => acked.push(id),
            Err(e) => {
                metrics.incr("handler_failures_total", 1);
                tracing::warn!(stream = cfg.stream, entry = %id, error = %e, "handler failed; the entry stays pending and will be retried");
            }
        }
    }
    if !acked.is_empty() {
        let _: i64 = redis::cmd("XACK")
            .arg(cfg.stream)
            .arg(cfg.group)
            .arg(&acked)
            .query_async(conn)
            .await?;
        metrics.incr("entries_handled_total", acked.len() as u64);
    }
    Ok(acked.len())
}

/// Takes over entries idle for `claim_idle` (any consumer's), dead-letters those delivered too
/// often, and handles the rest.
async fn claim<H, F>(
    conn: &mut ConnectionManager,
    cfg: &ConsumerConfig,
    metrics: &Metrics,
    handle: &H,
) -> redis::RedisResult<()>
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let (_, claimed, _deleted): ClaimReply = redis::cmd("XAUTOCLAIM")
        .arg(cfg.stream)
        .arg(cfg.group)
        .arg(&cfg.name)
        .arg(cfg.claim_idle.as_millis() as u64)
        .arg("0-0")
        .arg("COUNT")
        .arg(cfg.batch)
        .query_async(conn)
        .await?;
    if claimed.is_empty() {
        return Ok(());
    }
    let first = claimed[0].0.clone();
    let last = claimed[claimed.len() - 1].0.clone();
    let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
        .arg(cfg.stream)
        .arg(cfg.group)
        .arg(&first)
        .arg(&last)
        .arg(claimed.len())
        .arg(&cfg.name)
        .query_async(conn)
        .await?;
    let attempts: std::collections::HashMap<String, u64> =
        pending.into_iter().map(|(id, _, _, n)| (id, n)).collect();
    let mut retry = Vec::new();
    for (id, fields) in claimed {
        let e = entry(id, fields);
        let n = attempts.get(&e.stream_id).copied().unwrap_or(0);
        if n > cfg.max_attempts {
            dead_letter(conn, cfg, metrics, &e, n).await?;
        } else {
            retry.push(e);
        }
    }
    if !retry.is_empty() {
        tracing::info!(
            stream = cfg.stream,
            group = cfg.group,
            entries = retry.len(),
            "took over idle pending entries"
        );
        metrics.incr("entries_claimed_total", retry.len() as u64);
        process(conn, cfg, metrics, handle, retry).await?;
    }
    Ok(())
}

async fn dead_letter(
    conn: &mut ConnectionManager,
    cfg: &ConsumerConfig,
    metrics: &Metrics,
    e: &LogEntry,
    attempts: u64,
) -> redis::RedisResult<()> {
    let mut add = redis::cmd("XADD");
    add.arg(cfg.dead_letter_stream()).arg("*");
    add.arg("source_stream").arg(cfg.stream);
    add.arg("source_id").arg(&e.stream_id);
    add.arg("attempts").arg(attempts);
    for (k, v) in &e.fields {
        add.arg(k).arg(v);
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.add_command(add).ignore();
    pipe.cmd("XACK")
        .arg(cfg.stream)
        .arg(cfg.group)
        .arg(&e.stream_id)
        .ignore();
    pipe.query_async::<()>(conn).await?;
    metrics.incr("dead_letters_total", 1);
    tracing::error!(
        stream = cfg.stream,
        group = cfg.group,
        entry = %e.stream_id,
        kind = e.kind(),
        attempts,
        dead_letter = %cfg.dead_letter_stream(),
        "entry failed too often; moved to the dead-letter stream (see docs/OPERATIONS.md, \"Dead letters\")"
    );
    Ok(())
}

/// Spawns a consumer task: connects (retrying) to the database at `db_url` on a dedicated
/// connection, then runs [`run`] forever. The service starts serving without waiting for it.
pub fn spawn<H, F>(cfg: ConsumerConfig, db_url: String, metrics: Arc<Metrics>, handle: H)
where
    H: Fn(LogEntry) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    tokio::spawn(async move {
        let what = format!("{} (reading {})", cfg.group, cfg.stream);
        match crate::db::connect(&db_url, &what).await {
            Ok(conn) => run(cfg, conn, metrics, handle).await,
            Err(e) => tracing::error!(error = %e, "consumer cannot start"),
        }
    });
}

/// Every (stream, consumer group) pair of the saga, with the service whose database holds the
/// stream. Services start their consumers from their own lists; the log parser and the CLI use
/// this one to report lag, stuck entries and dead letters.
pub const GROUPS: [(&str, &str, &str); 5] = [
    ("order", crate::log::ORDER_LOG, "stock"),
    ("order", crate::log::ORDER_LOG, "payment"),
    ("stock", crate::log::STOCK_LOG, "payment"),
    ("stock", crate::log::STOCK_LOG, "order"),
    ("payment", crate::log::PAYMENT_LOG, "order"),
];
