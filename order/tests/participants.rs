//! Adding a participant to the saga is its service plus one row of the participants table.
//!
//! A test-only third participant, "shipping", books a carrier after payment and cancels the
//! booking on an abort. It is described by one [`Participant`] row and implemented here as one
//! consumer handler and one Lua script; the real order service (over HTTP, with its Redlock
//! admission), the real stock and payment handlers, and the log parser's audit all run unchanged
//! from a three-row table, against real redis-servers:
//! - a checkout commits only once shipping booked (the order commits on the last participant);
//! - shipping's refusal aborts the saga, and all three participants compensate before the order
//!   opens again (the pending set holds three names);
//! - the audit, driven by the same table, finds every invariant holding.

use std::net::TcpListener;
use std::sync::LazyLock;
use std::time::Duration;

use common::config::Config;
use common::consumer::{start_saga_service, DbUrls, HandlerError, SagaCtx};
use common::counter::{Op, CREDIT, STOCK};
use common::db::Conn;
use common::event::Event;
use common::keys;
use common::log::{read_page, LogEntry};
use common::partition::Layout;
use common::saga::{Decision, OrderStatus, Participant, RecordsBy, StepKind, PAYMENT};
use common::testing::RedisServer;
use order::store::AddItem;
use redis::Script;

/// The third participant's row: the only description of it the saga needs.
const SHIPPING: Participant = Participant {
    name: "shipping",
    log: "log:shipping",
    record_prefix: "shsaga:",
    done: "ShippingBooked",
    refused: "ShippingRefused",
    compensated: "ShippingCancelled",
    held: "BOOKED",
    released: "CANCELLED",
    records_by: RecordsBy::Order,
};

/// Every service initialises its database with the default number of partitions.
const P: u32 = common::partition::DEFAULT;
fn ol() -> Layout {
    Layout::new("order", P)
}
fn sl() -> Layout {
    Layout::new("stock", P)
}
fn pl() -> Layout {
    Layout::new("payment", P)
}

static THREE: [Participant; 3] = [common::saga::STOCK, PAYMENT, SHIPPING];

/// Books (refusing orders whose id starts with `refuse`) or cancels, idempotently, logging each
/// step in `log:shipping`.
static SHIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local state = redis.call('HGET', KEYS[1], 'state')
if ARGV[3] == 'book' then
  if state then return {'DUP', state} end
  if string.sub(ARGV[2], 1, 6) == 'refuse' then
    redis.call('HSET', KEYS[1], 'state', 'REJECTED', 'order', ARGV[2])
    redis.call('XADD', KEYS[2], '*', 'type', 'ShippingRefused', 'saga', ARGV[1], 'order', ARGV[2],
      'reason', 'no carrier for this order')
    return {'REJECTED', 'no carrier for this order'}
  end
  redis.call('HSET', KEYS[1], 'state', 'BOOKED', 'order', ARGV[2])
  redis.call('XADD', KEYS[2], '*', 'type', 'ShippingBooked', 'saga', ARGV[1], 'order', ARGV[2])
  return {'OK'}
end
local next_state = 'CANCELLED'
if state == 'CANCELLED' or state == 'TOMBSTONE' then
  next_state = state
elseif not state then
  next_state = 'TOMBSTONE'
end
redis.call('HSET', KEYS[1], 'state', next_state, 'order', ARGV[2])
redis.call('XADD', KEYS[2], '*', 'type', 'ShippingCancelled', 'saga', ARGV[1], 'order', ARGV[2])
return {'OK'}
"#,
    )
});

/// The shipping service's saga handler: acts on its trigger (payment's `done` event) and on the
/// abort.
async fn shipping_on_entry(ctx: SagaCtx, e: LogEntry) -> Result<(), HandlerError> {
    let (op, saga, order) = match e.decode()? {
        Event::PaymentCharged { saga, order, .. } => ("book", saga, order),
        Event::CheckoutAborted { saga, order, .. } => ("cancel", saga, order),
        _ => return Ok(()),
    };
    let (l, part) = (&ctx.layout, ctx.layout.part(&order));
    let _: Vec<String> = SHIP
        .key(SHIPPING.record_key(l, part, &saga))
        .key(keys::log(SHIPPING.log, l, part))
        .arg(&saga)
        .arg(&order)
        .arg(op)
        .invoke_async(&mut ctx.db.clone())
        .await?;
    Ok(())
}

