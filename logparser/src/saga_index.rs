//! The saga list's index in order-db, and its one reader (the console's list and overview, and
//! `shoplog sagas`), so that a list, a filter or a count never scans the saga records.
//!
//! **Keys.** One sorted set per order partition, `logparser:index:{o<k>}`
//! ([`common::keys::logparser_index`], in the partition's slot), every score 0 and read by
//! lexicographic ranges (`ZREVRANGEBYLEX`, `ZLEXCOUNT`). A live saga record `sid` started at `s`
//! (ms, 15 digits, so that text order is time order) has the members ([`members`]):
//!
//! | member | for |
//! |---|---|
//! | `t\0<s>\0<sid>` | every live saga: the list newest first, the total |
//! | `u\0<user>\0<s>\0<sid>` | the sagas of a user (every partition) |
//! | `o\0<order>\0<s>\0<sid>` | the sagas of an order (its partition only) |
//! | `i\0<s>\0<sid>`, `c\0…`, `a\0…` | in flight, compensating, aborted (committed: none) |
//!
//! and the marker `!v1` says the index exists. Committed sagas are the `t` members without a
//! state member; a page of them walks the time members newest first and loads records in
//! batches until the page is full (committed sagas are the common case, so the walk is short).
//!
//! **Who writes it.** The log parser's recovery pass, from the `log:order` entries it reads
//! after its checkpoint: every saga an entry names is re-indexed from its record
//! (`lua/index.lua`, with the checkpoint and the open set, atomically); a full pass rebuilds the
//! index from the records it scans (into `logparser:index-new:{o<k>}`, renamed over the index
//! in the same script that stores the checkpoint). `lua/retire.lua` removes a retired saga's
//! members with its record. No checkout script writes it.
//!
//! **Freshness.** The index is as of the last pass; a reader adds the *tail*, the entries of
//! each partition after its checkpoint (at most [`TAIL_LIMIT`] a partition, else the answer says
//! the index is behind), loading the records of the sagas they name: those sagas are listed and
//! counted by their records, not by the index. So a saga shows the moment it starts.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::LazyLock;

use common::db::Conn;
use common::keys;
use common::partition::Layout;
use common::saga::SagaRecord;
use redis::Script;

use crate::sagas::{self, Filter, SagaState};

/// Lua shared by `lua/index.lua` and `lua/retire.lua`: the members of one record.
pub const MEMBERS_LUA: &str = include_str!("../lua/index_members.lua");

/// The member that marks an index as built.
pub const MARKER: &str = "!v1";

/// Entries of a partition's unindexed tail a reader reads at most; past that it says the index
/// is behind (the log parser is not running its passes).
pub const TAIL_LIMIT: usize = 10_000;

/// Records a list view examines at most (a filter that matches few sagas among many answers a
/// shorter page and a cursor to go on from).
pub const WALK_LIMIT: usize = 20_000;

/// A count of a user's or order's sagas by state loads at most this many records (else no total).
pub const COUNT_LIMIT: usize = 10_000;

/// Index members read per partition per round of a walk, at most.
const BATCH: usize = 200;

/// Index members read per partition per round of a walk, at least.
const MIN_BATCH: usize = 16;

/// The recovery pass's store of one partition (`lua/index.lua`).
pub static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        "{MEMBERS_LUA}\n{}",
        include_str!("../lua/index.lua")
    ))
});

/// Why the index could not be read.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// order-db did not answer or answered an error.
    #[error("order-db: {0}")]
    Redis(#[from] redis::RedisError),
    /// No pass has built the index of these partitions yet.
    #[error("no saga index in order-db (partitions {0}): no log parser has finished a recovery pass on this database; start the log parser (`shoplog up` starts one) or build the index with `shoplog recover`")]
    Missing(String),
}

/// `<started, 15 digits>\0<sid>`: where a saga sorts (time, then id).
pub fn rest(started_ms: u64, sid: &str) -> String {
    format!("{started_ms:015}\0{sid}")
}

/// The index members of `r` (the same as `lua/index_members.lua` writes).
pub fn members(r: &SagaRecord) -> Vec<String> {
    let s = rest(r.started_ms, &r.id);
    let mut m = vec![
        format!("t\0{s}"),
        format!("u\0{}\0{s}", r.user),
        format!("o\0{}\0{s}", r.order),
    ];
    match r.state() {
        SagaState::InFlight => m.push(format!("i\0{s}")),
        SagaState::Compensating => m.push(format!("c\0{s}")),
        SagaState::Aborted => m.push(format!("a\0{s}")),
        SagaState::Committed => {}
    }
    m
}

