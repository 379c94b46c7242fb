//! The saga on Redis Cluster: each service database a cluster of three primaries (its partitions
//! spread over the nodes by their hash tags), the lock nodes three standalone servers. The real
//! order service over HTTP (Redlock admission, pub/sub wake-ups from any node), the real stock
//! and payment consumers (one read per partition's stream: a command names one slot), every
//! script routed by its keys. A storm of concurrent checkouts whose items span stock partitions
//! on different nodes, with too little stock for all of them, reconciles exactly: every item's
//! stock and every user's credit equal their start minus what the answered-200 checkouts took,
//! and the refused ones hold nothing.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::Duration;

use common::config::Config;
use common::consumer::{start_saga_service, DbUrls};
use common::counter::{Op, CREDIT, STOCK};
use common::db::Conn;
use common::keys;
use common::partition::Layout;
use common::saga::{OrderStatus, PARTICIPANTS};
use common::testing::{RedisCluster, RedisServer};
use order::store::AddItem;

/// The services' default partitions, as they record them in their databases at start-up.
fn ol() -> Layout {
    Layout::new("order", 16)
}
fn sl() -> Layout {
    Layout::new("stock", 16)
}
fn pl() -> Layout {
    Layout::new("payment", 16)
}

const ITEMS: usize = 24;
const STOCK_EACH: i64 = 3;
const USERS: usize = 6;
const CREDIT_EACH: i64 = 60;
const ORDERS: usize = 48;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Order `k`'s lines: two or three distinct items, one of each, spread over the partitions.
fn lines(k: usize) -> Vec<String> {
    let n = 2 + k % 2;
    (0..n)
        .map(|j| format!("i{}", (k * 7 + j * 5) % ITEMS))
        .collect()
}

