//! Names and shapes the checkout saga's participants share: the saga record keys in each
//! database, the pub/sub channel that wakes waiting checkouts, and the encoding of an order's
//! (summed) item lines in log entries.

use std::sync::LazyLock;

use redis::aio::ConnectionManager;
use redis::Script;

use crate::error::ApiError;
use crate::log::ORDER_LOG;

static ABORT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/saga_abort.lua")));
static REDRIVE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/saga_redrive.lua")));

/// Decides `abort` with `reason` unless a decision was taken (`lua/saga_abort.lua`); answers the
/// script's reply (`OK`, `DECIDED <decision>`, `UNKNOWN`). Used by the order service (refusals,
/// checkout timeouts) and by the log parser (stuck sagas): one transition, one script.
pub async fn abort(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
    reason: &str,
) -> Result<Vec<String>, redis::RedisError> {
    ABORT
        .key(order_saga_key(saga))
        .key(ORDER_LOG)
        .arg(log_id)
        .arg(saga)
        .arg(reason)
        .invoke_async(conn)
        .await
}

/// Re-appends `CheckoutAborted` for an aborted saga whose compensations are not all confirmed
/// (`lua/saga_redrive.lua`); answers `OK`, `SKIPPED <decision> <done>` or `UNKNOWN`.
pub async fn redrive(
    conn: &mut ConnectionManager,
    log_id: &str,
    saga: &str,
) -> Result<Vec<String>, redis::RedisError> {
    REDRIVE
        .key(order_saga_key(saga))
        .key(ORDER_LOG)
        .arg(log_id)
        .arg(saga)
        .invoke_async(conn)
        .await
}

/// The order-side saga record (order-db): `order, user, total, items, decision, reason,
/// started_ms, stock_ok, payment_ok, done`.
pub fn order_saga_key(saga: &str) -> String {
    format!("saga:{saga}")
}

/// The stock-side saga record (stock-db): `state` (`RESERVED | REJECTED | RELEASED | TOMBSTONE`),
/// `order`, `items`.
pub fn stock_saga_key(saga: &str) -> String {
    format!("ssaga:{saga}")
}

/// The payment-side saga record (payment-db): `state` (`CHARGED | REJECTED | REFUNDED |
/// TOMBSTONE`), `order`, `user`, `amount`.
pub fn payment_saga_key(saga: &str) -> String {
    format!("psaga:{saga}")
}

/// Channel (in order-db) on which the deciding scripts publish a saga id once the saga is final
/// (committed, or aborted with every compensation confirmed).
pub const DONE_CHANNEL: &str = "saga:done";

/// An order's lines with the quantities of a repeated item summed, in first-seen order.
pub fn sum_lines(lines: &[(String, i64)]) -> Result<Vec<(String, i64)>, ApiError> {
    let mut out: Vec<(String, i64)> = Vec::new();
    for (item, qty) in lines {
        match out.iter_mut().find(|(i, _)| i == item) {
            Some((_, q)) => {
                *q = q.checked_add(*qty).ok_or_else(|| {
                    ApiError::BadRequest(format!(
                        "the quantities of item `{item}` add up past {}",
                        i64::MAX
                    ))
                })?
            }
            None => out.push((item.clone(), *qty)),
        }
    }
    Ok(out)
}

/// Encodes lines as the JSON carried in saga entries: `[["item", qty], ...]`.
pub fn encode_lines(lines: &[(String, i64)]) -> String {
    serde_json::to_string(lines).unwrap_or_else(|_| "[]".to_string())
}

/// Decodes lines from a saga entry.
pub fn decode_lines(json: &str) -> Option<Vec<(String, i64)>> {
    serde_json::from_str(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_items_are_summed_in_first_seen_order() {
        let lines = vec![
            ("a".to_string(), 1),
            ("b".to_string(), 2),
            ("a".to_string(), 3),
        ];
        let summed = sum_lines(&lines).unwrap();
        assert_eq!(summed, vec![("a".to_string(), 4), ("b".to_string(), 2)]);
        assert_eq!(decode_lines(&encode_lines(&summed)).unwrap(), summed);
        assert!(sum_lines(&[("a".into(), i64::MAX), ("a".into(), 1)]).is_err());
    }
}
