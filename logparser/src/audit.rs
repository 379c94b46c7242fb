//! `shoplog audit`: check the invariants of DESIGN.md over the three logs and databases.
//!
//! 1–2, stock and money conservation, and 5, log completeness: each service's log is replayed from
//!    empty and compared with its database, entity by entity and saga record by saga record (a value
//!    edited behind the log's back, or a deleted entry, shows up here); no stock or credit is
//!    negative.
//! 3. Saga atomicity: a committed saga has the order paid by it, its stock reserved (not released)
//!    and its charge made (not refunded); an aborted saga whose compensations are confirmed holds
//!    nothing anywhere and did not pay the order; no participant holds a record of a saga the
//!    order service never started. Sagas still in flight are counted, not judged.
//! 4. Answer truth needs the answers: the HTTP tests check it.

use std::collections::BTreeMap;
use std::time::Instant;

use crate::dbs::Dbs;
use crate::replay::{self, ServiceLog, State};
use crate::sagas::{SagaRecord, SagaState};

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

/// Audits everything; `progress` is told what is being done (for a progress line).
pub async fn audit(
    dbs: &Dbs,
    mut progress: impl FnMut(&str),
) -> Result<AuditReport, redis::RedisError> {
    let started = Instant::now();
    let mut report = AuditReport::default();
    let mut live: BTreeMap<&'static str, State> = BTreeMap::new();
    for service in ServiceLog::ALL {
        let mut conn = dbs.of(service);
        progress(&format!("replaying log:{}", service.name()));
        let rebuilt = replay::rebuild(&mut conn, service).await;
        progress(&format!("reading {}-db", service.name()));
        let state = replay::dump(&mut conn, service)
            .await
            .map_err(|e| match e {
                replay::ReplayError::Redis(r) => r,
                other => redis::RedisError::from(std::io::Error::other(other.to_string())),
            })?;
        match rebuilt {
            Ok(rebuilt) => {
                for d in replay::diff(&rebuilt, &state) {
                    let invariant = if d.key.starts_with("item:") {
                        "stock conservation (replayed log ≠ database)"
                    } else if d.key.starts_with("user:") {
                        "money conservation (replayed log ≠ database)"
                    } else {
                        "log completeness (replayed log ≠ database)"
                    };
                    let saga = d
                        .key
                        .split_once(':')
                        .filter(|(p, _)| p.ends_with("saga"))
                        .map(|(_, s)| s);
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
                service.log(),
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
        report.records.insert(service.name(), state.len());
        live.insert(service.name(), state);
    }
    progress("checking sagas");
    check_sagas(&live, &mut report);
    report.violations.sort_by(|a, b| a.entity.cmp(&b.entity));
    report.duration_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

fn state_of<'a>(s: &'a State, key: &str) -> Option<&'a str> {
    s.get(key).and_then(|h| h.get("state")).map(String::as_str)
}

fn check_sagas(live: &BTreeMap<&'static str, State>, report: &mut AuditReport) {
    let empty = State::new();
    let order_db = live.get("order").unwrap_or(&empty);
    let stock_db = live.get("stock").unwrap_or(&empty);
    let payment_db = live.get("payment").unwrap_or(&empty);
    const ATOMIC: &str = "saga atomicity";
    for (key, h) in order_db.range("saga:".to_string().."saga;".to_string()) {
        let sid = &key["saga:".len()..];
        let r = SagaRecord::from_hash(sid, h);
        let state = r.state();
        *report.sagas.entry(state.name()).or_default() += 1;
        let skey = common::saga::stock_saga_key(sid);
        let pkey = common::saga::payment_saga_key(sid);
        let okey = format!("order:{}", r.order);
        let (stock, pay) = (state_of(stock_db, &skey), state_of(payment_db, &pkey));
        let order = order_db.get(&okey);
        let held_by_this = order.is_some_and(|o| o.get("saga").map(String::as_str) == Some(sid));
        let paid_by_this = held_by_this
            && order.is_some_and(|o| o.get("status").map(String::as_str) == Some("PAID"));
        let mut check = |ok: bool, entity: &str, expected: &str, found: String| {
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
                    "status=PAID saga=<this saga>",
                    show(order),
                );
                check(
                    stock == Some("RESERVED"),
                    &skey,
                    "state=RESERVED (reserved, never released)",
                    format!("state={}", stock.unwrap_or("(absent)")),
                );
                check(
                    pay == Some("CHARGED"),
                    &pkey,
                    "state=CHARGED (charged, never refunded)",
                    format!("state={}", pay.unwrap_or("(absent)")),
                );
            }
            SagaState::Aborted => {
                check(
                    !paid_by_this,
                    &okey,
                    "not paid by this aborted saga",
                    show(order),
                );
                check(
                    matches!(stock, Some("RELEASED" | "TOMBSTONE")),
                    &skey,
                    "state=RELEASED or TOMBSTONE (nothing held after the abort)",
                    format!("state={}", stock.unwrap_or("(absent)")),
                );
                check(
                    matches!(pay, Some("REFUNDED" | "TOMBSTONE")),
                    &pkey,
                    "state=REFUNDED or TOMBSTONE (nothing charged after the abort)",
                    format!("state={}", pay.unwrap_or("(absent)")),
                );
            }
            SagaState::InFlight | SagaState::Compensating => {}
        }
    }
    for (db, prefix) in [(stock_db, "ssaga:"), (payment_db, "psaga:")] {
        let end = format!("{};", prefix.trim_end_matches(':'));
        for (key, h) in db.range(prefix.to_string()..end) {
            let sid = &key[prefix.len()..];
            if !order_db.contains_key(&common::saga::order_saga_key(sid)) {
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
