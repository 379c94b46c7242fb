//! Rebuilding a service's state from its log, and comparing it with the live database.
//!
//! The state of a service is the set of its entity hashes (`item:<id>`, `user:<id>`,
//! `order:<id>`), modelled as [`State`]: Redis key → field → value. [`apply`] gives the meaning of
//! every log entry type as a change to that model; folding a whole log into an empty model must
//! reproduce the database exactly (DESIGN.md, invariant 5, "log completeness").

use std::collections::BTreeMap;

use common::batch::batch_orders;
use common::counter::{CounterSpec, CREDIT, STOCK};
use common::log::{self, event, LogEntry, LogError};
use redis::aio::ConnectionManager;

/// Redis key → hash field → value.
pub type State = BTreeMap<String, BTreeMap<String, String>>;

/// Entries read per page when scanning a log.
pub const PAGE: usize = 10_000;

/// The three services that own a log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceLog {
    /// order-db, `log:order`.
    Order,
    /// stock-db, `log:stock`.
    Stock,
    /// payment-db, `log:payment`.
    Payment,
}

impl ServiceLog {
    /// All three, in saga order.
    pub const ALL: [ServiceLog; 3] = [ServiceLog::Order, ServiceLog::Stock, ServiceLog::Payment];

    /// Parses `order`, `stock` or `payment`.
    pub fn parse(name: &str) -> Option<ServiceLog> {
        match name {
            "order" | "orders" => Some(ServiceLog::Order),
            "stock" => Some(ServiceLog::Stock),
            "payment" => Some(ServiceLog::Payment),
            _ => None,
        }
    }

    /// The service's name.
    pub fn name(self) -> &'static str {
        match self {
            ServiceLog::Order => "order",
            ServiceLog::Stock => "stock",
            ServiceLog::Payment => "payment",
        }
    }

    /// The log stream.
    pub fn log(self) -> &'static str {
        match self {
            ServiceLog::Order => log::ORDER_LOG,
            ServiceLog::Stock => log::STOCK_LOG,
            ServiceLog::Payment => log::PAYMENT_LOG,
        }
    }

    /// Key prefixes of the service's state: its entities and its side of the saga records.
    pub fn key_prefixes(self) -> [&'static str; 2] {
        match self {
            ServiceLog::Order => ["order:", "saga:"],
            ServiceLog::Stock => [STOCK.key_prefix, "ssaga:"],
            ServiceLog::Payment => [CREDIT.key_prefix, "psaga:"],
        }
    }
}

/// Why a log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading or parsing an entry failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An entry of a type this version does not know.
    #[error("log entry {id} has unknown type `{kind}`; is this shoplog older than the services?")]
    UnknownType {
        /// Stream id.
        id: String,
        /// Its `type`.
        kind: String,
    },
    /// An entry changes an entity that the log never created.
    #[error("log entry {id} ({kind}) changes `{key}`, which no earlier entry created; the log is incomplete")]
    Orphan {
        /// Stream id.
        id: String,
        /// Its `type`.
        kind: String,
        /// The entity key.
        key: String,
    },
    /// Reading the database failed.
    #[error("reading the database failed: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Applies one entry of `service`'s log to `state`.
pub fn apply(service: ServiceLog, state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    match (service, e.kind()) {
        (
            ServiceLog::Stock,
            event::STOCK_RESERVED | event::STOCK_REJECTED | event::STOCK_RELEASED,
        ) => apply_stock_saga(state, e),
        (
            ServiceLog::Payment,
            event::PAYMENT_CHARGED | event::PAYMENT_REJECTED | event::PAYMENT_REFUNDED,
        ) => apply_payment_saga(state, e),
        (
            ServiceLog::Order,
            event::CHECKOUT_STARTED
            | event::CHECKOUT_COMMITTED
            | event::CHECKOUT_ABORTED
            | event::COMPENSATION_CONFIRMED,
        ) => apply_order_saga(state, e),
        (ServiceLog::Stock, _) => apply_counter(&STOCK, state, e),
        (ServiceLog::Payment, _) => apply_counter(&CREDIT, state, e),
        (ServiceLog::Order, _) => apply_order(state, e),
    }
}

