//! `shoplog audit`: check the invariants of DESIGN.md over the three logs and databases.
//!
//! 1–2, stock and money conservation, and 5, log completeness: each service's log is replayed from
//!    empty and compared with its database, entity by entity and saga record by saga record (a value
//!    edited behind the log's back, or a deleted entry, shows up here); no stock or credit is
//!    negative.
//! 3. Saga atomicity: a committed saga has the order paid by it and every participant of the
//!    saga's table holding its step (stock reserved, charge made; never undone); an aborted saga whose compensations are confirmed holds
//!    nothing anywhere and did not pay the order; no participant holds a record of a saga the
//!    order service never started. Sagas still in flight are counted, not judged.
//! 4. Answer truth needs the answers: the HTTP tests check it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use common::keys;
use common::partition::Layout;
use common::saga::{
    participant, OrderStatus, Participant, SagaRecord, SagaState, ORDER, TOMBSTONE,
};

use common::event::Event;
use common::log::LogError;

use crate::dbs::Dbs;
use crate::replay::{self, Failed, ReplayError, ServiceLog, State, Where};
use crate::spill::{self, Bucket};

/// One broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: String,
    /// The saga concerned, if any.
    pub saga: Option<String>,
    /// The entity (Redis key) concerned.
    pub entity: String,
    /// What should be there.
    pub expected: String,
    /// What is there.
    pub found: String,
}

/// What an audit found.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct AuditReport {
    /// Every violation, by entity.
    pub violations: Vec<Violation>,
    /// Sagas by state.
    pub sagas: BTreeMap<&'static str, u64>,
    /// Entity and saga records compared per service.
    pub records: BTreeMap<&'static str, usize>,
    /// How long it took.
    pub duration_ms: u64,
    /// What had to be replayed in buckets to stay within the memory budget.
    pub spill: SpillReport,
}

impl AuditReport {
    /// Whether every invariant holds.
    pub fn clean(&self) -> bool {
        self.violations.is_empty()
    }
}

