//! The shared counter scripts (create / add / subtract / batch_init) against a real redis-server:
//! each change is applied and logged together, and a refused change neither changes nor logs.

use common::counter::{Op, CREDIT, STOCK};
use common::db::Outcome;
use common::keys::{self, PAYMENT_LOG, STOCK_LOG};
use common::log::{self, LogEntry};
use common::partition::Layout;
use common::testing::RedisServer;

/// Four partitions each: the scripts' keys and log entries land in the entity's partition.
fn sl() -> Layout {
    Layout::new("stock", 4)
}
fn pl() -> Layout {
    Layout::new("payment", 4)
}

fn id() -> String {
    ulid::Ulid::new().to_string()
}

async fn entries(conn: &mut common::db::Conn, stream: &str) -> Vec<LogEntry> {
    log::read_page(conn, stream, "-", 1000).await.unwrap()
}

#[tokio::test]
async fn create_add_subtract_are_logged_with_their_state_change() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let item = id();
    STOCK
        .create(&mut conn, &sl(), "L1", &item, &[("price", 7)], None)
        .await
        .unwrap();
    assert_eq!(
        STOCK
            .change(Op::Add, &mut conn, &sl(), "L2", &item, 10, None)
            .await
            .unwrap(),
        Outcome::Ok(vec!["10".into()])
    );
    assert_eq!(
        STOCK
            .change(Op::Subtract, &mut conn, &sl(), "L3", &item, 4, None)
            .await
            .unwrap(),
        Outcome::Ok(vec!["6".into()])
    );
    let found = STOCK.find(&mut conn, &sl(), &item).await.unwrap().unwrap();
    assert_eq!(found["stock"], 6);
    assert_eq!(found["price"], 7);

    let log = entries(&mut conn, &keys::log(STOCK_LOG, &sl(), sl().part(&item))).await;
    let kinds: Vec<&str> = log.iter().map(|e| e.kind()).collect();
    assert_eq!(kinds, ["ItemCreated", "StockAdded", "StockSubtracted"]);
    let log_ids: Vec<&str> = log.iter().map(|e| e.get("log_id").unwrap()).collect();
    assert_eq!(log_ids, ["L1", "L2", "L3"]);
    assert_eq!(log[1].get("item").unwrap(), item);
    assert_eq!(log[2].get("amount").unwrap().parse::<i64>().unwrap(), 4);
}

#[tokio::test]
async fn refused_changes_change_nothing_and_log_nothing() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let user = id();
    CREDIT
        .create(&mut conn, &pl(), "L1", &user, &[], None)
        .await
        .unwrap();
    CREDIT
        .change(Op::Add, &mut conn, &pl(), "L2", &user, 5, None)
        .await
        .unwrap();

    // Not enough credit.
    assert_eq!(
        CREDIT
            .change(Op::Subtract, &mut conn, &pl(), "L3", &user, 6, None)
            .await
            .unwrap(),
        Outcome::Insufficient("5".into())
    );
    // Overflow past i64::MAX.
    assert_eq!(
        CREDIT
            .change(Op::Add, &mut conn, &pl(), "L4", &user, i64::MAX, None)
            .await
            .unwrap(),
        Outcome::Overflow
    );
    // Unknown entity.
    assert_eq!(
        CREDIT
            .change(Op::Add, &mut conn, &pl(), "L5", "nobody", 1, None)
            .await
            .unwrap(),
        Outcome::NotFound
    );
    assert_eq!(
        CREDIT
            .change(Op::Subtract, &mut conn, &pl(), "L6", "nobody", 1, None)
            .await
            .unwrap(),
        Outcome::NotFound
    );

    assert_eq!(
        CREDIT.find(&mut conn, &pl(), &user).await.unwrap().unwrap()["credit"],
        5
    );
    assert!(CREDIT
        .find(&mut conn, &pl(), "nobody")
        .await
        .unwrap()
        .is_none());
    let stream = keys::log(PAYMENT_LOG, &pl(), pl().part(&user));
    assert_eq!(entries(&mut conn, &stream).await.len(), 2);
}

#[tokio::test]
async fn subtract_compares_exactly_near_i64_max() {
    // Lua numbers are doubles: 2^53 + 1 and 2^53 compare equal as doubles; the script must not.
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let item = id();
    STOCK
        .create(&mut conn, &sl(), "L1", &item, &[("price", 1)], None)
        .await
        .unwrap();
    let big = (1i64 << 53) + 1;
    STOCK
        .change(Op::Add, &mut conn, &sl(), "L2", &item, big - 1, None)
        .await
        .unwrap();
    assert_eq!(
        STOCK
            .change(Op::Subtract, &mut conn, &sl(), "L3", &item, big, None)
            .await
            .unwrap(),
        Outcome::Insufficient((big - 1).to_string())
    );
    STOCK
        .change(Op::Add, &mut conn, &sl(), "L4", &item, 1, None)
        .await
        .unwrap();
    assert_eq!(
        STOCK
            .change(Op::Subtract, &mut conn, &sl(), "L5", &item, big, None)
            .await
            .unwrap(),
        Outcome::Ok(vec!["0".into()])
    );
    STOCK
        .change(Op::Add, &mut conn, &sl(), "L6", &item, i64::MAX, None)
        .await
        .unwrap();
    assert_eq!(
        STOCK
            .change(Op::Subtract, &mut conn, &sl(), "L7", &item, i64::MAX, None)
            .await
            .unwrap(),
        Outcome::Ok(vec!["0".into()])
    );
}

#[tokio::test]
async fn batch_init_creates_and_overwrites_with_one_log_entry_per_partition() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    STOCK
        .batch_init(&mut conn, &sl(), "L1", 1000, 3, &[("price", 9)])
        .await
        .unwrap();
    STOCK
        .change(Op::Subtract, &mut conn, &sl(), "L2", "999", 3, None)
        .await
        .unwrap();
    STOCK
        .batch_init(&mut conn, &sl(), "L3", 1000, 5, &[("price", 2)])
        .await
        .unwrap();
    let last = STOCK.find(&mut conn, &sl(), "999").await.unwrap().unwrap();
    assert_eq!((last["stock"], last["price"]), (5, 2));
    assert!(STOCK
        .find(&mut conn, &sl(), "1000")
        .await
        .unwrap()
        .is_none());
    // "999"'s partition: its two batch entries and the subtraction between them.
    let log = entries(&mut conn, &keys::log(STOCK_LOG, &sl(), sl().part("999"))).await;
    let kinds: Vec<&str> = log.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        ["StockBatchInit", "StockSubtracted", "StockBatchInit"]
    );
    // Every other partition: one entry per batch.
    for part in sl().parts().filter(|k| *k != sl().part("999")) {
        assert_eq!(
            entries(&mut conn, &keys::log(STOCK_LOG, &sl(), part))
                .await
                .len(),
            2
        );
    }
    assert_eq!(
        (
            log[2].get("n").unwrap().parse::<i64>().unwrap(),
            log[2].get("stock").unwrap().parse::<i64>().unwrap()
        ),
        (1000, 5)
    );
}

#[tokio::test]
async fn scripts_are_reloaded_after_script_flush() {
    // A restarted Redis has no scripts cached; EVALSHA must fall back to loading them.
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let item = id();
    STOCK
        .create(&mut conn, &sl(), "L1", &item, &[("price", 1)], None)
        .await
        .unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        STOCK
            .change(Op::Add, &mut conn, &sl(), "L2", &item, 1, None)
            .await
            .unwrap(),
        Outcome::Ok(vec!["1".into()])
    );
}
