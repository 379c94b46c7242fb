//! Archiving: the active log parser moves old log entries out of Redis into the archive
//! ([`common::archive`]), and retires the records of final sagas, so that Redis holds a bounded
//! window of the history.
//!
//! **Which entries leave.** Per partition's stream, the entries below a bound, taken in id order
//! up to the first one that must stay:
//! - older than `LOG_RETAIN` (by the stream's own database clock, `TIME`);
//! - acknowledged by every consumer group that reads the stream: below each group's last-delivered
//!   id and below the oldest entry of its pending list; a group the saga's table names that does
//!   not exist yet holds the whole stream (it will be created at `0` and read everything);
//! - for `log:order`, at or below the recovery checkpoint (the incremental pass reads after it);
//! - and, entry by entry, belonging to no saga or to a final one (its order-side record done, or
//!   retired). The first entry of a saga still running stops the stream there: it and everything
//!   after it stay (`XTRIM MINID` removes a prefix, never a hole), so a stalled saga keeps its
//!   entries in Redis.
//!
//! The entries are appended to the archive and fsynced; only then is the stream trimmed
//! (`XTRIM … MINID <last archived + 1>`, one key). A crash in between leaves them in both
//! places, and the next pass archives only what the archive does not hold yet.
//!
//! **Which saga records leave.** When the archiving of `log:order` moves a final saga's entries,
//! it notes the saga in `logparser:retire:{o<k>}` with order-db's time `t`. The saga's records
//! (order side, every participant's, tombstones included) are retired once every stream of every
//! log has been archived past `t` + 5 s (clock margin): every entry that was appended before the
//! saga was seen final has then been acknowledged by every group, so no handler can still act on
//! the saga (a late `StockReserved` that a tombstone must refuse has been handled). Before
//! retiring, the saga is checked as the audit would (atomicity); one that fails stays in Redis
//! for the audit to report. The retirement is a script per partition that deletes the records
//! and logs them, as they were, in one `RecordsRetired` entry (participants first, the order side
//! last), so replaying the history still reproduces the database.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::archive::{self, SegmentWriter, StreamId};
use common::db::Conn;
use common::keys;
use common::log::LogEntry;
use common::metrics::Metrics;
use common::partition::Layout;
use common::saga::{SagaRecord, ORDER};
use redis::Script;

use crate::audit::{self, AuditReport};
use crate::audit_hold;
use crate::dbs::Dbs;
use crate::replay::State;

/// Entries read from a stream per page.
const PAGE: usize = 2_000;
/// At most this many entries of one stream are archived per pass (a pass stays short).
const MAX_PER_STREAM: usize = 50_000;
/// How far the databases' clocks may disagree (ms): retirement waits this much longer.
pub const CLOCK_MARGIN_MS: u64 = 5_000;
/// What a pass reports when it stops because this instance no longer holds the lease.
pub const LOST_LEASE: &str = "stopped: this log parser no longer holds the lease";
/// Sagas retired per batch (per order partition): each batch costs a few round trips per
/// database whatever its size, so a larger one retires faster, up to the scripts' size (200
/// records each) and the time an audit may wait for a batch to end.
const RETIRE_BATCH: isize = 2_000;

static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{}\n{}",
        crate::saga_index::MEMBERS_LUA,
        include_str!("../lua/retire.lua")
    ))
});

/// What the archiving needs to know.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `LOG_RETAIN`.
    pub retain: Duration,
    /// `ARCHIVE_DIR`.
    pub root: PathBuf,
}

/// Why a stream keeps entries that are old enough.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Held {
    /// The stream.
    pub stream: String,
    /// Why.
    pub reason: String,
}

/// What one archiving pass did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ArchiveReport {
    /// Entries written to the archive.
    pub archived: u64,
    /// Entries trimmed from Redis (archived now or by an interrupted pass).
    pub trimmed: u64,
    /// Saga records retired.
    pub retired: u64,
    /// Sagas not retired because a check failed (left for the audit).
    pub refused: Vec<String>,
    /// Streams held back by something other than age.
    pub held: Vec<Held>,
    /// Every log is archived below this time (ms since the epoch): the oldest entry left in Redis.
    pub horizon_ms: u64,
    /// How far the archive is behind `LOG_RETAIN`: now − retention − horizon (ms, 0 when on time).
    pub lag_ms: u64,
    /// Sagas waiting to be retired.
    pub retire_queue: u64,
    /// Problems on one stream or saga (the pass went on).
    pub errors: Vec<String>,
    /// How long the pass took.
    pub duration_ms: u64,
}

