//! The order scripts against a real redis-server.

use common::batch::batch_orders;
use common::db::Outcome;
use common::keys::{self, ORDER_LOG};
use common::log;
use common::partition::Layout;
use common::testing::RedisServer;

/// order-db with four partitions: an order's keys and entries land in its partition.
fn ol() -> Layout {
    Layout::new("order", 4)
}

/// The log partition of order `id`.
fn log_of(id: &str) -> String {
    keys::log(ORDER_LOG, &ol(), ol().part(id))
}
use order::store::{self, AddItem, BatchInit};

/// Adds `quantity` of `item` at `price` to order `id` (unkeyed): what the script answered.
async fn add_item(
    conn: &mut common::db::Conn,
    log_id: &str,
    id: &str,
    (item, quantity, price): (&str, i64, i64),
) -> Outcome {
    let line = AddItem::new(item, quantity, price).unwrap();
    store::add_item(conn, &ol(), log_id, id, &line, None)
        .await
        .unwrap()
}

#[tokio::test]
async fn create_and_add_items_in_order() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    store::create(&mut conn, &ol(), "L1", "o1", "u1", None)
        .await
        .unwrap();
    let fresh = store::find(&mut conn, &ol(), "o1").await.unwrap().unwrap();
    assert_eq!(
        (fresh.total_cost, fresh.items.len(), fresh.paid()),
        (0, 0, false)
    );

    assert_eq!(
        add_item(&mut conn, "L2", "o1", ("a", 2, 5)).await,
        Outcome::Ok(vec![])
    );
    assert_eq!(
        add_item(&mut conn, "L3", "o1", ("b", 1, 3)).await,
        Outcome::Ok(vec![])
    );
    assert_eq!(
        add_item(&mut conn, "L4", "o1", ("a", 1, 5)).await,
        Outcome::Ok(vec![])
    );
    let o = store::find(&mut conn, &ol(), "o1").await.unwrap().unwrap();
    assert_eq!(o.user_id, "u1");
    assert_eq!(o.total_cost, 18);
    assert_eq!(
        o.items,
        vec![("a".into(), 2), ("b".into(), 1), ("a".into(), 1)]
    );

    let entries = log::read_page(&mut conn, &log_of("o1"), "-", 100)
        .await
        .unwrap();
    let kinds: Vec<&str> = entries.iter().map(|e| e.kind()).collect();
    assert_eq!(
        kinds,
        ["OrderCreated", "ItemAdded", "ItemAdded", "ItemAdded"]
    );
    assert_eq!(entries[1].get("cost").unwrap(), "10");
}

#[tokio::test]
async fn add_item_refusals_change_nothing() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    assert_eq!(
        add_item(&mut conn, "L1", "none", ("a", 1, 1)).await,
        Outcome::NotFound
    );
    store::create(&mut conn, &ol(), "L2", "o1", "u1", None)
        .await
        .unwrap();
    add_item(&mut conn, "L3", "o1", ("a", 1, i64::MAX)).await;
    assert_eq!(
        add_item(&mut conn, "L4", "o1", ("b", 1, 1)).await,
        Outcome::Overflow
    );
    let _: () = redis::cmd("HSET")
        .arg(keys::order(&ol(), "o1"))
        .arg("status")
        .arg("PAID")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        add_item(&mut conn, "L5", "o1", ("b", 1, 1)).await,
        Outcome::Conflict("PAID".into())
    );
    let o = store::find(&mut conn, &ol(), "o1").await.unwrap().unwrap();
    assert_eq!((o.total_cost, o.items.len()), (i64::MAX, 1));
    assert_eq!(
        log::read_page(&mut conn, &log_of("o1"), "-", 100)
            .await
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn batch_init_matches_the_seeded_generator() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let b = BatchInit {
        n: 2000,
        n_items: 50,
        n_users: 30,
        price: 4,
        seed: 42,
    };
    store::batch_init(&mut conn, &ol(), "L1", b).await.unwrap();
    for (i, expected) in batch_orders(42, 2000, 50, 30).enumerate().step_by(97) {
        let o = store::find(&mut conn, &ol(), &i.to_string())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(o.user_id, expected.user.to_string());
        assert_eq!(
            o.items,
            vec![
                (expected.items[0].to_string(), 1),
                (expected.items[1].to_string(), 1)
            ]
        );
        assert_eq!((o.total_cost, o.paid()), (8, false));
    }
    // One entry per partition, each with the seed.
    for part in ol().parts() {
        let stream = keys::log(ORDER_LOG, &ol(), part);
        let entries = log::read_page(&mut conn, &stream, "-", 100).await.unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].get("seed").unwrap(), "42");
    }
}
