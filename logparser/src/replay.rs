//! Rebuilding a service's state from its log, and comparing it with the live database.
//!
//! The state of a service is the set of its entity hashes (`item:<id>`, `user:<id>`,
//! `order:<id>`), modelled as [`State`]: Redis key → field → value. [`apply`] gives the meaning of
//! every log entry type as a change to that model; folding a whole log into an empty model must
//! reproduce the database exactly (DESIGN.md, invariant 5, "log completeness").

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use common::batch::batch_orders;
use common::counter::{CounterSpec, CREDIT, STOCK};
use common::db::Conn;
use common::event::{CounterOp, Event, EventError};
use common::keys::{self, ORDER_LOG, PAYMENT_LOG, STOCK_LOG};
use common::log::{LogEntry, LogError};
use common::partition::Layout;
use common::saga::{self as saga_vocab, Decision, OrderStatus, Participant, TOMBSTONE};

use crate::spill::Bucket;

/// Redis key → hash field → value.
pub type State = BTreeMap<String, BTreeMap<String, String>>;

/// Entries read per page when scanning a log. A page is held about three times over while it is
/// read (the reply's bytes, redis-rs's values, the entries), and the audit reads three
/// partitions at once, so the page is part of the audit's memory beside its budget; 2,000
/// entries keep that to a few tens of MB however long the live logs are, for one round trip
/// per 2,000 entries.
pub const PAGE: usize = 2_000;

/// The three services whose logs replay into their state.
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
            ServiceLog::Order => saga_vocab::ORDER,
            ServiceLog::Stock => saga_vocab::STOCK.name,
            ServiceLog::Payment => saga_vocab::PAYMENT.name,
        }
    }

    /// The log stream.
    pub fn log(self) -> &'static str {
        match self {
            ServiceLog::Order => ORDER_LOG,
            ServiceLog::Stock => STOCK_LOG,
            ServiceLog::Payment => PAYMENT_LOG,
        }
    }

    /// The service's row in the participants table (`None` for order, which decides).
    pub fn participant(self) -> Option<&'static Participant> {
        match self {
            ServiceLog::Order => None,
            ServiceLog::Stock => Some(&saga_vocab::STOCK),
            ServiceLog::Payment => Some(&saga_vocab::PAYMENT),
        }
    }

    /// Key prefixes of the service's state: its entities and its side of the saga records.
    pub fn key_prefixes(self) -> [&'static str; 2] {
        match self {
            ServiceLog::Order => [keys::ORDER_PREFIX, keys::SAGA_PREFIX],
            ServiceLog::Stock => [STOCK.key_prefix, saga_vocab::STOCK.record_prefix],
            ServiceLog::Payment => [CREDIT.key_prefix, saga_vocab::PAYMENT.record_prefix],
        }
    }
}