/// Why a pass could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum ArchivePassError {
    /// A database did not answer.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The archiving engine of the active log parser (one per process; passes are serialised by
/// its owner).
pub struct Archiver {
    dbs: Dbs,
    settings: Settings,
    ids: Arc<common::ids::IdPool>,
    metrics: Arc<Metrics>,
    writers: HashMap<PathBuf, SegmentWriter>,
}

/// A database's clock (`TIME`), ms since the epoch.
pub async fn db_time(conn: &mut Conn) -> Result<u64, redis::RedisError> {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await?;
    Ok(secs * 1000 + micros / 1000)
}

/// The id below which every entry of `stream` is acknowledged by every group reading it (its
/// own and any other group it has); `None` when an expected group does not exist yet.
pub async fn acked_below(
    conn: &mut Conn,
    stream: &str,
    expected: &[&str],
) -> Result<Option<StreamId>, redis::RedisError> {
    let rows: Vec<HashMap<String, redis::Value>> = match redis::cmd("XINFO")
        .arg("GROUPS")
        .arg(stream)
        .query_async(conn)
        .await
    {
        Ok(r) => r,
        Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::ResponseError) => {
            return Ok(None); // no stream yet
        }
        Err(e) => return Err(e),
    };
    let text = |v: Option<&redis::Value>| match v {
        Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_string(),
        Some(redis::Value::SimpleString(s)) => s.clone(),
        Some(redis::Value::Int(n)) => n.to_string(),
        _ => String::new(),
    };
    let names: HashSet<String> = rows.iter().map(|r| text(r.get("name"))).collect();
    if expected.iter().any(|g| !names.contains(*g)) {
        return Ok(None);
    }
    let mut bound: Option<StreamId> = None;
    for row in &rows {
        let name = text(row.get("name"));
        let Some(delivered) = StreamId::parse(&text(row.get("last-delivered-id"))) else {
            return Ok(None);
        };
        let mut b = delivered.next();
        if text(row.get("pending")) != "0" {
            // XPENDING summary: count, smallest id, greatest id, consumers.
            let summary: (u64, Option<String>, Option<String>, redis::Value) =
                redis::cmd("XPENDING")
                    .arg(stream)
                    .arg(&name)
                    .query_async(conn)
                    .await?;
            if let Some(min) = summary.1.as_deref().and_then(StreamId::parse) {
                b = b.min(min);
            }
        }
        bound = Some(bound.map_or(b, |x| x.min(b)));
    }
    Ok(bound)
}

/// The first entry left in `stream`, or (for an empty stream) its database's time: no entry
/// below it can appear any more.
async fn first_left(conn: &mut Conn, stream: &str) -> Result<StreamId, redis::RedisError> {
    let first: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    match first.first().and_then(|(id, _)| StreamId::parse(id)) {
        Some(id) => Ok(id),
        None => Ok(StreamId {
            ms: db_time(conn).await?,
            seq: 0,
        }),
    }
}

impl Archiver {
    /// An archiver over `dbs`, appending log entries it leases ids for from `ids`.
    pub fn new(
        dbs: Dbs,
        settings: Settings,
        ids: Arc<common::ids::IdPool>,
        metrics: Arc<Metrics>,
    ) -> Archiver {
        Archiver {
            dbs,
            settings,
            ids,
            metrics,
            writers: HashMap::new(),
        }
    }

    fn writer(&mut self, dir: &Path) -> Result<&mut SegmentWriter, archive::ArchiveError> {
        if !self.writers.contains_key(dir) {
            let w = SegmentWriter::open(dir)?;
            self.writers.insert(dir.to_path_buf(), w);
        }
        self.writers
            .get_mut(dir)
            .ok_or_else(|| archive::ArchiveError::Corrupt {
                path: dir.to_path_buf(),
                detail: "writer vanished".into(),
            })
    }

