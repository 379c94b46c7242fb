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
use std::time::Instant;

use common::keys;
use common::partition::Layout;
use common::saga::{
    participant, OrderStatus, Participant, SagaRecord, SagaState, ORDER, TOMBSTONE,
};

use crate::dbs::Dbs;
use crate::replay::{self, ServiceLog, State};

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

/// Partitions audited at the same time (each holds one partition's state in memory).
const CONCURRENT_PARTITIONS: usize = 3;

/// What the audit of one partition of one service found.
#[derive(Default)]
struct PartAudit {
    violations: Vec<Violation>,
    sagas: BTreeMap<&'static str, u64>,
    records: usize,
}

/// Audits everything; `progress` is told what is being done (for a progress line).
///
/// Streams: one partition of one service at a time (a few in parallel) is replayed from its
/// history (archive + live log) and compared with its keys in the database, read by key; memory
/// holds a few partitions' states, never the whole history. Keys the log never created are found
/// by counting the database's keys per partition (one `SCAN`) and listing a partition's keys only
/// when its count does not match.
pub async fn audit(
    dbs: &Dbs,
    mut progress: impl FnMut(&str),
) -> Result<AuditReport, redis::RedisError> {
    use futures::StreamExt;
    let started = Instant::now();
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
        let counted = &counted;
        let layouts = &layouts;
        let parts: Vec<Result<PartAudit, redis::RedisError>> =
            futures::stream::iter(layout.parts())
                .map(|part| audit_part(dbs, service, layout, part, counted, layouts))
                .buffer_unordered(CONCURRENT_PARTITIONS)
                .collect()
                .await;
        let mut records = 0;
        for p in parts {
            let p = p?;
            report.violations.extend(p.violations);
            for (state, n) in p.sagas {
                *report.sagas.entry(state).or_default() += n;
            }
            records += p.records;
        }
        report.records.insert(name, records);
    }
    report.violations.sort_by(|a, b| a.entity.cmp(&b.entity));
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

