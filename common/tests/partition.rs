//! A database's number of partitions against a real redis-server: stored when the database is
//! new, kept, and any other number refused with both values named; the layouts of earlier
//! versions (one stream, bare `{s0}` tags) refused with what to do.

use common::partition::{self, LayoutError};
use common::testing::RedisServer;

#[tokio::test]
async fn a_new_database_stores_its_partitions_and_refuses_another_number() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    assert_eq!(partition::stored(&mut conn, "stock").await.unwrap(), None);
    let l = partition::ensure(&mut conn, "stock", 16).await.unwrap();
    assert_eq!((l.service, l.p), ("stock", 16));
    assert_eq!(
        partition::stored(&mut conn, "stock").await.unwrap(),
        Some(16)
    );
    // The same number again (a restart, a second replica): fine.
    assert_eq!(
        partition::ensure(&mut conn, "stock", 16).await.unwrap().p,
        16
    );
    // Another number: refused, naming both and the variable.
    let err = partition::ensure(&mut conn, "stock", 8).await.unwrap_err();
    assert!(
        matches!(
            err,
            LayoutError::Mismatch {
                stored: 16,
                configured: 8,
                ..
            }
        ),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("initialised with 16 partitions")
            && msg.contains("started with 8")
            && msg.contains("STOCK_PARTITIONS=16"),
        "{msg}"
    );
    assert_eq!(
        partition::stored(&mut conn, "stock").await.unwrap(),
        Some(16)
    );
}

#[tokio::test]
async fn the_single_stream_layout_of_earlier_versions_is_refused() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let _: String = redis::cmd("XADD")
        .arg("log:order")
        .arg("*")
        .arg("type")
        .arg("OrderCreated")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = partition::ensure(&mut conn, "order", 16).await.unwrap_err();
    assert!(matches!(err, LayoutError::Legacy { .. }), "{err:?}");
    assert!(err.to_string().contains("`log:order` exists"), "{err}");
    // Nothing was stored: the database stays as it was.
    assert_eq!(partition::stored(&mut conn, "order").await.unwrap(), None);
}

#[tokio::test]
async fn the_bare_tags_of_the_first_partitioned_layout_are_refused() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    // What the first partitioned version left: `P` stored, partition 0's stream tagged `{s0}`.
    let _: () = redis::cmd("SET")
        .arg("shoplog:partitions")
        .arg(16)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: String = redis::cmd("XADD")
        .arg("log:stock:{s0}")
        .arg("*")
        .arg("type")
        .arg("StockAdded")
        .query_async(&mut conn)
        .await
        .unwrap();
    let err = partition::ensure(&mut conn, "stock", 16).await.unwrap_err();
    assert!(matches!(err, LayoutError::Legacy { .. }), "{err:?}");
    assert!(err.to_string().contains("`log:stock:{s0}` exists"), "{err}");
}

/// A service whose database cannot answer yet at start-up (loading its AOF after a restart, or
/// busy with a long script) waits for it instead of exiting: `shoplog up` would not restart it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_waits_for_a_busy_database_at_start_up() {
    let redis = RedisServer::start();
    let url = redis.url();
    let busy = tokio::task::spawn_blocking({
        let port = redis.port.to_string();
        move || {
            // Busy for 7 s; past `lua-time-limit` (5 s) every other command answers BUSY.
            std::process::Command::new("redis-cli")
                .args(["-p", &port, "EVAL"])
                .arg("local s = redis.call('TIME')[1] while tonumber(redis.call('TIME')[1]) - s < 7 do end return 1")
                .arg("0")
                .output()
        }
    });
    tokio::time::sleep(std::time::Duration::from_millis(5500)).await;
    let urls = common::consumer::DbUrls::from([("stock", url.clone()), ("order", url)]);
    let config = common::config::Config::from_lookup(0, |_| None).unwrap();
    let started = common::consumer::start_saga_service(
        "stock",
        &config,
        common::saga::PARTICIPANTS,
        &urls,
        |_, _| async { Ok(()) },
    )
    .await;
    let (ctx, consumers) = started.expect("the service waits for its database, then starts");
    assert_eq!(ctx.layout.p, common::partition::DEFAULT);
    consumers.stop().await;
    let _ = busy.await;
}
