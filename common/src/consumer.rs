//! Reading another service's log through a consumer group — the saga's delivery mechanism.
//!
//! Delivery is at-least-once and handlers are idempotent, which together make it effectively
//! exactly-once:
//! - entries are read in batches (`XREADGROUP ... COUNT`), handled concurrently, and acknowledged
//!   (`XACK`) only after their handler's script committed;
//! - a restarted consumer (same `INSTANCE` name) first re-reads its own pending entries;
//! - entries idle on any consumer for longer than `claim_idle` (a consumer that died, or a handler
//!   that failed) are taken over with `XAUTOCLAIM` and handled again;
//! - an entry delivered more than `max_attempts` times is tried once more, and moved to the
//!   dead-letter stream `dead:<group>:<stream>` (counted in `shoplog_dead_letters_total` and
//!   logged — never dropped silently) unless it failed for want of its database
//!   ([`HandlerError::is_transient`]: down, failing over, replicas behind): such an entry stays
//!   pending however long the outage lasts.
//!
//! [`spawn_for`] starts, for one service, a consumer per stream the participants table says it
//! reads ([`crate::saga::streams_read_by`]); the returned [`Consumers`] owns the tasks: `/health`
//! answers 503 once one of them stopped, and shutdown stops them.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::db::Conn;
use futures::FutureExt;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::db::RecordError;
use crate::event::EventError;
use crate::keys;
use crate::log::LogEntry;
use crate::metrics::Metrics;
use crate::saga::Participant;

/// Where and how to consume.
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The log (`log:order`), for log lines and metrics.
    pub log: &'static str,
    /// Its streams: one per partition (`log:order:{o0.43}`, …).
    pub streams: Vec<String>,
    /// The consumer group: the consuming service's name (`stock`).
    pub group: &'static str,
    /// This consumer's name within the group (the process's `INSTANCE`).
    pub name: String,
    /// Entries per read (per stream).
    pub batch: usize,
    /// How long a read blocks waiting for new entries.
    pub block: Duration,
    /// How long an entry may stay pending before another consumer takes it over.
    pub claim_idle: Duration,
    /// Deliveries after which an entry goes to the dead-letter stream.
    pub max_attempts: u64,
    /// The event kinds (`type`) the handler acts on, or `None` for every entry. Other entries are
    /// acknowledged as they arrive, without being decoded or handed to the handler: a service
    /// reads whole logs but acts on a few of their events.
    pub kinds: Option<Vec<&'static str>>,
}

impl ConsumerConfig {
    /// Defaults suited to the saga: batches of 128, 1 s blocking reads, take-over after 5 s idle,
    /// dead-letter after 10 deliveries.
    pub fn new(
        log: &'static str,
        streams: Vec<String>,
        group: &'static str,
        name: &str,
    ) -> ConsumerConfig {
        ConsumerConfig {
            log,
            streams,
            group,
            name: name.to_string(),
            batch: 128,
            block: Duration::from_millis(1000),
            claim_idle: Duration::from_secs(5),
            max_attempts: 10,
            kinds: None,
        }
    }

    /// The defaults, with `claim_idle` and `max_attempts` from the configuration (`CLAIM_IDLE_MS`,
    /// `MAX_DELIVERIES`) and this process's `INSTANCE` as the consumer name.
    pub fn from_config(
        log: &'static str,
        streams: Vec<String>,
        group: &'static str,
        config: &crate::config::Config,
    ) -> ConsumerConfig {
        ConsumerConfig {
            claim_idle: config.claim_idle,
            max_attempts: config.max_deliveries.max(1),
            ..ConsumerConfig::new(log, streams, group, &config.instance)
        }
    }
}

