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

/// Audits everything; `progress` is told what is being done (for a progress line).
pub async fn audit(
    dbs: &Dbs,
    mut progress: impl FnMut(&str),
) -> Result<AuditReport, redis::RedisError> {
    let started = Instant::now();
    let mut report = AuditReport::default();
    let mut live: BTreeMap<&'static str, State> = BTreeMap::new();
    let mut layouts: BTreeMap<&'static str, Layout> = BTreeMap::new();
    for (name, log, mut conn, layout) in dbs.logs() {
        layouts.insert(name, layout);
        let Some(service) = ServiceLog::parse(name) else {
            // A participant this version cannot replay: its saga records are still checked.
            let prefixes: Vec<&str> = participant(dbs.parts, name)
                .map(|p| vec![p.record_prefix])
                .unwrap_or_default();
            progress(&format!("reading {name}-db"));
            let state = replay::dump_prefixes(&mut conn, &prefixes).await;
            live.insert(name, state.map_err(reading)?);
            continue;
        };
        progress(&format!("replaying {log}"));
        let rebuilt = replay::rebuild(&mut conn, service, &layout).await;
        progress(&format!("reading {name}-db"));
        let state = replay::dump_prefixes(&mut conn, &service.key_prefixes())
            .await
            .map_err(reading)?;
        match rebuilt {
            Ok(rebuilt) => {
                for d in replay::diff(&rebuilt, &state) {
                    let invariant = if d.key.starts_with(keys::ITEM_PREFIX) {
                        "stock conservation (replayed log ≠ database)"
                    } else if d.key.starts_with(keys::USER_PREFIX) {
                        "money conservation (replayed log ≠ database)"
                    } else {
                        "log completeness (replayed log ≠ database)"
                    };
                    let saga = saga_of_key(dbs.parts, &d.key);
                    report.violations.push(violation(
                        invariant,
                        saga,
                        &d.key,
                        show(d.from_log.as_ref()),
                        show(d.in_database.as_ref()),
                    ));
                }
            }
            Err(e) => report.violations.push(violation(
                "log completeness (the log cannot be replayed)",
                None,
                log,
                "a log that replays from empty",
                e.to_string(),
            )),
        }
        for (key, h) in &state {
            for field in ["stock", "credit"] {
                if let Some(v) = h.get(field) {
                    if v.parse::<i64>().map(|n| n < 0).unwrap_or(true) {
                        report.violations.push(violation(
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
        report.records.insert(name, state.len());
        live.insert(name, state);
    }
    progress("checking sagas");
    check_sagas(&live, &layouts, dbs.parts, &mut report);
    report.violations.sort_by(|a, b| a.entity.cmp(&b.entity));
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
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
    for p in parts {
        let Some(db) = live.get(p.name) else {
            continue;
        };
        let end = format!("{};", p.record_prefix.trim_end_matches(':'));
        let Some(pl) = layouts.get(p.name) else {
            continue;
        };
        for (key, h) in db.range(p.record_prefix.to_string()..end) {
            let Some((_, sid)) = keys::parse(p.record_prefix, pl, key) else {
                continue;
            };
            let started = h
                .get("order")
                .is_some_and(|order| order_db.contains_key(&keys::saga_of(&ol, order, sid)));
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
