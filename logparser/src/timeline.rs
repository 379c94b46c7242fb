//! One saga's timeline: its entries in the three logs, in time order.

use std::collections::BTreeMap;

use common::log::{self, event};

use crate::dbs::Dbs;
use crate::replay::{ServiceLog, PAGE};

/// One entry of a saga's timeline.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Step {
    /// The service whose log holds it.
    pub service: &'static str,
    /// Its stream id.
    pub stream_id: String,
    /// When it was appended (ms since the epoch, from the stream id).
    pub at_ms: u64,
    /// Its event type.
    pub kind: String,
    /// Its fields.
    pub fields: BTreeMap<String, String>,
}

/// The sagas started for `order`, oldest first (scans `log:order`).
pub async fn sagas_of_order(dbs: &Dbs, order: &str) -> Result<Vec<String>, log::LogError> {
    let mut out = Vec::new();
    let mut conn = dbs.order.clone();
    log::for_each(&mut conn, log::ORDER_LOG, PAGE, |e| {
        if e.kind() == event::CHECKOUT_STARTED && e.get("order") == Some(order) {
            if let Some(s) = e.get("saga") {
                out.push(s.to_string());
            }
        }
        Ok(())
    })
    .await?;
    Ok(out)
}

/// Every entry of saga `saga` in the three logs, in time order (scans the logs in pages).
pub async fn timeline(dbs: &Dbs, saga: &str) -> Result<Vec<Step>, log::LogError> {
    let mut steps = Vec::new();
    for service in ServiceLog::ALL {
        let mut conn = dbs.of(service);
        log::for_each(&mut conn, service.log(), PAGE, |e| {
            if e.get("saga") == Some(saga) {
                let at_ms = e
                    .stream_id
                    .split_once('-')
                    .and_then(|(ms, _)| ms.parse().ok())
                    .unwrap_or(0);
                steps.push(Step {
                    service: service.name(),
                    stream_id: e.stream_id.clone(),
                    at_ms,
                    kind: e.kind().to_string(),
                    fields: e.fields.clone(),
                });
            }
            Ok(())
        })
        .await?;
    }
    // Entries of one millisecond in different logs: causal order of the saga's steps.
    steps.sort_by_key(|s| (s.at_ms, rank(&s.kind)));
    Ok(steps)
}

fn rank(kind: &str) -> u8 {
    match kind {
        event::CHECKOUT_STARTED => 0,
        event::STOCK_RESERVED | event::STOCK_REJECTED => 1,
        event::PAYMENT_CHARGED | event::PAYMENT_REJECTED => 2,
        event::CHECKOUT_COMMITTED | event::CHECKOUT_ABORTED => 3,
        event::STOCK_RELEASED | event::PAYMENT_REFUNDED => 4,
        _ => 5,
    }
}