/// A list cursor as text (`<started_ms>-<sid>`, "older than this"), for a query string.
pub fn cursor_text(rest: &str) -> String {
    let (s, sid) = rest.split_once('\0').unwrap_or((rest, ""));
    format!(
        "{}-{sid}",
        s.trim_start_matches('0').parse::<u64>().unwrap_or(0)
    )
}

/// A cursor from its text; `None` when malformed.
pub fn parse_cursor(text: &str) -> Option<String> {
    let (s, sid) = text.split_once('-')?;
    let started: u64 = s.parse().ok()?;
    (!sid.is_empty()).then(|| rest(started, sid))
}

/// Counts of the live sagas by state, for the overview.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Undecided.
    #[serde(rename = "in-flight")]
    pub in_flight: u64,
    /// Undecided past `SAGA_TIMEOUT`.
    pub stuck: u64,
    /// Committed.
    pub committed: u64,
    /// Aborted, a compensation not confirmed yet.
    pub compensating: u64,
    /// Aborted and compensated.
    pub aborted: u64,
    /// Every live record.
    pub total: u64,
    /// When the index and its tail were read (ms since the epoch).
    pub as_of_ms: u64,
    /// Partitions whose unindexed tail is longer than [`TAIL_LIMIT`] (their newest sagas may
    /// be missing: the log parser is behind).
    pub behind: Vec<u32>,
}

/// A page of a listing.
#[derive(Debug, Default)]
pub struct Walk {
    /// The sagas, newest first.
    pub items: Vec<SagaRecord>,
    /// Where the next page starts (older than this), when there may be more.
    pub next: Option<String>,
    /// Whether the walk reached the end of the matching sagas.
    pub exhausted: bool,
    /// Malformed records met (each named).
    pub malformed: Vec<String>,
}

/// A saga of the tail: its record now, and the state the index has for it.
#[derive(Debug)]
struct Overlaid {
    rest: String,
    record: SagaRecord,
    indexed: Option<SagaState>,
}

/// The index as one reader sees it: which partitions, and the records of the sagas the
/// unindexed tail names.
#[derive(Debug)]
pub struct Snapshot {
    l: Layout,
    overlay: Vec<Overlaid>,
    /// Malformed records of the tail.
    pub malformed: Vec<String>,
    /// When it was read (ms since the epoch).
    pub as_of_ms: u64,
    /// Partitions whose tail is longer than [`TAIL_LIMIT`].
    pub behind: Vec<u32>,
}

type RawEntries = Vec<(String, Vec<(String, String)>)>;

/// `common::db::each`, answering nothing for no commands (a pipeline must not be empty).
async fn each<T: redis::FromRedisValue>(
    conn: &mut Conn,
    cmds: Vec<redis::Cmd>,
) -> redis::RedisResult<Vec<T>> {
    if cmds.is_empty() {
        return Ok(Vec::new());
    }
    common::db::each(conn, cmds).await
}

/// `command <key of partition k>` for every partition of `l`, pipelined; the answers in
/// partition order.
async fn per_partition<T: redis::FromRedisValue>(
    conn: &mut Conn,
    l: &Layout,
    command: &str,
    key: fn(&Layout, u32) -> String,
) -> redis::RedisResult<Vec<T>> {
    let cmds = l
        .parts()
        .map(|k| {
            let mut c = redis::cmd(command);
            c.arg(key(l, k));
            c
        })
        .collect();
    each(conn, cmds).await
}

/// Where a filter's candidates come from: the members under `prefix` in `parts`.
fn source(f: &Filter, l: &Layout) -> (String, Vec<u32>) {
    if let Some(u) = &f.user {
        (format!("u\0{u}\0"), l.parts().collect())
    } else if let Some(o) = &f.order {
        (format!("o\0{o}\0"), vec![l.part(o)])
    } else if f.stuck || f.state == Some(SagaState::InFlight) {
        ("i\0".into(), l.parts().collect())
    } else {
        let p = match f.state {
            Some(SagaState::Compensating) => "c\0",
            Some(SagaState::Aborted) => "a\0",
            _ => "t\0",
        };
        (p.into(), l.parts().collect())
    }
}