    /// One pass: archive every stream, then retire the sagas whose time has come.
    ///
    /// `active` answers whether this instance still holds the log parser's lease; it is asked
    /// before each stream and before the retirement, and the pass stops (with an error in its
    /// report) once it says no: a pass can take a while, and an instance that was frozen past
    /// its lease must not go on archiving beside the one that took over.
    pub async fn pass(
        &mut self,
        active: impl Fn() -> bool,
    ) -> Result<ArchiveReport, ArchivePassError> {
        let started = Instant::now();
        let mut report = ArchiveReport::default();
        let groups = common::saga::groups(self.dbs.parts);
        let mut horizon: Option<u64> = None;
        for (name, log, mut conn, layout) in self.dbs.logs() {
            let now = db_time(&mut conn).await?;
            let expected: Vec<&str> = groups
                .iter()
                .filter(|g| g.stream == log)
                .map(|g| g.group)
                .collect();
            for part in layout.parts() {
                let stream = keys::log(log, &layout, part);
                if !active() {
                    report
                        .errors
                        .push(format!("{LOST_LEASE} (before {stream})"));
                    return Ok(self.finish(report, started));
                }
                let done = self
                    .archive_stream(
                        &mut conn,
                        (name, log),
                        &layout,
                        part,
                        now,
                        &expected,
                        &mut report,
                    )
                    .await;
                if let Err(e) = done {
                    report.errors.push(format!("{stream}: {e}"));
                }
                let first = first_left(&mut conn, &stream).await?;
                horizon = Some(horizon.map_or(first.ms, |h| h.min(first.ms)));
            }
        }
        let now = db_time(&mut self.dbs.order.clone()).await?;
        report.horizon_ms = horizon.unwrap_or(now);
        report.lag_ms = now
            .saturating_sub(self.settings.retain.as_millis() as u64)
            .saturating_sub(report.horizon_ms);
        if let Some(h) = horizon {
            if !active() {
                report
                    .errors
                    .push(format!("{LOST_LEASE} (before retiring)"));
                return Ok(self.finish(report, started));
            }
            self.retire(h.saturating_sub(CLOCK_MARGIN_MS), &mut report)
                .await?;
        }
        Ok(self.finish(report, started))
    }

    fn finish(&self, mut report: ArchiveReport, started: Instant) -> ArchiveReport {
        report.duration_ms = started.elapsed().as_millis() as u64;
        self.record_metrics(&report);
        report
    }

