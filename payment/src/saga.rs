//! The payment side of the checkout saga: `StockReserved` (from `log:stock`) → charge the order's
//! total if the credit suffices (`lua/charge.lua`); `CheckoutAborted` (from `log:order`) → refund,
//! or leave a tombstone (`lua/refund.lua`). Both logs are read through the consumer group `payment`.

use std::sync::{Arc, LazyLock};

use common::consumer::HandlerError;
use common::ids::IdPool;
use common::log::{event, LogEntry, PAYMENT_LOG};
use common::saga::payment_saga_key;
use redis::aio::ConnectionManager;
use redis::Script;

static CHARGE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/charge.lua")));
static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/refund.lua")));

/// Handles one entry of `log:stock` or `log:order`; others are acknowledged as they are.
pub async fn on_entry(
    db: &ConnectionManager,
    ids: &Arc<IdPool>,
    e: LogEntry,
) -> Result<(), HandlerError> {
    match e.kind() {
        event::STOCK_RESERVED => charge(&mut db.clone(), &ids.next(), &e).await.map(|_| ()),
        event::CHECKOUT_ABORTED => refund(&mut db.clone(), &ids.next(), &e).await.map(|_| ()),
        _ => Ok(()),
    }
}

fn field<'a>(e: &'a LogEntry, f: &str) -> Result<&'a str, HandlerError> {
    e.text(f).map_err(|x| x.to_string())
}

/// Charges the saga's total; answers the script's reply (`OK`, `REJECTED <reason>`, `DUP <state>`).
pub async fn charge(
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
) -> Result<Vec<String>, HandlerError> {
    let saga = field(e, "saga")?;
    let user = field(e, "user")?;
    let total: i64 = e.int("total").map_err(|x| x.to_string())?;
    CHARGE
        .key(payment_saga_key(saga))
        .key(format!("user:{user}"))
        .key(PAYMENT_LOG)
        .arg(log_id)
        .arg(saga)
        .arg(field(e, "order")?)
        .arg(user)
        .arg(total)
        .invoke_async(conn)
        .await
        .map_err(|x| x.to_string())
}

/// Refunds the saga's charge (or leaves a tombstone); answers the script's reply.
pub async fn refund(
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
) -> Result<Vec<String>, HandlerError> {
    let saga = field(e, "saga")?;
    let user = field(e, "user")?;
    REFUND
        .key(payment_saga_key(saga))
        .key(format!("user:{user}"))
        .key(PAYMENT_LOG)
        .arg(log_id)
        .arg(saga)
        .arg(field(e, "order")?)
        .arg(user)
        .invoke_async(conn)
        .await
        .map_err(|x| x.to_string())
}
