//! The events of the service logs, as one type: a [`LogEntry`]'s flat fields are decoded once into
//! an [`Event`], then every reader (the saga handlers, replay, recovery, the timeline) matches on
//! the variant instead of comparing `type` strings and looking fields up by name.
//!
//! The wire format is written by the Lua scripts (each variant names its script); a test
//! (`order/tests/events.rs`) runs every script and decodes every entry it appends.

use std::fmt;

use crate::counter::{CounterSpec, COUNTERS};
use crate::log::LogEntry;
use crate::saga::{decode_lines, split_pending, Lines};

/// The event type names, as written in the `type` field. Each names the Lua script that writes it.
pub mod kind {
    /// `create_entity.lua` on stock-db: `item`, `price`, `stock`.
    pub const ITEM_CREATED: &str = "ItemCreated";
    /// `counter_add.lua` on stock-db: `item`, `amount`.
    pub const STOCK_ADDED: &str = "StockAdded";
    /// `counter_subtract.lua` on stock-db: `item`, `amount`.
    pub const STOCK_SUBTRACTED: &str = "StockSubtracted";
    /// `counter_batch_init.lua` on stock-db: `n`, `stock`, `price`.
    pub const STOCK_BATCH_INIT: &str = "StockBatchInit";
    /// `create_entity.lua` on payment-db: `user`, `credit`.
    pub const USER_CREATED: &str = "UserCreated";
    /// `counter_add.lua` on payment-db: `user`, `amount`.
    pub const FUNDS_ADDED: &str = "FundsAdded";
    /// `counter_subtract.lua` on payment-db: `user`, `amount`.
    pub const PAYMENT_MADE: &str = "PaymentMade";
    /// `counter_batch_init.lua` on payment-db: `n`, `credit`.
    pub const USER_BATCH_INIT: &str = "UserBatchInit";
    /// `order/lua/create_order.lua`: `order`, `user`.
    pub const ORDER_CREATED: &str = "OrderCreated";
    /// `order/lua/add_item.lua`: `order`, `item`, `quantity`, `price`, `cost`.
    pub const ITEM_ADDED: &str = "ItemAdded";
    /// `order/lua/batch_init.lua`: `n`, `n_items`, `n_users`, `price`, `seed`.
    pub const ORDER_BATCH_INIT: &str = "OrderBatchInit";

    // The checkout saga (DESIGN.md, "Checkout saga"). Every saga entry carries `saga` and `order`.

    /// `order/lua/checkout_start.lua`: `user`, `items` (summed), `total`, `started_ms`.
    pub const CHECKOUT_STARTED: &str = "CheckoutStarted";
    /// `stock/lua/reserve.lua` (one partition) or `stock/lua/finish.lua` (several): `user`,
    /// `items`, `total` (what payment needs to charge), `parts` (how many stock partitions).
    pub const STOCK_RESERVED: &str = "StockReserved";
    /// `stock/lua/reserve.lua` or `stock/lua/finish.lua`: `reason`, `parts`.
    pub const STOCK_REJECTED: &str = "StockRejected";
    /// `stock/lua/reserve.lua`, one partition of several: `items` (that partition's lines).
    pub const STOCK_PART_RESERVED: &str = "StockPartReserved";
    /// `stock/lua/reserve.lua`, one partition of several: `reason`.
    pub const STOCK_PART_REJECTED: &str = "StockPartRejected";
    /// `stock/lua/release.lua`, one partition of several: `items`, `released`.
    pub const STOCK_PART_RELEASED: &str = "StockPartReleased";
    /// `payment/lua/charge.lua`: `user`, `amount`.
    pub const PAYMENT_CHARGED: &str = "PaymentCharged";
    /// `payment/lua/charge.lua`: `user`, `reason`.
    pub const PAYMENT_REJECTED: &str = "PaymentRejected";
    /// `order/lua/commit.lua`: the decision `commit`; the order is paid.
    pub const CHECKOUT_COMMITTED: &str = "CheckoutCommitted";
    /// `common/lua/saga_abort.lua` (order service, log parser; re-driven by
    /// `common/lua/saga_redrive.lua`): the decision `abort`, with `reason`, `user`, `items`, `total`
    /// (what the compensations need) and `pending` (the participants still to confirm).
    pub const CHECKOUT_ABORTED: &str = "CheckoutAborted";
    /// `stock/lua/release.lua` or `stock/lua/finish.lua`: `items`, `released` (`1` when stock
    /// went back, `0` when the saga held none and tombstones now refuse its late reservation),
    /// `parts`.
    pub const STOCK_RELEASED: &str = "StockReleased";
    /// `payment/lua/refund.lua`: `user`, `amount`, `refunded` (`1` or `0`, as for stock).
    pub const PAYMENT_REFUNDED: &str = "PaymentRefunded";
    /// `order/lua/confirm.lua`: `part` (a participant's name), `reopened` (`1` when this
    /// confirmation completed the compensation and the order became open again).
    pub const COMPENSATION_CONFIRMED: &str = "CompensationConfirmed";
    /// `logparser/lua/retire.lua` (the log parser's archiving pass, in any service's log):
    /// `records`, a JSON array of `{"key", "fields"}`, the saga records of final sagas it removed
    /// from the database, as they were (their history is in the archive).
    pub const RECORDS_RETIRED: &str = "RecordsRetired";