/// The filter's time bounds as `(lowest, inclusive; highest, exclusive)` of [`rest`].
fn bounds(f: &Filter, now_ms: u64, timeout_ms: u64) -> (Option<String>, Option<String>) {
    let lo = f
        .max_age_ms
        .map(|m| format!("{:015}", now_ms.saturating_sub(m)));
    let mut hi: Option<String> = None;
    let mut lower = |h: String| {
        if hi.as_ref().is_none_or(|cur| h < *cur) {
            hi = Some(h);
        }
    };
    if f.min_age_ms > 0 {
        lower(format!("{:015}", now_ms.saturating_sub(f.min_age_ms) + 1));
    }
    if f.stuck {
        lower(format!("{:015}", now_ms.saturating_sub(timeout_ms)));
    }
    (lo, hi)
}

/// `ZREVRANGEBYLEX`/`ZLEXCOUNT` bounds of `prefix` between `lo` (inclusive) and `hi` (exclusive).
fn lex(prefix: &str, lo: Option<&str>, hi: Option<&str>) -> (String, String) {
    let min = format!("[{prefix}{}", lo.unwrap_or(""));
    let max = match hi {
        Some(h) => format!("({prefix}{h}"),
        None => format!("({}\u{1}", &prefix[..prefix.len() - 1]),
    };
    (min, max)
}

impl Snapshot {
    /// Reads which partitions have an index, and the tail after each one's checkpoint.
    pub async fn read(conn: &mut Conn, l: &Layout) -> Result<Snapshot, IndexError> {
        let as_of_ms = sagas::now_ms();
        let cps: Vec<Option<String>> =
            per_partition(conn, l, "GET", keys::logparser_checkpoint).await?;
        let built: Vec<bool> = per_partition(conn, l, "EXISTS", keys::logparser_index).await?;
        let missing: Vec<String> = l
            .parts()
            .filter(|&k| cps[k as usize].is_none() || !built[k as usize])
            .map(|k| k.to_string())
            .collect();
        if !missing.is_empty() {
            return Err(IndexError::Missing(missing.join(", ")));
        }
        let tails: Vec<RawEntries> = each(
            conn,
            l.parts()
                .map(|k| {
                    let mut c = redis::cmd("XRANGE");
                    c.arg(keys::log(keys::ORDER_LOG, l, k))
                        .arg(format!("({}", cps[k as usize].as_deref().unwrap_or("0-0")))
                        .arg("+")
                        .arg("COUNT")
                        .arg(TAIL_LIMIT + 1);
                    c
                })
                .collect(),
        )
        .await?;
        let mut behind = Vec::new();
        let mut touched: BTreeSet<(u32, String)> = BTreeSet::new();
        for (k, tail) in l.parts().zip(tails) {
            if tail.len() > TAIL_LIMIT {
                behind.push(k);
            }
            for (_, fields) in tail.into_iter().take(TAIL_LIMIT) {
                if let Some((_, sid)) = fields.into_iter().find(|(f, _)| f == "saga") {
                    touched.insert((k, sid));
                }
            }
        }
        let ids: Vec<(u32, String)> = touched.into_iter().collect();
        let mut malformed = Vec::new();
        let mut records = Vec::new();
        for loaded in sagas::load_many(conn, l, &ids).await?.into_iter().flatten() {
            match loaded {
                Ok(r) => records.push(r),
                Err(e) => malformed.push(e.to_string()),
            }
        }
        // What the index says of each: which of its members it has.
        let scores: Vec<Vec<Option<f64>>> = each(
            conn,
            records
                .iter()
                .map(|r| {
                    let s = rest(r.started_ms, &r.id);
                    let mut c = redis::cmd("ZMSCORE");
                    c.arg(keys::logparser_index(l, r.part))
                        .arg(format!("t\0{s}"))
                        .arg(format!("i\0{s}"))
                        .arg(format!("c\0{s}"))
                        .arg(format!("a\0{s}"));
                    c
                })
                .collect(),
        )
        .await?;
        let mut overlay: Vec<Overlaid> = records
            .into_iter()
            .zip(scores)
            .map(|(record, sc)| {
                let has = |i: usize| sc.get(i).is_some_and(Option::is_some);
                let indexed = has(0).then(|| {
                    if has(1) {
                        SagaState::InFlight
                    } else if has(2) {
                        SagaState::Compensating
                    } else if has(3) {
                        SagaState::Aborted
                    } else {
                        SagaState::Committed
                    }
                });
                Overlaid {
                    rest: rest(record.started_ms, &record.id),
                    record,
                    indexed,
                }
            })
            .collect();
        overlay.sort_by(|a, b| b.rest.cmp(&a.rest));
        Ok(Snapshot {
            l: *l,
            overlay,
            malformed,
            as_of_ms,
            behind,
        })
    }

