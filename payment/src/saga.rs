//! The payment side of the checkout saga, the second participant ([`common::saga::PAYMENT`]):
//! `StockReserved` (from `log:stock`) → charge the order's total if the credit suffices
//! (`lua/charge.lua`); `CheckoutAborted` (from `log:order`) → refund, or leave a tombstone
//! (`lua/refund.lua`). Both logs are read through the consumer group `payment`.

use std::sync::{Arc, LazyLock};

use common::consumer::HandlerError;
use common::event::Event;
use common::ids::IdPool;
use common::keys::{self, PAYMENT_LOG};
use common::log::LogEntry;
use common::saga::{Reply, PAYMENT};
use redis::aio::ConnectionManager;
use redis::Script;
use tracing::Instrument;

static CHARGE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/charge.lua")));
static REFUND: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("../lua/refund.lua")));

/// What the payment side needs to act: its database and its log ids.
#[derive(Clone)]
pub struct PaymentSide {
    /// payment-db.
    pub db: ConnectionManager,
    /// Log ids.
    pub ids: Arc<IdPool>,
}

impl PaymentSide {
    /// Handles one entry of `log:stock` or `log:order`; others are acknowledged as they are.
    pub async fn on_entry(&self, e: LogEntry) -> Result<(), HandlerError> {
        let event = e.decode()?;
        let (saga, order, user) = match &event {
            Event::StockReserved {
                saga, order, user, ..
            }
            | Event::CheckoutAborted {
                saga, order, user, ..
            } => (saga.as_str(), order.as_str(), user.as_str()),
            _ => return Ok(()),
        };
        let span = tracing::info_span!("saga_entry", saga, order, event = event.kind(), entry = %e.stream_id);
        async {
            let mut conn = self.db.clone();
            let log_id = self.ids.next();
            let reply = match &event {
                Event::StockReserved { total, .. } => {
                    charge(&mut conn, &log_id, saga, order, user, *total).await?
                }
                _ => refund(&mut conn, &log_id, saga, order, user).await?,
            };
            match &reply {
                Reply::Rejected(reason) => tracing::debug!(%reason, "{} refused", PAYMENT.name),
                other => tracing::debug!(reply = other.name(), "payment side done"),
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
}

/// Charges the saga's total; answers `Ok`, `Rejected(reason)` or `Dup(state)`.
pub async fn charge(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
    total: i64,
) -> Result<Reply, redis::RedisError> {
    CHARGE
        .key(PAYMENT.record_key(saga))
        .key(keys::user(user))
        .key(PAYMENT_LOG)
        .arg(log_id)
        .arg(saga)
        .arg(order)
        .arg(user)
        .arg(total)
        .invoke_async(conn)
        .await
}

/// Refunds the saga's charge (or leaves a tombstone); answers `Ok([refunded])` or `Dup(state)`.
pub async fn refund(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    order: &str,
    user: &str,
) -> Result<Reply, redis::RedisError> {
    REFUND
        .key(PAYMENT.record_key(saga))
        .key(keys::user(user))
        .key(PAYMENT_LOG)
        .arg(log_id)
        .arg(saga)
        .arg(order)
        .arg(user)
        .invoke_async(conn)
        .await
}