/// Sets fields of a hash, creating it when missing.
fn set(state: &mut State, key: String, fields: &[(&str, &str)]) {
    let hash = state.entry(key).or_default();
    for (f, v) in fields {
        hash.insert((*f).to_string(), (*v).to_string());
    }
}

/// Adds `delta` to an integer field of an existing hash.
fn add(
    state: &mut State,
    e: &LogEntry,
    key: &str,
    field: &str,
    delta: i64,
) -> Result<(), ReplayError> {
    let hash = state.get_mut(key).ok_or_else(|| orphan(e, key))?;
    let current: i64 = hash.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
    hash.insert(field.to_string(), current.saturating_add(delta).to_string());
    Ok(())
}

fn lines(e: &LogEntry) -> Result<Vec<(String, i64)>, ReplayError> {
    common::saga::decode_lines(e.text("items")?).ok_or_else(|| {
        ReplayError::Log(LogError::BadField {
            id: e.stream_id.clone(),
            kind: e.kind().to_string(),
            field: "items".into(),
        })
    })
}

fn apply_stock_saga(state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    let key = common::saga::stock_saga_key(e.text("saga")?);
    let order = e.text("order")?;
    match e.kind() {
        event::STOCK_RESERVED => {
            for (item, qty) in lines(e)? {
                add(state, e, &STOCK.key(&item), STOCK.field, -qty)?;
            }
            set(
                state,
                key,
                &[
                    ("state", "RESERVED"),
                    ("order", order),
                    ("items", e.text("items")?),
                ],
            );
        }
        event::STOCK_REJECTED => set(state, key, &[("state", "REJECTED"), ("order", order)]),
        _ => {
            if e.text("released")? == "1" {
                for (item, qty) in lines(e)? {
                    add(state, e, &STOCK.key(&item), STOCK.field, qty)?;
                }
            }
            match state
                .get(&key)
                .and_then(|h| h.get("state"))
                .map(String::as_str)
            {
                // A repeated confirmation (release.lua on an already compensated saga).
                Some("RELEASED" | "TOMBSTONE") => {}
                Some(_) => set(state, key, &[("state", "RELEASED"), ("order", order)]),
                None => set(state, key, &[("state", "TOMBSTONE"), ("order", order)]),
            }
        }
    }
    Ok(())
}

fn apply_payment_saga(state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    let key = common::saga::payment_saga_key(e.text("saga")?);
    let (order, user) = (e.text("order")?, e.text("user")?);
    match e.kind() {
        event::PAYMENT_CHARGED => {
            let amount = e.int("amount")?;
            add(state, e, &CREDIT.key(user), CREDIT.field, -amount)?;
            let amount = amount.to_string();
            set(
                state,
                key,
                &[
                    ("state", "CHARGED"),
                    ("order", order),
                    ("user", user),
                    ("amount", &amount),
                ],
            );
        }
        event::PAYMENT_REJECTED => set(
            state,
            key,
            &[
                ("state", "REJECTED"),
                ("order", order),
                ("user", user),
                ("amount", "0"),
            ],
        ),
        _ => {
            if e.text("refunded")? == "1" {
                add(state, e, &CREDIT.key(user), CREDIT.field, e.int("amount")?)?;
            }
            match state
                .get(&key)
                .and_then(|h| h.get("state"))
                .map(String::as_str)
            {
                // A repeated confirmation (refund.lua on an already compensated saga).
                Some("REFUNDED" | "TOMBSTONE") => {}
                Some(_) => set(
                    state,
                    key,
                    &[("state", "REFUNDED"), ("order", order), ("user", user)],
                ),
                None => set(
                    state,
                    key,
                    &[("state", "TOMBSTONE"), ("order", order), ("user", user)],
                ),
            }
        }
    }
    Ok(())
}