    /// The sagas `f` passes, newest first, older than `before` (a [`rest`]), at most `limit`,
    /// examining at most `cap` index members (then `next` says where to go on).
    pub async fn walk(
        &self,
        conn: &mut Conn,
        f: &Filter,
        timeout_ms: u64,
        before: Option<&str>,
        limit: usize,
        cap: usize,
    ) -> Result<Walk, IndexError> {
        let now = self.as_of_ms;
        let l = &self.l;
        let (prefix, parts) = source(f, l);
        let (lo, hi0) = bounds(f, now, timeout_ms);
        let mut hi: Option<String> = match (hi0, before) {
            (Some(a), Some(b)) => Some(a.min(b.to_string())),
            (a, b) => a.or(b.map(str::to_string)),
        };
        let overlay: Vec<&Overlaid> = self
            .overlay
            .iter()
            .filter(|o| parts.contains(&o.record.part))
            .collect();
        let in_overlay: HashSet<&str> = overlay.iter().map(|o| o.record.id.as_str()).collect();
        let mut out = Walk::default();
        let mut examined = 0;
        loop {
            // Read about what the page still needs from each partition (more when a filter
            // rejects many): a page of 50 over 16 partitions reads 16 × 51 members, not more.
            let need = limit.saturating_sub(out.items.len());
            let per = need.saturating_add(1).clamp(MIN_BATCH, BATCH);
            let (min, max) = lex(&prefix, lo.as_deref(), hi.as_deref());
            let got: Vec<Vec<String>> = each(
                conn,
                parts
                    .iter()
                    .map(|&k| {
                        let mut c = redis::cmd("ZREVRANGEBYLEX");
                        c.arg(keys::logparser_index(l, k))
                            .arg(&max)
                            .arg(&min)
                            .arg("LIMIT")
                            .arg(0)
                            .arg(per);
                        c
                    })
                    .collect(),
            )
            .await?;
            // Everything at or above `floor` was read from every partition: the highest of the
            // last members of the partitions that may hold more below what they gave.
            let floor: Option<String> = got
                .iter()
                .filter(|g| g.len() == per)
                .filter_map(|g| g.last())
                .map(|m| m[prefix.len()..].to_string())
                .max();
            let mut candidates: Vec<(String, Option<&SagaRecord>, u32)> = Vec::new();
            for (&k, members) in parts.iter().zip(&got) {
                for m in members {
                    let r = &m[prefix.len()..];
                    if floor.as_deref().is_some_and(|fl| r < fl) {
                        continue;
                    }
                    let sid = r.split_once('\0').map_or("", |(_, sid)| sid);
                    if !in_overlay.contains(sid) {
                        candidates.push((r.to_string(), None, k));
                    }
                }
            }
            for o in &overlay {
                let below_hi = hi.as_deref().is_none_or(|h| o.rest.as_str() < h);
                let above_floor = floor.as_deref().is_none_or(|fl| o.rest.as_str() >= fl);
                let above_lo = lo.as_deref().is_none_or(|l| o.rest.as_str() >= l);
                if below_hi && above_floor && above_lo {
                    candidates.push((o.rest.clone(), Some(&o.record), o.record.part));
                }
            }
            candidates.sort_by(|a, b| b.0.cmp(&a.0));
            // Records are loaded in order, a page's worth at a time, until the page is full.
            for chunk in candidates.chunks(need.clamp(MIN_BATCH, 500)) {
                let ids: Vec<(u32, String)> = chunk
                    .iter()
                    .filter(|c| c.1.is_none())
                    .map(|(r, _, k)| (*k, r.split_once('\0').map_or("", |(_, s)| s).to_string()))
                    .collect();
                let mut loaded: HashMap<String, SagaRecord> = HashMap::new();
                for got in sagas::load_many(conn, l, &ids).await?.into_iter().flatten() {
                    match got {
                        Ok(r) => {
                            loaded.insert(r.id.clone(), r);
                        }
                        Err(e) => out.malformed.push(e.to_string()),
                    }
                }
                examined += chunk.len();
                for (r, from_tail, _) in chunk {
                    let sid = r.split_once('\0').map_or("", |(_, s)| s);
                    // No record: retired since the member was read.
                    let Some(rec) = from_tail.or_else(|| loaded.get(sid)) else {
                        continue;
                    };
                    if f.matches(rec, now, timeout_ms) {
                        out.items.push(rec.clone());
                        if out.items.len() >= limit {
                            out.next = Some(r.clone());
                            return Ok(out);
                        }
                    }
                }
            }
            match floor {
                None => {
                    out.exhausted = true;
                    return Ok(out);
                }
                Some(fl) => {
                    hi = Some(fl.clone());
                    if examined >= cap {
                        out.next = Some(fl);
                        return Ok(out);
                    }
                }
            }
        }
    }

