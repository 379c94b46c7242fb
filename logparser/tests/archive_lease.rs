//! An archiving pass stops once its instance no longer holds the log parser's lease: it asks
//! before each stream, so an instance frozen past its lease in the middle of a pass does not go
//! on archiving beside the one that took over.

use std::cell::Cell;
use std::sync::Arc;
use std::time::Duration;

use common::consumer::DbUrls;
use common::counter::{CREDIT, STOCK};
use common::keys;
use common::metrics::Metrics;
use common::partition::Layout;
use common::saga::{groups, PARTICIPANTS};
use common::testing::RedisServer;
use logparser::archive::{Archiver, Settings, LOST_LEASE};
use logparser::dbs::Dbs;

/// Entries in `log` (partition 0 of 1), acknowledged by every group that reads it.
async fn logged(conn: &mut common::db::Conn, service: &'static str, log: &str) -> String {
    let _: () = redis::cmd("SET")
        .arg(keys::PARTITIONS_KEY)
        .arg(1)
        .query_async(conn)
        .await
        .unwrap();
    let l = Layout::new(service, 1);
    let (spec, extra) = if service == "stock" {
        (&STOCK, &[("price", 2)][..])
    } else {
        (&CREDIT, &[][..])
    };
    for i in 0..5 {
        spec.create(
            conn,
            &l,
            &format!("L{service}{i}"),
            &i.to_string(),
            extra,
            None,
        )
        .await
        .unwrap();
    }
    let stream = keys::log(log, &l, 0);
    for g in groups(PARTICIPANTS).iter().filter(|g| g.stream == log) {
        let _: () = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(g.group)
            .arg("$")
            .query_async(conn)
            .await
            .unwrap();
    }
    stream
}

async fn len(conn: &mut common::db::Conn, stream: &str) -> u64 {
    redis::cmd("XLEN")
        .arg(stream)
        .query_async(conn)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_pass_stops_at_the_stream_where_the_lease_is_gone() {
    let (order, stock, payment) = (
        RedisServer::start(),
        RedisServer::start(),
        RedisServer::start(),
    );
    let mut oc = order.conn().await;
    let _: () = redis::cmd("SET")
        .arg(keys::PARTITIONS_KEY)
        .arg(1)
        .query_async(&mut oc)
        .await
        .unwrap();
    let (mut sc, mut pc) = (stock.conn().await, payment.conn().await);
    let s_stream = logged(&mut sc, "stock", keys::STOCK_LOG).await;
    let p_stream = logged(&mut pc, "payment", keys::PAYMENT_LOG).await;
    tokio::time::sleep(Duration::from_millis(5)).await;

    let urls = DbUrls::from([
        ("order", order.url()),
        ("stock", stock.url()),
        ("payment", payment.url()),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dbs = Dbs::connect_to(&urls, PARTICIPANTS)
        .await
        .unwrap()
        .with_archive(tmp.path().to_path_buf());
    let metrics = Arc::new(Metrics::new("logparser"));
    // No saga is retired here, so no log id is ever asked for.
    let ids = common::ids::IdPool::new("http://127.0.0.1:9", 10, metrics.clone());
    let settings = Settings {
        retain: Duration::ZERO,
        root: tmp.path().to_path_buf(),
    };
    let mut archiver = Archiver::new(dbs, settings, ids, metrics);

    // Not active at all: nothing moves.
    let report = archiver.pass(|| false).await.unwrap();
    assert_eq!(report.archived, 0);
    assert!(
        report.errors.iter().any(|e| e.starts_with(LOST_LEASE)),
        "{:?}",
        report.errors
    );
    assert_eq!(
        (len(&mut sc, &s_stream).await, len(&mut pc, &p_stream).await),
        (5, 5)
    );

    // The lease goes after the second look (order's stream, then stock's): stock's entries
    // move, payment's stay.
    let looks = Cell::new(0);
    let report = archiver
        .pass(|| {
            looks.set(looks.get() + 1);
            looks.get() <= 2
        })
        .await
        .unwrap();
    assert_eq!(report.archived, 5, "{report:?}");
    assert!(
        report.errors.iter().any(|e| e.starts_with(LOST_LEASE)),
        "{:?}",
        report.errors
    );
    assert_eq!(
        (len(&mut sc, &s_stream).await, len(&mut pc, &p_stream).await),
        (0, 5)
    );

    // Active throughout: the rest moves.
    let report = archiver.pass(|| true).await.unwrap();
    assert_eq!(report.archived, 5, "{report:?}");
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(len(&mut pc, &p_stream).await, 0);
}
