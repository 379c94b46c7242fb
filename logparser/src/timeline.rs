//! One saga's timeline: its entries in the order log and every participant's log, in time order.

use std::collections::BTreeMap;

use common::event::Event;
use common::log::{self, LogEntry, LogError};

use crate::dbs::Dbs;
use crate::replay::PAGE;

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
    /// Where it sits in the saga's causal order (orders entries of one millisecond).
    #[serde(skip)]
    rank: u8,
}

/// The sagas started for `order`, oldest first (scans the order's partition of `log:order`).
pub async fn sagas_of_order(dbs: &Dbs, order: &str) -> Result<Vec<String>, LogError> {
    let mut out = Vec::new();
    let mut conn = dbs.order.clone();
    let l = &dbs.order_layout;
    let stream = common::keys::log(common::keys::ORDER_LOG, l, l.part(order));
    log::for_each(&mut conn, &stream, PAGE, |e| {
        if let Event::CheckoutStarted { saga, order: o, .. } = e.decode()? {
            if o == order {
                out.push(saga);
            }
        }
        Ok::<(), LogError>(())
    })
    .await?;
    Ok(out)
}

/// Every entry of saga `saga` in the logs, in time order (scans the logs in pages).
pub async fn timeline(dbs: &Dbs, saga: &str) -> Result<Vec<Step>, LogError> {
    let mut steps = Vec::new();
    for (service, log, mut conn, layout) in dbs.logs() {
        for stream in common::keys::logs(log, &layout) {
            log::for_each(&mut conn, &stream, PAGE, |e: &LogEntry| {
                if e.get("saga") == Some(saga) {
                    let event = e.decode()?;
                    steps.push(Step {
                        service,
                        stream_id: e.stream_id.clone(),
                        at_ms: e.at_ms(),
                        kind: event.kind().to_string(),
                        fields: e.fields.clone(),
                        rank: event.saga_rank(dbs.parts),
                    });
                }
                Ok::<(), LogError>(())
            })
            .await?;
        }
    }
    // Entries of one millisecond in different logs: causal order of the saga's steps.
    steps.sort_by_key(|s| (s.at_ms, s.rank));
    Ok(steps)
}