/// Why a log could not be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Reading the log failed, or an entry cannot be decoded.
    #[error(transparent)]
    Log(#[from] LogError),
    /// An entry that does not belong in this service's log.
    #[error("log entry {id} ({kind}) does not belong in {log}; was a log copied into the wrong database?")]
    Misplaced {
        /// Stream id.
        id: String,
        /// Its `type`.
        kind: String,
        /// The log it was found in.
        log: &'static str,
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
    /// A retired record's fields (as the database held them) differ from what the log says.
    #[error("log entry {id} retired `{key}` holding {held}, but the log says {replayed}: the record had been changed behind the log's back")]
    Retired {
        /// Stream id of the `RecordsRetired` entry.
        id: String,
        /// The record.
        key: String,
        /// Its fields as retired.
        held: String,
        /// Its fields as replayed.
        replayed: String,
    },
    /// The primaries of a cluster could not be listed or reached.
    #[error("cannot reach every primary of the cluster: {0}")]
    Nodes(String),
}

impl From<EventError> for ReplayError {
    fn from(e: EventError) -> Self {
        ReplayError::Log(LogError::Event(e))
    }
}

/// Applies one entry of `service`'s log to `state`.
pub fn apply(
    service: ServiceLog,
    at: Where,
    state: &mut State,
    e: &LogEntry,
) -> Result<(), ReplayError> {
    apply_in(service, at, state, e, Bucket::ALL).map_err(|f| f.error)
}

/// Why an entry could not be applied, and at which of its fallible steps (the entry's checks of
/// an existing key or of a retired record, counted in the order [`apply`] makes them). A replay
/// in buckets makes the same steps in the same order whatever the bucket, so the error of the
/// smallest (entry, step) over all buckets is the one a whole replay stops at.
#[derive(Debug)]
pub struct Failed {
    /// The step (0: the entry as a whole, such as one that cannot be decoded).
    pub step: u32,
    /// The error.
    pub error: ReplayError,
}

impl From<ReplayError> for Failed {
    fn from(error: ReplayError) -> Self {
        Failed { step: 0, error }
    }
}

/// Applies one entry of `service`'s log to the keys of `state` that `keep` holds, ignoring its
/// effects on other keys (a replay in buckets, [`crate::spill`]). An entry's effect on a key
/// depends only on that key's earlier state, so the kept keys end exactly as in a whole replay.
pub fn apply_in(
    service: ServiceLog,
    at: Where,
    state: &mut State,
    e: &LogEntry,
    keep: Bucket,
) -> Result<(), Failed> {
    let event = e.decode().map_err(ReplayError::from)?;
    apply_event(service, at, state, e, &event, keep)
}

/// [`apply_in`] of an entry already decoded into `event` (for a caller that reads the event
/// too, so that it is decoded once).
pub fn apply_event(
    service: ServiceLog,
    at: Where,
    state: &mut State,
    e: &LogEntry,
    event: &Event,
    keep: Bucket,
) -> Result<(), Failed> {
    let mut r = Replayer {
        e,
        state,
        at,
        keep,
        scratch: BTreeMap::new(),
        step: 0,
    };
    if let Event::RecordsRetired { records, keys } = event {
        return r.retire(records, keys);
    }
    let applied = match (service, event) {
        (ServiceLog::Stock, Event::Counter { spec, op }) if **spec == STOCK => r.counter(spec, op),
        (ServiceLog::Payment, Event::Counter { spec, op }) if **spec == CREDIT => {
            r.counter(spec, op)
        }
        (
            ServiceLog::Stock,
            Event::StockReserved { .. }
            | Event::StockRejected { .. }
            | Event::StockReleased { .. }
            | Event::StockPartReserved { .. }
            | Event::StockPartRejected { .. }
            | Event::StockPartReleased { .. },
        ) => r.stock_saga(event),
        (
            ServiceLog::Payment,
            Event::PaymentCharged { .. }
            | Event::PaymentRejected { .. }
            | Event::PaymentRefunded { .. },
        ) => r.payment_saga(event),
        (
            ServiceLog::Order,
            Event::OrderCreated { .. } | Event::ItemAdded { .. } | Event::OrderBatchInit { .. },
        ) => r.order(event),
        (
            ServiceLog::Order,
            Event::CheckoutStarted { .. }
            | Event::CheckoutCommitted { .. }
            | Event::CheckoutAborted { .. }
            | Event::CompensationConfirmed { .. },
        ) => r.order_saga(event),
        _ => Err(ReplayError::Misplaced {
            id: e.stream_id.clone(),
            kind: event.kind().to_string(),
            log: service.log(),
        }),
    };
    applied.map_err(|error| Failed {
        step: r.step,
        error,
    })
}

/// Which log an entry comes from: the service's layout and the partition of its stream. Every
/// key an entry changes is in that partition.
#[derive(Debug, Clone, Copy)]
pub struct Where {
    /// The service's layout.
    pub layout: Layout,
    /// The partition of the stream.
    pub part: u32,
}

/// Applies one decoded entry to the model (to the keys of `keep`).
struct Replayer<'a> {
    e: &'a LogEntry,
    state: &'a mut State,
    at: Where,
    /// The keys kept; the entry's effects on others are computed on `scratch` and dropped.
    keep: Bucket,
    scratch: BTreeMap<String, String>,
    /// Fallible steps made so far (see [`Failed`]).
    step: u32,
}