    /// Every type above: what the scripts can append (a test makes each script append its
    /// entries and decodes them all).
    pub const ALL: [&str; 24] = [
        ITEM_CREATED,
        STOCK_ADDED,
        STOCK_SUBTRACTED,
        STOCK_BATCH_INIT,
        USER_CREATED,
        FUNDS_ADDED,
        PAYMENT_MADE,
        USER_BATCH_INIT,
        ORDER_CREATED,
        ITEM_ADDED,
        ORDER_BATCH_INIT,
        CHECKOUT_STARTED,
        STOCK_RESERVED,
        STOCK_REJECTED,
        STOCK_PART_RESERVED,
        STOCK_PART_REJECTED,
        STOCK_PART_RELEASED,
        PAYMENT_CHARGED,
        PAYMENT_REJECTED,
        CHECKOUT_COMMITTED,
        CHECKOUT_ABORTED,
        STOCK_RELEASED,
        PAYMENT_REFUNDED,
        COMPENSATION_CONFIRMED,
    ];
}

/// An entry that cannot be decoded: names the entry, its type and the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// The `type` is not one this version knows.
    #[error("log entry {id} has unknown type `{kind}`; is this shoplog older than the services?")]
    UnknownType {
        /// Stream id.
        id: String,
        /// Its `type`.
        kind: String,
    },
    /// A field the type requires is missing or malformed.
    #[error("log entry {id} ({kind}) has no valid `{field}` field; the log was edited or written by another version")]
    BadField {
        /// Stream id.
        id: String,
        /// Its `type`.
        kind: String,
        /// The missing or malformed field.
        field: String,
    },
}

/// A saga's item lines as carried in an entry: the JSON exactly as logged (records store it
/// verbatim) and its decoded form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Items {
    /// `[["item", qty], ...]` as logged.
    pub json: String,
    /// The decoded lines.
    pub lines: Lines,
}