async fn counter(conn: &mut Conn, key: String, field: &str) -> i64 {
    let v: Option<i64> = redis::cmd("HGET")
        .arg(key)
        .arg(field)
        .query_async(conn)
        .await
        .unwrap();
    v.unwrap_or(-1)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_storm_on_three_node_clusters_reconciles_exactly() {
    let clusters: Vec<RedisCluster> = (0..3).map(|_| RedisCluster::start(3)).collect();
    let locks: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: DbUrls = [
        ("order", clusters[0].url()),
        ("stock", clusters[1].url()),
        ("payment", clusters[2].url()),
    ]
    .into_iter()
    .collect();
    let port = free_port();
    let lock_urls: Vec<String> = locks.iter().map(RedisServer::url).collect();
    let vars = [
        ("ORDER_DB_URL", urls["order"].clone()),
        ("STOCK_DB_URL", urls["stock"].clone()),
        ("PAYMENT_DB_URL", urls["payment"].clone()),
        ("LOCK_URLS", lock_urls.join(",")),
        ("IDS_URL", "http://127.0.0.1:1".to_string()),
        ("PORT", port.to_string()),
        ("INSTANCE", "cluster-test".to_string()),
    ];
    let config = Config::from_lookup(port, |v| {
        vars.iter()
            .find(|(k, _)| *k == v)
            .map(|(_, val)| val.clone())
    })
    .expect("a valid configuration");
    start_saga_service("stock", &config, PARTICIPANTS, &urls, stock::saga::on_entry)
        .await
        .unwrap();
    start_saga_service(
        "payment",
        &config,
        PARTICIPANTS,
        &urls,
        payment::saga::on_entry,
    )
    .await
    .unwrap();
    let service = order::Order::start_with(&config, PARTICIPANTS, &urls)
        .await
        .unwrap();
    tokio::spawn(common::http::serve(service, config.listen_addr().unwrap()));
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    assert!(
        common::testing::until(Duration::from_secs(10), async || http
            .get(format!("{base}/orders/health"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success()))
        .await,
        "the order service did not become healthy on the cluster"
    );

    let (mut order_db, mut stock_db, mut payment_db) = (
        clusters[0].conn().await,
        clusters[1].conn().await,
        clusters[2].conn().await,
    );
    for i in 0..ITEMS {
        let item = format!("i{i}");
        let price = 1 + i as i64 % 5;
        STOCK
            .create(
                &mut stock_db,
                &sl(),
                &format!("c{i}"),
                &item,
                &[("price", price)],
                None,
            )
            .await
            .unwrap();
        STOCK
            .change(
                Op::Add,
                &mut stock_db,
                &sl(),
                &format!("a{i}"),
                &item,
                STOCK_EACH,
                None,
            )
            .await
            .unwrap();
    }
    for u in 0..USERS {
        let user = format!("u{u}");
        CREDIT
            .create(&mut payment_db, &pl(), &format!("cu{u}"), &user, &[], None)
            .await
            .unwrap();
        CREDIT
            .change(
                Op::Add,
                &mut payment_db,
                &pl(),
                &format!("au{u}"),
                &user,
                CREDIT_EACH,
                None,
            )
            .await
            .unwrap();
    }
    let price = |item: &str| 1 + item[1..].parse::<i64>().unwrap() % 5;
    for k in 0..ORDERS {
        let (order, user) = (format!("o{k}"), format!("u{}", k % USERS));
        order::store::create(&mut order_db, &ol(), &format!("co{k}"), &order, &user, None)
            .await
            .unwrap();
        for (j, item) in lines(k).iter().enumerate() {
            let cost = price(item);
            order::store::add_item(
                &mut order_db,
                &ol(),
                &format!("ai{k}-{j}"),
                &order,
                &AddItem::new(item, 1, cost).unwrap(),
                None,
            )
            .await
            .unwrap();
        }
    }
    // The items of one order live on different nodes: the reservations span slots.
    let spread: std::collections::BTreeSet<u32> =
        (0..ITEMS).map(|i| sl().part(&format!("i{i}"))).collect();
    assert!(spread.len() > 8, "{spread:?}");

    let answers = futures::future::join_all((0..ORDERS).map(|k| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let r = http
                .post(format!("{base}/orders/checkout/o{k}"))
                .send()
                .await
                .unwrap();
            (k, r.status().as_u16())
        }
    }))
    .await;
    let paid: Vec<usize> = answers
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(k, _)| *k)
        .collect();
    assert!(
        answers.iter().all(|(_, s)| *s == 200 || *s == 400),
        "{answers:?}"
    );
    assert!(!paid.is_empty(), "{answers:?}");
    assert!(paid.len() < ORDERS, "not enough stock for all: {answers:?}");

    let mut taken: BTreeMap<String, i64> = BTreeMap::new();
    let mut spent: BTreeMap<String, i64> = BTreeMap::new();
    for k in &paid {
        for item in lines(*k) {
            *spent.entry(format!("u{}", k % USERS)).or_default() += price(&item);
            *taken.entry(item).or_default() += 1;
        }
    }
    for i in 0..ITEMS {
        let item = format!("i{i}");
        let left = counter(&mut stock_db, STOCK.key(&sl(), &item), STOCK.field).await;
        let want = STOCK_EACH - taken.get(&item).copied().unwrap_or(0);
        assert_eq!(left, want, "stock of {item}");
    }
    for u in 0..USERS {
        let user = format!("u{u}");
        let left = counter(&mut payment_db, CREDIT.key(&pl(), &user), CREDIT.field).await;
        let want = CREDIT_EACH - spent.get(&user).copied().unwrap_or(0);
        assert_eq!(left, want, "credit of {user}");
    }
    for (k, status) in &answers {
        let state: Option<String> = redis::cmd("HGET")
            .arg(keys::order(&ol(), &format!("o{k}")))
            .arg("status")
            .query_async(&mut order_db)
            .await
            .unwrap();
        let paid_now = state.as_deref() == Some(OrderStatus::Paid.as_str());
        assert_eq!(paid_now, *status == 200, "order o{k}: {state:?}");
    }
}
