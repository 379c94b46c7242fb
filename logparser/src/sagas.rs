//! Reading the order-side saga records (`saga:<sid>` in order-db) in bulk, for recovery, audit
//! and the CLI. The record itself, and its one reader, is [`common::saga::SagaRecord`].

use std::collections::HashMap;

use common::db::Conn;
use common::db::RecordError;
use common::keys;
use common::partition::Layout;
use common::saga::SagaRecord;

pub use common::saga::SagaState;

/// A record as read: `Err` when it is malformed (named by key and field), so that one bad
/// record is reported instead of stopping a pass or hiding behind a default.
pub type Loaded = Result<SagaRecord, RecordError>;

/// Now, in ms since the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Loads the records of `ids` (`(partition, saga id)`, pipelined); `None` for ids without a
/// record.
pub async fn load_many(
    conn: &mut Conn,
    l: &Layout,
    ids: &[(u32, String)],
) -> Result<Vec<Option<Loaded>>, redis::RedisError> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(500) {
        let reads = chunk
            .iter()
            .map(|(part, id)| {
                let mut cmd = redis::cmd("HGETALL");
                cmd.arg(keys::saga(l, *part, id));
                cmd
            })
            .collect();
        let hashes: Vec<HashMap<String, String>> = common::db::each(conn, reads).await?;
        for ((part, id), h) in chunk.iter().zip(hashes) {
            out.push((!h.is_empty()).then(|| SagaRecord::from_hash(l, *part, id, &h)));
        }
    }
    Ok(out)
}

/// Finds saga `sid`'s record in whichever partition holds it (one pipelined look-up per
/// partition: a saga id alone does not name its order's partition).
pub async fn find(
    conn: &mut Conn,
    l: &Layout,
    sid: &str,
) -> Result<Option<Loaded>, redis::RedisError> {
    let ids: Vec<(u32, String)> = l.parts().map(|k| (k, sid.to_string())).collect();
    Ok(load_many(conn, l, &ids).await?.into_iter().flatten().next())
}

/// Calls `f` on every saga record, scanning order-db in pages (SCAN; the database keeps serving).
pub async fn scan(
    conn: &mut Conn,
    l: &Layout,
    mut f: impl FnMut(Loaded),
) -> Result<u64, redis::RedisError> {
    let mut seen = 0;
    let pattern = format!("{}*", keys::SAGA_PREFIX);
    let nodes = common::db::primaries(conn)
        .await
        .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
    for mut node in nodes {
        let mut cursor: u64 = 0;
        loop {
            let (next, found) = common::db::scan_page(&mut node, cursor, &pattern).await?;
            let ids: Vec<(u32, String)> = found
                .iter()
                .filter_map(|k| keys::parse(keys::SAGA_PREFIX, l, k))
                .map(|(part, id)| (part, id.to_string()))
                .collect();
            for r in load_many(conn, l, &ids).await?.into_iter().flatten() {
                seen += 1;
                f(r);
            }
            if next == 0 {
                break;
            }
            cursor = next;
        }
    }
    Ok(seen)
}

/// The records of every retired saga, as they were when retired, from the `RecordsRetired` entries
/// of `log:order`'s history (archive + live log).
pub async fn retired(dbs: &crate::dbs::Dbs) -> Result<Vec<SagaRecord>, common::log::LogError> {
    use common::event::{kind, Event};
    let mut out = Vec::new();
    let l = dbs.order_layout;
    let mut conn = dbs.order.clone();
    for part in l.parts() {
        let stream = keys::log(keys::ORDER_LOG, &l, part);
        let dir = dbs
            .archive()
            .map(|root| common::archive::stream_dir(root, common::saga::ORDER, part));
        common::archive::for_each_history(&mut conn, dir.as_deref(), &stream, 10_000, |e| {
            if e.kind() != kind::RECORDS_RETIRED {
                return Ok::<(), common::log::LogError>(());
            }
            if let Event::RecordsRetired { records } = e.decode()? {
                for (key, h) in records {
                    if let Some((p, sid)) = keys::parse(keys::SAGA_PREFIX, &l, &key) {
                        let hash: HashMap<String, String> = h.into_iter().collect();
                        if let Ok(r) = SagaRecord::from_hash(&l, p, sid, &hash) {
                            out.push(r);
                        }
                    }
                }
            }
            Ok(())
        })
        .await?;
    }
    Ok(out)
}
