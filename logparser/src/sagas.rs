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
    let mut scan = Scan::start(conn).await?;
    let mut seen = 0;
    while let Some(page) = scan.next_page(conn, l).await? {
        seen += page.len() as u64;
        page.into_iter().for_each(&mut f);
    }
    Ok(seen)
}

/// A scan of every saga record, page by page (one `SCAN` page of one primary each), so that the
/// caller may write between pages (a full recovery pass builds the saga index from them).
pub struct Scan {
    nodes: Vec<Conn>,
    cursor: u64,
}

impl Scan {
    /// A scan of every primary of `conn`'s database.
    pub async fn start(conn: &mut Conn) -> Result<Scan, redis::RedisError> {
        let nodes = common::db::primaries(conn)
            .await
            .map_err(|e| redis::RedisError::from(std::io::Error::other(e.to_string())))?;
        Ok(Scan { nodes, cursor: 0 })
    }

    /// The records of the next page (possibly none), or `None` when the scan is over.
    pub async fn next_page(
        &mut self,
        conn: &mut Conn,
        l: &Layout,
    ) -> Result<Option<Vec<Loaded>>, redis::RedisError> {
        let Some(node) = self.nodes.last_mut() else {
            return Ok(None);
        };
        let pattern = format!("{}*", keys::SAGA_PREFIX);
        let (next, found) = common::db::scan_page(node, self.cursor, &pattern).await?;
        if next == 0 {
            self.nodes.pop();
        }
        self.cursor = next;
        let ids: Vec<(u32, String)> = found
            .iter()
            .filter_map(|k| keys::parse(keys::SAGA_PREFIX, l, k))
            .map(|(part, id)| (part, id.to_string()))
            .collect();
        Ok(Some(
            load_many(conn, l, &ids)
                .await?
                .into_iter()
                .flatten()
                .collect(),
        ))
    }
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
            if let Event::RecordsRetired { records, .. } = e.decode()? {
                for (key, h) in records {
                    if let Some((p, sid)) = keys::parse(keys::SAGA_PREFIX, &l, &key) {
                        if let Ok(r) = SagaRecord::from_fields(&l, p, sid, &h) {
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

/// Which sagas a listing shows: the flags of `shoplog sagas` and the console's filters, written
/// once so that both list the same sagas for the same question.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Only sagas in this state.
    pub state: Option<SagaState>,
    /// Only sagas started at least this long ago (ms).
    pub min_age_ms: u64,
    /// Only sagas started at most this long ago (ms).
    pub max_age_ms: Option<u64>,
    /// Only the sagas of this order.
    pub order: Option<String>,
    /// Only the sagas of this user.
    pub user: Option<String>,
    /// Only sagas stuck: undecided past `SAGA_TIMEOUT` (the ones a recovery pass aborts).
    pub stuck: bool,
}

impl Filter {
    /// Whether `r` passes, `now_ms` being the current time and `saga_timeout_ms` the
    /// `SAGA_TIMEOUT` that makes an undecided saga stuck.
    pub fn matches(&self, r: &SagaRecord, now_ms: u64, saga_timeout_ms: u64) -> bool {
        self.matches_as(r, r.state(), now_ms, saga_timeout_ms)
    }

    /// Whether `r` would pass were it in `state` (the saga index counts a saga by the state it
    /// indexed, which may be older than the record's).
    pub fn matches_as(
        &self,
        r: &SagaRecord,
        state: SagaState,
        now_ms: u64,
        saga_timeout_ms: u64,
    ) -> bool {
        let age = r.age_ms(now_ms);
        self.state.is_none_or(|s| state == s)
            && age >= self.min_age_ms
            && self.max_age_ms.is_none_or(|m| age <= m)
            && self.order.as_deref().is_none_or(|o| r.order == o)
            && self.user.as_deref().is_none_or(|u| r.user == u)
            && (!self.stuck || (state == SagaState::InFlight && age > saga_timeout_ms))
    }
}

/// Whether `r` is stuck: undecided for longer than `saga_timeout_ms`.
pub fn is_stuck(r: &SagaRecord, now_ms: u64, saga_timeout_ms: u64) -> bool {
    r.state() == SagaState::InFlight && r.age_ms(now_ms) > saga_timeout_ms
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::saga::Decision;
    use common::testing::saga_record as record;

    #[test]
    fn a_filter_checks_state_age_order_user_and_stuck() {
        let now = 100_000;
        let old = record("1", "u", Decision::None, false, now - 40_000);
        let young = record("2", "v", Decision::None, false, now - 1_000);
        let paid = record("3", "u", Decision::Commit, true, now - 40_000);
        let all = Filter::default();
        assert!([&old, &young, &paid]
            .iter()
            .all(|r| all.matches(r, now, 30_000)));
        let stuck = Filter {
            stuck: true,
            ..Filter::default()
        };
        assert!(stuck.matches(&old, now, 30_000));
        assert!(!stuck.matches(&young, now, 30_000));
        assert!(!stuck.matches(&paid, now, 30_000), "decided: never stuck");
        let by_user = Filter {
            user: Some("u".into()),
            state: Some(SagaState::Committed),
            ..Filter::default()
        };
        assert!(by_user.matches(&paid, now, 30_000) && !by_user.matches(&old, now, 30_000));
        let by_order = Filter {
            order: Some("2".into()),
            ..Filter::default()
        };
        assert!(by_order.matches(&young, now, 0) && !by_order.matches(&old, now, 0));
        let ages = Filter {
            min_age_ms: 500,
            max_age_ms: Some(2_000),
            ..Filter::default()
        };
        assert!(ages.matches(&young, now, 0) && !ages.matches(&old, now, 0));
    }
}
