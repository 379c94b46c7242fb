//! The stock side of the checkout saga, the first participant ([`common::saga::STOCK`]): reacts to
//! `log:order` (read through the consumer group `stock`). `CheckoutStarted` → reserve all lines or
//! none (`lua/reserve.lua`); `CheckoutAborted` → release, or leave a tombstone (`lua/release.lua`).

use std::sync::LazyLock;

use common::consumer::{run_step, HandlerError, SagaCtx, StepFuture};
use common::event::{Event, Items};
use common::keys::{self, STOCK_LOG};
use common::log::LogEntry;
use common::saga::{Reply, STOCK};
use redis::aio::ConnectionManager;
use redis::Script;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/reserve.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));

/// Handles one `log:order` entry; entries that are not for stock are acknowledged as they are.
pub async fn on_entry(ctx: SagaCtx, e: LogEntry) -> Result<(), HandlerError> {
    let event = e.decode()?;
    if !matches!(
        event,
        Event::CheckoutStarted { .. } | Event::CheckoutAborted { .. }
    ) {
        return Ok(()); // not for stock; no log id spent on it
    }
    let (mut conn, log_id) = (ctx.db.clone(), ctx.ids.next());
    let step: StepFuture = match &event {
        Event::CheckoutStarted {
            saga,
            order,
            user,
            total,
            items,
            ..
        } => Box::pin(reserve(
            &mut conn, &log_id, saga, order, user, *total, items,
        )),
        Event::CheckoutAborted {
            saga, order, items, ..
        } => Box::pin(release(&mut conn, &log_id, saga, order, items)),
        _ => return Ok(()),
    };
    run_step(STOCK.name, &e, &event, step).await
}

/// Reserves the saga's lines, all or nothing; answers `Ok`, `Rejected(reason)` or `Dup(state)`.
pub async fn reserve(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
    total: i64,
    items: &Items,
) -> Result<Reply, redis::RedisError> {
    let total = total.to_string();
    run(&RESERVE, conn, log_id, saga, &[order, user, &total], items).await
}

/// Releases the saga's reservation (or leaves a tombstone); answers `Ok([released])` or
/// `Dup(state)`.
pub async fn release(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
    items: &Items,
) -> Result<Reply, redis::RedisError> {
    run(&RELEASE, conn, log_id, saga, &[order], items).await
}

/// Runs a stock saga script: keys `ssaga:<sid>`, `log:stock` and every line's item; arguments the
/// log id, the saga id, `args`, the lines' JSON, then every line's quantity.
async fn run(
    script: &Script,
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    args: &[&str],
    items: &Items,
) -> Result<Reply, redis::RedisError> {
    let mut inv = script.prepare_invoke();
    inv.key(STOCK.record_key(saga)).key(STOCK_LOG);
    for (item, _) in &items.lines {
        inv.key(keys::item(item));
    }
    inv.arg(log_id).arg(saga);
    for a in args {
        inv.arg(*a);
    }
    inv.arg(&items.json);
    for (_, qty) in &items.lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await
}
