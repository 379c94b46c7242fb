//! The stock side of the checkout saga: reacts to `log:order` (read through the consumer group
//! `stock`). `CheckoutStarted` → reserve all lines or none (`lua/reserve.lua`);
//! `CheckoutAborted` → release, or leave a tombstone (`lua/release.lua`).

use std::sync::{Arc, LazyLock};

use common::consumer::HandlerError;
use common::ids::IdPool;
use common::log::{event, LogEntry, STOCK_LOG};
use common::saga::{decode_lines, stock_saga_key};
use redis::aio::ConnectionManager;
use redis::Script;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/reserve.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));

/// Handles one `log:order` entry; entries that are not for stock are acknowledged as they are.
pub async fn on_order_entry(
    db: &ConnectionManager,
    ids: &Arc<IdPool>,
    e: LogEntry,
) -> Result<(), HandlerError> {
    match e.kind() {
        event::CHECKOUT_STARTED => reserve(&mut db.clone(), &ids.next(), &e).await.map(|_| ()),
        event::CHECKOUT_ABORTED => release(&mut db.clone(), &ids.next(), &e).await.map(|_| ()),
        _ => Ok(()),
    }
}

/// Reserves the saga's lines; answers the script's reply (`OK`, `REJECTED <reason>`, `DUP <state>`).
pub async fn reserve(
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
) -> Result<Vec<String>, HandlerError> {
    let saga = e.text("saga").map_err(|x| x.to_string())?;
    let raw_lines = e.text("items").map_err(|x| x.to_string())?;
    let lines =
        decode_lines(raw_lines).ok_or_else(|| format!("entry {}: bad items", e.stream_id))?;
    let mut inv = RESERVE.prepare_invoke();
    inv.key(stock_saga_key(saga)).key(STOCK_LOG);
    for (item, _) in &lines {
        inv.key(format!("item:{item}"));
    }
    inv.arg(log_id).arg(saga);
    for f in ["order", "user", "total"] {
        inv.arg(e.text(f).map_err(|x| x.to_string())?);
    }
    inv.arg(raw_lines);
    for (_, qty) in &lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await.map_err(|x| x.to_string())
}

/// Releases the saga's reservation (or leaves a tombstone); answers the script's reply.
pub async fn release(
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
) -> Result<Vec<String>, HandlerError> {
    let saga = e.text("saga").map_err(|x| x.to_string())?;
    let raw_lines = e.text("items").map_err(|x| x.to_string())?;
    let lines =
        decode_lines(raw_lines).ok_or_else(|| format!("entry {}: bad items", e.stream_id))?;
    let mut inv = RELEASE.prepare_invoke();
    inv.key(stock_saga_key(saga)).key(STOCK_LOG);
    for (item, _) in &lines {
        inv.key(format!("item:{item}"));
    }
    inv.arg(log_id)
        .arg(saga)
        .arg(e.text("order").map_err(|x| x.to_string())?)
        .arg(raw_lines);
    for (_, qty) in &lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await.map_err(|x| x.to_string())
}