/// A handler's failure: the entry stays pending, is retried, and is dead-lettered after
/// `max_attempts` deliveries.
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    /// The entry cannot be decoded (it will fail again: it ends as a dead letter).
    #[error(transparent)]
    Event(#[from] EventError),
    /// The database did not answer or answered an error; a retry may succeed.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A stored record the handler needs is malformed.
    #[error(transparent)]
    Record(#[from] RecordError),
}

impl HandlerError {
    /// Whether the failure is the database's, not the entry's: it did not answer, is loading,
    /// busy, failing over or without its replicas, or did not confirm the change replicated.
    /// Such an entry is retried for as long as it takes, never dead-lettered.
    pub fn is_transient(&self) -> bool {
        match self {
            HandlerError::Redis(e) => crate::db::is_transient(e),
            HandlerError::Event(_) | HandlerError::Record(_) => false,
        }
    }
}

type Fields = Option<Vec<String>>;
type ReadReply = Option<Vec<(String, Vec<(String, Fields)>)>>;
type ClaimReply = (String, Vec<(String, Fields)>, Vec<String>);

/// An entry as delivered: the stream (partition) it came from, its id, and the entry, unless it
/// is of a kind the handler does not act on (`None`: only acknowledged).
struct Delivered {
    stream: String,
    id: String,
    entry: Option<LogEntry>,
}

impl Delivered {
    /// The delivery of entry `id` of `stream` with `fields` (`None`: deleted from the stream
    /// since, delivered to the handler as an empty entry), to a consumer acting on `kinds`.
    fn new(stream: &str, id: String, fields: Fields, kinds: Option<&[&str]>) -> Delivered {
        let flat = fields.unwrap_or_default();
        let wanted = match kinds {
            None => true,
            Some(kinds) => flat
                .chunks(2)
                .find(|pair| pair.first().is_some_and(|k| k == crate::log::TYPE_FIELD))
                .and_then(|pair| pair.get(1))
                .is_none_or(|kind| kinds.contains(&kind.as_str())),
        };
        let entry = wanted.then(|| entry(id.clone(), flat));
        Delivered {
            stream: stream.to_string(),
            id,
            entry,
        }
    }
}

fn entry(id: String, flat: Vec<String>) -> LogEntry {
    let mut map = std::collections::BTreeMap::new();
    let mut it = flat.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        map.insert(k, v);
    }
    LogEntry {
        stream_id: id,
        fields: map,
    }
}

