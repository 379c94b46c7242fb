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
//! **Which saga records leave.** Once every consumer group has acknowledged a final saga's
//! entries in `log:order` (and the recovery pass has read them), the pass notes the saga in
//! `logparser:retire:{o<k>}` with order-db's time `t` (`queue_final`; not a retention later,
//! when the entries are archived). The saga's records (order side, every participant's,
//! tombstones included) are retired once every stream of every
//! log has been archived past `t` + 5 s (clock margin): every entry that was appended before the
//! saga was seen final has then been acknowledged by every group, so no handler can still act on
//! the saga (a late `StockReserved` that a tombstone must refuse has been handled); and since the
//! saga's `log:order` entries were all handled before `t`, so were whatever their handlers
//! appended. Records thus leave about one `LOG_RETAIN` (plus the lag) after their saga ends. Before
//! retiring, the saga is checked as the audit would (atomicity); one that fails stays in Redis
//! for the audit to report. The retirement is a script per partition that deletes the records
//! and logs them in one `RecordsRetired` entry (participants first, the order side last), so
//! replaying the history still reproduces the database: the order side's records as they were
//! (the saga list and the audit's count read them), a participant's by key alone (what the
//! history built up to the entry is what the database held; the atomicity check read them just
//! before).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use common::archive::{self, SegmentWriter, StreamId};
use common::db::Conn;
use common::keys;
use common::log::{self, LogEntry};
use common::metrics::Metrics;
use common::partition::Layout;
use common::saga::{SagaRecord, ORDER};
use redis::Script;

use crate::audit::{self, AuditReport};
use crate::audit_hold;
use crate::dbs::Dbs;
use crate::finality::FinalSagas;
use crate::replay::State;
use crate::sightings::{Seen, Sightings};

/// Entries read from a stream per page.
const PAGE: usize = 2_000;
/// At most this many entries of one stream are archived per pass (a pass stays short).
const MAX_PER_STREAM: usize = 50_000;
/// How far the databases' clocks may disagree (ms): retirement waits this much longer.
pub const CLOCK_MARGIN_MS: u64 = 5_000;
/// What a pass reports when it stops because this instance no longer holds the lease.
pub const LOST_LEASE: &str = "stopped: this log parser no longer holds the lease";
/// Sagas retired per batch per order partition (every partition's batch runs at once, under
/// one retirement mark): each batch costs a few round trips per database whatever its size, so
/// a larger one retires faster, up to the scripts' size (200 records each), the memory of all
/// partitions' batches together and the time an audit may wait for them to end.
const RETIRE_BATCH: isize = 1_000;

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

impl ArchiveReport {
    /// Adds what one stream's or one batch's share of a pass did.
    fn absorb(&mut self, part: ArchiveReport) {
        self.archived += part.archived;
        self.trimmed += part.trimmed;
        self.retired += part.retired;
        self.retire_queue += part.retire_queue;
        self.refused.extend(part.refused);
        self.held.extend(part.held);
        self.errors.extend(part.errors);
    }
}

/// One partition's stream in a pass, with what archiving it needs, owned: every stream of a
/// pass is archived at once.
struct StreamJob {
    service: &'static str,
    log: &'static str,
    conn: Conn,
    layout: Layout,
    part: u32,
    /// The stream's database's clock when the pass began.
    now: u64,
    /// The consumer groups that read the stream.
    expected: Vec<&'static str>,
    /// The stream's archive directory and its writer (opened on first use).
    dir: PathBuf,
    writer: Option<SegmentWriter>,
}

