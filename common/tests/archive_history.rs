//! `for_each_history` while an archiving pass runs: entries archived and trimmed from the live
//! stream between two of its reads are still read, from the archive, in id order and once each
//! (an audit during archiving once reported thousands of false violations without this).

use common::archive::{for_each_history, SegmentWriter};
use common::log::{self, LogEntry, LogError};
use common::testing::RedisServer;

const STREAM: &str = "log:test";

fn ids(n: std::ops::RangeInclusive<u64>) -> Vec<String> {
    n.map(|i| format!("{i}-1")).collect()
}

#[tokio::test]
async fn entries_archived_and_trimmed_during_the_read_are_read_from_the_archive() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut sync = client.get_connection().unwrap();
    for id in ids(1..=30) {
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg(&id)
            .arg("type")
            .arg("StockAdded")
            .query(&mut sync)
            .unwrap();
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stock").join("p000");
    let mut writer = SegmentWriter::open(&dir).unwrap();
    // An archiving pass: append the live entries before `upto` to the archive, then trim them.
    let mut archive = |conn: &mut redis::Connection, upto: &str| {
        let raw: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(STREAM)
            .arg("-")
            .arg(format!("({upto}"))
            .query(conn)
            .unwrap();
        let entries: Vec<LogEntry> = raw
            .into_iter()
            .map(|(stream_id, fields)| LogEntry {
                stream_id,
                fields: fields.into_iter().collect(),
            })
            .collect();
        writer.append(STREAM, &entries).unwrap();
        let _: i64 = redis::cmd("XTRIM")
            .arg(STREAM)
            .arg("MINID")
            .arg(upto)
            .query(conn)
            .unwrap();
    };
    archive(&mut sync, "11-1");

    let mut seen = Vec::new();
    let n = for_each_history(&mut conn, Some(&dir), STREAM, 5, |e: &LogEntry| {
        seen.push(e.stream_id.clone());
        // In the middle of the first live page (11..15), a pass archives and trims up to 21:
        // 16..20 are then in the archive only.
        if e.stream_id == "12-1" {
            archive(&mut sync, "21-1");
        }
        Ok::<(), LogError>(())
    })
    .await
    .unwrap();
    assert_eq!(seen, ids(1..=30));
    assert_eq!(n, 30);
    assert_eq!(
        log::read_page(&mut conn, STREAM, "-", 100)
            .await
            .unwrap()
            .len(),
        10
    );
}