/// What a counter entity event did (see [`CounterSpec`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CounterOp {
    /// Created entity `id` with these fields (the counter and the extra fields).
    Created {
        /// The entity id.
        id: String,
        /// `(field, value)` for the counter field and each extra field.
        fields: Vec<(&'static str, i64)>,
    },
    /// Added `amount` to the counter of `id`.
    Added {
        /// The entity id.
        id: String,
        /// The amount.
        amount: i64,
    },
    /// Subtracted `amount` from the counter of `id`.
    Subtracted {
        /// The entity id.
        id: String,
        /// The amount.
        amount: i64,
    },
    /// Created or overwrote entities `"0"`..`"n-1"` with these fields.
    BatchInit {
        /// How many.
        n: i64,
        /// `(field, value)` for the counter field and each extra field.
        fields: Vec<(&'static str, i64)>,
    },
}

/// One log entry, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A counter entity (item, user) changed: `create_entity.lua`, `counter_*.lua`.
    Counter {
        /// Which entities (stock items or users).
        spec: &'static CounterSpec,
        /// What happened.
        op: CounterOp,
    },
    /// `create_order.lua`.
    OrderCreated { order: String, user: String },
    /// `add_item.lua`.
    ItemAdded {
        order: String,
        item: String,
        quantity: i64,
        price: i64,
        cost: i64,
    },
    /// `order/lua/batch_init.lua`.
    OrderBatchInit {
        n: i64,
        n_items: i64,
        n_users: i64,
        price: i64,
        seed: u64,
    },
    /// `checkout_start.lua`.
    CheckoutStarted {
        saga: String,
        order: String,
        user: String,
        items: Items,
        total: i64,
        started_ms: u64,
    },
    /// `commit.lua`.
    CheckoutCommitted { saga: String, order: String },
    /// `saga_abort.lua`, `saga_redrive.lua`.
    CheckoutAborted {
        saga: String,
        order: String,
        user: String,
        items: Items,
        total: i64,
        reason: String,
        /// The participants whose compensation is still to be confirmed.
        pending: Vec<String>,
    },
    /// `confirm.lua`.
    CompensationConfirmed {
        saga: String,
        order: String,
        /// The participant that confirmed.
        part: String,
        reopened: bool,
    },
    /// The stock side's outcome, reserved (`reserve.lua`: in mode `whole`, or in mode `last` by
    /// the home partition of a saga whose items span several, reserving its own lines with it).
    StockReserved {
        saga: String,
        order: String,
        user: String,
        total: i64,
        /// The lines this entry reserved: the saga's (`parts` = 1) or its home partition's.
        items: Items,
        /// How many stock partitions the saga's items span (1: the fast path, whose entry also
        /// made the reservation).
        parts: u32,
    },
    /// The stock side's outcome, refused (`reserve.lua`, mode `whole`, or `finish.lua`).
    StockRejected {
        saga: String,
        order: String,
        reason: String,
        /// See [`Event::StockReserved`].
        parts: u32,
    },
    /// The stock side's confirmation of a compensation (`release.lua` or `finish.lua`).
    StockReleased {
        saga: String,
        order: String,
        items: Items,
        released: bool,
        /// See [`Event::StockReserved`].
        parts: u32,
    },
    /// One partition's reservation of a multi-partition saga (`reserve.lua`, mode `part`).
    StockPartReserved {
        saga: String,
        order: String,
        /// That partition's lines.
        items: Items,
    },
    /// One partition's refusal (`reserve.lua`, mode `part`).
    StockPartRejected {
        saga: String,
        order: String,
        reason: String,
    },
    /// One partition's compensation (`release.lua`, mode `part`).
    StockPartReleased {
        saga: String,
        order: String,
        /// That partition's lines.
        items: Items,
        released: bool,
    },
    /// `charge.lua`, charged.
    PaymentCharged {
        saga: String,
        order: String,
        user: String,
        amount: i64,
    },
    /// `charge.lua`, refused.
    PaymentRejected {
        saga: String,
        order: String,
        user: String,
        reason: String,
    },
    /// `refund.lua`.
    PaymentRefunded {
        saga: String,
        order: String,
        user: String,
        amount: i64,
        refunded: bool,
    },
    /// `retire.lua`: saga records removed from the database. The order side's are logged with
    /// their fields as they were (`records`: the saga list and the audit's count of retired sagas
    /// read them); the participants' by key alone (`keys`: their fields are what the history up
    /// to the entry built, and copying them was most of a retirement's cost). Entries written
    /// before the participants' went by key hold every record in `records`.
    RecordsRetired {
        /// `(key, fields)` of each record retired with its fields.
        records: Vec<(String, std::collections::BTreeMap<String, String>)>,
        /// The key of each record retired by key alone.
        keys: Vec<String>,
    },
    /// A saga step of a participant that has no typed variant here (a participant added by a row
    /// of [`crate::saga::PARTICIPANTS`] only): what the order side needs of it.
    Step {
        /// Its `type` (one of the participant's event names).
        kind: String,
        saga: String,
        order: String,
        /// Why it refused, when it did.
        reason: Option<String>,
    },
}

/// The field of a `RecordsRetired` entry that holds records with their fields (JSON).
pub const RETIRED_RECORDS: &str = "records";
/// The field of a `RecordsRetired` entry that names records retired by key alone.
pub const RETIRED_KEYS: &str = "keys";

/// Whether entry `e` is a `RecordsRetired` that retired a record of saga `saga` (in either of its
/// fields), without decoding it: the saga's timeline scans every entry of every log.
pub fn retires_saga(e: &LogEntry, saga: &str) -> bool {
    if e.kind() != kind::RECORDS_RETIRED {
        return false;
    }
    let tail = format!(":{saga}");
    let in_records = e
        .get(RETIRED_RECORDS)
        .is_some_and(|r| r.contains(&format!("{tail}\"")));
    let in_keys = e
        .get(RETIRED_KEYS)
        .is_some_and(|k| k.split(' ').any(|k| k.ends_with(&tail)));
    in_records || in_keys
}

