//! One saga's timeline: its entries in the order log and every participant's log, in time order.

use std::collections::BTreeMap;

use common::archive::{for_each_history, stream_dir};
use common::event::Event;
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

#[cfg(test)]
impl Step {
    /// A step with no fields, for tests of what draws timelines.
    pub(crate) fn for_test(service: &'static str, kind: &str, at_ms: u64) -> Step {
        Step {
            service,
            stream_id: format!("{at_ms}-0"),
            at_ms,
            kind: kind.to_string(),
            fields: BTreeMap::new(),
            rank: 0,
        }
    }
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
                let retired = common::event::retires_saga(e, saga);
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

/// One saga as `shoplog saga` and the console show it: its record in order-db (`None` once
/// retired to the archive; `Some(Err)` when malformed) and its timeline.
#[derive(Debug)]
pub struct SagaView {
    /// The saga id.
    pub saga: String,
    /// Its order-side record, as loaded.
    pub record: Option<crate::sagas::Loaded>,
    /// Its entries across the logs, in time order.
    pub timeline: Vec<Step>,
}

impl SagaView {
    /// The JSON of `shoplog saga --json` for this saga (one element of its array), so that the
    /// CLI and the console answer the same document.
    pub fn to_json(&self) -> serde_json::Value {
        let (id, steps) = (&self.saga, &self.timeline);
        match &self.record {
            Some(Err(e)) => {
                serde_json::json!({ "saga": id, "error": e.to_string(), "timeline": steps })
            }
            Some(Ok(r)) => serde_json::json!({ "saga": id, "record": r, "timeline": steps }),
            None => serde_json::json!({ "saga": id, "record": null, "timeline": steps }),
        }
    }
}

/// The sagas an operator means by `id`: the saga of that id, else every saga of the order of
/// that id (its partition's history), else a retired saga of that id still in the archive.
/// Empty when nothing matches. Shared by `shoplog saga` and the console's saga page.
pub async fn lookup(dbs: &Dbs, id: &str) -> Result<Vec<SagaView>, LookupError> {
    let l = dbs.order_layout;
    let mut records = Vec::new();
    match crate::sagas::find(&mut dbs.order.clone(), &l, id).await? {
        Some(record) => records.push((id.to_string(), Some(record))),
        None => {
            // An order id: its sagas live in its partition.
            let ids: Vec<(u32, String)> = sagas_of_order(dbs, id)
                .await?
                .into_iter()
                .map(|s| (l.part(id), s))
                .collect();
            let loaded = crate::sagas::load_many(&mut dbs.order.clone(), &l, &ids).await?;
            records.extend(ids.into_iter().map(|(_, id)| id).zip(loaded));
            // A saga whose records were retired: its history is still in the logs' archive.
            if records.is_empty() && !timeline(dbs, id).await?.is_empty() {
                records.push((id.to_string(), None));
            }
        }
    }
    let mut out = Vec::new();
    for (saga, record) in records {
        let steps = timeline(dbs, &saga).await?;
        out.push(SagaView {
            saga,
            record,
            timeline: steps,
        });
    }
    Ok(out)
}

/// Why [`lookup`] could not answer.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// order-db did not answer.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A log could not be read.
    #[error(transparent)]
    Log(#[from] LogError),
}

/// `HH:MM:SS.mmm` UTC of a time in ms since the epoch: how the CLI and the console show a log
/// entry's time.
pub fn clock(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