fn show(h: Option<&BTreeMap<String, String>>) -> String {
    match h {
        None => "(absent)".to_string(),
        Some(h) => h
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn violation(
    invariant: &str,
    saga: Option<&str>,
    entity: &str,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Violation {
    Violation {
        invariant: invariant.to_string(),
        saga: saga.map(String::from),
        entity: entity.to_string(),
        expected: expected.into(),
        found: found.into(),
    }
}

/// A failed read of a database's entities, as the audit reports it.
fn reading(e: replay::ReplayError) -> redis::RedisError {
    match e {
        replay::ReplayError::Redis(e) => e,
        other => redis::RedisError::from(std::io::Error::other(other.to_string())),
    }
}

/// Partitions audited at the same time (each holds at most its share of the memory budget).
const CONCURRENT_PARTITIONS: usize = 3;

/// Keys read from a database per round trip when comparing (and so held at once).
const CHUNK: usize = 500;

/// The default memory budget (`--memory-budget`): replayed state held at once, over the
/// partitions audited together. Chosen so that an audit that spills peaks where one that does
/// not already does: a million archived checkouts replay within it without spilling, and a
/// million left live in Redis (twice the state) spill and peak at ~270 MB instead of growing
/// (docs/BENCHMARKS.md, "The audit's memory at any size").
pub const DEFAULT_MEMORY_BUDGET: usize = 256 << 20;

/// How the audit may use memory and disk.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Bytes of replayed state held at once over the partitions audited together (estimated);
    /// a partition whose state outgrows its share is replayed again in buckets (see
    /// [`crate::spill`]), so memory stays bounded however large the data grows.
    pub memory_budget: usize,
    /// Where a partition's history is spooled when it is replayed in buckets (the system's
    /// temporary directory by default; the files are removed when the partition is done).
    pub spill_dir: PathBuf,
}

impl Default for AuditOptions {
    fn default() -> Self {
        AuditOptions {
            memory_budget: DEFAULT_MEMORY_BUDGET,
            spill_dir: std::env::temp_dir(),
        }
    }
}

/// How much of the audit had to be replayed in buckets (memory over budget).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SpillReport {
    /// Partitions whose state outgrew their share of the budget.
    pub partitions: usize,
    /// Bucket passes over their spooled histories.
    pub passes: usize,
    /// Bytes spooled to disk (the sum over those partitions).
    pub spooled_bytes: u64,
}

/// What the audit of one partition of one service found.
#[derive(Default)]
struct PartAudit {
    violations: Vec<Violation>,
    sagas: BTreeMap<&'static str, u64>,
    records: usize,
    spill: SpillReport,
}

impl PartAudit {
    fn absorb(&mut self, other: PartAudit) {
        self.violations.extend(other.violations);
        for (state, n) in other.sagas {
            *self.sagas.entry(state).or_default() += n;
        }
        self.records += other.records;
    }
}

/// The database's keys counted per (prefix, partition, sub-bucket), and the keys that carry a
/// prefix but no partition tag of the layout (the log never makes them).
struct Counted {
    counts: HashMap<(usize, u32, usize), usize>,
    strays: Vec<String>,
}

/// Audits everything with the default options; `progress` is told what is being done.
pub async fn audit(
    dbs: &Dbs,
    progress: impl FnMut(&str),
) -> Result<AuditReport, redis::RedisError> {
    audit_with(dbs, &AuditOptions::default(), progress).await
}

/// Audits everything; `progress` is told what is being done (for a progress line).
///
/// Streams: one partition of one service at a time (a few in parallel) is replayed from its
/// history (archive + live log) and compared with its keys in the database, read by key in
/// chunks; memory holds a few partitions' replayed states, and a state that outgrows its share
/// of `opts.memory_budget` is replayed again in buckets of its keys ([`crate::spill`]), so peak
/// memory does not grow with the number of sagas, log entries or entities. Keys the log never
/// created are found by counting the database's keys per partition and sub-bucket (one `SCAN`)
/// and listing a bucket's keys only when its count does not match.
pub async fn audit_with(
    dbs: &Dbs,
    opts: &AuditOptions,
    mut progress: impl FnMut(&str),
) -> Result<AuditReport, redis::RedisError> {
    use futures::StreamExt;
    let started = Instant::now();
    // No saga record is retired while this audit reads (crate::audit_hold).
    let hold = crate::audit_hold::hold(&dbs.order, || {
        progress("waiting for a retirement batch to end")
    })
    .await?;
    let mut report = AuditReport::default();
    let layouts: BTreeMap<&'static str, Layout> =
        dbs.logs().iter().map(|(n, _, _, l)| (*n, *l)).collect();
    for (name, log, mut conn, layout) in dbs.logs() {
        let Some(service) = ServiceLog::parse(name) else {
            // A participant this version cannot replay: its saga records are still checked.
            progress(&format!("reading {name}-db"));
            let Some(p) = participant(dbs.parts, name) else {
                continue;
            };
            let state = replay::dump_prefixes(&mut conn, &[p.record_prefix])
                .await
                .map_err(reading)?;
            check_started_live(dbs, p, &layout, &state, &mut report.violations).await?;
            report.records.insert(name, state.len());
            continue;
        };
        progress(&format!("replaying {log} (archive + live)"));
        let counted = count_keys(&mut conn, &service.key_prefixes(), &layout).await?;
        let scope = Arc::new(PartScope {
            dbs: dbs.clone(),
            service,
            l: layout,
            counted,
            layouts: layouts.clone(),
            budget: (opts.memory_budget / CONCURRENT_PARTITIONS).max(1),
            spill_dir: opts.spill_dir.clone(),
        });
        // Each partition a task of its own, so that replays use every core.
        let parts: Vec<Result<Result<PartAudit, redis::RedisError>, tokio::task::JoinError>> =
            futures::stream::iter(layout.parts())
                .map(|k| {
                    let scope = scope.clone();
                    tokio::spawn(async move { scope.audit(k).await })
                })
                .buffer_unordered(CONCURRENT_PARTITIONS)
                .collect()
                .await;
        let mut records = 0;
        for p in parts {
            let p =
                p.map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))??;
            report.violations.extend(p.violations);
            for (state, n) in p.sagas {
                *report.sagas.entry(state).or_default() += n;
            }
            records += p.records;
            report.spill.partitions += p.spill.partitions;
            report.spill.passes += p.spill.passes;
            report.spill.spooled_bytes += p.spill.spooled_bytes;
        }
        report.records.insert(name, records);
    }
    hold.release().await?;
    report.violations.sort_by(|a, b| a.entity.cmp(&b.entity));
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The database's keys of `prefixes`, counted per (prefix, partition, sub-bucket) with one
/// `SCAN` per prefix.
async fn count_keys(
    conn: &mut common::db::Conn,
    prefixes: &[&str],
    l: &Layout,
) -> Result<Counted, redis::RedisError> {
    let mut counted = Counted {
        counts: HashMap::new(),
        strays: Vec::new(),
    };
    let nodes = common::db::primaries(conn).await.map_err(nodes)?;
    for mut node in nodes {
        for (i, prefix) in prefixes.iter().enumerate() {
            let pattern = format!("{prefix}*");
            let mut cursor = 0;
            loop {
                let (next, batch) = common::db::scan_page(&mut node, cursor, &pattern).await?;
                for k in batch {
                    match keys::parse(prefix, l, &k) {
                        Some((part, _)) => {
                            *counted
                                .counts
                                .entry((i, part, spill::sub_of(&k)))
                                .or_default() += 1
                        }
                        None => counted.strays.push(k),
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    Ok(counted)
}

fn nodes(e: anyhow::Error) -> redis::RedisError {
    redis::RedisError::from(std::io::Error::other(e.to_string()))
}

/// Why a pass over a history stopped early.
enum Stop {
    /// The history cannot be read.
    Log(LogError),
    /// Entry `seq` cannot be applied.
    Failed(u64, Failed),
    /// The state outgrew the budget.
    Full,
    /// An earlier failure is known: nothing after it matters.
    Past,
    /// The spool cannot be written or read.
    Io(std::io::Error),
}

impl From<LogError> for Stop {
    fn from(e: LogError) -> Self {
        Stop::Log(e)
    }
}

impl From<std::io::Error> for Stop {
    fn from(e: std::io::Error) -> Self {
        Stop::Io(e)
    }
}

/// Counts the sagas of the order-side records a `RecordsRetired` entry retired (they are final;
/// their records are no longer in the database to be counted there).
fn count_retired(
    service: ServiceLog,
    ol: &Layout,
    event: &Event,
    sagas: &mut BTreeMap<&'static str, u64>,
) {
    if service != ServiceLog::Order {
        return;
    }
    if let Event::RecordsRetired { records, .. } = event {
        for (key, h) in records {
            if let Some((p, sid)) = keys::parse(keys::SAGA_PREFIX, ol, key) {
                if let Ok(r) = SagaRecord::from_fields(ol, p, sid, h) {
                    *sagas.entry(r.state().name()).or_default() += 1;
                }
            }
        }
    }
}

/// What the audit of one service's partitions shares.
struct PartScope {
    dbs: Dbs,
    service: ServiceLog,
    l: Layout,
    counted: Counted,
    layouts: BTreeMap<&'static str, Layout>,
    /// Bytes of replayed state one partition may hold.
    budget: usize,
    spill_dir: PathBuf,
}

/// How a partition's replay ended: its state (whole, or bucket by bucket) compared, or the first
/// failure of its history, at entry `seq`.
struct Replayed {
    failure: Option<(u64, ReplayError)>,
}

impl PartScope {
    /// Where partition `part`'s history is: its live stream, and its archive directory (when the
    /// archive is known).
    fn history(&self, part: u32) -> (String, Option<std::path::PathBuf>) {
        let stream = keys::log(self.service.log(), &self.l, part);
        let dir = self
            .dbs
            .archive()
            .map(|root| common::archive::stream_dir(root, self.service.name(), part));
        (stream, dir)
    }

    /// Audits partition `part`: replays its history (in buckets when its state outgrows the
    /// budget), compares with its keys, checks counters and its side of the sagas.
    async fn audit(&self, part: u32) -> Result<PartAudit, redis::RedisError> {
        let mut out = PartAudit::default();
        let Ok((mut conn, _)) = self.dbs.of(self.service) else {
            return Ok(out);
        };
        let (service, l, ol) = (self.service, self.l, self.dbs.order_layout);
        let at = Where { layout: l, part };
        let (stream, dir) = self.history(part);
        // First, the whole partition in memory, as long as it fits.
        let mut rebuilt = State::new();
        let mut retired = BTreeMap::new();
        let mut gauge = spill::Gauge::new(self.budget);
        let mut seq = 0u64;
        let whole = common::archive::for_each_history(
            &mut conn,
            dir.as_deref(),
            &stream,
            replay::PAGE,
            |e| {
                let event = e
                    .decode()
                    .map_err(|e| Stop::Failed(seq, ReplayError::from(e).into()))?;
                count_retired(service, &ol, &event, &mut retired);
                replay::apply_event(service, at, &mut rebuilt, e, &event, Bucket::ALL)
                    .map_err(|f| Stop::Failed(seq, f))?;
                seq += 1;
                if gauge.over(&rebuilt) {
                    return Err(Stop::Full);
                }
                Ok(())
            },
        )
        .await;
        let replayed = match whole {
            Ok(_) => {
                let mut compared = PartAudit::default();
                self.check(&mut conn, part, Bucket::ALL, &rebuilt, true, &mut compared)
                    .await?;
                out.absorb(compared);
                Replayed { failure: None }
            }
            Err(Stop::Log(e)) => Replayed {
                failure: Some((seq, e.into())),
            },
            Err(Stop::Failed(seq, f)) => Replayed {
                failure: Some((seq, f.error)),
            },
            Err(Stop::Full) => {
                drop(rebuilt);
                let (replayed, retired_until) = self
                    .in_buckets(&mut conn, part, seq, &mut out)
                    .await
                    .map_err(redis::RedisError::from)?;
                retired = retired_until;
                replayed
            }
            Err(Stop::Past | Stop::Io(_)) => Replayed { failure: None },
        };
        for (state, n) in retired {
            *out.sagas.entry(state).or_default() += n;
        }
        if let Some((_, e)) = replayed.failure {
            if let ReplayError::Redis(e) = e {
                return Err(e);
            }
            out.violations.push(violation(
                "log completeness (the log cannot be replayed)",
                None,
                &stream,
                "a log that replays from empty",
                e.to_string(),
            ));
            // Every key of the partition is still checked, without a log to compare with.
            self.check(&mut conn, part, Bucket::ALL, &State::new(), false, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// The replay of a partition whose state outgrew the budget after `seen` entries: its
    /// history spooled to a local file, then replayed once per bucket of its keys, each bucket
    /// compared as soon as it is replayed (a bucket still too large is split in two). Returns how
    /// it ended and the sagas of retired records up to its end (or to its first failure).
    async fn in_buckets(
        &self,
        conn: &mut common::db::Conn,
        part: u32,
        seen: u64,
        out: &mut PartAudit,
    ) -> std::io::Result<(Replayed, BTreeMap<&'static str, u64>)> {
        let (service, l, ol) = (self.service, self.l, self.dbs.order_layout);
        let at = Where { layout: l, part };
        let (stream, dir) = self.history(part);
        let mut spool = spill::Spool::create(&self.spill_dir)?;
        let read =
            common::archive::for_each_history(conn, dir.as_deref(), &stream, replay::PAGE, |e| {
                spool.push(e).map_err(Stop::Io)
            })
            .await;
        // The first failure so far: entry, step, error.
        let mut first: Option<(u64, u32, ReplayError)> = match read {
            Ok(_) => None,
            Err(Stop::Log(e)) => Some((spool.len(), 0, e.into())),
            Err(Stop::Io(e)) => return Err(e),
            Err(_) => None,
        };
        // Buckets so that each holds about 2/3 of the budget, judging by how far the whole
        // replay got.
        let ratio = (spool.len() as f64 * 1.5 / seen.max(1) as f64).max(2.0);
        let bits = (ratio.log2().ceil() as u8).min(spill::MAX_BITS);
        tracing::info!(
            stream = %stream,
            entries = spool.len(),
            bytes = spool.bytes(),
            buckets = 1u32 << bits,
            "replayed state over the memory budget: replaying in buckets"
        );
        out.spill.partitions += 1;
        out.spill.spooled_bytes += spool.bytes();
        let mut compared = PartAudit::default();
        let mut queue = Bucket::split_in(bits);
        while let Some(bucket) = queue.pop() {
            out.spill.passes += 1;
            let mut state = State::new();
            let mut gauge = spill::Gauge::new(self.budget);
            let known = first.as_ref().map(|(s, ..)| *s);
            let pass = spool.for_each(|seq, e| {
                if known.is_some_and(|s| seq > s) {
                    return Err(Stop::Past);
                }
                replay::apply_in(service, at, &mut state, e, bucket)
                    .map_err(|f| Stop::Failed(seq, f))?;
                if gauge.over(&state) && bucket.halves().is_some() {
                    return Err(Stop::Full);
                }
                Ok(())
            });
            match pass {
                Ok(()) if first.is_none() => {
                    self.check(conn, part, bucket, &state, true, &mut compared)
                        .await
                        .map_err(std::io::Error::other)?;
                }
                Ok(()) | Err(Stop::Past) => {}
                Err(Stop::Full) => queue.extend(bucket.halves().into_iter().flatten()),
                Err(Stop::Failed(seq, f)) => {
                    let earlier = first
                        .as_ref()
                        .is_none_or(|(s, step, _)| (seq, f.step) < (*s, *step));
                    if earlier {
                        first = Some((seq, f.step, f.error));
                    }
                }
                Err(Stop::Io(e)) => return Err(e),
                Err(Stop::Log(e)) => return Err(std::io::Error::other(e.to_string())),
            }
        }
        // The sagas of retired records, up to the first failure (what a whole replay counts).
        let until = first.as_ref().map_or(u64::MAX, |(s, ..)| *s);
        let mut retired = BTreeMap::new();
        spool
            .for_each(|seq, e| {
                if seq > until {
                    return Err(Stop::Past);
                }
                if e.kind() == common::event::kind::RECORDS_RETIRED {
                    if let Ok(event) = e.decode() {
                        count_retired(service, &ol, &event, &mut retired);
                    }
                }
                Ok(())
            })
            .or_else(|s| match s {
                Stop::Io(e) => Err(e),
                _ => Ok(()),
            })?;
        if first.is_none() {
            out.absorb(compared);
        }
        Ok((
            Replayed {
                failure: first.map(|(s, _, e)| (s, e)),
            },
            retired,
        ))
    }

    /// Compares `rebuilt`, the replayed keys of `bucket` of partition `part` (`compare`: false
    /// when the history could not be replayed), with the database, chunk by chunk; then lists
    /// the bucket's keys the log did not make when the database's count says there are some.
    async fn check(
        &self,
        conn: &mut common::db::Conn,
        part: u32,
        bucket: Bucket,
        rebuilt: &State,
        compare: bool,
        out: &mut PartAudit,
    ) -> Result<(), redis::RedisError> {
        let prefixes = self.service.key_prefixes();
        let mut found = vec![0usize; prefixes.len()];
        let wanted: Vec<&String> = rebuilt.keys().collect();
        for chunk in wanted.chunks(CHUNK) {
            let chunk: Vec<String> = chunk.iter().map(|k| (*k).clone()).collect();
            let live = replay::read_keys(conn, &chunk).await?;
            for k in live.keys() {
                if let Some(i) = prefixes.iter().position(|p| k.starts_with(p)) {
                    found[i] += 1;
                }
            }
            if compare {
                for k in &chunk {
                    let (from_log, in_db) = (rebuilt.get(k), live.get(k));
                    if in_db != from_log {
                        self.differs(k, from_log, in_db, out);
                    }
                }
            }
            self.check_live(part, &live, out).await?;
        }
        // Keys the log did not make: strays (partition 0's first bucket), and a bucket's keys
        // when its count does not match.
        let mut extra: Vec<String> = self
            .counted
            .strays
            .iter()
            .filter(|k| part == 0 && bucket.holds(k) && prefixes.iter().any(|p| k.starts_with(p)))
            .cloned()
            .collect();
        let mut nodes = None;
        for (i, prefix) in prefixes.iter().enumerate() {
            let n: usize = (0..spill::SUBS)
                .filter(|s| bucket.holds_sub(*s))
                .filter_map(|s| self.counted.counts.get(&(i, part, s)))
                .sum();
            if n == found[i] && compare {
                continue;
            }
            let pattern = format!("{prefix}{}:*", self.l.tag(part));
            if nodes.is_none() {
                nodes = Some(common::db::primaries(conn).await.map_err(self::nodes)?);
            }
            for node in nodes.iter_mut().flatten() {
                let mut cursor = 0;
                loop {
                    let (next, batch) = common::db::scan_page(node, cursor, &pattern).await?;
                    extra.extend(
                        batch
                            .into_iter()
                            .filter(|k| bucket.holds(k) && !rebuilt.contains_key(k)),
                    );
                    if extra.len() >= CHUNK {
                        self.check_extra(conn, part, &std::mem::take(&mut extra), compare, out)
                            .await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        self.check_extra(conn, part, &extra, compare, out).await
    }

    /// Checks keys of the database that the log did not make.
    async fn check_extra(
        &self,
        conn: &mut common::db::Conn,
        part: u32,
        extra: &[String],
        compare: bool,
        out: &mut PartAudit,
    ) -> Result<(), redis::RedisError> {
        if extra.is_empty() {
            return Ok(());
        }
        let live = replay::read_keys(conn, extra).await?;
        if compare {
            for (k, h) in &live {
                self.differs(k, None, Some(h), out);
            }
        }
        self.check_live(part, &live, out).await
    }

    /// A key whose replayed and live hashes differ.
    fn differs(
        &self,
        key: &str,
        from_log: Option<&BTreeMap<String, String>>,
        in_db: Option<&BTreeMap<String, String>>,
        out: &mut PartAudit,
    ) {
        let invariant = if key.starts_with(keys::ITEM_PREFIX) {
            "stock conservation (replayed log ≠ database)"
        } else if key.starts_with(keys::USER_PREFIX) {
            "money conservation (replayed log ≠ database)"
        } else {
            "log completeness (replayed log ≠ database)"
        };
        let saga = saga_of_key(self.dbs.parts, key);
        out.violations
            .push(violation(invariant, saga, key, show(from_log), show(in_db)));
    }

    /// The checks of live hashes `live` (a chunk of partition `part`'s keys in the database):
    /// no negative counter, and this partition's side of the sagas.
    async fn check_live(
        &self,
        part: u32,
        live: &State,
        out: &mut PartAudit,
    ) -> Result<(), redis::RedisError> {
        for (key, h) in live {
            for field in ["stock", "credit"] {
                if let Some(v) = h.get(field) {
                    if v.parse::<i64>().map(|n| n < 0).unwrap_or(true) {
                        out.violations.push(violation(
                            &format!("{field} never negative"),
                            None,
                            key,
                            format!("{field} >= 0"),
                            format!("{field}={v}"),
                        ));
                    }
                }
            }
        }
        out.records += live.len();
        let mut report = AuditReport::default();
        if self.service == ServiceLog::Order {
            self.check_decided_live(part, live, &mut report).await?;
        } else if let Some(p) = self.service.participant() {
            check_started_live(&self.dbs, p, &self.l, live, &mut report.violations).await?;
        }
        out.violations.extend(report.violations);
        for (state, n) in report.sagas {
            *out.sagas.entry(state).or_default() += n;
        }
        Ok(())
    }

    /// Saga atomicity of the decided sagas whose order-side records are in `live` (a chunk of
    /// order partition `part`): their orders and every participant's records read by key.
    async fn check_decided_live(
        &self,
        part: u32,
        live: &State,
        report: &mut AuditReport,
    ) -> Result<(), redis::RedisError> {
        let ol = self.dbs.order_layout;
        let end = format!("{};", keys::SAGA_PREFIX.trim_end_matches(':'));
        let sagas: State = live
            .range(keys::SAGA_PREFIX.to_string()..end)
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect();
        if sagas.is_empty() {
            return Ok(());
        }
        let records: Vec<SagaRecord> = sagas
            .iter()
            .filter_map(|(k, h)| {
                let (p, sid) = keys::parse(keys::SAGA_PREFIX, &ol, k)?;
                SagaRecord::from_fields(&ol, p, sid, h).ok()
            })
            .collect();
        // The orders of these sagas: those of this partition (the only ones a saga record of
        // this partition may name).
        let orders: Vec<String> = records
            .iter()
            .filter(|r| ol.part(&r.order) == part)
            .map(|r| keys::order(&ol, &r.order))
            .collect();
        let (Ok((mut oconn, _)), mut order_db) = (self.dbs.of(ServiceLog::Order), sagas) else {
            return Ok(());
        };
        order_db.extend(replay::read_keys(&mut oconn, &orders).await?);
        let mut states: BTreeMap<&'static str, State> = BTreeMap::new();
        for p in self.dbs.parts {
            let (Some(mut pconn), Some(pl)) = (self.dbs.by_name(p.name), self.layouts.get(p.name))
            else {
                continue;
            };
            let pkeys: Vec<String> = records
                .iter()
                .filter(|r| matches!(r.state(), SagaState::Committed | SagaState::Aborted))
                .flat_map(|r| {
                    p.record_parts(pl, r)
                        .into_iter()
                        .map(|pp| p.record_key(pl, pp, &r.id))
                })
                .collect();
            states.insert(p.name, replay::read_keys(&mut pconn, &pkeys).await?);
        }
        check_decided(&order_db, &states, &self.layouts, self.dbs.parts, report);
        Ok(())
    }
}

/// The ghost check of a participant's live records `db`: each must have its order-side saga
/// record (looked up by key in order-db).
async fn check_started_live(
    dbs: &Dbs,
    p: &Participant,
    pl: &Layout,
    db: &State,
    violations: &mut Vec<Violation>,
) -> Result<(), redis::RedisError> {
    let ol = dbs.order_layout;
    let end = format!("{};", p.record_prefix.trim_end_matches(':'));
    let wanted: Vec<String> = db
        .range(p.record_prefix.to_string()..end)
        .filter_map(|(k, h)| {
            let (_, sid) = keys::parse(p.record_prefix, pl, k)?;
            Some(keys::saga_of(&ol, h.get("order")?, sid))
        })
        .collect();
    let mut exists = std::collections::HashSet::new();
    for chunk in wanted.chunks(500) {
        let reads = chunk
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("EXISTS");
                cmd.arg(k);
                cmd
            })
            .collect();
        let got: Vec<bool> = common::db::each(&mut dbs.order.clone(), reads).await?;
        exists.extend(
            chunk
                .iter()
                .zip(got)
                .filter(|(_, e)| *e)
                .map(|(k, _)| k.clone()),
        );
    }
    let mut report = AuditReport::default();
    check_started(|k| exists.contains(k), &ol, p, pl, db, &mut report);
    violations.extend(report.violations);
    Ok(())
}

/// The saga a record key belongs to (an order-side or a participant's saga record): the id after
/// the partition's tag.
fn saga_of_key<'a>(parts: &[Participant], key: &'a str) -> Option<&'a str> {
    let is_record = key.starts_with(keys::SAGA_PREFIX)
        || parts.iter().any(|p| key.starts_with(p.record_prefix));
    is_record
        .then(|| key.rsplit_once(':').map(|(_, id)| id))
        .flatten()
}

fn state_of<'a>(s: &'a State, key: &str) -> Option<&'a str> {
    s.get(key).and_then(|h| h.get("state")).map(String::as_str)
}

/// Invariant 3, saga atomicity, over the databases' states `live` (service name → state): a
/// committed saga has the order paid by it and every participant of `parts` holding its step; an
/// aborted, fully compensated saga holds nothing anywhere and did not pay the order; no
/// participant holds a record of a saga the order service never started. Also counts the sagas
/// by state.
pub fn check_sagas(
    live: &BTreeMap<&'static str, State>,
    layouts: &BTreeMap<&'static str, Layout>,
    parts: &[Participant],
    report: &mut AuditReport,
) {
    let empty = State::new();
    let order_db = live.get(ORDER).unwrap_or(&empty);
    let Some(ol) = layouts.get(ORDER).copied() else {
        return;
    };
    check_decided(order_db, live, layouts, parts, report);
    for p in parts {
        let (Some(db), Some(pl)) = (live.get(p.name), layouts.get(p.name)) else {
            continue;
        };
        check_started(|k| order_db.contains_key(k), &ol, p, pl, db, report);
    }
}

/// The decided sagas of `order_db` (order-side records and orders; one partition or all) against
/// the participants' records in `live` (at least those of these sagas); counts sagas by state.
pub fn check_decided(
    order_db: &State,
    live: &BTreeMap<&'static str, State>,
    layouts: &BTreeMap<&'static str, Layout>,
    parts: &[Participant],
    report: &mut AuditReport,
) {
    let Some(ol) = layouts.get(ORDER).copied() else {
        return;
    };
    const ATOMIC: &str = "saga atomicity";
    let end = format!("{};", keys::SAGA_PREFIX.trim_end_matches(':'));
    for (key, h) in order_db.range(keys::SAGA_PREFIX.to_string()..end) {
        let Some((part, sid)) = keys::parse(keys::SAGA_PREFIX, &ol, key) else {
            continue;
        };
        let r = match SagaRecord::from_fields(&ol, part, sid, h) {
            Ok(r) => r,
            Err(e) => {
                report.violations.push(violation(
                    "log completeness (a saga record cannot be read)",
                    Some(sid),
                    key,
                    "a well-formed saga record",
                    e.to_string(),
                ));
                continue;
            }
        };
        let state = r.state();
        *report.sagas.entry(state.name()).or_default() += 1;
        let okey = keys::order(&ol, &r.order);
        let order = order_db.get(&okey);
        let held_by_this = order.is_some_and(|o| o.get("saga").map(String::as_str) == Some(sid));
        let paid_by_this = held_by_this
            && order.is_some_and(|o| {
                o.get("status").map(String::as_str) == Some(OrderStatus::Paid.as_str())
            });
        let mut check = |ok: bool, entity: &str, expected: String, found: String| {
            if !ok {
                report
                    .violations
                    .push(violation(ATOMIC, Some(sid), entity, expected, found));
            }
        };
        match state {
            SagaState::Committed => {
                // An order recreated since (batch_init overwrites ids "0".."n-1") no longer names
                // this saga; one that still does must be paid.
                check(
                    paid_by_this || !held_by_this,
                    &okey,
                    "status=PAID saga=<this saga>".into(),
                    show(order),
                );
            }
            SagaState::Aborted => check(
                !paid_by_this,
                &okey,
                "not paid by this aborted saga".into(),
                show(order),
            ),
            SagaState::InFlight | SagaState::Compensating => continue,
        }
        for p in parts {
            let Some(pl) = layouts.get(p.name) else {
                continue;
            };
            for ppart in p.record_parts(pl, &r) {
                let pkey = p.record_key(pl, ppart, sid);
                let found = live.get(p.name).and_then(|db| state_of(db, &pkey));
                let shown = format!("state={}", found.unwrap_or("(absent)"));
                if state == SagaState::Committed {
                    check(
                        found == Some(p.held),
                        &pkey,
                        format!("state={} (done by {}, never undone)", p.held, p.name),
                        shown,
                    );
                } else {
                    check(
                        found == Some(p.released) || found == Some(TOMBSTONE),
                        &pkey,
                        format!(
                            "state={} or {TOMBSTONE} (nothing held after the abort)",
                            p.released
                        ),
                        shown,
                    );
                }
            }
        }
    }
}

/// No participant holds a record of a saga the order service never started: each record of
/// `db` (participant `p`'s) names an order whose `saga:` record `has_saga` finds.
pub fn check_started(
    has_saga: impl Fn(&str) -> bool,
    ol: &Layout,
    p: &Participant,
    pl: &Layout,
    db: &State,
    report: &mut AuditReport,
) {
    let end = format!("{};", p.record_prefix.trim_end_matches(':'));
    for (key, h) in db.range(p.record_prefix.to_string()..end) {
        let Some((_, sid)) = keys::parse(p.record_prefix, pl, key) else {
            continue;
        };
        let started = h
            .get("order")
            .is_some_and(|order| has_saga(&keys::saga_of(ol, order, sid)));
        if !started {
            report.violations.push(violation(
                "saga atomicity (a participant acted for a saga the order service never started)",
                Some(sid),
                key,
                "a saga:<id> record in order-db",
                show(Some(h)),
            ));
        }
    }
}

/// Where `shoplog audit` leaves a summary of its last run (order-db), for the console.
pub const LAST_AUDIT_KEY: &str = "logparser:last_audit";

/// Stores a summary of `report` (when, clean or not, the first violations) as the last audit.
pub async fn record_last(
    conn: &mut common::db::Conn,
    report: &AuditReport,
) -> Result<(), redis::RedisError> {
    let summary = serde_json::json!({
        "at_ms": crate::sagas::now_ms(),
        "clean": report.violations.is_empty(),
        "violations": report.violations.len(),
        "first_violations": report.violations.iter().take(5).collect::<Vec<_>>(),
        "sagas": report.sagas,
        "duration_ms": report.duration_ms,
    });
    redis::cmd("SET")
        .arg(LAST_AUDIT_KEY)
        .arg(summary.to_string())
        .query_async::<()>(conn)
        .await
}

/// The summary [`record_last`] stored, if any.
pub async fn last_summary(
    conn: &mut common::db::Conn,
) -> Result<Option<serde_json::Value>, redis::RedisError> {
    let text: Option<String> = redis::cmd("GET")
        .arg(LAST_AUDIT_KEY)
        .query_async(conn)
        .await?;
    Ok(text.and_then(|t| serde_json::from_str(&t).ok()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::saga::{PARTICIPANTS, PAYMENT, STOCK};

    fn hash(fields: &[(&str, &str)]) -> BTreeMap<String, String> {
        fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Two items in different stock partitions.
    fn items() -> (String, String) {
        let l = layouts()["stock"];
        let a = "a".to_string();
        let b = (0..100)
            .map(|i| format!("b{i}"))
            .find(|b| l.part(b) != l.part(&a))
            .unwrap_or_default();
        (a, b)
    }

    fn layouts() -> BTreeMap<&'static str, Layout> {
        ["order", "stock", "payment"]
            .into_iter()
            .map(|s| (s, Layout::new(s, 4)))
            .collect()
    }

    fn saga(decision: &str, done: &str) -> BTreeMap<String, String> {
        let (a, b) = items();
        let items = common::saga::encode_lines(&[(a, 1), (b, 1)]);
        hash(&[
            ("order", "o"),
            ("user", "u"),
            ("total", "5"),
            ("items", &items),
            ("decision", decision),
            ("reason", ""),
            ("started_ms", "1"),
            ("pending", ""),
            ("done", done),
        ])
    }

    /// The keys of saga `s`'s records: order-side, order, stock (one per item), payment.
    fn record_keys() -> (String, String, Vec<String>, String) {
        let l = layouts();
        let (a, b) = items();
        let (sl, pl) = (l["stock"], l["payment"]);
        (
            keys::saga_of(&l["order"], "o", "s"),
            keys::order(&l["order"], "o"),
            vec![
                STOCK.record_key(&sl, sl.part(&a), "s"),
                STOCK.record_key(&sl, sl.part(&b), "s"),
            ],
            PAYMENT.record_key(&pl, pl.part("u"), "s"),
        )
    }

    /// order-db with saga `s` and order `o` (held by `s` with `status`); stock records of `s` (one
    /// per item's partition) and its payment record in the given states.
    fn live(
        decision: &str,
        status: &str,
        stock: &str,
        payment: &str,
    ) -> BTreeMap<&'static str, State> {
        let (skey, okey, stock_keys, pkey) = record_keys();
        let mut order = State::new();
        order.insert(skey, saga(decision, "1"));
        order.insert(okey, hash(&[("status", status), ("saga", "s")]));
        let mut s = State::new();
        for k in stock_keys {
            s.insert(k, hash(&[("state", stock), ("order", "o")]));
        }
        let mut p = State::new();
        p.insert(pkey, hash(&[("state", payment), ("order", "o")]));
        BTreeMap::from([("order", order), ("stock", s), ("payment", p)])
    }

    fn check(live: &BTreeMap<&'static str, State>) -> AuditReport {
        let mut report = AuditReport::default();
        check_sagas(live, &layouts(), PARTICIPANTS, &mut report);
        report
    }

    #[test]
    fn consistent_sagas_are_clean_and_counted() {
        let r = check(&live("commit", "PAID", "RESERVED", "CHARGED"));
        assert!(r.clean(), "{:?}", r.violations);
        assert_eq!(r.sagas.get("committed"), Some(&1));
        let r = check(&live("abort", "OPEN", "RELEASED", "TOMBSTONE"));
        assert!(r.clean(), "{:?}", r.violations);
        assert_eq!(r.sagas.get("aborted"), Some(&1));
    }

    #[test]
    fn a_committed_saga_with_a_released_step_is_a_violation_naming_the_record() {
        let (_, _, stock_keys, _) = record_keys();
        let mut l = live("commit", "PAID", "RESERVED", "CHARGED");
        if let Some(s) = l.get_mut("stock") {
            s.insert(
                stock_keys[1].clone(),
                hash(&[("state", "RELEASED"), ("order", "o")]),
            );
        }
        let r = check(&l);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].entity, stock_keys[1]);
        assert_eq!(r.violations[0].saga.as_deref(), Some("s"));
    }

    #[test]
    fn an_aborted_saga_that_still_holds_or_paid_is_a_violation() {
        let (_, okey, _, pkey) = record_keys();
        let r = check(&live("abort", "PAID", "RELEASED", "CHARGED"));
        let entities: Vec<&str> = r.violations.iter().map(|v| v.entity.as_str()).collect();
        assert_eq!(entities, [okey.as_str(), pkey.as_str()]);
    }

    #[test]
    fn a_participant_record_without_an_order_saga_is_a_violation() {
        let sl = layouts()["stock"];
        let ghost = STOCK.record_key(&sl, 0, "ghost");
        let mut l = live("commit", "PAID", "RESERVED", "CHARGED");
        if let Some(s) = l.get_mut("stock") {
            s.insert(
                ghost.clone(),
                hash(&[("state", "RESERVED"), ("order", "o")]),
            );
        }
        let r = check(&l);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert_eq!(r.violations[0].entity, ghost);
    }

    #[test]
    fn a_malformed_saga_record_is_reported_not_defaulted() {
        let bad = keys::saga(&layouts()["order"], 1, "bad");
        let mut l = live("commit", "PAID", "RESERVED", "CHARGED");
        if let Some(o) = l.get_mut("order") {
            o.insert(bad.clone(), hash(&[("decision", "commit")]));
        }
        let r = check(&l);
        assert_eq!(r.violations.len(), 1, "{:?}", r.violations);
        assert!(r.violations[0].found.contains(&bad), "{:?}", r.violations);
    }
}
