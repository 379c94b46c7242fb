//! The stock side of the checkout saga, the first participant ([`common::saga::STOCK`]): reacts to
//! `log:order` (read through the consumer group `stock`). `CheckoutStarted` → reserve all lines or
//! none (`lua/reserve.lua`); `CheckoutAborted` → release, or leave a tombstone (`lua/release.lua`).

use std::sync::{Arc, LazyLock};

use common::consumer::HandlerError;
use common::event::{Event, Items};
use common::ids::IdPool;
use common::keys::{self, STOCK_LOG};
use common::log::LogEntry;
use common::saga::{Reply, STOCK};
use redis::aio::ConnectionManager;
use redis::Script;
use tracing::Instrument;

static RESERVE: LazyLock<Script> =
    LazyLock::new(|| common::lua::with_decimal(include_str!("../lua/reserve.lua")));
static RELEASE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/release.lua")));

/// What the stock side needs to act: its database and its log ids.
#[derive(Clone)]
pub struct StockSide {
    /// stock-db.
    pub db: ConnectionManager,
    /// Log ids.
    pub ids: Arc<IdPool>,
}

impl StockSide {
    /// Handles one `log:order` entry; entries that are not for stock are acknowledged as they are.
    pub async fn on_entry(&self, e: LogEntry) -> Result<(), HandlerError> {
        let event = e.decode()?;
        let (saga, order) = match &event {
            Event::CheckoutStarted { saga, order, .. }
            | Event::CheckoutAborted { saga, order, .. } => (saga.as_str(), order.as_str()),
            _ => return Ok(()),
        };
        let span = tracing::info_span!("saga_entry", saga, order, event = event.kind(), entry = %e.stream_id);
        async {
            let mut conn = self.db.clone();
            let log_id = self.ids.next();
            let reply = match &event {
                Event::CheckoutStarted {
                    user, total, items, ..
                } => reserve(&mut conn, &log_id, saga, order, user, *total, items).await?,
                Event::CheckoutAborted { items, .. } => {
                    release(&mut conn, &log_id, saga, order, items).await?
                }
                _ => return Ok(()),
            };
            match &reply {
                Reply::Rejected(reason) => tracing::debug!(%reason, "{} refused", STOCK.name),
                other => tracing::debug!(reply = other.name(), "stock side done"),
            }
            Ok(())
        }
        .instrument(span)
        .await
    }
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
    let mut inv = RESERVE.prepare_invoke();
    inv.key(STOCK.record_key(saga)).key(STOCK_LOG);
    for (item, _) in &items.lines {
        inv.key(keys::item(item));
    }
    inv.arg(log_id)
        .arg(saga)
        .arg(order)
        .arg(user)
        .arg(total)
        .arg(&items.json);
    for (_, qty) in &items.lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await
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
    let mut inv = RELEASE.prepare_invoke();
    inv.key(STOCK.record_key(saga)).key(STOCK_LOG);
    for (item, _) in &items.lines {
        inv.key(keys::item(item));
    }
    inv.arg(log_id).arg(saga).arg(order).arg(&items.json);
    for (_, qty) in &items.lines {
        inv.arg(*qty);
    }
    inv.invoke_async(conn).await
}
