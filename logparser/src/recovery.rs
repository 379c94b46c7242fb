//! Recovery passes: abort sagas stuck undecided, re-drive aborts whose compensations are not
//! confirmed, report stuck deliveries.
//!
//! - A saga undecided for longer than `SAGA_TIMEOUT` is aborted through the same fenced
//!   compare-and-set the services use (`common::saga::abort`), holding the order's Redlock, which
//!   starts the normal compensations. A commit that wins the race simply makes the abort a no-op.
//! - A saga decided `abort` whose compensations are still unconfirmed `REDRIVE_AFTER` later gets
//!   `CheckoutAborted` re-appended (`common::saga::redrive`): compensations are idempotent.
//!
//! The daemon's passes are incremental: the parser keeps, per partition of `log:order`, a
//! checkpoint and the set of sagas it has seen start but not finish (`logparser:checkpoint:{o<k>}`,
//! `logparser:open:{o<k>}` in order-db), so a pass reads only the new entries and the records of
//! open sagas. A full pass (`shoplog recover`,
//! or a daemon starting without a checkpoint) scans every saga record instead.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::event::Event;
use common::ids::IdPool;
use common::keys::{self, ORDER_LOG};
use common::lock::Redlock;
use common::log;
use common::metrics::Metrics;
use common::saga::{Reply, SagaHome, SagaRecord, SagaState};

use crate::dbs::Dbs;
use crate::delivery::{self, GroupReport};
use crate::saga_index;
use crate::sagas::{self, now_ms};
use crate::sightings::{Seen, Sightings};

/// The reason recorded on sagas the parser aborts.
pub const TIMEOUT_REASON: &str = "checkout stalled past SAGA_TIMEOUT; aborted by the log parser";

/// Why a pass could not run (problems with single sagas do not stop a pass: they are listed in
/// [`PassReport::errors`]).
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    /// order-db did not answer or answered an error; the next pass retries.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
    /// `log:order` could not be read.
    #[error(transparent)]
    Log(#[from] common::log::LogError),
    /// The order's admission lock could not be taken (its checkout is being admitted, or too
    /// few lock nodes answer); the next pass retries.
    #[error(transparent)]
    Lock(#[from] common::lock::LockFailure),
}

/// When to act.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Undecided for this long → abort.
    pub saga_timeout: Duration,
    /// Aborted, unconfirmed this long after the timeout → re-drive (and at most this often).
    pub redrive_after: Duration,
}

/// What one pass did (or, dry, would do).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct PassReport {
    /// `full` or `incremental`.
    pub mode: &'static str,
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// `log:order` entries read.
    pub entries_read: u64,
    /// Saga records examined.
    pub sagas_checked: u64,
    /// Sagas started and not done after the pass.
    pub open_sagas: usize,
    /// Sagas aborted (or that would be).
    pub aborted: Vec<String>,
    /// Sagas re-driven (or that would be).
    pub redriven: Vec<String>,
    /// Consumer groups: lag, pending, stuck consumers, dead letters.
    pub groups: Vec<GroupReport>,
    /// Problems met (the pass goes on).
    pub errors: Vec<String>,
    /// How long the pass took.
    pub duration_ms: u64,
}

/// What to do with a saga, if anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Abort it (undecided too long).
    Abort,
    /// Re-append its `CheckoutAborted`.
    Redrive,
}

/// Decides what a saga needs, `now_ms` being the current time.
pub fn decide(r: &SagaRecord, now_ms: u64, s: &Settings) -> Option<Action> {
    let age = r.age_ms(now_ms);
    let timeout = s.saga_timeout.as_millis() as u64;
    match r.state() {
        SagaState::InFlight if age > timeout => Some(Action::Abort),
        SagaState::Compensating if age > timeout + s.redrive_after.as_millis() as u64 => {
            Some(Action::Redrive)
        }
        _ => None,
    }
}

/// The recovery engine (one per process).
pub struct Recovery {
    dbs: Dbs,
    locks: Redlock,
    ids: Arc<IdPool>,
    settings: Settings,
    metrics: Arc<Metrics>,
    /// Sagas started and not done, as `(partition, saga id)`.
    open: BTreeSet<(u32, String)>,
    /// Per partition of `log:order`, the last entry read (all `None` before the first pass).
    checkpoints: Vec<Option<String>>,
    redriven_at: HashMap<String, Instant>,
    /// Where the entries an incremental pass reads are noted for the archiver, when it shares
    /// them ([`Recovery::with_sightings`]).
    sightings: Option<Sightings>,
}