struct Stack {
    _servers: Vec<RedisServer>,
    urls: DbUrls,
    config: Config,
    base: String,
    stock: Conn,
    payment: Conn,
    order: Conn,
    shipping: Conn,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Stack {
    /// order-db, stock-db, payment-db, shipping-db and three lock nodes; the real order service on
    /// a free port and the real stock and payment consumers, all from the three-row table.
    async fn start() -> Stack {
        let servers: Vec<RedisServer> = (0..7).map(|_| RedisServer::start()).collect();
        let urls: DbUrls = [
            ("order", servers[0].url()),
            ("stock", servers[1].url()),
            ("payment", servers[2].url()),
            ("shipping", servers[3].url()),
        ]
        .into_iter()
        .collect();
        let port = free_port();
        let locks = servers[4..]
            .iter()
            .map(RedisServer::url)
            .collect::<Vec<_>>()
            .join(",");
        let vars = [
            ("ORDER_DB_URL", urls["order"].clone()),
            ("STOCK_DB_URL", urls["stock"].clone()),
            ("PAYMENT_DB_URL", urls["payment"].clone()),
            ("LOCK_URLS", locks),
            ("IDS_URL", "http://127.0.0.1:1".to_string()),
            ("PORT", port.to_string()),
            ("INSTANCE", "test".to_string()),
        ];
        let config = Config::from_lookup(port, |v| {
            vars.iter()
                .find(|(k, _)| *k == v)
                .map(|(_, val)| val.clone())
        })
        .expect("a valid configuration");
        let (order, stock, payment, shipping) = (
            servers[0].conn().await,
            servers[1].conn().await,
            servers[2].conn().await,
            servers[3].conn().await,
        );
        // The real stock and payment saga handlers, started as their services start them.
        start_saga_service("stock", &config, &THREE, &urls, stock::saga::on_entry)
            .await
            .unwrap();
        start_saga_service("payment", &config, &THREE, &urls, payment::saga::on_entry)
            .await
            .unwrap();

        let service = order::Order::start_with(&config, &THREE, &urls)
            .await
            .unwrap();
        let addr = config.listen_addr().unwrap();
        tokio::spawn(common::http::serve(service, addr));
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if reqwest::get(format!("{base}/orders/health")).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Stack {
            _servers: servers,
            urls,
            config,
            base,
            stock,
            payment,
            order,
            shipping,
        }
    }

    /// Starts the shipping service's consumers, from the same table and the same start-up.
    async fn start_shipping(&self) {
        start_saga_service(
            SHIPPING.name,
            &self.config,
            &THREE,
            &self.urls,
            shipping_on_entry,
        )
        .await
        .unwrap();
    }

    /// Item `a` (price 5, stock 10), user `u` (credit 100), and `orders` each with 2 × `a`.
    async fn seed(&mut self, orders: &[&str]) {
        STOCK
            .create(&mut self.stock, &sl(), "l1", "a", &[("price", 5)], None)
            .await
            .unwrap();
        STOCK
            .change(Op::Add, &mut self.stock, &sl(), "l2", "a", 10, None)
            .await
            .unwrap();
        CREDIT
            .create(&mut self.payment, &pl(), "l3", "u", &[], None)
            .await
            .unwrap();
        CREDIT
            .change(Op::Add, &mut self.payment, &pl(), "l4", "u", 100, None)
            .await
            .unwrap();
        for o in orders {
            order::store::create(&mut self.order, &ol(), "l5", o, "u", None)
                .await
                .unwrap();
            order::store::add_item(
                &mut self.order,
                &ol(),
                "l6",
                o,
                &AddItem::new("a", 2, 5).unwrap(),
                None,
            )
            .await
            .unwrap();
        }
    }

    async fn checkout(&self, order: &str) -> (u16, serde_json::Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/orders/checkout/{order}", self.base))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    /// The types of every entry of every partition of the log `base`.
    async fn kinds(&self, conn: &Conn, base: &str) -> Vec<String> {
        entries(conn, base)
            .await
            .iter()
            .map(|e| e.kind().to_string())
            .collect()
    }

    async fn levels(&mut self) -> (i64, i64) {
        let stock = STOCK
            .find(&mut self.stock, &sl(), "a")
            .await
            .unwrap()
            .unwrap()["stock"];
        let credit = CREDIT
            .find(&mut self.payment, &pl(), "u")
            .await
            .unwrap()
            .unwrap()["credit"];
        (stock, credit)
    }
}

/// What the table says of the third row, before anything runs.
#[test]
fn the_table_wires_the_third_participant() {
    assert_eq!(SHIPPING.trigger(&THREE), ("log:payment", "PaymentCharged"));
    assert_eq!(
        common::saga::streams_read_by(&THREE, "shipping"),
        ["log:order", "log:payment"]
    );
    assert_eq!(
        common::saga::streams_read_by(&THREE, "order"),
        ["log:stock", "log:payment", "log:shipping"]
    );
    assert_eq!(common::saga::groups(&THREE).len(), 8);
    assert_eq!(common::saga::pending_all(&THREE), "stock payment shipping");
    assert_eq!(
        common::saga::step_of(&THREE, "ShippingRefused"),
        Some((&THREE[2], StepKind::Refused))
    );
    assert_eq!(common::saga::step_of(&THREE, "CheckoutStarted"), None);
}

/// Every entry of every partition of the log `base`.
async fn entries(conn: &Conn, base: &str) -> Vec<LogEntry> {
    let mut all = Vec::new();
    let l = match base {
        keys::ORDER_LOG => ol(),
        keys::STOCK_LOG => sl(),
        keys::PAYMENT_LOG => pl(),
        _ => Layout::new(SHIPPING.name, P),
    };
    for stream in keys::logs(base, &l) {
        all.extend(
            read_page(&mut conn.clone(), &stream, "-", 10_000)
                .await
                .unwrap(),
        );
    }
    all
}

async fn until(check: impl AsyncFnMut() -> bool) -> bool {
    common::testing::until(Duration::from_secs(10), check).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_third_participant_is_one_table_row() {
    let mut s = Stack::start().await;
    s.seed(&["o1", "refuse1"]).await;

    // 1. Payment charges, but the saga waits for shipping, the last participant.
    let checkout = {
        let base = s.base.clone();
        tokio::spawn(async move {
            let resp = reqwest::Client::new()
                .post(format!("{base}/orders/checkout/o1"))
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.text().await.unwrap())
        })
    };
    let payment = s.payment.clone();
    assert!(
        until(async || s
            .kinds(&payment, keys::PAYMENT_LOG)
            .await
            .contains(&"PaymentCharged".to_string()))
        .await,
        "payment never charged"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let o1 = order::store::find(&mut s.order, &ol(), "o1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        o1.status,
        OrderStatus::CheckingOut,
        "committed without shipping"
    );
    let outcome = common::saga::outcome(&mut s.order, &ol(), "o1", &o1.saga)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(outcome.decision, Decision::None);

    s.start_shipping().await;
    let (status, body) = checkout.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"paid\":true"), "{body}");
    assert_eq!(s.kinds(&s.shipping, SHIPPING.log).await, ["ShippingBooked"]);
    assert_eq!(s.levels().await, (8, 90));

    // 2. Shipping refuses: the saga aborts, and all three participants compensate before the
    //    order opens again.
    let (status, body) = s.checkout("refuse1").await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("no carrier for this order")),
        "{body}"
    );
    let aborted = entries(&s.order, keys::ORDER_LOG)
        .await
        .into_iter()
        .find(|e| e.kind() == "CheckoutAborted")
        .expect("a CheckoutAborted entry");
    assert_eq!(aborted.get("pending"), Some("stock payment shipping"));
    let confirmed: Vec<String> = entries(&s.order, keys::ORDER_LOG)
        .await
        .iter()
        .filter(|e| e.kind() == "CompensationConfirmed")
        .filter_map(|e| e.get("part").map(String::from))
        .collect();
    let mut sorted = confirmed.clone();
    sorted.sort();
    assert_eq!(sorted, ["payment", "shipping", "stock"], "{confirmed:?}");
    let refused = order::store::find(&mut s.order, &ol(), "refuse1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(refused.status, OrderStatus::Open);
    assert_eq!(
        s.levels().await,
        (8, 90),
        "the refused saga's stock and credit came back"
    );
    let shipping_state: Option<String> = redis::cmd("HGET")
        .arg(SHIPPING.record_key(
            &Layout::new(SHIPPING.name, P),
            Layout::new(SHIPPING.name, P).part("refuse1"),
            aborted.get("saga").unwrap_or_default(),
        ))
        .arg("state")
        .query_async(&mut s.shipping)
        .await
        .unwrap();
    assert_eq!(shipping_state.as_deref(), Some("CANCELLED"));

    // 3. The audit reads the same table: every invariant holds, over all four databases.
    let dbs = logparser::dbs::Dbs::connect_to(&s.urls, &THREE)
        .await
        .unwrap();
    let report = logparser::audit::audit(&dbs, |_| {}).await.unwrap();
    assert!(report.clean(), "{:#?}", report.violations);
    assert_eq!(report.sagas.get("committed"), Some(&1));
    assert_eq!(report.sagas.get("aborted"), Some(&1));
    let groups = common::saga::groups(&THREE);
    assert_eq!(groups.len(), 8);
    let lag = logparser::delivery::report(&dbs).await.unwrap();
    assert_eq!(
        lag.len(),
        8 * P as usize,
        "every group of the table, on every partition"
    );
}
