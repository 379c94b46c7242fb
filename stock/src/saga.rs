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
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/reserve.lua")));
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
    run(
        &RESERVE,
        conn,
        log_id,
        e,
        &["order", "user", "total", "items"],
    )
    .await
}

/// Releases the saga's reservation (or leaves a tombstone); answers the script's reply.
pub async fn release(
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
) -> Result<Vec<String>, HandlerError> {
    run(&RELEASE, conn, log_id, e, &["order", "items"]).await
}

/// Runs a stock saga script: keys `ssaga:<sid>`, `log:stock` and every line's item; arguments the
/// log id, the saga id, the entry's `fields`, then every line's quantity.
async fn run(
    script: &Script,
    conn: &mut ConnectionManager,
    log_id: &str,
    e: &LogEntry,
    fields: &[&str],
) -> Result<Vec<String>, HandlerError> {
    let text = |f: &str| e.text(f).map_err(|x| x.to_string());
    let saga = text("saga")?;
    let lines =
        decode_lines(text("items")?).ok_or_else(|| format!("entry {}: bad items", e.stream_id))?;
    let mut inv = script.prepare_invoke();
    inv.key(stock_saga_key(saga)).key(STOCK_LOG);
    for (item, _) in &lines {
        inv.key(format!("item:{item}"));
    }
    inv.arg(log_id).arg(saga);
    for f in fields {
        inv.arg(text(f)?);
    }
    for (_, qty) in &lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await.map_err(|x| x.to_string())
}