impl Recovery {
    /// An engine over `dbs`.
    pub fn new(
        dbs: Dbs,
        locks: Redlock,
        ids: Arc<IdPool>,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> Recovery {
        Recovery {
            dbs,
            locks,
            ids,
            settings,
            metrics,
            open: BTreeSet::new(),
            checkpoints: Vec::new(),
            redriven_at: HashMap::new(),
            sightings: None,
        }
    }

    /// The same engine, noting what its incremental passes read of `log:order` in `sightings`
    /// for the archiver's retirement queue (the daemon, which runs both).
    pub fn with_sightings(mut self, sightings: Sightings) -> Recovery {
        self.sightings = Some(sightings);
        self
    }

    /// The daemon's first pass: continue from the persisted checkpoint when there is one, else a
    /// full pass that establishes it.
    pub async fn startup(&mut self) -> Result<PassReport, RecoveryError> {
        let mut conn = self.dbs.order.clone();
        let l = self.dbs.order_layout;
        let mut checkpoints = Vec::new();
        let mut open = BTreeSet::new();
        let mut indexed = true;
        for part in l.parts() {
            let cp: Option<String> = redis::cmd("GET")
                .arg(keys::logparser_checkpoint(&l, part))
                .query_async(&mut conn)
                .await?;
            // A database from before the saga index, or a pass that never stored: rebuild.
            let exists: bool = redis::cmd("EXISTS")
                .arg(keys::logparser_index(&l, part))
                .query_async(&mut conn)
                .await?;
            indexed &= exists;
            let members: Vec<String> = redis::cmd("SMEMBERS")
                .arg(keys::logparser_open(&l, part))
                .query_async(&mut conn)
                .await?;
            checkpoints.push(cp);
            open.extend(members.into_iter().map(|s| (part, s)));
        }
        if indexed && checkpoints.iter().all(Option::is_some) {
            self.checkpoints = checkpoints;
            self.open = open;
            self.incremental_pass().await
        } else {
            self.full_pass(false).await
        }
    }

    /// Scans every saga record. Not dry: acts, and (re)establishes the checkpoint and open set.
    pub async fn full_pass(&mut self, dry_run: bool) -> Result<PassReport, RecoveryError> {
        let started = Instant::now();
        let mut report = PassReport {
            mode: "full",
            dry_run,
            ..PassReport::default()
        };
        let mut conn = self.dbs.order.clone();
        let l = self.dbs.order_layout;
        // The checkpoints are taken before the scan: sagas started during it are read next pass.
        let mut last = Vec::new();
        for part in l.parts() {
            last.push(Some(
                last_id(&mut conn, &keys::log(ORDER_LOG, &l, part)).await?,
            ));
        }
        // The saga index is rebuilt beside the live one and renamed over it when stored.
        if !dry_run {
            let cmds = l
                .parts()
                .flat_map(|part| {
                    let new = keys::logparser_index_new(&l, part);
                    let mut del = redis::cmd("DEL");
                    del.arg(&new);
                    let mut mark = redis::cmd("ZADD");
                    mark.arg(&new).arg(0).arg(saga_index::MARKER);
                    [del, mark]
                })
                .collect();
            common::db::each::<redis::Value>(&mut conn, cmds).await?;
        }
        let mut records = Vec::new();
        let mut malformed = Vec::new();
        let mut scan = sagas::Scan::start(&mut conn).await?;
        while let Some(page) = scan.next_page(&mut conn, &l).await? {
            let mut by_part: BTreeMap<u32, Vec<String>> = BTreeMap::new();
            for r in page {
                match r {
                    Ok(r) => {
                        if !dry_run {
                            by_part
                                .entry(r.part)
                                .or_default()
                                .extend(saga_index::members(&r));
                        }
                        if matches!(r.state(), SagaState::InFlight | SagaState::Compensating) {
                            records.push(r)
                        }
                    }
                    Err(e) => malformed.push(e.to_string()),
                }
            }
            let cmds: Vec<redis::Cmd> = by_part
                .into_iter()
                .map(|(part, members)| {
                    let mut c = redis::cmd("ZADD");
                    c.arg(keys::logparser_index_new(&l, part));
                    for m in members {
                        c.arg(0).arg(m);
                    }
                    c
                })
                .collect();
            if !cmds.is_empty() {
                common::db::each::<redis::Value>(&mut conn, cmds).await?;
            }
        }
        report.errors.extend(malformed);
        report.sagas_checked = records.len() as u64;
        let still_open = self.act(records, dry_run, &mut report).await;
        if !dry_run {
            self.open = still_open;
            self.checkpoints = last;
            self.persist(&BTreeSet::new(), true).await?;
        }
        self.finish(&mut report, started).await;
        Ok(report)
    }

    /// Reads every partition of `log:order` past its checkpoint, then examines the open sagas.
    pub async fn incremental_pass(&mut self) -> Result<PassReport, RecoveryError> {
        let l = self.dbs.order_layout;
        if self.checkpoints.len() != l.p as usize || self.checkpoints.iter().any(Option::is_none) {
            return self.full_pass(false).await;
        }
        let started = Instant::now();
        let mut report = PassReport {
            mode: "incremental",
            ..PassReport::default()
        };
        let mut conn = self.dbs.order.clone();
        let mut touched = BTreeSet::new();
        for part in l.parts() {
            let stream = keys::log(ORDER_LOG, &l, part);
            let after = self.checkpoints[part as usize].clone().unwrap_or_default();
            let after = self
                .read_partition(&mut conn, &stream, part, after, &mut touched, &mut report)
                .await?;
            self.checkpoints[part as usize] = Some(after);
        }
        let ids: Vec<(u32, String)> = self.open.iter().cloned().collect();
        let mut records: Vec<SagaRecord> = Vec::new();
        for loaded in sagas::load_many(&mut conn, &l, &ids)
            .await?
            .into_iter()
            .flatten()
        {
            match loaded {
                Ok(r) => records.push(r),
                Err(e) => report.errors.push(e.to_string()),
            }
        }
        report.sagas_checked = records.len() as u64;
        self.open = self.act(records, false, &mut report).await;
        self.persist(&touched, false).await?;
        self.finish(&mut report, started).await;
        Ok(report)
    }

    /// Reads one partition of `log:order` past `after`, counting sagas, noting the started
    /// ones as open and every saga an entry names in `touched` (to re-index); returns the id of
    /// the last entry read.
    async fn read_partition(
        &mut self,
        conn: &mut common::db::Conn,
        stream: &str,
        part: u32,
        mut after: String,
        touched: &mut BTreeSet<(u32, String)>,
        report: &mut PassReport,
    ) -> Result<String, RecoveryError> {
        loop {
            let page = log::read_page(conn, stream, &after, 10_000).await?;
            let Some(last) = page.last() else { break };
            let read_after = std::mem::replace(&mut after, last.stream_id.clone());
            report.entries_read += page.len() as u64;
            // The page's entries as the archiver's retirement queue needs them, when it shares
            // the notes: from the decoding done here, not a second one.
            let ol = self.dbs.order_layout;
            let mut noted = Vec::with_capacity(if self.sightings.is_some() {
                page.len()
            } else {
                0
            });
            for e in &page {
                if let Some(sid) = e.get("saga") {
                    touched.insert((part, sid.to_string()));
                }
                let decoded = e.decode();
                if self.sightings.is_some() {
                    noted.push(Seen::new(&e.stream_id, decoded.as_ref(), &ol));
                }
                let event = match decoded {
                    Ok(event) => event,
                    Err(err) => {
                        report.errors.push(err.to_string());
                        continue;
                    }
                };
                match event {
                    Event::CheckoutStarted { saga, .. } => {
                        self.metrics.incr("sagas_seen_total", 1);
                        self.open.insert((part, saga));
                    }
                    Event::CheckoutCommitted { .. } => {
                        self.metrics.incr("sagas_committed_total", 1)
                    }
                    // A re-driven abort repeats the entry: count each saga's abort once.
                    Event::CheckoutAborted { saga, .. }
                        if !self.redriven_at.contains_key(&saga) =>
                    {
                        self.metrics.incr("sagas_aborted_total", 1)
                    }
                    _ => {}
                }
            }
            if let Some(s) = &self.sightings {
                s.record(part, &read_after, noted, &ol);
            }
        }
        Ok(after)
    }

    /// Acts on each record; returns the sagas still open afterwards.
    async fn act(
        &mut self,
        records: Vec<SagaRecord>,
        dry_run: bool,
        report: &mut PassReport,
    ) -> BTreeSet<(u32, String)> {
        let now = now_ms();
        let mut open = BTreeSet::new();
        for r in records {
            if r.state() == SagaState::Committed || r.state() == SagaState::Aborted {
                continue;
            }
            open.insert((r.part, r.id.clone()));
            match decide(&r, now, &self.settings) {
                Some(Action::Abort) => {
                    if dry_run {
                        report.aborted.push(r.id.clone());
                        continue;
                    }
                    match self.abort(&r).await {
                        Ok(true) => {
                            self.metrics.incr("sagas_recovered_total", 1);
                            tracing::warn!(saga = %r.id, order = %r.order, age_ms = r.age_ms(now), "aborted a stalled saga");
                            report.aborted.push(r.id.clone());
                        }
                        Ok(false) => {}
                        Err(e) => report.errors.push(format!("saga {}: {e}", r.id)),
                    }
                }
                Some(Action::Redrive) => {
                    let recently = self
                        .redriven_at
                        .get(&r.id)
                        .is_some_and(|t| t.elapsed() < self.settings.redrive_after);
                    if recently {
                        continue;
                    }
                    if dry_run {
                        report.redriven.push(r.id.clone());
                        continue;
                    }
                    let mut conn = self.dbs.order.clone();
                    let home = SagaHome {
                        layout: &self.dbs.order_layout,
                        part: r.part,
                    };
                    match common::saga::redrive(&mut conn, home, &self.ids.next(), &r.id).await {
                        Ok(Reply::Ok(_)) => {
                            self.redriven_at.insert(r.id.clone(), Instant::now());
                            self.metrics.incr("sagas_redriven_total", 1);
                            tracing::warn!(saga = %r.id, "re-drove the compensation of an aborted saga");
                            report.redriven.push(r.id.clone());
                        }
                        Ok(other) => {
                            tracing::debug!(saga = %r.id, reply = other.name(), "re-drive not needed")
                        }
                        Err(e) => report.errors.push(format!("saga {}: {e}", r.id)),
                    }
                }
                None => {}
            }
        }
        let still: BTreeSet<&str> = open.iter().map(|(_, id)| id.as_str()).collect();
        self.redriven_at.retain(|id, _| still.contains(id.as_str()));
        open
    }

    /// Aborts `r` while holding its order's Redlock; `Ok(true)` when this call decided it.
    async fn abort(&self, r: &SagaRecord) -> Result<bool, RecoveryError> {
        let lease = self
            .locks
            .lock_within(
                &keys::order_lock(&r.order),
                Duration::from_secs(10),
                Duration::from_secs(2),
            )
            .await?;
        let mut conn = self.dbs.order.clone();
        let parts = self.dbs.parts;
        let home = SagaHome {
            layout: &self.dbs.order_layout,
            part: r.part,
        };
        let reply = common::saga::abort(
            &mut conn,
            home,
            parts,
            &self.ids.next(),
            &r.id,
            TIMEOUT_REASON,
        )
        .await;
        self.locks.release(lease).await;
        let reply = reply?;
        if !reply.applied() {
            tracing::debug!(saga = %r.id, reply = reply.name(), "a decision came first");
        }
        Ok(reply.applied())
    }

    /// Stores each partition's checkpoint and open set, and re-indexes the sagas in `touched`
    /// from their records (`lua/index.lua`, one partition's keys, one slot); `rebuild` first
    /// renames the index a full pass built over the live one. The last script of a partition
    /// moves its checkpoint with its share of the index; the ones before it (a long tail, in
    /// chunks) only re-index, which a pass that reads the same entries again repeats harmlessly.
    async fn persist(
        &self,
        touched: &BTreeSet<(u32, String)>,
        rebuild: bool,
    ) -> Result<(), RecoveryError> {
        const CHUNK: usize = 1_000;
        let mut conn = self.dbs.order.clone();
        let l = self.dbs.order_layout;
        for part in l.parts() {
            let sids: Vec<&str> = touched
                .iter()
                .filter(|(p, _)| *p == part)
                .map(|(_, id)| id.as_str())
                .collect();
            let chunks: Vec<&[&str]> = if sids.is_empty() {
                vec![&[]]
            } else {
                sids.chunks(CHUNK).collect()
            };
            let last = chunks.len() - 1;
            for (i, chunk) in chunks.into_iter().enumerate() {
                let mut inv = saga_index::STORE.prepare_invoke();
                inv.key(keys::logparser_index(&l, part))
                    .key(keys::logparser_index_new(&l, part))
                    .key(keys::logparser_checkpoint(&l, part))
                    .key(keys::logparser_open(&l, part));
                for sid in chunk {
                    inv.key(keys::saga(&l, part, sid));
                }
                if i == last {
                    let open: Vec<&str> = self
                        .open
                        .iter()
                        .filter(|(p, _)| *p == part)
                        .map(|(_, id)| id.as_str())
                        .collect();
                    let cp = self
                        .checkpoints
                        .get(part as usize)
                        .cloned()
                        .flatten()
                        .unwrap_or_default();
                    inv.arg(cp)
                        .arg(if rebuild { "1" } else { "0" })
                        .arg(open.len());
                    for id in open {
                        inv.arg(id);
                    }
                } else {
                    inv.arg("").arg("0").arg(-1);
                }
                for sid in chunk {
                    inv.arg(*sid);
                }
                let _: i64 = inv.invoke_async(&mut conn).await?;
            }
        }
        Ok(())
    }

    async fn finish(&self, report: &mut PassReport, started: Instant) {
        report.open_sagas = self.open.len();
        match delivery::report(&self.dbs).await {
            Ok(groups) => {
                for g in &groups {
                    let labels = format!("{{log=\"{}\",group=\"{}\"}}", g.stream, g.group);
                    self.metrics
                        .set_gauge(format!("consumer_lag{labels}"), g.lag);
                    self.metrics
                        .set_gauge(format!("consumer_pending{labels}"), g.pending);
                    self.metrics
                        .set_gauge(format!("dead_letters{labels}"), g.dead_letters);
                    for (name, pending, idle) in &g.stuck {
                        tracing::warn!(stream = %g.stream, group = %g.group, consumer = %name, pending, idle_ms = idle,
                            "entries pending on a consumer that stopped reading; a live replica will claim them");
                    }
                    if g.dead_letters > 0 {
                        tracing::error!(stream = %g.stream, group = %g.group, count = g.dead_letters,
                            "dead letters waiting; see docs/OPERATIONS.md");
                    }
                }
                report.groups = groups;
            }
            Err(e) => report.errors.push(format!("delivery report: {e}")),
        }
        report.duration_ms = started.elapsed().as_millis() as u64;
        self.metrics
            .set_gauge("recovery_pass_duration_ms", report.duration_ms as i64);
        self.metrics
            .set_gauge("open_sagas", report.open_sagas as i64);
        self.metrics.incr("recovery_passes_total", 1);
    }
}

/// The id of the last entry of `stream` (`0-0` when empty).
async fn last_id(conn: &mut common::db::Conn, stream: &str) -> Result<String, redis::RedisError> {
    let last: Vec<(String, Vec<(String, String)>)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(last
        .into_iter()
        .next()
        .map(|(id, _)| id)
        .unwrap_or_else(|| "0-0".to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::saga::Decision;

    /// Saga `s-o` of order `o` by user `u`.
    fn record(decision: Decision, done: bool, started_ms: u64) -> SagaRecord {
        common::testing::saga_record("o", "u", decision, done, started_ms)
    }

    #[test]
    fn decide_aborts_stalled_sagas_and_redrives_unconfirmed_aborts_only_when_due() {
        let s = Settings {
            saga_timeout: Duration::from_millis(1000),
            redrive_after: Duration::from_millis(500),
        };
        let now = 10_000;
        // Undecided: aborted once past the timeout, not at it.
        assert_eq!(decide(&record(Decision::None, false, 9_000), now, &s), None);
        assert_eq!(
            decide(&record(Decision::None, false, 8_999), now, &s),
            Some(Action::Abort)
        );
        // Aborted, compensations pending: re-driven past timeout + redrive_after.
        assert_eq!(
            decide(&record(Decision::Abort, false, 8_500), now, &s),
            None
        );
        assert_eq!(
            decide(&record(Decision::Abort, false, 8_499), now, &s),
            Some(Action::Redrive)
        );
        // Final sagas are never touched, however old.
        assert_eq!(decide(&record(Decision::Abort, true, 0), now, &s), None);
        assert_eq!(decide(&record(Decision::Commit, true, 0), now, &s), None);
        // A clock behind the start (another machine's) is age 0, not a huge age.
        assert_eq!(
            decide(&record(Decision::None, false, 20_000), now, &s),
            None
        );
    }
}