/// The database's keys of `prefixes`, counted per (prefix, partition) with one `SCAN` per
/// prefix; keys with a prefix but no tag of the layout are returned (the log never makes them).
async fn count_keys(
    conn: &mut common::db::Conn,
    prefixes: &[&str],
    l: &Layout,
) -> Result<(HashMap<(usize, u32), usize>, Vec<String>), redis::RedisError> {
    let mut counts: HashMap<(usize, u32), usize> = HashMap::new();
    let mut strays = Vec::new();
    let nodes = common::db::primaries(conn)
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    for mut node in nodes {
        for (i, prefix) in prefixes.iter().enumerate() {
            let pattern = format!("{prefix}*");
            let mut cursor = 0;
            loop {
                let (next, batch) = common::db::scan_page(&mut node, cursor, &pattern).await?;
                for k in batch {
                    match keys::parse(prefix, l, &k) {
                        Some((part, _)) => *counts.entry((i, part)).or_default() += 1,
                        None => strays.push(k),
                    }
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    Ok((counts, strays))
}

/// Audits partition `part` of `service`: replays its history, compares with its keys, checks
/// counters and its side of the sagas.
async fn audit_part(
    dbs: &Dbs,
    service: ServiceLog,
    l: Layout,
    part: u32,
    (counts, strays): &(HashMap<(usize, u32), usize>, Vec<String>),
    layouts: &BTreeMap<&'static str, Layout>,
) -> Result<PartAudit, redis::RedisError> {
    let mut out = PartAudit::default();
    let Ok((mut conn, _)) = dbs.of(service) else {
        return Ok(out);
    };
    let ol = dbs.order_layout;
    // Replay, counting the sagas whose records were retired (they are final).
    let mut rebuilt = State::new();
    let replayed = replay::for_each_entry(&mut conn, dbs.archive(), service, &l, part, |at, e| {
        if service == ServiceLog::Order && e.kind() == common::event::kind::RECORDS_RETIRED {
            if let Ok(common::event::Event::RecordsRetired { records }) = e.decode() {
                for (key, h) in &records {
                    if let Some((p, sid)) = keys::parse(keys::SAGA_PREFIX, &ol, key) {
                        let hash: HashMap<String, String> = h.clone().into_iter().collect();
                        if let Ok(r) = SagaRecord::from_hash(&ol, p, sid, &hash) {
                            *out.sagas.entry(r.state().name()).or_default() += 1;
                        }
                    }
                }
            }
        }
        replay::apply(service, at, &mut rebuilt, e)
    })
    .await;
    let prefixes = service.key_prefixes();
    let mut live = State::new();
    let mut compare = true;
    if let Err(e) = replayed {
        if let replay::ReplayError::Redis(e) = e {
            return Err(e);
        }
        out.violations.push(violation(
            "log completeness (the log cannot be replayed)",
            None,
            &keys::log(service.log(), &l, part),
            "a log that replays from empty",
            e.to_string(),
        ));
        compare = false;
        rebuilt.clear();
    }
    // The database's side: the replayed keys, read by key.
    let wanted: Vec<String> = rebuilt.keys().cloned().collect();
    live.extend(replay::read_keys(&mut conn, &wanted).await?);
    // Keys the log did not make: only when the partition's count says there are some.
    let mut found = vec![0usize; prefixes.len()];
    for k in live.keys() {
        if let Some(i) = prefixes.iter().position(|p| k.starts_with(p)) {
            found[i] += 1;
        }
    }
    let mut listed: Vec<String> = strays
        .iter()
        .filter(|k| part == 0 && prefixes.iter().any(|p| k.starts_with(p)))
        .cloned()
        .collect();
    for (i, prefix) in prefixes.iter().enumerate() {
        let n = counts.get(&(i, part)).copied().unwrap_or(0);
        if n != found[i] || !compare {
            let p = format!("{prefix}{}:", l.tag(part));
            let extra = replay::dump_prefixes(&mut conn, &[p.as_str()])
                .await
                .map_err(reading)?;
            listed.extend(extra.into_keys().filter(|k| !live.contains_key(k)));
        }
    }
    live.extend(replay::read_keys(&mut conn, &listed).await?);
    if compare {
        for d in replay::diff(&rebuilt, &live) {
            let invariant = if d.key.starts_with(keys::ITEM_PREFIX) {
                "stock conservation (replayed log ≠ database)"
            } else if d.key.starts_with(keys::USER_PREFIX) {
                "money conservation (replayed log ≠ database)"
            } else {
                "log completeness (replayed log ≠ database)"
            };
            let saga = saga_of_key(dbs.parts, &d.key);
            out.violations.push(violation(
                invariant,
                saga,
                &d.key,
                show(d.from_log.as_ref()),
                show(d.in_database.as_ref()),
            ));
        }
    }
    drop(rebuilt);
    for (key, h) in &live {
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
    out.records = live.len();
    // Saga atomicity, from this partition's side.
    let mut report = AuditReport::default();
    if service == ServiceLog::Order {
        // Every participant's records of this partition's sagas, read by key.
        let mut states: BTreeMap<&'static str, State> = BTreeMap::new();
        let end = format!("{};", keys::SAGA_PREFIX.trim_end_matches(':'));
        let records: Vec<SagaRecord> = live
            .range(keys::SAGA_PREFIX.to_string()..end)
            .filter_map(|(k, h)| {
                let (p, sid) = keys::parse(keys::SAGA_PREFIX, &ol, k)?;
                let hash: HashMap<String, String> = h.clone().into_iter().collect();
                SagaRecord::from_hash(&ol, p, sid, &hash).ok()
            })
            .collect();
        for p in dbs.parts {
            let (Some(mut pconn), Some(pl)) = (dbs.by_name(p.name), layouts.get(p.name)) else {
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
        check_decided(&live, &states, layouts, dbs.parts, &mut report);
        for (state, n) in report.sagas {
            *out.sagas.entry(state).or_default() += n;
        }
    } else if let Some(p) = service.participant() {
        check_started_live(dbs, p, &l, &live, &mut report.violations).await?;
    }
    out.violations.extend(report.violations);
    Ok(out)
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
        let hash: HashMap<String, String> = h.clone().into_iter().collect();
        let r = match SagaRecord::from_hash(&ol, part, sid, &hash) {
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