impl Replayer<'_> {
    /// `RecordsRetired`: removes the records it retired. One retired with its fields must have
    /// been built by the history exactly as the database held it (`Retired` otherwise); one
    /// retired by key alone must have been built at all (`Orphan` otherwise).
    fn retire(
        &mut self,
        records: &[(String, BTreeMap<String, String>)],
        keys: &[String],
    ) -> Result<(), Failed> {
        let show = |h: Option<&BTreeMap<String, String>>| {
            h.map_or("(absent)".to_string(), |h| {
                h.iter()
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
        };
        for (key, held) in records {
            self.step += 1;
            if !self.keep.holds(key) {
                continue;
            }
            let replayed = self.state.remove(key);
            if replayed.as_ref() != Some(held) {
                return Err(Failed {
                    step: self.step,
                    error: ReplayError::Retired {
                        id: self.e.stream_id.clone(),
                        key: key.clone(),
                        held: show(Some(held)),
                        replayed: show(replayed.as_ref()),
                    },
                });
            }
        }
        for key in keys {
            self.step += 1;
            if !self.keep.holds(key) {
                continue;
            }
            if self.state.remove(key).is_none() {
                return Err(Failed {
                    step: self.step,
                    error: ReplayError::Orphan {
                        id: self.e.stream_id.clone(),
                        kind: common::event::kind::RECORDS_RETIRED.to_string(),
                        key: key.clone(),
                    },
                });
            }
        }
        Ok(())
    }

    /// Inserts a whole hash (a creation), replacing what was there.
    fn insert(&mut self, key: String, hash: BTreeMap<String, String>) {
        if self.keep.holds(&key) {
            self.state.insert(key, hash);
        }
    }

    /// Adds `fields` to a hash, creating it when missing.
    fn extend(&mut self, key: String, fields: &BTreeMap<String, String>) {
        if self.keep.holds(&key) {
            self.state.entry(key).or_default().extend(fields.clone());
        }
    }

    /// Sets fields of a hash, creating it when missing.
    fn set(&mut self, key: String, fields: &[(&str, &str)]) {
        if !self.keep.holds(&key) {
            return;
        }
        let hash = self.state.entry(key).or_default();
        for (f, v) in fields {
            hash.insert((*f).to_string(), (*v).to_string());
        }
    }

    /// The `state` field of a participant record (`None` for a key not kept: only what is then
    /// set on that same key depends on it, and that is dropped).
    fn record_state(&self, key: &str) -> Option<&str> {
        if !self.keep.holds(key) {
            return None;
        }
        self.state
            .get(key)
            .and_then(|h| h.get("state"))
            .map(String::as_str)
    }

    /// The existing hash `key`, or an orphan error (a key not kept: a scratch hash, whose changes
    /// are dropped).
    fn existing(&mut self, key: &str) -> Result<&mut BTreeMap<String, String>, ReplayError> {
        self.step += 1;
        if !self.keep.holds(key) {
            self.scratch.clear();
            return Ok(&mut self.scratch);
        }
        let (id, kind) = (self.e.stream_id.clone(), self.e.kind().to_string());
        self.state.get_mut(key).ok_or(ReplayError::Orphan {
            id,
            kind,
            key: key.to_string(),
        })
    }

    /// Adds `delta` to an integer field of an existing hash.
    fn add(&mut self, key: &str, field: &str, delta: i64) -> Result<(), ReplayError> {
        let hash = self.existing(key)?;
        let current: i64 = hash.get(field).and_then(|v| v.parse().ok()).unwrap_or(0);
        hash.insert(field.to_string(), current.saturating_add(delta).to_string());
        Ok(())
    }

    fn counter(&mut self, spec: &CounterSpec, op: &CounterOp) -> Result<(), ReplayError> {
        let with = |fields: &[(&str, i64)]| -> BTreeMap<String, String> {
            fields
                .iter()
                .map(|(f, v)| (f.to_string(), v.to_string()))
                .collect()
        };
        match op {
            CounterOp::Created { id, fields } => {
                self.insert(spec.key(&self.at.layout, id), with(fields));
            }
            CounterOp::Added { id, amount } | CounterOp::Subtracted { id, amount } => {
                let hash = self.existing(&spec.key(&self.at.layout, id))?;
                let current: i64 = hash
                    .get(spec.field)
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let next = match op {
                    CounterOp::Added { .. } => current.checked_add(*amount),
                    _ => current.checked_sub(*amount),
                };
                hash.insert(spec.field.to_string(), next.unwrap_or(current).to_string());
            }
            CounterOp::BatchInit { n, fields } => {
                // This partition's entry covers this partition's ids only.
                let fields = with(fields);
                let (l, part) = (self.at.layout, self.at.part);
                for i in 0..*n {
                    let id = i.to_string();
                    if l.part(&id) == part {
                        self.extend(spec.key(&l, &id), &fields);
                    }
                }
            }
        }
        Ok(())
    }

    fn stock_saga(&mut self, event: &Event) -> Result<(), ReplayError> {
        let p = &saga_vocab::STOCK;
        let (l, part) = (self.at.layout, self.at.part);
        let record = |saga: &str| p.record_key(&l, part, saga);
        match event {
            // A multi-partition saga's outcome refused or compensated (finish.lua): recorded in
            // its home partition only; the partitions' own entries made the changes.
            Event::StockRejected {
                saga, order, parts, ..
            }
            | Event::StockReleased {
                saga, order, parts, ..
            } if *parts > 1 => {
                self.set(record(saga), &[("outcome", event.kind()), ("order", order)]);
            }
            // A reservation: one partition's (`StockPartReserved`), the whole saga's (`parts` = 1)
            // or the home partition's, which also records the outcome (reserve.lua, mode `last`).
            Event::StockReserved {
                saga, order, items, ..
            }
            | Event::StockPartReserved {
                saga, order, items, ..
            } => {
                for (item, qty) in &items.lines {
                    self.add(&STOCK.key(&l, item), STOCK.field, -qty)?;
                }
                let fields = [("state", p.held), ("order", order), ("items", &items.json)];
                self.set(record(saga), &fields);
                if matches!(event, Event::StockReserved { parts, .. } if *parts > 1) {
                    self.set(record(saga), &[("outcome", event.kind())]);
                }
            }
            Event::StockRejected { saga, order, .. }
            | Event::StockPartRejected { saga, order, .. } => self.set(
                record(saga),
                &[("state", saga_vocab::REJECTED), ("order", order)],
            ),
            Event::StockReleased {
                saga,
                order,
                items,
                released,
                ..
            }
            | Event::StockPartReleased {
                saga,
                order,
                items,
                released,
            } => {
                if *released {
                    for (item, qty) in &items.lines {
                        self.add(&STOCK.key(&l, item), STOCK.field, *qty)?;
                    }
                }
                let key = record(saga);
                if let Some(next) = self.compensated(p, &key) {
                    self.set(key, &[("state", next), ("order", order)]);
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The state a compensation leaves a participant's record in: `released` when it held
    /// something, a tombstone when it never acted; `None` for a repeated confirmation.
    fn compensated(&self, p: &Participant, key: &str) -> Option<&'static str> {
        match self.record_state(key) {
            Some(s) if s == p.released || s == TOMBSTONE => None,
            Some(_) => Some(p.released),
            None => Some(TOMBSTONE),
        }
    }

    fn payment_saga(&mut self, event: &Event) -> Result<(), ReplayError> {
        let p = &saga_vocab::PAYMENT;
        match event {
            Event::PaymentCharged {
                saga,
                order,
                user,
                amount,
            } => {
                self.add(&CREDIT.key(&self.at.layout, user), CREDIT.field, -amount)?;
                let amount = amount.to_string();
                let fields = [
                    ("state", p.held),
                    ("order", order.as_str()),
                    ("user", user.as_str()),
                    ("amount", &amount),
                ];
                self.set(p.record_key(&self.at.layout, self.at.part, saga), &fields);
            }
            Event::PaymentRejected {
                saga, order, user, ..
            } => {
                let fields = [
                    ("state", saga_vocab::REJECTED),
                    ("order", order.as_str()),
                    ("user", user.as_str()),
                    ("amount", "0"),
                ];
                self.set(p.record_key(&self.at.layout, self.at.part, saga), &fields);
            }
            Event::PaymentRefunded {
                saga,
                order,
                user,
                amount,
                refunded,
            } => {
                if *refunded {
                    self.add(&CREDIT.key(&self.at.layout, user), CREDIT.field, *amount)?;
                }
                let key = p.record_key(&self.at.layout, self.at.part, saga);
                if let Some(next) = self.compensated(p, &key) {
                    self.set(key, &[("state", next), ("order", order), ("user", user)]);
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn order_saga(&mut self, event: &Event) -> Result<(), ReplayError> {
        match event {
            Event::CheckoutStarted {
                saga,
                order,
                user,
                items,
                total,
                started_ms,
            } => {
                let (total, started_ms) = (total.to_string(), started_ms.to_string());
                self.set(
                    keys::order(&self.at.layout, order),
                    &[
                        ("status", OrderStatus::CheckingOut.as_str()),
                        ("saga", saga),
                    ],
                );
                let fields = [
                    ("order", order.as_str()),
                    ("user", user),
                    ("total", &total),
                    ("items", &items.json),
                    ("decision", Decision::None.as_str()),
                    ("reason", ""),
                    ("started_ms", &started_ms),
                    ("pending", ""),
                    ("done", "0"),
                ];
                self.set(keys::saga(&self.at.layout, self.at.part, saga), &fields);
            }
            Event::CheckoutCommitted { saga, order } => {
                self.set(
                    keys::saga(&self.at.layout, self.at.part, saga),
                    &[("decision", Decision::Commit.as_str()), ("done", "1")],
                );
                self.set(
                    keys::order(&self.at.layout, order),
                    &[("status", OrderStatus::Paid.as_str())],
                );
            }
            Event::CheckoutAborted {
                saga,
                reason,
                pending,
                ..
            } => {
                let pending = pending.join(" ");
                let fields = [
                    ("decision", Decision::Abort.as_str()),
                    ("reason", reason.as_str()),
                    ("pending", &pending),
                ];
                self.set(keys::saga(&self.at.layout, self.at.part, saga), &fields);
            }
            Event::CompensationConfirmed {
                saga,
                order,
                part,
                reopened,
            } => {
                let key = keys::saga(&self.at.layout, self.at.part, saga);
                let pending = self
                    .existing(&key)?
                    .get("pending")
                    .map(|p| saga_vocab::split_pending(p))
                    .unwrap_or_default();
                let left: Vec<String> = pending.into_iter().filter(|p| p != part).collect();
                let left = left.join(" ");
                self.set(key.clone(), &[("pending", &left)]);
                if left.is_empty() {
                    self.set(key, &[("done", "1")]);
                }
                if *reopened {
                    self.set(
                        keys::order(&self.at.layout, order),
                        &[("status", OrderStatus::Open.as_str()), ("saga", "")],
                    );
                }
            }
            _ => {}
        }
        Ok(())
    }

    fn order(&mut self, event: &Event) -> Result<(), ReplayError> {
        let open = |user: &str, total: String, items: String| -> BTreeMap<String, String> {
            [
                ("user_id", user.to_string()),
                ("total_cost", total),
                ("items", items),
                ("status", OrderStatus::Open.as_str().to_string()),
                ("saga", String::new()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect()
        };
        match event {
            Event::OrderCreated { order, user } => {
                self.insert(
                    keys::order(&self.at.layout, order),
                    open(user, "0".into(), "[]".into()),
                );
            }
            Event::ItemAdded {
                order,
                item,
                quantity,
                cost,
                ..
            } => {
                let line = saga_vocab::encode_lines(&[(item.clone(), *quantity)]);
                let line = &line[1..line.len() - 1];
                let hash = self.existing(&keys::order(&self.at.layout, order))?;
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
                hash.insert("total_cost".into(), total.saturating_add(*cost).to_string());
            }
            Event::OrderBatchInit {
                n,
                n_items,
                n_users,
                price,
                seed,
            } => {
                let total = price.saturating_mul(2).to_string();
                let orders = batch_orders(*seed, *n as u64, *n_items as u64, *n_users as u64);
                let mut id = String::new();
                for (i, o) in orders.enumerate() {
                    id.clear();
                    let _ = write!(id, "{i}");
                    if self.at.layout.part(&id) != self.at.part {
                        continue; // another partition's entry covers it
                    }
                    let key = keys::order(&self.at.layout, &id);
                    if self.keep.holds(&key) {
                        let items = saga_vocab::encode_lines(&[
                            (o.items[0].to_string(), 1),
                            (o.items[1].to_string(), 1),
                        ]);
                        self.extend(key, &open(&o.user.to_string(), total.clone(), items));
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Rebuilds `service`'s state from its history (the archive under `archive`, when given, then
/// the live log), reading in pages.
pub async fn rebuild(
    conn: &mut Conn,
    archive: Option<&Path>,
    service: ServiceLog,
    l: &Layout,
) -> Result<State, ReplayError> {
    let mut state = State::new();
    for part in l.parts() {
        for_each_entry(conn, archive, service, l, part, |at, e| {
            apply(service, at, &mut state, e)
        })
        .await?;
    }
    Ok(state)
}

/// Rebuilds partition `part` of `service`'s state from that partition's history alone.
pub async fn rebuild_part(
    conn: &mut Conn,
    archive: Option<&Path>,
    service: ServiceLog,
    l: &Layout,
    part: u32,
) -> Result<State, ReplayError> {
    let mut state = State::new();
    for_each_entry(conn, archive, service, l, part, |at, e| {
        apply(service, at, &mut state, e)
    })
    .await?;
    Ok(state)
}

/// Calls `f` on every entry of partition `part` of `service`'s history (archive, then live log),
/// in order, each once.
pub async fn for_each_entry(
    conn: &mut Conn,
    archive: Option<&Path>,
    service: ServiceLog,
    l: &Layout,
    part: u32,
    mut f: impl FnMut(Where, &LogEntry) -> Result<(), ReplayError>,
) -> Result<u64, ReplayError> {
    let at = Where { layout: *l, part };
    let stream = keys::log(service.log(), l, part);
    let dir = archive.map(|root| common::archive::stream_dir(root, service.name(), part));
    common::archive::for_each_history(conn, dir.as_deref(), &stream, PAGE, |e| f(at, e)).await
}

/// Reads `service`'s entity hashes from its database (SCAN, so the database keeps serving).
pub async fn dump(conn: &mut Conn, service: ServiceLog) -> Result<State, ReplayError> {
    dump_prefixes(conn, &service.key_prefixes()).await
}

/// Reads the hashes of partition `part` of `service` (its keys carry the partition's tag).
pub async fn dump_part(
    conn: &mut Conn,
    service: ServiceLog,
    l: &Layout,
    part: u32,
) -> Result<State, ReplayError> {
    let prefixes: Vec<String> = service
        .key_prefixes()
        .iter()
        .map(|p| format!("{p}{}:", l.tag(part)))
        .collect();
    let prefixes: Vec<&str> = prefixes.iter().map(String::as_str).collect();
    dump_prefixes(conn, &prefixes).await
}

/// Reads every hash whose key starts with one of `prefixes` (SCAN of every primary, then
/// `HGETALL`s, pipelined where the database allows).
pub async fn dump_prefixes(conn: &mut Conn, prefixes: &[&str]) -> Result<State, ReplayError> {
    let mut keys: Vec<String> = Vec::new();
    for mut node in common::db::primaries(conn)
        .await
        .map_err(|e| ReplayError::Nodes(e.to_string()))?
    {
        for prefix in prefixes {
            let pattern = format!("{prefix}*");
            let mut cursor: u64 = 0;
            loop {
                let (next, batch) = common::db::scan_page(&mut node, cursor, &pattern).await?;
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
    }
    let mut state = State::new();
    for chunk in keys.chunks(500) {
        let reads = chunk
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(k);
                cmd
            })
            .collect();
        let hashes: Vec<BTreeMap<String, String>> = common::db::each(conn, reads).await?;
        for (k, h) in chunk.iter().zip(hashes) {
            state.insert(k.clone(), h);
        }
    }
    Ok(state)
}

/// `HGETALL` of each key (pipelined where the database allows): the hashes that exist.
pub async fn read_keys(conn: &mut Conn, keys: &[String]) -> Result<State, redis::RedisError> {
    let mut out = State::new();
    for chunk in keys.chunks(500) {
        let reads = chunk
            .iter()
            .map(|k| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(k);
                cmd
            })
            .collect();
        let hashes: Vec<BTreeMap<String, String>> = common::db::each(conn, reads).await?;
        for (k, h) in chunk.iter().zip(hashes) {
            if !h.is_empty() {
                out.insert(k.clone(), h);
            }
        }
    }
    Ok(out)
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
pub async fn write(conn: &mut Conn, state: &State) -> Result<(), ReplayError> {
    let entries: Vec<_> = state.iter().collect();
    for chunk in entries.chunks(500) {
        let mut writes = Vec::new();
        for (key, hash) in chunk {
            let mut del = redis::cmd("DEL");
            del.arg(*key);
            writes.push(del);
            if !hash.is_empty() {
                let mut set = redis::cmd("HSET");
                set.arg(*key);
                for (f, v) in hash.iter() {
                    set.arg(f).arg(v);
                }
                writes.push(set);
            }
        }
        common::db::each::<redis::Value>(conn, writes).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> LogEntry {
        LogEntry::new("1-1", fields)
    }

    fn at() -> Where {
        Where {
            layout: Layout::new(common::saga::STOCK.name, 1),
            part: 0,
        }
    }

    fn record(state: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("state".to_string(), state.to_string())])
    }

    #[test]
    fn a_record_retired_by_key_leaves_the_model() {
        let mut state = State::new();
        state.insert("ssaga:a".into(), record("RESERVED"));
        state.insert("ssaga:b".into(), record("RESERVED"));
        state.insert("ssaga:c".into(), record("RESERVED"));
        let e = entry(&[
            ("log_id", "x"),
            ("type", "RecordsRetired"),
            ("keys", "ssaga:a ssaga:c"),
        ]);
        apply(ServiceLog::Stock, at(), &mut state, &e).unwrap();
        assert_eq!(state.keys().collect::<Vec<_>>(), ["ssaga:b"]);
    }

    #[test]
    fn a_record_retired_by_key_that_the_history_never_built_is_an_orphan() {
        let mut state = State::new();
        state.insert("ssaga:a".into(), record("RESERVED"));
        let e = entry(&[
            ("log_id", "x"),
            ("type", "RecordsRetired"),
            ("keys", "ssaga:a ssaga:z"),
        ]);
        match apply(ServiceLog::Stock, at(), &mut state, &e) {
            Err(ReplayError::Orphan { key, .. }) => assert_eq!(key, "ssaga:z"),
            other => panic!("expected an orphan, got {other:?}"),
        }
    }

    #[test]
    fn a_record_retired_with_its_fields_must_match_what_the_history_built() {
        let mut state = State::new();
        state.insert("saga:a".into(), record("COMMITTED"));
        let held = entry(&[
            ("log_id", "x"),
            ("type", "RecordsRetired"),
            (
                "records",
                r#"[{"key":"saga:a","fields":{"state":"ABORTED"}}]"#,
            ),
        ]);
        let mut changed = state.clone();
        assert!(matches!(
            apply(ServiceLog::Stock, at(), &mut changed, &held),
            Err(ReplayError::Retired { .. })
        ));
        let same = entry(&[
            ("log_id", "x"),
            ("type", "RecordsRetired"),
            (
                "records",
                r#"[{"key":"saga:a","fields":{"state":"COMMITTED"}}]"#,
            ),
        ]);
        apply(ServiceLog::Stock, at(), &mut state, &same).unwrap();
        assert!(state.is_empty());
    }
}
