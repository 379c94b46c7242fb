//! One saga's timeline: its entries in the order log and every participant's log, in time order.

use std::collections::BTreeMap;

use common::archive::{for_each_history, stream_dir};
use common::event::{kind, Event};
use common::log::{LogEntry, LogError};

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

/// The sagas started for `order`, oldest first (scans the history of the order's partition of
/// `log:order`: archive, then live log).
pub async fn sagas_of_order(dbs: &Dbs, order: &str) -> Result<Vec<String>, LogError> {
    let mut out = Vec::new();
    let mut conn = dbs.order.clone();
    let l = &dbs.order_layout;
    let part = l.part(order);
    let stream = common::keys::log(common::keys::ORDER_LOG, l, part);
    let dir = dbs
        .archive()
        .map(|root| stream_dir(root, common::saga::ORDER, part));
    for_each_history(&mut conn, dir.as_deref(), &stream, PAGE, |e| {
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

/// Every entry of saga `saga` in the logs' histories (archive, then live log), in time order,
/// with the retirement of its records (scans the logs in pages).
pub async fn timeline(dbs: &Dbs, saga: &str) -> Result<Vec<Step>, LogError> {
    let mut steps = Vec::new();
    for (service, log, mut conn, layout) in dbs.logs() {
        for part in layout.parts() {
            let stream = common::keys::log(log, &layout, part);
            let dir = dbs.archive().map(|root| stream_dir(root, service, part));
            for_each_history(&mut conn, dir.as_deref(), &stream, PAGE, |e: &LogEntry| {
                let retired = e.kind() == kind::RECORDS_RETIRED
                    && e.get("records")
                        .is_some_and(|r| r.contains(&format!(":{saga}\"")));
                if e.get("saga") == Some(saga) || retired {
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