/// Field access for decoding one entry, each failure naming the entry and the field.
struct Reader<'a> {
    e: &'a LogEntry,
}

impl<'a> Reader<'a> {
    fn bad(&self, field: &str) -> EventError {
        EventError::BadField {
            id: self.e.stream_id.clone(),
            kind: self.e.kind().to_string(),
            field: field.to_string(),
        }
    }

    fn text(&self, field: &str) -> Result<String, EventError> {
        self.e
            .get(field)
            .map(str::to_string)
            .ok_or_else(|| self.bad(field))
    }

    fn int<T: std::str::FromStr>(&self, field: &str) -> Result<T, EventError> {
        self.e
            .get(field)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| self.bad(field))
    }

    fn flag(&self, field: &str) -> Result<bool, EventError> {
        match self.e.get(field) {
            Some("1") => Ok(true),
            Some("0") => Ok(false),
            _ => Err(self.bad(field)),
        }
    }

    fn items(&self) -> Result<Items, EventError> {
        let json = self.text("items")?;
        let lines = decode_lines(&json).ok_or_else(|| self.bad("items"))?;
        Ok(Items { json, lines })
    }

    /// `records` of `RecordsRetired`: `[{"key": …, "fields": {…}}, …]` (cjson may write an empty
    /// object as `[]`, never for a record, which has fields); none when the field is absent.
    #[allow(clippy::type_complexity)]
    fn retired(
        &self,
    ) -> Result<Vec<(String, std::collections::BTreeMap<String, String>)>, EventError> {
        #[derive(serde::Deserialize)]
        struct Retired {
            key: String,
            fields: std::collections::BTreeMap<String, String>,
        }
        let Some(json) = self.e.get(RETIRED_RECORDS) else {
            return Ok(Vec::new());
        };
        let records: Vec<Retired> =
            serde_json::from_str(json).map_err(|_| self.bad(RETIRED_RECORDS))?;
        Ok(records.into_iter().map(|r| (r.key, r.fields)).collect())
    }

    /// `keys` of `RecordsRetired`: keys separated by spaces; none when the field is absent.
    fn retired_keys(&self) -> Vec<String> {
        self.e
            .get(RETIRED_KEYS)
            .map(|k| {
                k.split(' ')
                    .filter(|k| !k.is_empty())
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn counter_fields(&self, spec: &CounterSpec) -> Result<Vec<(&'static str, i64)>, EventError> {
        std::iter::once(spec.field)
            .chain(spec.extra_fields.iter().copied())
            .map(|f| Ok((f, self.int(f)?)))
            .collect()
    }
}

impl Event {
    /// Decodes an entry; an unknown type or a missing field is an error naming the entry.
    pub fn decode(e: &LogEntry) -> Result<Event, EventError> {
        use kind::*;
        let r = Reader { e };
        let kind = e.kind();
        if let Some((spec, op)) = COUNTERS
            .iter()
            .find_map(|s| s.op_of(kind).map(|op| (s, op)))
        {
            let op = match op {
                crate::counter::Op::Create => CounterOp::Created {
                    id: r.text(spec.entity)?,
                    fields: r.counter_fields(spec)?,
                },
                crate::counter::Op::Add => CounterOp::Added {
                    id: r.text(spec.entity)?,
                    amount: r.int("amount")?,
                },
                crate::counter::Op::Subtract => CounterOp::Subtracted {
                    id: r.text(spec.entity)?,
                    amount: r.int("amount")?,
                },
                crate::counter::Op::BatchInit => CounterOp::BatchInit {
                    n: r.int("n")?,
                    fields: r.counter_fields(spec)?,
                },
            };
            return Ok(Event::Counter { spec, op });
        }
        Ok(match kind {
            ORDER_CREATED => Event::OrderCreated {
                order: r.text("order")?,
                user: r.text("user")?,
            },
            ITEM_ADDED => Event::ItemAdded {
                order: r.text("order")?,
                item: r.text("item")?,
                quantity: r.int("quantity")?,
                price: r.int("price")?,
                cost: r.int("cost")?,
            },
            ORDER_BATCH_INIT => Event::OrderBatchInit {
                n: r.int("n")?,
                n_items: r.int("n_items")?,
                n_users: r.int("n_users")?,
                price: r.int("price")?,
                seed: r.int("seed")?,
            },
            CHECKOUT_STARTED => Event::CheckoutStarted {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                items: r.items()?,
                total: r.int("total")?,
                started_ms: r.int("started_ms")?,
            },
            CHECKOUT_COMMITTED => Event::CheckoutCommitted {
                saga: r.text("saga")?,
                order: r.text("order")?,
            },
            CHECKOUT_ABORTED => Event::CheckoutAborted {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                items: r.items()?,
                total: r.int("total")?,
                reason: r.text("reason")?,
                pending: split_pending(&r.text("pending")?),
            },
            COMPENSATION_CONFIRMED => Event::CompensationConfirmed {
                saga: r.text("saga")?,
                order: r.text("order")?,
                part: r.text("part")?,
                reopened: r.flag("reopened")?,
            },
            STOCK_RESERVED => Event::StockReserved {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                total: r.int("total")?,
                items: r.items()?,
                parts: r.int("parts")?,
            },
            STOCK_REJECTED => Event::StockRejected {
                saga: r.text("saga")?,
                order: r.text("order")?,
                reason: r.text("reason")?,
                parts: r.int("parts")?,
            },
            STOCK_RELEASED => Event::StockReleased {
                saga: r.text("saga")?,
                order: r.text("order")?,
                items: r.items()?,
                released: r.flag("released")?,
                parts: r.int("parts")?,
            },
            STOCK_PART_RESERVED => Event::StockPartReserved {
                saga: r.text("saga")?,
                order: r.text("order")?,
                items: r.items()?,
            },
            STOCK_PART_REJECTED => Event::StockPartRejected {
                saga: r.text("saga")?,
                order: r.text("order")?,
                reason: r.text("reason")?,
            },
            STOCK_PART_RELEASED => Event::StockPartReleased {
                saga: r.text("saga")?,
                order: r.text("order")?,
                items: r.items()?,
                released: r.flag("released")?,
            },
            PAYMENT_CHARGED => Event::PaymentCharged {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                amount: r.int("amount")?,
            },
            PAYMENT_REJECTED => Event::PaymentRejected {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                reason: r.text("reason")?,
            },
            PAYMENT_REFUNDED => Event::PaymentRefunded {
                saga: r.text("saga")?,
                order: r.text("order")?,
                user: r.text("user")?,
                amount: r.int("amount")?,
                refunded: r.flag("refunded")?,
            },
            RECORDS_RETIRED => {
                if e.get(RETIRED_RECORDS).is_none() && e.get(RETIRED_KEYS).is_none() {
                    return Err(r.bad(RETIRED_RECORDS));
                }
                Event::RecordsRetired {
                    records: r.retired()?,
                    keys: r.retired_keys(),
                }
            }
            other if e.get("saga").is_some() && e.get("order").is_some() => Event::Step {
                kind: other.to_string(),
                saga: r.text("saga")?,
                order: r.text("order")?,
                reason: e.get("reason").map(str::to_string),
            },
            other => {
                return Err(EventError::UnknownType {
                    id: e.stream_id.clone(),
                    kind: other.to_string(),
                })
            }
        })
    }

    /// The event's type name, as logged.
    pub fn kind(&self) -> &str {
        use kind::*;
        match self {
            Event::Counter { spec, op } => match op {
                CounterOp::Created { .. } => spec.created,
                CounterOp::Added { .. } => spec.added,
                CounterOp::Subtracted { .. } => spec.subtracted,
                CounterOp::BatchInit { .. } => spec.batch_init,
            },
            Event::OrderCreated { .. } => ORDER_CREATED,
            Event::ItemAdded { .. } => ITEM_ADDED,
            Event::OrderBatchInit { .. } => ORDER_BATCH_INIT,
            Event::CheckoutStarted { .. } => CHECKOUT_STARTED,
            Event::CheckoutCommitted { .. } => CHECKOUT_COMMITTED,
            Event::CheckoutAborted { .. } => CHECKOUT_ABORTED,
            Event::CompensationConfirmed { .. } => COMPENSATION_CONFIRMED,
            Event::StockReserved { .. } => STOCK_RESERVED,
            Event::StockRejected { .. } => STOCK_REJECTED,
            Event::StockReleased { .. } => STOCK_RELEASED,
            Event::StockPartReserved { .. } => STOCK_PART_RESERVED,
            Event::StockPartRejected { .. } => STOCK_PART_REJECTED,
            Event::StockPartReleased { .. } => STOCK_PART_RELEASED,
            Event::PaymentCharged { .. } => PAYMENT_CHARGED,
            Event::PaymentRejected { .. } => PAYMENT_REJECTED,
            Event::PaymentRefunded { .. } => PAYMENT_REFUNDED,
            Event::RecordsRetired { .. } => RECORDS_RETIRED,
            Event::Step { kind, .. } => kind,
        }
    }

    /// The saga and order of a saga event; `None` for entity events.
    pub fn saga(&self) -> Option<(&str, &str)> {
        match self {
            Event::CheckoutStarted { saga, order, .. }
            | Event::CheckoutCommitted { saga, order }
            | Event::CheckoutAborted { saga, order, .. }
            | Event::CompensationConfirmed { saga, order, .. }
            | Event::StockReserved { saga, order, .. }
            | Event::StockRejected { saga, order, .. }
            | Event::StockReleased { saga, order, .. }
            | Event::StockPartReserved { saga, order, .. }
            | Event::StockPartRejected { saga, order, .. }
            | Event::StockPartReleased { saga, order, .. }
            | Event::PaymentCharged { saga, order, .. }
            | Event::PaymentRejected { saga, order, .. }
            | Event::PaymentRefunded { saga, order, .. }
            | Event::Step { saga, order, .. } => Some((saga, order)),
            _ => None,
        }
    }

    /// The reason of a refusal or an abort.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Event::CheckoutAborted { reason, .. }
            | Event::StockRejected { reason, .. }
            | Event::StockPartRejected { reason, .. }
            | Event::PaymentRejected { reason, .. } => Some(reason),
            Event::Step { reason, .. } => reason.as_deref(),
            _ => None,
        }
    }

    /// Where the event sits in a saga's causal order (the timeline sorts entries of one
    /// millisecond in different logs by it): start, participants' steps, decision, compensations.
    pub fn saga_rank(&self, parts: &'static [crate::saga::Participant]) -> u8 {
        use crate::saga::StepKind;
        match self {
            Event::CheckoutStarted { .. } => 0,
            Event::CheckoutCommitted { .. } | Event::CheckoutAborted { .. } => 100,
            Event::CompensationConfirmed { .. } => 102,
            // A partition's part of stock's step, or of its compensation.
            Event::StockPartReserved { .. } | Event::StockPartRejected { .. } => 1,
            Event::StockPartReleased { .. } => 101,
            other => match crate::saga::step_of(parts, other.kind()) {
                Some((p, StepKind::Done | StepKind::Refused)) => {
                    1 + parts.iter().position(|q| q == p).unwrap_or(0) as u8
                }
                Some((_, StepKind::Compensated)) => 101,
                None => 103,
            },
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind())?;
        if let Some((saga, order)) = self.saga() {
            write!(f, " saga={saga} order={order}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(fields: &[(&str, &str)]) -> LogEntry {
        LogEntry::new("1-1", fields)
    }

    const SAGA: &str = "01JF000000000000000000SAGA";

    #[test]
    fn records_retired_reads_records_keys_or_both() {
        let copies = entry(&[
            ("type", kind::RECORDS_RETIRED),
            (
                RETIRED_RECORDS,
                r#"[{"key":"saga:{o1}:01JF000000000000000000SAGA","fields":{"done":"1"}}]"#,
            ),
        ]);
        let by_key = entry(&[
            ("type", kind::RECORDS_RETIRED),
            (
                RETIRED_KEYS,
                "ssaga:{s0}:01JF000000000000000000SAGA ssaga:{s1}:other",
            ),
        ]);
        match Event::decode(&copies).unwrap() {
            Event::RecordsRetired { records, keys } => {
                assert_eq!(records.len(), 1);
                assert_eq!(records[0].1["done"], "1");
                assert!(keys.is_empty());
            }
            other => panic!("{other:?}"),
        }
        match Event::decode(&by_key).unwrap() {
            Event::RecordsRetired { records, keys } => {
                assert!(records.is_empty());
                assert_eq!(
                    keys,
                    ["ssaga:{s0}:01JF000000000000000000SAGA", "ssaga:{s1}:other"]
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(retires_saga(&copies, SAGA));
        assert!(retires_saga(&by_key, SAGA));
        assert!(!retires_saga(&by_key, "01JF000000000000000000SAG"));
        assert!(!retires_saga(&by_key, "nothing"));
    }

    #[test]
    fn records_retired_naming_no_record_is_an_error() {
        let empty = entry(&[("type", kind::RECORDS_RETIRED)]);
        assert!(Event::decode(&empty).is_err());
    }
}