    /// How many live sagas `f` passes; `None` when the index cannot say cheaply (a state with a
    /// user or order filter whose sagas are more than [`COUNT_LIMIT`]).
    pub async fn count(
        &self,
        conn: &mut Conn,
        f: &Filter,
        timeout_ms: u64,
    ) -> Result<Option<u64>, IndexError> {
        let now = self.as_of_ms;
        if (f.user.is_some() || f.order.is_some()) && (f.state.is_some() || f.stuck) {
            let w = self
                .walk(conn, f, timeout_ms, None, usize::MAX, COUNT_LIMIT)
                .await?;
            return Ok(w.exhausted.then_some(w.items.len() as u64));
        }
        let (prefix, parts) = source(f, &self.l);
        let (lo, hi) = bounds(f, now, timeout_ms);
        let indexed = if f.stuck && f.state.is_some_and(|s| s != SagaState::InFlight) {
            0
        } else if f.state == Some(SagaState::Committed) {
            let mut n = self.lexcount(conn, "t\0", &parts, &lo, &hi).await?;
            for p in ["i\0", "c\0", "a\0"] {
                n -= self.lexcount(conn, p, &parts, &lo, &hi).await?;
            }
            n
        } else {
            self.lexcount(conn, &prefix, &parts, &lo, &hi).await?
        };
        // The tail's sagas count by their records, not by what the index has of them.
        let mut n = indexed;
        for o in self
            .overlay
            .iter()
            .filter(|o| parts.contains(&o.record.part))
        {
            if f.matches(&o.record, now, timeout_ms) {
                n += 1;
            }
            if let Some(st) = o.indexed {
                if f.matches_as(&o.record, st, now, timeout_ms) {
                    n -= 1;
                }
            }
        }
        Ok(Some(n.max(0) as u64))
    }

    async fn lexcount(
        &self,
        conn: &mut Conn,
        prefix: &str,
        parts: &[u32],
        lo: &Option<String>,
        hi: &Option<String>,
    ) -> Result<i64, IndexError> {
        let (min, max) = lex(prefix, lo.as_deref(), hi.as_deref());
        let counts: Vec<i64> = each(
            conn,
            parts
                .iter()
                .map(|&k| {
                    let mut c = redis::cmd("ZLEXCOUNT");
                    c.arg(keys::logparser_index(&self.l, k)).arg(&min).arg(&max);
                    c
                })
                .collect(),
        )
        .await?;
        Ok(counts.iter().sum())
    }

    /// The counts by state (the overview's "sagas by state").
    pub async fn counts(&self, conn: &mut Conn, timeout_ms: u64) -> Result<Counts, IndexError> {
        let by = |state: Option<SagaState>, stuck: bool| Filter {
            state,
            stuck,
            ..Filter::default()
        };
        let mut c = Counts {
            as_of_ms: self.as_of_ms,
            behind: self.behind.clone(),
            ..Counts::default()
        };
        for (slot, f) in [
            (&mut c.total, by(None, false)),
            (&mut c.in_flight, by(Some(SagaState::InFlight), false)),
            (&mut c.stuck, by(None, true)),
            (&mut c.committed, by(Some(SagaState::Committed), false)),
            (
                &mut c.compensating,
                by(Some(SagaState::Compensating), false),
            ),
            (&mut c.aborted, by(Some(SagaState::Aborted), false)),
        ] {
            *slot = self.count(conn, &f, timeout_ms).await?.unwrap_or(0);
        }
        Ok(c)
    }
}
