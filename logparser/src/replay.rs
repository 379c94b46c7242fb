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

    /// Key prefix of the service's entities.
    pub fn key_prefix(self) -> &'static str {
        match self {
            ServiceLog::Order => "order:",
            ServiceLog::Stock => STOCK.key_prefix,
            ServiceLog::Payment => CREDIT.key_prefix,
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
    match service {
        ServiceLog::Stock => apply_counter(&STOCK, state, e),
        ServiceLog::Payment => apply_counter(&CREDIT, state, e),
        ServiceLog::Order => apply_order(state, e),
    }
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
    let pattern = format!("{}*", service.key_prefix());
    let mut keys: Vec<String> = Vec::new();
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