fn apply_order_saga(state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    let sid = e.text("saga")?;
    let saga_key = common::saga::order_saga_key(sid);
    let order_key = format!("order:{}", e.text("order")?);
    match e.kind() {
        event::CHECKOUT_STARTED => {
            set(
                state,
                order_key,
                &[("status", "CHECKING_OUT"), ("saga", sid)],
            );
            let fields = [
                ("order", e.text("order")?),
                ("user", e.text("user")?),
                ("total", e.text("total")?),
                ("items", e.text("items")?),
                ("decision", "none"),
                ("reason", ""),
                ("started_ms", e.text("started_ms")?),
                ("stock_ok", "0"),
                ("payment_ok", "0"),
                ("done", "0"),
            ];
            set(state, saga_key, &fields);
        }
        event::CHECKOUT_COMMITTED => {
            set(state, saga_key, &[("decision", "commit"), ("done", "1")]);
            set(state, order_key, &[("status", "PAID")]);
        }
        event::CHECKOUT_ABORTED => {
            set(
                state,
                saga_key,
                &[("decision", "abort"), ("reason", e.text("reason")?)],
            );
        }
        _ => {
            let part = e.text("part")?;
            let other = if part == "stock" {
                "payment_ok"
            } else {
                "stock_ok"
            };
            let other_done = state
                .get(&saga_key)
                .and_then(|h| h.get(other))
                .is_some_and(|v| v == "1");
            set(state, saga_key.clone(), &[(&format!("{part}_ok"), "1")]);
            if other_done {
                set(state, saga_key, &[("done", "1")]);
            }
            if e.text("reopened")? == "1" {
                set(state, order_key, &[("status", "OPEN"), ("saga", "")]);
            }
        }
    }
    Ok(())
}

fn apply_counter(spec: &CounterSpec, state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    let kind = e.kind();
    if kind == spec.created {
        let id = e.text(spec.entity)?;
        let mut hash = BTreeMap::new();
        for f in std::iter::once(spec.field).chain(spec.extra_fields.iter().copied()) {
            hash.insert(f.to_string(), e.int(f)?.to_string());
        }
        state.insert(spec.key(id), hash);
    } else if kind == spec.added || kind == spec.subtracted {
        let key = spec.key(e.text(spec.entity)?);
        let amount = e.int("amount")?;
        let hash = state.get_mut(&key).ok_or_else(|| orphan(e, &key))?;
        let current: i64 = hash
            .get(spec.field)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let next = if kind == spec.added {
            current.checked_add(amount)
        } else {
            current.checked_sub(amount)
        };
        hash.insert(spec.field.to_string(), next.unwrap_or(current).to_string());
    } else if kind == spec.batch_init {
        let n = e.int("n")?;
        let mut fields = BTreeMap::new();
        for f in std::iter::once(spec.field).chain(spec.extra_fields.iter().copied()) {
            fields.insert(f.to_string(), e.int(f)?.to_string());
        }
        for i in 0..n {
            state
                .entry(spec.key(&i.to_string()))
                .or_default()
                .extend(fields.clone());
        }
    } else {
        return Err(unknown(e));
    }
    Ok(())
}

fn apply_order(state: &mut State, e: &LogEntry) -> Result<(), ReplayError> {
    match e.kind() {
        event::ORDER_CREATED => {
            let key = format!("order:{}", e.text("order")?);
            let hash = [
                ("user_id", e.text("user")?.to_string()),
                ("total_cost", "0".to_string()),
                ("items", "[]".to_string()),
                ("status", "OPEN".to_string()),
                ("saga", String::new()),
            ];
            state.insert(
                key,
                hash.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            );
        }
        event::ITEM_ADDED => {
            let key = format!("order:{}", e.text("order")?);
            let line = serde_json::json!([e.text("item")?, e.int("quantity")?]).to_string();
            let cost = e.int("cost")?;
            let hash = state.get_mut(&key).ok_or_else(|| orphan(e, &key))?;
            let items = hash.entry("items".into()).or_insert_with(|| "[]".into());
            *items = if items == "[]" {
                format!("[{line}]")
            } else {
                format!("{},{line}]", &items[..items.len() - 1])
            };
            let total: i64 = hash
                .get("total_cost")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            hash.insert("total_cost".into(), total.saturating_add(cost).to_string());
        }
        event::ORDER_BATCH_INIT => {
            let (n, n_items, n_users) = (e.int("n")?, e.int("n_items")?, e.int("n_users")?);
            let price = e.int("price")?;
            let seed: u64 = e.text("seed")?.parse().map_err(|_| LogError::BadField {
                id: e.stream_id.clone(),
                kind: e.kind().to_string(),
                field: "seed".into(),
            })?;
            let total = price.saturating_mul(2).to_string();
            for (i, o) in batch_orders(seed, n as u64, n_items as u64, n_users as u64).enumerate() {
                let hash = [
                    ("user_id", o.user.to_string()),
                    ("total_cost", total.clone()),
                    (
                        "items",
                        format!("[[\"{}\",1],[\"{}\",1]]", o.items[0], o.items[1]),
                    ),
                    ("status", "OPEN".to_string()),
                    ("saga", String::new()),
                ];
                state
                    .entry(format!("order:{i}"))
                    .or_default()
                    .extend(hash.into_iter().map(|(k, v)| (k.to_string(), v)));
            }
        }
        _ => return Err(unknown(e)),
    }
    Ok(())
}