    /// Archives the entries of one partition's stream that may leave, then trims them.
    #[allow(clippy::too_many_arguments)]
    async fn archive_stream(
        &mut self,
        conn: &mut Conn,
        (service, log): (&'static str, &'static str),
        layout: &Layout,
        part: u32,
        now: u64,
        expected: &[&str],
        report: &mut ArchiveReport,
    ) -> anyhow::Result<()> {
        let stream = keys::log(log, layout, part);
        let retain = self.settings.retain.as_millis() as u64;
        let mut bound = StreamId {
            ms: now.saturating_sub(retain),
            seq: 0,
        };
        let Some(acked) = acked_below(conn, &stream, expected).await? else {
            report.held.push(Held {
                stream,
                reason: "a consumer group that reads it does not exist yet".into(),
            });
            return Ok(());
        };
        bound = bound.min(acked);
        if service == ORDER {
            let cp: Option<String> = redis::cmd("GET")
                .arg(keys::logparser_checkpoint(layout, part))
                .query_async(conn)
                .await?;
            let Some(cp) = cp.as_deref().and_then(StreamId::parse) else {
                report.held.push(Held {
                    stream,
                    reason: "no recovery checkpoint yet".into(),
                });
                return Ok(());
            };
            bound = bound.min(cp.next());
        }
        let dir = archive::stream_dir(&self.settings.root, service, part);
        let mut after = "-".to_string();
        let mut moved = 0usize;
        loop {
            let start = if after == "-" {
                after.clone()
            } else {
                format!("({after}")
            };
            let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
                .arg(&stream)
                .arg(start)
                .arg(format!("({bound}"))
                .arg("COUNT")
                .arg(PAGE)
                .query_async(conn)
                .await?;
            let entries: Vec<LogEntry> = raw
                .into_iter()
                .map(|(stream_id, kv)| LogEntry {
                    stream_id,
                    fields: kv.into_iter().collect(),
                })
                .collect();
            let Some(last) = entries.last() else {
                break;
            };
            after = last.stream_id.clone();
            let (movable, final_sagas, stop) = self.movable(&entries).await?;
            let prefix = &entries[..movable];
            if let Some(last) = prefix.last() {
                if service == ORDER && !final_sagas.is_empty() {
                    let order_now = db_time(&mut self.dbs.order.clone()).await?;
                    let mut zadd = redis::cmd("ZADD");
                    zadd.arg(keys::logparser_retire(layout, part)).arg("NX");
                    for sid in &final_sagas {
                        zadd.arg(order_now).arg(sid);
                    }
                    let _: i64 = zadd.query_async(conn).await?;
                }
                let written = {
                    let w = self.writer(&dir)?;
                    w.append(&stream, prefix)?
                };
                let min = StreamId::parse(&last.stream_id)
                    .map(StreamId::next)
                    .unwrap_or_default();
                let trimmed: u64 = redis::cmd("XTRIM")
                    .arg(&stream)
                    .arg("MINID")
                    .arg(min.to_string())
                    .query_async(conn)
                    .await?;
                report.archived += written as u64;
                report.trimmed += trimmed;
                moved += movable;
            }
            if let Some(reason) = stop {
                report.held.push(Held { stream, reason });
                break;
            }
            if entries.len() < PAGE || moved >= MAX_PER_STREAM {
                break;
            }
        }
        Ok(())
    }

    /// How many entries of `entries` (from the first) may leave: up to the first of a saga that
    /// is not final (or that cannot be decoded). Also the final sagas among them that still have
    /// a record (to retire later), and why the rest stays.
    async fn movable(
        &self,
        entries: &[LogEntry],
    ) -> Result<(usize, Vec<String>, Option<String>), redis::RedisError> {
        let ol = self.dbs.order_layout;
        let mut sagas: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        let mut decoded = Vec::with_capacity(entries.len());
        for e in entries {
            let d = e.decode().map(|ev| {
                ev.saga()
                    .map(|(s, o)| (s.to_string(), keys::saga_of(&ol, o, s)))
            });
            if let Ok(Some((sid, key))) = &d {
                if seen.insert(key.clone()) {
                    sagas.push((sid.clone(), key.clone()));
                }
            }
            decoded.push(d);
        }
        let reads = sagas
            .iter()
            .map(|(_, key)| {
                let mut cmd = redis::cmd("HGET");
                cmd.arg(key).arg("done");
                cmd
            })
            .collect();
        let done: Vec<Option<String>> = if sagas.is_empty() {
            Vec::new()
        } else {
            common::db::each(&mut self.dbs.order.clone(), reads).await?
        };
        // Final: done, or no record (retired; a record is only ever removed when final).
        let mut finality: HashMap<&str, (bool, bool)> = HashMap::new();
        for ((_, key), d) in sagas.iter().zip(&done) {
            let present = d.is_some();
            finality.insert(
                key.as_str(),
                (d.is_none() || d.as_deref() == Some("1"), present),
            );
        }
        let mut final_sagas = Vec::new();
        let mut queued = HashSet::new();
        for (i, d) in decoded.iter().enumerate() {
            match d {
                Err(e) => return Ok((i, final_sagas, Some(format!("entry cannot be read: {e}")))),
                Ok(None) => {}
                Ok(Some((sid, key))) => match finality.get(key.as_str()) {
                    Some((true, present)) => {
                        if *present && queued.insert(sid.clone()) {
                            final_sagas.push(sid.clone());
                        }
                    }
                    _ => {
                        let why =
                            format!("saga {sid} is not final (entry {})", entries[i].stream_id);
                        return Ok((i, final_sagas, Some(why)));
                    }
                },
            }
        }
        Ok((entries.len(), final_sagas, None))
    }

