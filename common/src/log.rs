//! The service logs: one Redis Stream per service (`log:<service>`) in that service's own database.
//!
//! Every state change appends exactly one entry, from the same Lua script that makes the change.
//! An entry is a flat map of fields: `log_id` (from the ID service), `type` (one of [`event`]),
//! and the fields that let the change be replayed. This module names the streams and the event
//! types and reads entries back in bounded pages (logs can hold millions of entries).

use std::collections::BTreeMap;

use redis::aio::ConnectionManager;

/// The order service's log, in order-db.
pub const ORDER_LOG: &str = "log:order";
/// The stock service's log, in stock-db.
pub const STOCK_LOG: &str = "log:stock";
/// The payment service's log, in payment-db.
pub const PAYMENT_LOG: &str = "log:payment";

/// The event types, one per state transition. Each names the Lua script that writes it.
pub mod event {
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
    /// `stock/lua/reserve.lua`: `user`, `items`, `total` (what payment needs to charge).
    pub const STOCK_RESERVED: &str = "StockReserved";
    /// `stock/lua/reserve.lua`: `reason`.
    pub const STOCK_REJECTED: &str = "StockRejected";
    /// `payment/lua/charge.lua`: `user`, `amount`.
    pub const PAYMENT_CHARGED: &str = "PaymentCharged";
    /// `payment/lua/charge.lua`: `user`, `reason`.
    pub const PAYMENT_REJECTED: &str = "PaymentRejected";
    /// `order/lua/commit.lua`: the decision `commit`; the order is paid.
    pub const CHECKOUT_COMMITTED: &str = "CheckoutCommitted";
    /// `common/lua/saga_abort.lua` (order service, log parser; re-driven by
    /// `common/lua/saga_redrive.lua`): the decision `abort`, with `reason`, `user`, `items`, `total`
    /// (what the compensations need).
    pub const CHECKOUT_ABORTED: &str = "CheckoutAborted";
    /// `stock/lua/release.lua`: `items`, `released` (`1` when stock went back, `0` when the saga
    /// held none and a tombstone now refuses its late reservation).
    pub const STOCK_RELEASED: &str = "StockReleased";
    /// `payment/lua/refund.lua`: `user`, `amount`, `refunded` (`1` or `0`, as for stock).
    pub const PAYMENT_REFUNDED: &str = "PaymentRefunded";
    /// `order/lua/confirm.lua`: `part` (`stock` | `payment`), `reopened` (`1` when this
    /// confirmation completed the compensation and the order became open again).
    pub const COMPENSATION_CONFIRMED: &str = "CompensationConfirmed";
}

/// Why a log entry could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database did not answer.
    #[error("reading the log failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// An entry lacks a field its type requires, or the field is malformed.
    #[error("log entry {id} ({kind}) has no valid `{field}` field; the log was edited or written by a newer version")]
    BadField {
        /// Stream id of the entry.
        id: String,
        /// Its `type`.
        kind: String,
        /// The missing or malformed field.
        field: String,
    },
}

/// One entry of a service log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The stream id Redis assigned (`<ms>-<seq>`), which orders the log.
    pub stream_id: String,
    /// The entry's fields.
    pub fields: BTreeMap<String, String>,
}

impl LogEntry {
    /// The event type (`""` when missing).
    pub fn kind(&self) -> &str {
        self.get("type").unwrap_or("")
    }

    /// A field's value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// A required text field.
    pub fn text(&self, field: &str) -> Result<&str, LogError> {
        self.get(field).ok_or_else(|| self.bad(field))
    }

    /// A required integer field.
    pub fn int(&self, field: &str) -> Result<i64, LogError> {
        self.text(field)?.parse().map_err(|_| self.bad(field))
    }

    fn bad(&self, field: &str) -> LogError {
        LogError::BadField {
            id: self.stream_id.clone(),
            kind: self.kind().to_string(),
            field: field.to_string(),
        }
    }
}

type RawEntries = Vec<(String, Vec<(String, String)>)>;

/// Reads up to `count` entries of `stream` that come strictly after stream id `after`
/// (`"-"` for the beginning).
pub async fn read_page(
    conn: &mut ConnectionManager,
    stream: &str,
    after: &str,
    count: usize,
) -> Result<Vec<LogEntry>, LogError> {
    let start = if after == "-" {
        "-".to_string()
    } else {
        format!("({after}")
    };
    let raw: RawEntries = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg("+")
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .map(|(stream_id, kv)| LogEntry {
            stream_id,
            fields: kv.into_iter().collect(),
        })
        .collect())
}

/// Calls `f` on every entry of `stream`, in order, reading pages of `page` entries so memory stays
/// bounded however long the log is.
pub async fn for_each(
    conn: &mut ConnectionManager,
    stream: &str,
    page: usize,
    mut f: impl FnMut(&LogEntry) -> Result<(), LogError>,
) -> Result<u64, LogError> {
    let mut after = "-".to_string();
    let mut seen = 0u64;
    loop {
        let entries = read_page(conn, stream, &after, page).await?;
        let Some(last) = entries.last() else {
            return Ok(seen);
        };
        after = last.stream_id.clone();
        for e in &entries {
            f(e)?;
            seen += 1;
        }
        if entries.len() < page {
            return Ok(seen);
        }
    }
}