fn unknown(e: &LogEntry) -> ReplayError {
    ReplayError::UnknownType {
        id: e.stream_id.clone(),
        kind: e.kind().to_string(),
    }
}

fn orphan(e: &LogEntry, key: &str) -> ReplayError {
    ReplayError::Orphan {
        id: e.stream_id.clone(),
        kind: e.kind().to_string(),
        key: key.to_string(),
    }
}

/// Rebuilds `service`'s state from its log alone, reading the log in pages.
pub async fn rebuild(
    conn: &mut ConnectionManager,
    service: ServiceLog,
) -> Result<State, ReplayError> {
    let mut state = State::new();
    let mut failure = None;
    log::for_each(conn, service.log(), PAGE, |e| {
        if let Err(err) = apply(service, &mut state, e) {
            failure = Some(err);
            return Err(LogError::BadField {
                id: e.stream_id.clone(),
                kind: e.kind().to_string(),
                field: "-".into(),
            });
        }
        Ok(())
    })
    .await
    .map_err(|e| failure.take().unwrap_or(ReplayError::Log(e)))?;
    Ok(state)
}

/// Reads `service`'s entity hashes from its database (SCAN, so the database keeps serving).
pub async fn dump(conn: &mut ConnectionManager, service: ServiceLog) -> Result<State, ReplayError> {
    let mut keys: Vec<String> = Vec::new();
    for prefix in service.key_prefixes() {
        let pattern = format!("{prefix}*");
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query_async(conn)
                .await?;
            keys.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    let mut state = State::new();
    for chunk in keys.chunks(500) {
        let mut pipe = redis::pipe();
        for k in chunk {
            pipe.cmd("HGETALL").arg(k);
        }
        let hashes: Vec<BTreeMap<String, String>> = pipe.query_async(conn).await?;
        for (k, h) in chunk.iter().zip(hashes) {
            state.insert(k.clone(), h);
        }
    }
    Ok(state)
}

/// One entity whose rebuilt and live states differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Difference {
    /// The entity key.
    pub key: String,
    /// What the log says (`None`: the log never created it).
    pub from_log: Option<BTreeMap<String, String>>,
    /// What the database holds (`None`: missing from the database).
    pub in_database: Option<BTreeMap<String, String>>,
}

/// Every entity whose state differs between `from_log` and `in_database`, by key.
pub fn diff(from_log: &State, in_database: &State) -> Vec<Difference> {
    let mut out = Vec::new();
    for (k, v) in from_log {
        if in_database.get(k) != Some(v) {
            out.push(Difference {
                key: k.clone(),
                from_log: Some(v.clone()),
                in_database: in_database.get(k).cloned(),
            });
        }
    }
    for (k, v) in in_database {
        if !from_log.contains_key(k) {
            out.push(Difference {
                key: k.clone(),
                from_log: None,
                in_database: Some(v.clone()),
            });
        }
    }
    out.sort_by(|a, b| a.key.cmp(&b.key));
    out
}

/// Writes a rebuilt state into a database (`shoplog replay --into`), in pipelined batches.
pub async fn write(conn: &mut ConnectionManager, state: &State) -> Result<(), ReplayError> {
    let entries: Vec<_> = state.iter().collect();
    for chunk in entries.chunks(500) {
        let mut pipe = redis::pipe();
        for (key, hash) in chunk {
            pipe.cmd("DEL").arg(*key).ignore();
            if !hash.is_empty() {
                pipe.cmd("HSET").arg(*key);
                for (f, v) in hash.iter() {
                    pipe.arg(f).arg(v);
                }
                pipe.ignore();
            }
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