    /// Retires the records of the queued sagas seen final before `before` (ms).
    async fn retire(
        &mut self,
        before: u64,
        report: &mut ArchiveReport,
    ) -> Result<(), ArchivePassError> {
        let ol = self.dbs.order_layout;
        let mut order = self.dbs.order.clone();
        let mut paused = false;
        for part in ol.parts() {
            let queue = keys::logparser_retire(&ol, part);
            while !paused {
                let sids: Vec<String> = redis::cmd("ZRANGE")
                    .arg(&queue)
                    .arg("-inf")
                    .arg(format!("({before}"))
                    .arg("BYSCORE")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(RETIRE_BATCH)
                    .query_async(&mut order)
                    .await?;
                if sids.is_empty() {
                    break;
                }
                if !audit_hold::begin_retiring(&mut order).await? {
                    report.held.push(Held {
                        stream: keys::AUDIT_HOLDS.into(),
                        reason: "an audit is running: retirement waits for its end".into(),
                    });
                    paused = true;
                    break;
                }
                let done = self.retire_batch(part, &sids, report).await;
                audit_hold::end_retiring(&mut order).await?;
                if let Err(e) = done {
                    report
                        .errors
                        .push(format!("retiring sagas of {queue}: {e}"));
                    break;
                }
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(&queue);
                for s in &sids {
                    zrem.arg(s);
                }
                let _: i64 = zrem.query_async(&mut order).await?;
                if (sids.len() as isize) < RETIRE_BATCH {
                    break;
                }
            }
            let n: u64 = redis::cmd("ZCARD")
                .arg(&queue)
                .query_async(&mut order)
                .await?;
            report.retire_queue += n;
        }
        Ok(())
    }

