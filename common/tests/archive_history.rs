//! `for_each_history` while an archiving pass runs: entries archived and trimmed from the live
//! stream between two of its reads are still read, from the archive, in id order and once each
//! (an audit during archiving once reported thousands of false violations without this).

use common::archive::{for_each_history, history, Pages, SegmentWriter, Stream};
use common::log::{self, LogEntry, LogError};
use common::testing::RedisServer;

const STREAM: &str = "log:test";

fn ids(n: std::ops::RangeInclusive<u64>) -> Vec<String> {
    n.map(|i| format!("{i}-1")).collect()
}

/// A stream of entries `1-1`..`30-1`.
fn fill(sync: &mut redis::Connection) {
    for id in ids(1..=30) {
        let _: String = redis::cmd("XADD")
            .arg(STREAM)
            .arg(&id)
            .arg("type")
            .arg("StockAdded")
            .query(sync)
            .unwrap();
    }
}

/// An archiving pass: appends the live entries before `upto` to the archive, then trims them.
fn archive(writer: &mut SegmentWriter, conn: &mut redis::Connection, upto: &str) {
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
}

/// What each test starts from: a Redis holding the stream `1-1`..`30-1`, an async connection
/// for the reader, a blocking one for the archiving pass, and an empty archive directory with
/// its writer.
struct Fixture {
    _redis: RedisServer,
    conn: common::db::Conn,
    sync: redis::Connection,
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    writer: SegmentWriter,
}

async fn fixture(service: &str, partition: &str) -> Fixture {
    let redis = RedisServer::start();
    let conn = redis.conn().await;
    let client = redis::Client::open(redis.url()).unwrap();
    let mut sync = client.get_connection().unwrap();
    fill(&mut sync);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(service).join(partition);
    let writer = SegmentWriter::open(&dir).unwrap();
    Fixture {
        _redis: redis,
        conn,
        sync,
        _tmp: tmp,
        dir,
        writer,
    }
}

#[tokio::test]
async fn entries_archived_and_trimmed_during_the_read_are_read_from_the_archive() {
    let mut f = fixture("stock", "p000").await;
    let mut archive = |conn: &mut redis::Connection, upto: &str| archive(&mut f.writer, conn, upto);
    archive(&mut f.sync, "11-1");

    let mut seen = Vec::new();
    let n = for_each_history(&mut f.conn, Some(&f.dir), STREAM, 5, |e: &LogEntry| {
        seen.push(e.stream_id.clone());
        // In the middle of the first live page (11..15), a pass archives and trims up to 21:
        // 16..20 are then in the archive only.
        if e.stream_id == "12-1" {
            archive(&mut f.sync, "21-1");
        }
        Ok::<(), LogError>(())
    })
    .await
    .unwrap();
    assert_eq!(seen, ids(1..=30));
    assert_eq!(n, 30);
    assert_eq!(
        log::read_page(&mut f.conn, STREAM, "-", 100)
            .await
            .unwrap()
            .len(),
        10
    );
}

/// The live log, with an archiving pass run right after the first page is read: the pass
/// archives and trims past that page's end, before the reader looks at the archive again.
struct PassAfterFirstPage<'a> {
    live: Stream<'a>,
    pass: Option<Box<dyn FnOnce() + 'a>>,
}

impl Pages for PassAfterFirstPage<'_> {
    async fn page(&mut self, after: &str, count: usize) -> Result<Vec<LogEntry>, LogError> {
        let page = self.live.page(after, count).await?;
        if let Some(pass) = self.pass.take() {
            pass();
        }
        Ok(page)
    }
}

/// The race that lost a part of one partition's history in audits in the containers: a pass that
/// writes between a page's read and the reader's look at the archive.
#[tokio::test]
async fn a_pass_between_a_page_and_the_archive_check_loses_nothing() {
    let mut f = fixture("payment", "p009").await;
    archive(&mut f.writer, &mut f.sync, "6-1");
    // The first live page is 6..10; the pass then archives and trims 6..20.
    let (mut writer, mut sync) = (f.writer, f.sync);
    let pass = Box::new(move || archive(&mut writer, &mut sync, "21-1"));
    let live = PassAfterFirstPage {
        live: Stream {
            conn: &mut f.conn,
            key: STREAM,
        },
        pass: Some(pass),
    };
    let mut seen = Vec::new();
    let n = history(live, Some(&f.dir), 5, |e: &LogEntry| {
        seen.push(e.stream_id.clone());
        Ok::<(), LogError>(())
    })
    .await
    .unwrap();
    assert_eq!(seen, ids(1..=30));
    assert_eq!(n, 30);
}