/// What archiving one stream left.
struct StreamDone {
    dir: PathBuf,
    writer: Option<SegmentWriter>,
    report: ArchiveReport,
    /// The first entry left in the stream; `None` when the stream was not looked at.
    first_left: Result<Option<StreamId>, redis::RedisError>,
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
    /// What the recovery pass saw of `log:order`, when it shares its notes: the retirement
    /// queue reads them instead of the log.
    sightings: Option<Sightings>,
    /// The sagas already seen final: `log:stock` and `log:payment` entries of a saga the
    /// retirement queue saw final are not asked about again.
    finals: FinalSagas,
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

/// Queues final sagas of order partition `part` for retirement, seen final now (order-db's
/// clock); one already queued keeps its time (`NX`).
async fn queue_for_retirement(
    conn: &mut Conn,
    layout: &Layout,
    part: u32,
    sagas: &[String],
) -> Result<(), redis::RedisError> {
    if sagas.is_empty() {
        return Ok(());
    }
    let now = db_time(conn).await?;
    let mut zadd = redis::cmd("ZADD");
    zadd.arg(keys::logparser_retire(layout, part)).arg("NX");
    for sid in sagas {
        zadd.arg(now).arg(sid);
    }
    let _: i64 = zadd.query_async(conn).await?;
    Ok(())
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
            sightings: None,
            finals: FinalSagas::default(),
        }
    }

    /// The same archiver, taking the retirement queue's view of `log:order` from the recovery
    /// pass's notes (the daemon's: one process runs both passes, one after the other).
    pub fn with_sightings(mut self, sightings: Sightings) -> Archiver {
        self.sightings = Some(sightings);
        self
    }

    /// One pass: archive every stream, then retire the sagas whose time has come.
    ///
    /// Every partition's stream of every log is archived at once, and the retirement batches
    /// of every order partition run at once: a pass is a chain of round trips per stream and
    /// per batch, and taken one after the other they fell behind a saturated stack
    /// (docs/BENCHMARKS.md, "Archiving at saturation").
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
        let mut jobs = Vec::new();
        for (service, log, mut conn, layout) in self.dbs.logs() {
            let now = db_time(&mut conn).await?;
            let expected: Vec<&'static str> = groups
                .iter()
                .filter(|g| g.stream == log)
                .map(|g| g.group)
                .collect();
            for part in layout.parts() {
                let dir = archive::stream_dir(&self.settings.root, service, part);
                jobs.push(StreamJob {
                    service,
                    log,
                    conn: conn.clone(),
                    layout,
                    part,
                    now,
                    expected: expected.clone(),
                    writer: self.writers.remove(&dir),
                    dir,
                });
            }
        }
        let this = &*self;
        let active = &active;
        let streams = jobs.into_iter().map(|job| this.archive_stream(job, active));
        let mut horizon: Option<u64> = None;
        let mut lost = false;
        let mut failed = None;
        for done in futures::future::join_all(streams).await {
            if let Some(w) = done.writer {
                self.writers.insert(done.dir, w);
            }
            report.absorb(done.report);
            match done.first_left {
                Ok(Some(first)) => horizon = Some(horizon.map_or(first.ms, |h| h.min(first.ms))),
                Ok(None) => lost = true,
                Err(e) => failed = Some(e),
            }
        }
        if let Some(e) = failed {
            return Err(e.into());
        }
        if lost {
            return Ok(self.finish(report, started));
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

    /// One partition's stream: archives what may leave, then says where the stream starts now
    /// (`None` when this instance lost its lease before it began).
    async fn archive_stream(&self, job: StreamJob, active: &impl Fn() -> bool) -> StreamDone {
        let mut job = job;
        let mut report = ArchiveReport::default();
        let stream = keys::log(job.log, &job.layout, job.part);
        if !active() {
            report
                .errors
                .push(format!("{LOST_LEASE} (before {stream})"));
            return StreamDone {
                dir: job.dir,
                writer: job.writer,
                report,
                first_left: Ok(None),
            };
        }
        if let Err(e) = self.move_entries(&mut job, &stream, &mut report).await {
            report.errors.push(format!("{stream}: {e}"));
        }
        let first_left = first_left(&mut job.conn, &stream).await.map(Some);
        StreamDone {
            dir: job.dir,
            writer: job.writer,
            report,
            first_left,
        }
    }

    /// Archives the entries of one partition's stream that may leave, then trims them.
    async fn move_entries(
        &self,
        job: &mut StreamJob,
        stream: &str,
        report: &mut ArchiveReport,
    ) -> anyhow::Result<()> {
        let (conn, layout, part) = (&mut job.conn, &job.layout, job.part);
        let retain = self.settings.retain.as_millis() as u64;
        let mut bound = StreamId {
            ms: job.now.saturating_sub(retain),
            seq: 0,
        };
        let Some(acked) = acked_below(conn, stream, &job.expected).await? else {
            report.held.push(Held {
                stream: stream.to_string(),
                reason: "a consumer group that reads it does not exist yet".into(),
            });
            return Ok(());
        };
        bound = bound.min(acked);
        // log:order: up to where every entry's saga is known final and queued for retirement.
        let mut queued: Option<Option<StreamId>> = None;
        if job.service == ORDER {
            let cp: Option<String> = redis::cmd("GET")
                .arg(keys::logparser_checkpoint(layout, part))
                .query_async(conn)
                .await?;
            let Some(cp) = cp.as_deref().and_then(StreamId::parse) else {
                report.held.push(Held {
                    stream: stream.to_string(),
                    reason: "no recovery checkpoint yet".into(),
                });
                return Ok(());
            };
            bound = bound.min(cp.next());
            queued = Some(self.queue_final(job, stream, acked.min(cp.next())).await?);
        }
        let (conn, layout) = (&mut job.conn, &job.layout);
        let mut after: Option<String> = None;
        let mut moved = 0usize;
        let below = bound.to_string();
        loop {
            let mut entries = log::read_page_below(
                conn,
                stream,
                after.as_deref().unwrap_or("-"),
                Some(&below),
                PAGE,
            )
            .await?;
            let Some(last) = entries.last() else {
                break;
            };
            after = Some(last.stream_id.clone());
            let page = entries.len();
            let page_last = StreamId::parse(&last.stream_id);
            let (movable, final_sagas, stop) = match (queued, page_last) {
                // Every saga of the page was seen final (and queued) already.
                (Some(Some(q)), Some(l)) if l <= q => (page, Vec::new(), None),
                // log:order's final sagas are queued for retirement: each is asked about.
                _ => self.movable(&entries, job.service != ORDER).await?,
            };
            entries.truncate(movable);
            if let Some(last) = entries.last() {
                let min = StreamId::parse(&last.stream_id)
                    .map(StreamId::next)
                    .unwrap_or_default();
                if job.service == ORDER {
                    queue_for_retirement(conn, layout, part, &final_sagas).await?;
                }
                // Compressing and fsyncing block: off the runtime's threads, so that the other
                // streams' round trips go on meanwhile.
                let (writer, dir, name) = (job.writer.take(), job.dir.clone(), stream.to_string());
                let (writer, written) = tokio::task::spawn_blocking(move || {
                    let mut w = match writer {
                        Some(w) => w,
                        None => SegmentWriter::open(&dir)?,
                    };
                    let n = w.append(&name, &entries)?;
                    Ok::<_, archive::ArchiveError>((w, n))
                })
                .await??;
                job.writer = Some(writer);
                let trimmed: u64 = redis::cmd("XTRIM")
                    .arg(stream)
                    .arg("MINID")
                    .arg(min.to_string())
                    .query_async(conn)
                    .await?;
                report.archived += written as u64;
                report.trimmed += trimmed;
                moved += movable;
            }
            if let Some(reason) = stop {
                report.held.push(Held {
                    stream: stream.to_string(),
                    reason,
                });
                break;
            }
            if page < PAGE || moved >= MAX_PER_STREAM {
                break;
            }
        }
        Ok(())
    }

    /// Queues for retirement the final sagas of one order partition's entries below `below`
    /// (every group's acknowledgement and the recovery checkpoint), as soon as they are there:
    /// not only once they are old enough to archive, so that a saga's records leave one
    /// `LOG_RETAIN` after it ends rather than two. The same prefix rule as archiving: the scan
    /// stops at the first entry of a saga that is not final, and `logparser:queued:{o<k>}`
    /// remembers the last entry scanned (a lost cursor only scans again: `ZADD NX`).
    ///
    /// Why then: every entry of the saga in `log:order` has been handled by every group, so
    /// whatever their handling appended to any log was appended before `t` (order-db's time
    /// now, the score); retirement waits until every log is archived past `t` + the margin.
    /// Returns the last entry scanned, whose sagas and those of every entry before it are final.
    async fn queue_final(
        &self,
        job: &mut StreamJob,
        stream: &str,
        below: StreamId,
    ) -> anyhow::Result<Option<StreamId>> {
        let (conn, layout, part) = (&mut job.conn, &job.layout, job.part);
        let cursor = keys::logparser_queued(layout, part);
        let mut after: Option<String> = redis::cmd("GET").arg(&cursor).query_async(conn).await?;
        let mut scanned = 0usize;
        let until = below.to_string();
        loop {
            let noted = match (&self.sightings, after.as_deref().and_then(StreamId::parse)) {
                (Some(s), Some(cursor)) => s.after(part, cursor, below, PAGE),
                _ => None,
            };
            let seen = match noted {
                Some(seen) => {
                    self.metrics
                        .incr("archive_queue_noted_total", seen.len() as u64);
                    seen
                }
                None => {
                    let entries = log::read_page_below(
                        conn,
                        stream,
                        after.as_deref().unwrap_or("-"),
                        Some(&until),
                        PAGE,
                    )
                    .await?;
                    self.metrics
                        .incr("archive_queue_read_total", entries.len() as u64);
                    let ol = self.dbs.order_layout;
                    entries.iter().map(|e| Seen::of(e, &ol)).collect()
                }
            };
            let page = seen.len();
            let (movable, final_sagas, _) = self.movable_seen(&seen, false).await?;
            if movable > 0 {
                queue_for_retirement(conn, layout, part, &final_sagas).await?;
                let last = seen[movable - 1].id.to_string();
                let _: () = redis::cmd("SET")
                    .arg(&cursor)
                    .arg(&last)
                    .query_async(conn)
                    .await?;
                after = Some(last);
                scanned += movable;
            }
            if movable < page || page < PAGE || scanned >= MAX_PER_STREAM {
                break;
            }
        }
        Ok(after.as_deref().and_then(StreamId::parse))
    }

    /// How many entries of `entries` (from the first) may leave: up to the first of a saga that
    /// is not final (or that cannot be decoded). Also the final sagas among them that still have
    /// a record (to retire later), and why the rest stays. With `remembered`, a saga already
    /// seen final is taken as final without asking, and is not among those returned to retire:
    /// only for a log whose final sagas are not queued (not `log:order`).
    async fn movable(
        &self,
        entries: &[LogEntry],
        remembered: bool,
    ) -> Result<(usize, Vec<String>, Option<String>), redis::RedisError> {
        let ol = self.dbs.order_layout;
        let seen: Vec<Seen> = entries.iter().map(|e| Seen::of(e, &ol)).collect();
        self.movable_seen(&seen, remembered).await
    }

    /// [`Self::movable`] over entries decoded to their sagas (by the recovery pass, or just now).
    async fn movable_seen(
        &self,
        decoded: &[Seen],
        remembered: bool,
    ) -> Result<(usize, Vec<String>, Option<String>), redis::RedisError> {
        let mut sagas: Vec<(String, String)> = Vec::new();
        let mut seen = HashSet::new();
        let mut known = HashSet::new();
        for d in decoded {
            if let Ok(Some((sid, key))) = &d.saga {
                if remembered && self.finals.contains(sid) {
                    known.insert(key.as_str());
                } else if seen.insert(key.clone()) {
                    sagas.push((sid.clone(), key.clone()));
                }
            }
        }
        if !known.is_empty() {
            self.metrics
                .incr("archive_final_remembered_total", known.len() as u64);
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
        for ((sid, key), d) in sagas.iter().zip(&done) {
            let present = d.is_some();
            let is_final = d.is_none() || d.as_deref() == Some("1");
            if is_final {
                self.finals.insert(sid);
            }
            finality.insert(key.as_str(), (is_final, present));
        }
        // Seen final before: final, and not to be queued again by this caller.
        for key in known {
            finality.entry(key).or_insert((true, false));
        }
        let mut final_sagas = Vec::new();
        let mut queued = HashSet::new();
        for (i, d) in decoded.iter().enumerate() {
            match &d.saga {
                Err(e) => return Ok((i, final_sagas, Some(format!("entry cannot be read: {e}")))),
                Ok(None) => {}
                Ok(Some((sid, key))) => match finality.get(key.as_str()) {
                    Some((true, present)) => {
                        if *present && queued.insert(sid.clone()) {
                            final_sagas.push(sid.clone());
                        }
                    }
                    _ => {
                        let why = format!("saga {sid} is not final (entry {})", d.id);
                        return Ok((i, final_sagas, Some(why)));
                    }
                },
            }
        }
        Ok((decoded.len(), final_sagas, None))
    }

    /// Retires the records of the queued sagas seen final before `before` (ms): a batch from
    /// every order partition at once, under one retirement mark, until none has any left.
    async fn retire(
        &self,
        before: u64,
        report: &mut ArchiveReport,
    ) -> Result<(), ArchivePassError> {
        let ol = self.dbs.order_layout;
        let mut order = self.dbs.order.clone();
        let mut left: Vec<u32> = ol.parts().collect();
        while !left.is_empty() {
            let reads = left
                .iter()
                .map(|&part| {
                    let mut cmd = redis::cmd("ZRANGE");
                    cmd.arg(keys::logparser_retire(&ol, part))
                        .arg("-inf")
                        .arg(format!("({before}"))
                        .arg("BYSCORE")
                        .arg("LIMIT")
                        .arg(0)
                        .arg(RETIRE_BATCH);
                    cmd
                })
                .collect();
            let found: Vec<Vec<String>> = common::db::each(&mut order, reads).await?;
            let batches: Vec<(u32, Vec<String>)> = left
                .iter()
                .copied()
                .zip(found)
                .filter(|(_, sids)| !sids.is_empty())
                .collect();
            if batches.is_empty() {
                break;
            }
            if !audit_hold::begin_retiring(&mut order).await? {
                report.held.push(Held {
                    stream: keys::AUDIT_HOLDS.into(),
                    reason: "an audit is running: retirement waits for its end".into(),
                });
                break;
            }
            let retiring = batches.iter().map(|(part, sids)| async move {
                let mut r = ArchiveReport::default();
                let done = self.retire_batch(*part, sids, &mut r).await;
                (r, done)
            });
            let done = futures::future::join_all(retiring).await;
            audit_hold::end_retiring(&mut order).await?;
            left.clear();
            let mut zrems = Vec::new();
            for ((part, sids), (r, done)) in batches.iter().zip(done) {
                report.absorb(r);
                let queue = keys::logparser_retire(&ol, *part);
                if let Err(e) = done {
                    report
                        .errors
                        .push(format!("retiring sagas of {queue}: {e}"));
                    continue;
                }
                let mut zrem = redis::cmd("ZREM");
                zrem.arg(&queue);
                for s in sids {
                    zrem.arg(s);
                }
                zrems.push(zrem);
                if sids.len() as isize == RETIRE_BATCH {
                    left.push(*part);
                }
            }
            if !zrems.is_empty() {
                let _: Vec<i64> = common::db::each(&mut order, zrems).await?;
            }
        }
        let cards = ol
            .parts()
            .map(|part| {
                let mut cmd = redis::cmd("ZCARD");
                cmd.arg(keys::logparser_retire(&ol, part));
                cmd
            })
            .collect();
        let waiting: Vec<u64> = common::db::each(&mut order, cards).await?;
        report.retire_queue += waiting.iter().sum::<u64>();
        Ok(())
    }

    /// Checks and retires the records of sagas `sids` of order partition `part`.
    async fn retire_batch(
        &self,
        part: u32,
        sids: &[String],
        report: &mut ArchiveReport,
    ) -> anyhow::Result<()> {
        let ol = self.dbs.order_layout;
        let mut order = self.dbs.order.clone();
        // The saga records, read once: decoded to decide what is final, and kept as read for
        // the atomicity check (a saga absent was retired by an interrupted earlier attempt).
        let saga_keys: Vec<String> = sids.iter().map(|s| keys::saga(&ol, part, s)).collect();
        let mut order_state = crate::replay::read_keys(&mut order, &saga_keys).await?;
        let mut records: Vec<SagaRecord> = Vec::new();
        let mut final_keys: HashSet<&String> = HashSet::new();
        for (sid, key) in sids.iter().zip(&saga_keys) {
            let Some(h) = order_state.get(key) else {
                continue;
            };
            match SagaRecord::from_fields(&ol, part, sid, h) {
                Ok(r) if r.done => {
                    final_keys.insert(key);
                    records.push(r);
                }
                Ok(r) => report
                    .errors
                    .push(format!("saga {} queued for retirement is not final", r.id)),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        if records.is_empty() {
            return Ok(());
        }
        // What the audit would read of these sagas: the order side (the saga records of the
        // final ones, their orders) and every participant's.
        order_state.retain(|k, _| final_keys.contains(k));
        let order_keys: Vec<String> = records.iter().map(|r| keys::order(&ol, &r.order)).collect();
        order_state.extend(crate::replay::read_keys(&mut order, &order_keys).await?);
        let mut live: BTreeMap<&'static str, State> = BTreeMap::new();
        let mut layouts: BTreeMap<&'static str, Layout> = BTreeMap::from([(ORDER, ol)]);
        live.insert(ORDER, order_state);
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
        // partition took ~35 round trips in a row.
        let this = self;
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
    /// `index` names the partition's saga index, whose members of these sagas go too, and the
    /// records are logged with their fields; a participant's are logged by key.
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
            } else {
                inv.arg("keys");
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
