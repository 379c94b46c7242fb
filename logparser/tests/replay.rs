//! Log completeness (DESIGN.md invariant 5): replaying a service's log into an empty model gives
//! exactly the database's state — and a change made behind the log's back shows up as a difference.

use common::counter::{Op, CREDIT, STOCK};
use common::db::Outcome;
use common::testing::RedisServer;
use logparser::replay::{self, ServiceLog};

mod fixtures;

use fixtures::{add_item, layout, log_ids, pl, sl};

#[tokio::test]
async fn replay_reproduces_every_service_and_catches_direct_edits() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let mut log_id = log_ids();

    // Stock: batch, creates, adds, subtracts, refusals.
    STOCK
        .batch_init(&mut conn, &sl(), &log_id(), 50, 10, &[("price", 3)])
        .await
        .unwrap();
    STOCK
        .create(&mut conn, &sl(), &log_id(), "apple", &[("price", 2)], None)
        .await
        .unwrap();
    STOCK
        .change(Op::Add, &mut conn, &sl(), &log_id(), "apple", 100, None)
        .await
        .unwrap();
    STOCK
        .change(Op::Subtract, &mut conn, &sl(), &log_id(), "apple", 30, None)
        .await
        .unwrap();
    let refused = STOCK
        .change(
            Op::Subtract,
            &mut conn,
            &sl(),
            &log_id(),
            "apple",
            1000,
            None,
        )
        .await
        .unwrap();
    assert_eq!(refused, Outcome::Insufficient("70".into()));
    STOCK
        .change(Op::Subtract, &mut conn, &sl(), &log_id(), "7", 10, None)
        .await
        .unwrap();
    STOCK
        .batch_init(&mut conn, &sl(), &log_id(), 5, 1, &[("price", 9)])
        .await
        .unwrap(); // overwrites 0..4
                   // Payment.
    CREDIT
        .batch_init(&mut conn, &pl(), &log_id(), 20, 5, &[])
        .await
        .unwrap();
    CREDIT
        .create(&mut conn, &pl(), &log_id(), "alice", &[], None)
        .await
        .unwrap();
    CREDIT
        .change(Op::Add, &mut conn, &pl(), &log_id(), "alice", 50, None)
        .await
        .unwrap();
    CREDIT
        .change(Op::Subtract, &mut conn, &pl(), &log_id(), "alice", 20, None)
        .await
        .unwrap();
    let refused = CREDIT
        .change(
            Op::Add,
            &mut conn,
            &pl(),
            &log_id(),
            "alice",
            i64::MAX,
            None,
        )
        .await
        .unwrap();
    assert_eq!(refused, Outcome::Overflow);
    // Orders.
    let ol = layout(ServiceLog::Order);
    fixtures::batch_orders(&mut conn, &ol, &log_id()).await;
    order::store::create(&mut conn, &ol, &log_id(), "o1", "alice", None)
        .await
        .unwrap();
    add_item(&mut conn, &ol, &log_id(), "o1", ("apple", 2, 2)).await;
    add_item(&mut conn, &ol, &log_id(), "o1", ("7", 1, 3)).await;
    add_item(&mut conn, &ol, &log_id(), "5", ("apple", 1, 2)).await; // batch order 5
    let refused = add_item(&mut conn, &ol, &log_id(), "nope", ("apple", 1, 2)).await;
    assert_eq!(refused, Outcome::NotFound);

    for service in ServiceLog::ALL {
        let rebuilt = replay::rebuild(&mut conn, None, service, &layout(service))
            .await
            .unwrap();
        let live = replay::dump(&mut conn, service).await.unwrap();
        assert!(!live.is_empty());
        let diff = replay::diff(&rebuilt, &live);
        assert!(diff.is_empty(), "{}: {diff:#?}", service.name());
    }

    // A stock value edited directly in Redis is a difference naming that item.
    let _: () = redis::cmd("HSET")
        .arg(common::keys::item(&sl(), "apple"))
        .arg("stock")
        .arg(1)
        .query_async(&mut conn)
        .await
        .unwrap();
    let rebuilt = replay::rebuild(&mut conn, None, ServiceLog::Stock, &sl())
        .await
        .unwrap();
    let live = replay::dump(&mut conn, ServiceLog::Stock).await.unwrap();
    let diff = replay::diff(&rebuilt, &live);
    assert_eq!(diff.len(), 1);
    assert_eq!(diff[0].key, common::keys::item(&sl(), "apple"));
    assert_eq!(diff[0].from_log.as_ref().unwrap()["stock"], "70");
}

#[tokio::test]
async fn replay_into_an_empty_database_is_the_same_state() {
    // Rebuild from one server's log, write the model into a second, empty server, compare dumps.
    let source = RedisServer::start();
    let target = RedisServer::start();
    let mut src = source.conn().await;
    let mut dst = target.conn().await;
    CREDIT
        .batch_init(&mut src, &pl(), "L1", 100, 7, &[])
        .await
        .unwrap();
    CREDIT
        .change(Op::Subtract, &mut src, &pl(), "L2", "3", 7, None)
        .await
        .unwrap();
    let rebuilt = replay::rebuild(&mut src, None, ServiceLog::Payment, &pl())
        .await
        .unwrap();
    replay::write(&mut dst, &rebuilt).await.unwrap();
    let copy = replay::dump(&mut dst, ServiceLog::Payment).await.unwrap();
    let live = replay::dump(&mut src, ServiceLog::Payment).await.unwrap();
    assert_eq!(copy, live);
    assert_eq!(copy[&common::keys::user(&pl(), "3")]["credit"], "0");
}
