//! The payment side of the checkout saga, the second participant ([`common::saga::PAYMENT`]):
//! `StockReserved` (from `log:stock`) → charge the order's total if the credit suffices
//! (`lua/charge.lua`); `CheckoutAborted` (from `log:order`) → refund, or leave a tombstone
//! (`lua/refund.lua`). Both logs are read through the consumer group `payment`.

use std::sync::LazyLock;

use common::consumer::{run_step, HandlerError, SagaCtx, StepFuture};
use common::db::Conn;
use common::event::Event;
use common::keys::{self, PAYMENT_LOG};
use common::log::LogEntry;
use common::partition::Layout;
use common::saga::{Reply, PAYMENT};
use redis::Script;

static CHARGE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/charge.lua")));
static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/refund.lua")));

/// Handles one entry of `log:stock` or `log:order`; others are acknowledged as they are.
pub async fn on_entry(ctx: SagaCtx, e: LogEntry) -> Result<(), HandlerError> {
    let event = e.decode()?;
    if !matches!(
        event,
        Event::StockReserved { .. } | Event::CheckoutAborted { .. }
    ) {
        return Ok(()); // not for payment; no log id spent on it
    }
    let (mut conn, log_id, l) = (ctx.db.clone(), ctx.ids.next(), &ctx.layout);
    let step: StepFuture = match &event {
        Event::StockReserved {
            saga,
            order,
            user,
            total,
            ..
        } => Box::pin(charge(&mut conn, l, &log_id, saga, order, user, *total)),
        Event::CheckoutAborted {
            saga, order, user, ..
        } => Box::pin(refund(&mut conn, l, &log_id, saga, order, user)),
        _ => return Ok(()),
    };
    run_step(PAYMENT.name, &e, &event, step).await
}

/// Charges the saga's total; answers `Ok`, `Rejected(reason)` or `Dup(state)`.
#[allow(clippy::too_many_arguments)]
pub async fn charge(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
    total: i64,
) -> Result<Reply, redis::RedisError> {
    run(&CHARGE, conn, l, log_id, saga, order, user, Some(total)).await
}

/// Refunds the saga's charge (or leaves a tombstone); answers `Ok([refunded])` or `Dup(state)`.
pub async fn refund(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
) -> Result<Reply, redis::RedisError> {
    run(&REFUND, conn, l, log_id, saga, order, user, None).await
}

/// Runs a payment saga script in the user's partition: keys `psaga:{p<k>}:<sid>`,
/// `user:{p<k>}:<id>`, `log:payment:{p<k>}`; arguments the log id, the saga, the order, the user
/// and, for a charge, the total.
#[allow(clippy::too_many_arguments)]
async fn run(
    script: &Script,
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
    total: Option<i64>,
) -> Result<Reply, redis::RedisError> {
    let mut inv = script.prepare_invoke();
    let part = l.part(user);
    inv.key(PAYMENT.record_key(l, part, saga))
        .key(keys::user(l, user))
        .key(keys::log(PAYMENT_LOG, l, part));
    inv.arg(log_id).arg(saga).arg(order).arg(user);
    if let Some(total) = total {
        inv.arg(total);
    }
    let reply = inv.invoke_async(conn).await?;
    // On the replicas before the entry that triggered it is acknowledged.
    conn.replicated(&keys::user(l, user)).await?;
    Ok(reply)
}