/// Runs a consumer until the process ends. `read` is a dedicated connection to the database that
/// holds the streams (blocking reads must not share a connection with requests); `handle` is
/// called for every entry and must be idempotent.
pub async fn run<H, F>(cfg: ConsumerConfig, mut read: Conn, metrics: Arc<Metrics>, handle: H)
where
    H: Fn(LogEntry) -> F + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send,
{
    loop {
        match consume(&cfg, &mut read, &metrics, &handle).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(log = cfg.log, group = cfg.group, error = %e, "consumer interrupted; resuming in 1 s");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

async fn consume<H, F>(
    cfg: &ConsumerConfig,
    conn: &mut Conn,
    metrics: &Metrics,
    handle: &H,
) -> redis::RedisResult<()>
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    ensure_groups(conn, cfg).await?;
    // Own pending entries first (a restart of the same instance).
    loop {
        let entries = read_group(conn, cfg, "0", None, Acks::default()).await?;
        if entries.is_empty() {
            break;
        }
        let (handled, acks) = process(metrics, handle, entries).await;
        acks.send(conn, cfg).await?;
        if handled == 0 {
            break; // all of them failed again; the claim pass retries them later
        }
    }
    let mut last_claim = Instant::now();
    let mut acks = Acks::default();
    loop {
        // The last batch's acknowledgements travel with the next read: one round trip, and one
        // wait for the database's fsync instead of two, per batch.
        let entries =
            read_group(conn, cfg, ">", Some(cfg.block), std::mem::take(&mut acks)).await?;
        if !entries.is_empty() {
            acks = process(metrics, handle, entries).await.1;
        }
        if last_claim.elapsed() >= Duration::from_secs(1) {
            last_claim = Instant::now();
            std::mem::take(&mut acks).send(conn, cfg).await?;
            claim(conn, cfg, metrics, handle).await?;
        }
    }
}

/// Acknowledgements due, by stream: entries whose handler succeeded and entries the handler does
/// not act on. Sent as one `XACK` per stream, either alone ([`Acks::send`]) or ahead of the next
/// read in the same pipeline ([`read_group`]).
#[derive(Default)]
struct Acks(BTreeMap<String, Vec<String>>);

impl Acks {
    fn add(&mut self, stream: String, id: String) {
        self.0.entry(stream).or_default().push(id);
    }

    /// One `XACK` per stream.
    fn commands(&self, cfg: &ConsumerConfig) -> Vec<redis::Cmd> {
        self.0
            .iter()
            .map(|(stream, ids)| {
                let mut cmd = redis::cmd("XACK");
                cmd.arg(stream).arg(cfg.group).arg(ids);
                cmd
            })
            .collect()
    }

    /// Sends them now (pipelined; on a cluster, each to its stream's node).
    async fn send(self, conn: &mut Conn, cfg: &ConsumerConfig) -> redis::RedisResult<()> {
        if self.0.is_empty() {
            return Ok(());
        }
        crate::db::each::<redis::Value>(conn, self.commands(cfg)).await?;
        Ok(())
    }
}

/// Creates the group on every stream (and the stream, when missing).
async fn ensure_groups(conn: &mut Conn, cfg: &ConsumerConfig) -> redis::RedisResult<()> {
    for stream in &cfg.streams {
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(stream)
            .arg(cfg.group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(conn)
            .await;
        match created {
            Ok(()) => {}
            Err(e) if e.code() == Some("BUSYGROUP") => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// How long a consumer on a Redis Cluster waits before reading again when every partition's
/// stream was empty: one blocking read cannot name streams of several slots there.
const CLUSTER_IDLE_POLL: Duration = Duration::from_millis(10);

/// Sends `acks`, then reads new (`from` = `>`) or own pending (`0`) entries of every stream of
/// the log: on one Redis, the `XACK`s and one `XREADGROUP` naming every stream, blocking up to
/// `block`, in one pipeline; on a cluster, the `XACK`s first, then one non-blocking `XREADGROUP`
/// per stream (each its own slot), sent together, then a short pause when all were empty.
async fn read_group(
    conn: &mut Conn,
    cfg: &ConsumerConfig,
    from: &str,
    block: Option<Duration>,
    acks: Acks,
) -> redis::RedisResult<Vec<Delivered>> {
    let read = |streams: &[String], block: Option<Duration>| {
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(cfg.group)
            .arg(&cfg.name)
            .arg("COUNT")
            .arg(cfg.batch);
        if let Some(b) = block {
            cmd.arg("BLOCK").arg(b.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(streams);
        for _ in streams {
            cmd.arg(from);
        }
        cmd
    };
    let replies: Vec<ReadReply> = if conn.is_cluster() {
        acks.send(conn, cfg).await?;
        if cfg.streams.len() > 1 {
            let cmds = cfg.streams.chunks(1).map(|s| read(s, None)).collect();
            let replies: Vec<ReadReply> = crate::db::each(conn, cmds).await?;
            if block.is_some() && replies.iter().all(Option::is_none) {
                tokio::time::sleep(CLUSTER_IDLE_POLL).await;
            }
            replies
        } else {
            vec![read(&cfg.streams, block).query_async(conn).await?]
        }
    } else {
        let mut pipe = redis::pipe();
        for ack in acks.commands(cfg) {
            pipe.add_command(ack).ignore();
        }
        pipe.add_command(read(&cfg.streams, block));
        let (reply,): (ReadReply,) = pipe.query_async(conn).await?;
        vec![reply]
    };
    let kinds = cfg.kinds.as_deref();
    Ok(replies
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|(stream, entries)| {
            entries
                .into_iter()
                .map(move |(id, f)| Delivered::new(&stream, id, f, kinds))
        })
        .collect())
}

/// Handles entries concurrently; answers how many are done (handled, or not for the handler)
/// and their acknowledgements, to send: entries whose handler failed stay pending.
async fn process<H, F>(metrics: &Metrics, handle: &H, delivered: Vec<Delivered>) -> (usize, Acks)
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let mut acks = Acks::default();
    let mut count = 0;
    let mut ids: Vec<(String, String)> = Vec::with_capacity(delivered.len());
    let mut work = Vec::with_capacity(delivered.len());
    for d in delivered {
        match d.entry {
            Some(e) => {
                ids.push((d.stream, d.id));
                work.push(handle(e));
            }
            None => {
                acks.add(d.stream, d.id);
                count += 1;
            }
        }
    }
    let skipped = count;
    let results = futures::future::join_all(work).await;
    for ((stream, id), result) in ids.into_iter().zip(results) {
        match result {
            Ok(()) => {
                acks.add(stream, id);
                count += 1;
            }
            Err(e) => {
                metrics.incr("handler_failures_total", 1);
                tracing::warn!(%stream, entry = %id, error = %e, "handler failed; the entry stays pending and will be retried");
            }
        }
    }
    metrics.incr("entries_handled_total", (count - skipped) as u64);
    (count, acks)
}

/// Takes over entries idle for `claim_idle` (any consumer's) on every stream, dead-letters those
/// delivered too often, and handles the rest.
async fn claim<H, F>(
    conn: &mut Conn,
    cfg: &ConsumerConfig,
    metrics: &Metrics,
    handle: &H,
) -> redis::RedisResult<()>
where
    H: Fn(LogEntry) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    let mut retry = Vec::new();
    for stream in &cfg.streams {
        let (_, claimed, _deleted): ClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(stream)
            .arg(cfg.group)
            .arg(&cfg.name)
            .arg(cfg.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(cfg.batch)
            .query_async(conn)
            .await?;
        let (Some(first), Some(last)) = (claimed.first(), claimed.last()) else {
            continue;
        };
        let pending: Vec<(String, String, u64, u64)> = redis::cmd("XPENDING")
            .arg(stream)
            .arg(cfg.group)
            .arg(&first.0)
            .arg(&last.0)
            .arg(claimed.len())
            .arg(&cfg.name)
            .query_async(conn)
            .await?;
        let attempts: std::collections::HashMap<String, u64> =
            pending.into_iter().map(|(id, _, _, n)| (id, n)).collect();
        for (id, fields) in claimed {
            let d = Delivered::new(stream, id, fields, cfg.kinds.as_deref());
            let n = attempts.get(&d.id).copied().unwrap_or(0);
            match d.entry {
                Some(e) if n > cfg.max_attempts => {
                    // Delivered too often: one last try decides. A failure for want of a
                    // database (down, failing over, its replicas behind) is no fault of the
                    // entry's: it stays pending and is tried again, however long the outage.
                    match handle(e.clone()).await {
                        Ok(()) => {
                            let mut ack = redis::cmd("XACK");
                            ack.arg(stream).arg(cfg.group).arg(&e.stream_id);
                            ack.query_async::<()>(conn).await?;
                        }
                        Err(err) if err.is_transient() => {
                            metrics.incr("handler_failures_total", 1);
                            tracing::warn!(%stream, entry = %e.stream_id, attempts = n, error = %err, "handler failed again for want of its database; the entry stays pending");
                        }
                        Err(_) => dead_letter(conn, cfg, metrics, stream, &e, n).await?,
                    }
                }
                _ => retry.push(d),
            }
        }
    }
    if !retry.is_empty() {
        tracing::info!(
            log = cfg.log,
            group = cfg.group,
            entries = retry.len(),
            "took over idle pending entries"
        );
        metrics.incr("entries_claimed_total", retry.len() as u64);
        process(metrics, handle, retry)
            .await
            .1
            .send(conn, cfg)
            .await?;
    }
    Ok(())
}

async fn dead_letter(
    conn: &mut Conn,
    cfg: &ConsumerConfig,
    metrics: &Metrics,
    stream: &str,
    e: &LogEntry,
    attempts: u64,
) -> redis::RedisResult<()> {
    let dead = keys::dead_letter(cfg.group, stream);
    let mut add = redis::cmd("XADD");
    add.arg(&dead).arg("*");
    add.arg("source_stream").arg(stream);
    add.arg("source_id").arg(&e.stream_id);
    add.arg("attempts").arg(attempts);
    for (k, v) in &e.fields {
        add.arg(k).arg(v);
    }
    let mut pipe = redis::pipe();
    pipe.atomic();
    pipe.add_command(add).ignore();
    pipe.cmd("XACK")
        .arg(stream)
        .arg(cfg.group)
        .arg(&e.stream_id)
        .ignore();
    pipe.query_async::<()>(conn).await?;
    metrics.incr("dead_letters_total", 1);
    tracing::error!(
        %stream,
        group = cfg.group,
        entry = %e.stream_id,
        kind = e.kind(),
        attempts,
        dead_letter = %dead,
        "entry failed too often; moved to the dead-letter stream (see docs/OPERATIONS.md, \"Dead letters\")"
    );
    Ok(())
}

/// The Redis URL of each service's database, by service name (`order`, `stock`, `payment`, and
/// any participant a table adds): where a consumer finds the stream it reads.
pub type DbUrls = BTreeMap<&'static str, String>;

/// The database URLs of the configured stack.
pub fn db_urls(config: &crate::config::Config) -> DbUrls {
    BTreeMap::from([
        ("order", config.order_db_url.clone()),
        ("stock", config.stock_db_url.clone()),
        ("payment", config.payment_db_url.clone()),
    ])
}

/// A service's consumer tasks. `/health` asks [`Consumers::alive`]: a replica whose consumer
/// died must not report healthy, since it would acknowledge requests whose saga never advances.
#[derive(Default)]
pub struct Consumers {
    tasks: Mutex<Vec<(String, JoinHandle<()>)>>,
}

impl Consumers {
    /// Whether every consumer task still runs (a consumer never returns on its own).
    pub fn alive(&self) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        let dead: Vec<&str> = tasks
            .iter()
            .filter(|(_, t)| t.is_finished())
            .map(|(n, _)| n.as_str())
            .collect();
        if !dead.is_empty() {
            tracing::error!(consumers = ?dead, "a consumer task stopped; this replica reports unhealthy");
        }
        dead.is_empty()
    }

    /// Stops every consumer (at shutdown). An entry being handled stays pending and is handled
    /// again by the next consumer to read it; handlers are idempotent.
    pub async fn stop(&self) {
        let tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        for (name, t) in tasks {
            t.abort();
            let _ = t.await;
            tracing::info!(consumer = %name, "consumer stopped");
        }
    }
}

/// What a saga handler needs: the service's database, its log ids, the participants table and
/// its metrics. One per service, cloned into every handled entry.
#[derive(Clone)]
pub struct SagaCtx {
    /// The service's own database.
    pub db: Conn,
    /// Log ids.
    pub ids: Arc<crate::ids::IdPool>,
    /// Who takes part in the saga.
    pub parts: &'static [Participant],
    /// The service's own partitions.
    pub layout: crate::partition::Layout,
    /// The service's metrics.
    pub metrics: Arc<Metrics>,
}

/// A participant's step, boxed so that a handler can choose among its scripts.
pub type StepFuture<'a> = std::pin::Pin<
    Box<dyn Future<Output = Result<crate::saga::Reply, redis::RedisError>> + Send + 'a>,
>;

/// Runs a participant's step for `event` (entry `e`) in a span `saga_entry{saga, order, event,
/// entry}` and logs its answer at `debug` (refusals with their reason, duplicates as such): the
/// saga path every participant shows the same way.
pub async fn run_step(
    service: &str,
    e: &LogEntry,
    event: &crate::event::Event,
    step: StepFuture<'_>,
) -> Result<(), HandlerError> {
    let (saga, order) = event.saga().unwrap_or_default();
    let span =
        tracing::debug_span!("saga_entry", saga, order, event = event.kind(), entry = %e.stream_id);
    async move {
        match step.await? {
            crate::saga::Reply::Rejected(reason) => tracing::debug!(%reason, "{service} refused"),
            other => tracing::debug!(reply = other.name(), "{service} step done"),
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// The start-up every saga service shares (order, stock, payment, and any participant a table
/// adds): its metrics, its id pool (first block leased), its database (`urls[service]`), and a
/// consumer on every stream the table says it reads, each entry handed to `handler`.
pub async fn start_saga_service<F>(
    service: &'static str,
    config: &crate::config::Config,
    parts: &'static [Participant],
    urls: &DbUrls,
    handler: fn(SagaCtx, LogEntry) -> F,
) -> anyhow::Result<(SagaCtx, Arc<Consumers>)>
where
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let metrics = Arc::new(Metrics::new(service));
    let ids = crate::ids::IdPool::new(&config.ids_url, config.id_block, metrics.clone());
    ids.prefill().await;
    let url = urls
        .get(service)
        .ok_or_else(|| anyhow::anyhow!("no database URL for `{service}`"))?;
    let mut db = crate::db::connect(url, &format!("{service}-db"))
        .await?
        .replicating(config.replication);
    let layout = ensure_layout(&mut db, service, config.partitions_of(service)).await?;
    tracing::info!(%layout, "database layout checked");
    let ctx = SagaCtx {
        db,
        ids,
        parts,
        layout,
        metrics: metrics.clone(),
    };
    let handler_ctx = ctx.clone();
    let consumers = spawn_for(service, parts, urls, config, metrics, move |_, e| {
        handler(handler_ctx.clone(), e)
    })?;
    Ok((ctx, consumers))
}

/// Checks (or records) the database's partitions, retrying while the database cannot answer yet
/// (it may still be loading its AOF after a restart); a layout that does not fit is final.
async fn ensure_layout(
    db: &mut Conn,
    service: &'static str,
    p: u32,
) -> Result<crate::partition::Layout, crate::partition::LayoutError> {
    let mut attempt = 0u32;
    loop {
        match crate::partition::ensure(db, service, p).await {
            Err(crate::partition::LayoutError::Redis(e)) => {
                if attempt.is_multiple_of(10) {
                    tracing::warn!(error = %e, "cannot read {service}-db's partitions yet; retrying every second");
                }
                attempt += 1;
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other,
        }
    }
}

/// Starts a consumer (group `service`) on every stream that `service` reads according to the
/// participants table `parts`, each on its own connection to the database holding the stream
/// (retrying until it answers). `handle` is called with the stream and the entry, and must be
/// idempotent. The service starts serving without waiting for its consumers.
pub fn spawn_for<H, F>(
    service: &'static str,
    parts: &'static [Participant],
    urls: &DbUrls,
    config: &crate::config::Config,
    metrics: Arc<Metrics>,
    handle: H,
) -> anyhow::Result<Arc<Consumers>>
where
    H: Fn(&'static str, LogEntry) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    let consumers = Arc::new(Consumers::default());
    let owners: BTreeMap<&str, &str> = crate::saga::groups(parts)
        .into_iter()
        .map(|g| (g.stream, g.owner))
        .collect();
    for stream in crate::saga::streams_read_by(parts, service) {
        let owner = owners.get(stream).copied().unwrap_or(crate::saga::ORDER);
        let url = urls.get(owner).cloned().ok_or_else(|| {
            anyhow::anyhow!("no database URL for `{owner}`, whose log `{stream}` {service} reads")
        })?;
        let (metrics, handle) = (metrics.clone(), handle.clone());
        let config = config.clone();
        let what = format!("{service} (reading {stream})");
        let span = tracing::info_span!("consumer", group = service, stream);
        let consume = async move {
            match crate::db::connect(&url, &what).await {
                Ok(mut conn) => {
                    // The log's partitions are as its owner initialised them.
                    let layout = crate::partition::wait_stored(&mut conn, owner).await;
                    let streams = crate::keys::logs(stream, &layout);
                    let mut cfg = ConsumerConfig::from_config(stream, streams, service, &config);
                    cfg.kinds = Some(crate::saga::reacts_to(parts, service, stream));
                    run(cfg, conn, metrics, move |e| handle(stream, e)).await
                }
                Err(e) => tracing::error!(error = %e, "consumer cannot start"),
            }
        };
        // A consumer never returns on its own: when it does, or panics, say so at once (the
        // health check then answers 503).
        let task = tokio::spawn(
            async move {
                let outcome = std::panic::AssertUnwindSafe(consume).catch_unwind().await;
                let why = match &outcome {
                    Ok(()) => "it returned".to_string(),
                    Err(panic) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "it panicked".to_string()),
                };
                tracing::error!(%why, "consumer stopped; this replica reports unhealthy until restarted");
            }
            .instrument(span),
        );
        consumers
            .tasks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((format!("{service}<-{stream}"), task));
    }
    Ok(consumers)
}