    /// Checks and retires the records of sagas `sids` of order partition `part`.
    async fn retire_batch(
        &mut self,
        part: u32,
        sids: &[String],
        report: &mut ArchiveReport,
    ) -> anyhow::Result<()> {
        let ol = self.dbs.order_layout;
        let mut order = self.dbs.order.clone();
        let ids: Vec<(u32, String)> = sids.iter().map(|s| (part, s.clone())).collect();
        let loaded = crate::sagas::load_many(&mut order, &ol, &ids).await?;
        let mut records: Vec<SagaRecord> = Vec::new();
        for r in loaded.into_iter().flatten() {
            match r {
                Ok(r) if r.done => records.push(r),
                Ok(r) => report
                    .errors
                    .push(format!("saga {} queued for retirement is not final", r.id)),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        // What the audit would read of these sagas: the order side and every participant's.
        let mut live: BTreeMap<&'static str, State> = BTreeMap::new();
        let mut layouts: BTreeMap<&'static str, Layout> = BTreeMap::from([(ORDER, ol)]);
        let mut order_keys: Vec<String> = Vec::new();
        for r in &records {
            order_keys.push(keys::saga(&ol, part, &r.id));
            order_keys.push(keys::order(&ol, &r.order));
        }
        live.insert(
            ORDER,
            crate::replay::read_keys(&mut order, &order_keys).await?,
        );
        // (participant, partition) → its records of these sagas.
        let mut by_part: BTreeMap<(&'static str, u32), Vec<String>> = BTreeMap::new();
        for p in self.dbs.parts {
            let (Some(mut conn), Some(pl)) = (self.dbs.by_name(p.name), self.dbs.layout(p.name))
            else {
                continue;
            };
            layouts.insert(p.name, pl);
            let mut pkeys = Vec::new();
            for r in &records {
                for pp in p.record_parts(&pl, r) {
                    let k = p.record_key(&pl, pp, &r.id);
                    by_part.entry((p.name, pp)).or_default().push(k.clone());
                    pkeys.push(k);
                }
            }
            live.insert(p.name, crate::replay::read_keys(&mut conn, &pkeys).await?);
        }
        let mut check = AuditReport::default();
        audit::check_sagas(&live, &layouts, self.dbs.parts, &mut check);
        // A record retired by an interrupted earlier attempt is absent: not a fault.
        let refused: HashSet<String> = check
            .violations
            .iter()
            .filter(|v| !v.found.ends_with("(absent)"))
            .filter_map(|v| v.saga.clone())
            .collect();
        for sid in &refused {
            tracing::warn!(saga = %sid, "not retiring a saga that fails the atomicity check (the audit reports it)");
            report.refused.push(sid.clone());
        }
        // Participants first, the order side last: a participant's record never outlives the
        // order side's. The participants' partitions are independent of each other, so their
        // scripts run at once: one after the other, a batch spread over every stock and payment
        // partition took ~35 round trips in a row (a fifth fewer sagas were left waiting at
        // saturation with this; it alone does not keep pace there, docs/BENCHMARKS.md).
        let this = &*self;
        let retiring = by_part.into_iter().filter_map(|((name, pp), pkeys)| {
            let (Some(mut conn), Some(pl), Some(p)) = (
                this.dbs.by_name(name),
                this.dbs.layout(name),
                this.dbs.parts.iter().find(|p| p.name == name),
            ) else {
                return None;
            };
            let pkeys: Vec<String> = pkeys
                .into_iter()
                .filter(|k| {
                    keys::parse(p.record_prefix, &pl, k)
                        .is_some_and(|(_, sid)| !refused.contains(sid))
                })
                .collect();
            let log = keys::log(p.log, &pl, pp);
            Some(async move { this.run_retire(&mut conn, &log, None, &pkeys).await })
        });
        report.retired += futures::future::try_join_all(retiring)
            .await?
            .into_iter()
            .sum::<u64>();
        let okeys: Vec<String> = records
            .iter()
            .filter(|r| !refused.contains(&r.id))
            .map(|r| keys::saga(&ol, part, &r.id))
            .collect();
        // The order side also leaves the saga list's index, in the same script.
        let index = keys::logparser_index(&ol, part);
        report.retired += self
            .run_retire(
                &mut order,
                &keys::log(keys::ORDER_LOG, &ol, part),
                Some(&index),
                &okeys,
            )
            .await?;
        Ok(())
    }

    /// Runs `retire.lua` over `records` (one partition's, under `log`); on the order side
    /// `index` names the partition's saga index, whose members of these sagas go too.
    async fn run_retire(
        &self,
        conn: &mut Conn,
        log: &str,
        index: Option<&str>,
        records: &[String],
    ) -> Result<u64, redis::RedisError> {
        let mut n = 0;
        for chunk in records.chunks(200) {
            let mut inv = RETIRE.key(log);
            if let Some(index) = index {
                inv.key(index);
            }
            for k in chunk {
                inv.key(k);
            }
            inv.arg(self.ids.next());
            if index.is_some() {
                inv.arg("index");
                for k in chunk {
                    let sid = keys::parse(keys::SAGA_PREFIX, &self.dbs.order_layout, k)
                        .map_or("", |(_, sid)| sid);
                    inv.arg(sid);
                }
            }
            let got: u64 = inv.invoke_async(conn).await?;
            n += got;
        }
        Ok(n)
    }

    fn record_metrics(&self, r: &ArchiveReport) {
        let m = &self.metrics;
        m.incr("archive_passes_total", 1);
        m.incr("archive_entries_total", r.archived);
        m.incr("archive_trimmed_total", r.trimmed);
        m.incr("archive_records_retired_total", r.retired);
        m.set_gauge("archive_lag_ms", r.lag_ms as i64);
        m.set_gauge("archive_horizon_ms", r.horizon_ms as i64);
        m.set_gauge("archive_retire_queue", r.retire_queue as i64);
        m.set_gauge("archive_held_streams", r.held.len() as i64);
        m.set_gauge("archive_pass_duration_ms", r.duration_ms as i64);
        let (mut segs, mut bytes) = (0u64, 0u64);
        for (name, _, _, layout) in self.dbs.logs() {
            for part in layout.parts() {
                let dir = archive::stream_dir(&self.settings.root, name, part);
                if let Ok(s) = archive::segments(&dir) {
                    segs += s.len() as u64;
                    bytes += s
                        .iter()
                        .filter_map(|(_, p)| std::fs::metadata(p).ok())
                        .map(|m| m.len())
                        .sum::<u64>();
                }
            }
        }
        m.set_gauge("archive_segments", segs as i64);
        m.set_gauge("archive_bytes", bytes as i64);
    }
}
