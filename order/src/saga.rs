//! The order side of the checkout saga: admission (`lua/checkout_start.lua`), the decision
//! (`lua/commit.lua` and `common/lua/saga_abort.lua` — both compare-and-set on the saga record's
//! `decision`; the abort is shared with the log parser), and
//! the confirmations of compensations (`lua/confirm.lua`).
//!
//! [`on_entry`] reacts to `log:stock` and `log:payment` (consumer group `order`):
//! `PaymentCharged` → commit; `StockRejected` / `PaymentRejected` → abort;
//! `StockReleased` / `PaymentRefunded` → confirm.

use std::sync::{Arc, LazyLock};

use common::consumer::HandlerError;
use common::ids::IdPool;
use common::log::{event, LogEntry, ORDER_LOG};
use common::saga::{order_saga_key, DONE_CHANNEL};
use redis::aio::ConnectionManager;
use redis::Script;

use crate::store;

static START: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/checkout_start.lua")));
static COMMIT: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/commit.lua")));
static CONFIRM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/confirm.lua")));

/// What admission answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// A new saga started.
    Started(String),
    /// The order is already paid (by this saga).
    Paid(String),
    /// A saga is already deciding the order: join it.
    Join(String),
    /// No such order.
    NotFound,
    /// The order's items changed since they were read: read again.
    Changed,
}

/// Starts saga `saga` for order `order` if it is open and its items are still `items_read`.
pub async fn start(
    conn: &mut ConnectionManager,
    log_id: &str,
    order: &str,
    saga: &str,
    items_read: &str,
    summed: &str,
    now_ms: u64,
) -> Result<Admission, redis::RedisError> {
    let reply: Vec<String> = START
        .key(store::key(order))
        .key(order_saga_key(saga))
        .key(ORDER_LOG)
        .arg(log_id)
        .arg(order)
        .arg(saga)
        .arg(items_read)
        .arg(summed)
        .arg(now_ms)
        .invoke_async(conn)
        .await?;
    let sid = reply.get(1).cloned().unwrap_or_default();
    Ok(match reply.first().map(String::as_str) {
        Some("OK") => Admission::Started(sid),
        Some("PAID") => Admission::Paid(sid),
        Some("JOIN") => Admission::Join(sid),
        Some("CHANGED") => Admission::Changed,
        _ => Admission::NotFound,
    })
}

/// Decides `commit` unless a decision was taken; answers the script's reply.
pub async fn commit(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
) -> Result<Vec<String>, redis::RedisError> {
    COMMIT
        .key(order_saga_key(saga))
        .key(store::key(order))
        .key(ORDER_LOG)
        .key(DONE_CHANNEL)
        .arg(log_id)
        .arg(saga)
        .invoke_async(conn)
        .await
}

pub use common::saga::abort;

/// Records that `part` (`stock` | `payment`) finished compensating; answers the script's reply.
pub async fn confirm(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
    part: &str,
) -> Result<Vec<String>, redis::RedisError> {
    CONFIRM
        .key(order_saga_key(saga))
        .key(store::key(order))
        .key(ORDER_LOG)
        .key(DONE_CHANNEL)
        .arg(log_id)
        .arg(saga)
        .arg(part)
        .invoke_async(conn)
        .await
}

/// A saga as the waiting checkout sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SagaView {
    /// `none`, `commit` or `abort`.
    pub decision: String,
    /// Why it was aborted.
    pub reason: String,
    /// Committed, or aborted with every compensation confirmed.
    pub done: bool,
}

/// Reads saga `saga`'s decision; `None` when there is no such saga.
pub async fn view(
    conn: &mut ConnectionManager,
    saga: &str,
) -> Result<Option<SagaView>, redis::RedisError> {
    let (decision, reason, done): (Option<String>, Option<String>, Option<String>) =
        redis::cmd("HMGET")
            .arg(order_saga_key(saga))
            .arg("decision")
            .arg("reason")
            .arg("done")
            .query_async(conn)
            .await?;
    Ok(decision.map(|decision| SagaView {
        decision,
        reason: reason.unwrap_or_default(),
        done: done.as_deref() == Some("1"),
    }))
}

/// Handles one entry of `log:stock` or `log:payment`; entries not for the order side are
/// acknowledged as they are.
pub async fn on_entry(
    db: &ConnectionManager,
    ids: &Arc<IdPool>,
    e: LogEntry,
) -> Result<(), HandlerError> {
    let kind = e.kind();
    let relevant = [
        event::PAYMENT_CHARGED,
        event::STOCK_REJECTED,
        event::PAYMENT_REJECTED,
        event::STOCK_RELEASED,
        event::PAYMENT_REFUNDED,
    ];
    if !relevant.contains(&kind) {
        return Ok(());
    }
    let text = |f: &str| e.text(f).map(str::to_string).map_err(|x| x.to_string());
    let saga = text("saga")?;
    let order = text("order")?;
    let mut conn = db.clone();
    let log_id = ids.next();
    let reply = match kind {
        event::PAYMENT_CHARGED => commit(&mut conn, &log_id, &saga, &order).await,
        event::STOCK_REJECTED | event::PAYMENT_REJECTED => {
            abort(&mut conn, &log_id, &saga, &text("reason")?).await
        }
        event::STOCK_RELEASED => confirm(&mut conn, &log_id, &saga, &order, "stock").await,
        _ => confirm(&mut conn, &log_id, &saga, &order, "payment").await,
    }
    .map_err(|x| x.to_string())?;
    if reply.first().map(String::as_str) == Some("FENCED") {
        // Cannot happen while every transition checks the saga id; make it loud if it does.
        tracing::error!(%saga, %order, ?reply, "commit refused: the order is not held by this saga");
    }
    Ok(())
}
