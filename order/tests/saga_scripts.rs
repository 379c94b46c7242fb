//! Every saga transition script against real redis-servers (one per service database), driven by
//! the real log entries the previous step appended: the happy path, duplicate delivery, aborts
//! that overtake the step they cancel, a late charge after a timeout abort, all-or-nothing
//! reservations, and fencing.

use common::consumer::SagaCtx;
use common::counter::{Op, CREDIT, STOCK};
use common::db::Conn;
use common::event::Event;
use common::keys::{self as log, ORDER_LOG, PAYMENT_LOG, STOCK_LOG};
use common::log::{read_page, LogEntry};
use common::partition::Layout;
use common::saga::{encode_lines, sum_lines, Reply, SagaHome, PARTICIPANTS};
use common::testing::RedisServer;
use logparser::replay::{self, ServiceLog};
use order::saga::Admission;
use order::store::{self, AddItem};

/// Four partitions per service: items `a` and `b` live in different stock partitions, so every
/// saga over both takes the multi-partition path.
fn ol() -> Layout {
    Layout::new("order", 4)
}
fn sl() -> Layout {
    Layout::new("stock", 4)
}
fn pl() -> Layout {
    Layout::new("payment", 4)
}

/// The stock side's context over `conn` (log ids leased locally: no ID service here).
fn stock_ctx(conn: &Conn) -> SagaCtx {
    let metrics = std::sync::Arc::new(common::metrics::Metrics::new("test"));
    SagaCtx {
        db: conn.clone(),
        ids: common::ids::IdPool::new("http://127.0.0.1:1", 10, metrics.clone()),
        parts: PARTICIPANTS,
        layout: sl(),
        metrics,
    }
}

/// The layout of the service whose log is `base`.
fn layout_of(base: &str) -> Layout {
    match base {
        ORDER_LOG => ol(),
        STOCK_LOG => sl(),
        _ => pl(),
    }
}

/// Every entry of every partition of the log `base`, oldest first.
async fn all_entries(conn: &mut Conn, base: &str) -> Vec<LogEntry> {
    let mut all = Vec::new();
    for stream in log::logs(base, &layout_of(base)) {
        all.extend(read_page(conn, &stream, "-", 10_000).await.unwrap());
    }
    let key = |e: &LogEntry| -> (u64, u64) {
        let (ms, seq) = e.stream_id.split_once('-').unwrap_or(("0", "0"));
        (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0))
    };
    all.sort_by_key(key);
    all
}

/// A script's typed answer as the words it is made of (`["OK", "1"]`, `["DUP", "TOMBSTONE"]`).
fn words(reply: Reply) -> Vec<String> {
    let (status, data): (&str, Vec<String>) = match reply {
        Reply::Ok(d) => ("OK", d),
        Reply::Decided(d) => ("DECIDED", vec![d]),
        Reply::Unknown => ("UNKNOWN", vec![]),
        Reply::Fenced(a, b) => ("FENCED", vec![a, b]),
        Reply::Dup(s) => ("DUP", vec![s]),
        Reply::Ignored(d) => ("IGNORED", vec![d]),
        Reply::Skipped(a, b) => ("SKIPPED", vec![a, b]),
        Reply::Rejected(r) => ("REJECTED", vec![r]),
    };
    std::iter::once(status.to_string())
        .chain(data.into_iter().filter(|d| !d.is_empty()))
        .collect()
}

/// The services' saga steps, driven by a real log entry decoded as the consumers decode it.
mod step {
    use super::*;

    pub async fn reserve(c: &mut Conn, l: &str, e: &LogEntry) -> redis::RedisResult<Vec<String>> {
        let Event::CheckoutStarted {
            saga,
            order,
            user,
            items,
            total,
            ..
        } = e.decode().unwrap()
        else {
            panic!("not a CheckoutStarted: {e:?}")
        };
        let _ = l; // stock's log ids come from its id pool
        stock::saga::reserve_all(&stock_ctx(c), &saga, &order, &user, total, &items)
            .await
            .map(words)
    }

    pub async fn release(c: &mut Conn, l: &str, e: &LogEntry) -> redis::RedisResult<Vec<String>> {
        let Event::CheckoutAborted {
            saga, order, items, ..
        } = e.decode().unwrap()
        else {
            panic!("not a CheckoutAborted: {e:?}")
        };
        let _ = l;
        stock::saga::release_all(&stock_ctx(c), &saga, &order, &items)
            .await
            .map(words)
    }

    pub async fn charge(c: &mut Conn, l: &str, e: &LogEntry) -> redis::RedisResult<Vec<String>> {
        let Event::StockReserved {
            saga,
            order,
            user,
            total,
            ..
        } = e.decode().unwrap()
        else {
            panic!("not a StockReserved: {e:?}")
        };
        payment::saga::charge(c, &pl(), l, &saga, &order, &user, total)
            .await
            .map(words)
    }

    pub async fn refund(c: &mut Conn, l: &str, e: &LogEntry) -> redis::RedisResult<Vec<String>> {
        let Event::CheckoutAborted {
            saga, order, user, ..
        } = e.decode().unwrap()
        else {
            panic!("not a CheckoutAborted: {e:?}")
        };
        payment::saga::refund(c, &pl(), l, &saga, &order, &user)
            .await
            .map(words)
    }
}

/// The order side's transitions, answering words.
mod saga {
    use super::*;
    pub use order::saga::{start, SummedLines};

    pub async fn commit(
        c: &mut Conn,
        l: &str,
        sid: &str,
        o: &str,
    ) -> redis::RedisResult<Vec<String>> {
        order::saga::commit(c, &ol(), l, sid, o).await.map(words)
    }

    pub async fn confirm(
        c: &mut Conn,
        l: &str,
        sid: &str,
        o: &str,
        part: &str,
    ) -> redis::RedisResult<Vec<String>> {
        order::saga::confirm(c, &ol(), l, sid, o, part)
            .await
            .map(words)
    }

    pub async fn abort(
        c: &mut Conn,
        l: &str,
        sid: &str,
        reason: &str,
    ) -> redis::RedisResult<Vec<String>> {
        let home = home(c, sid).await;
        common::saga::abort(c, home, PARTICIPANTS, l, sid, reason)
            .await
            .map(words)
    }

    pub async fn redrive(c: &mut Conn, l: &str, sid: &str) -> redis::RedisResult<Reply> {
        let home = home(c, sid).await;
        common::saga::redrive(c, home, l, sid).await
    }

    /// Where saga `sid`'s record lives (found by looking in every partition).
    async fn home(c: &mut Conn, sid: &str) -> SagaHome<'static> {
        let r = logparser::sagas::find(c, &ol(), sid)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        static ORDER: std::sync::LazyLock<Layout> = std::sync::LazyLock::new(ol);
        SagaHome {
            layout: &ORDER,
            part: r.part,
        }
    }

    pub async fn view(
        c: &mut Conn,
        sid: &str,
    ) -> Result<Option<common::saga::Outcome>, common::db::StoreError> {
        let r = logparser::sagas::find(c, &ol(), sid).await?.transpose()?;
        Ok(r.map(|r| common::saga::Outcome {
            decision: r.decision,
            reason: r.reason,
            done: r.done,
        }))
    }
}

struct Dbs {
    _servers: [RedisServer; 3],
    order: Conn,
    stock: Conn,
    payment: Conn,
    n: u32,
}

impl Dbs {
    async fn new() -> Dbs {
        Dbs::with([
            RedisServer::start(),
            RedisServer::start(),
            RedisServer::start(),
        ])
        .await
    }

    /// Three one-node clusters: a script touching two hash slots fails there.
    async fn cluster() -> Dbs {
        Dbs::with([
            RedisServer::start_cluster(),
            RedisServer::start_cluster(),
            RedisServer::start_cluster(),
        ])
        .await
    }

    async fn with(servers: [RedisServer; 3]) -> Dbs {
        let (order, stock, payment) = (
            servers[0].conn().await,
            servers[1].conn().await,
            servers[2].conn().await,
        );
        Dbs {
            _servers: servers,
            order,
            stock,
            payment,
            n: 0,
        }
    }

    fn log_id(&mut self) -> String {
        self.n += 1;
        format!("L{}", self.n)
    }

    /// Items a (price 5, stock 10) and b (price 3, stock 1); user u with `credit`; order o with
    /// the given lines.
    async fn setup(&mut self, credit: i64, lines: &[(&str, i64)]) {
        for (item, price, stock) in [("a", 5, 10), ("b", 3, 1)] {
            let (l1, l2) = (self.log_id(), self.log_id());
            STOCK
                .create(&mut self.stock, &sl(), &l1, item, &[("price", price)], None)
                .await
                .unwrap();
            STOCK
                .change(Op::Add, &mut self.stock, &sl(), &l2, item, stock, None)
                .await
                .unwrap();
        }
        let (l1, l2) = (self.log_id(), self.log_id());
        CREDIT
            .create(&mut self.payment, &pl(), &l1, "u", &[], None)
            .await
            .unwrap();
        CREDIT
            .change(Op::Add, &mut self.payment, &pl(), &l2, "u", credit, None)
            .await
            .unwrap();
        let l = self.log_id();
        store::create(&mut self.order, &ol(), &l, "o", "u", None)
            .await
            .unwrap();
        for (item, qty) in lines {
            let price = if *item == "a" { 5 } else { 3 };
            let l = self.log_id();
            store::add_item(
                &mut self.order,
                &ol(),
                &l,
                "o",
                &AddItem::new(item, *qty, price).unwrap(),
                None,
            )
            .await
            .unwrap();
        }
    }

    async fn start(&mut self, sid: &str) -> Admission {
        let o = store::find(&mut self.order, &ol(), "o")
            .await
            .unwrap()
            .unwrap();
        let summed = encode_lines(&sum_lines(&o.items).unwrap());
        let l = self.log_id();
        saga::start(
            &mut self.order,
            &ol(),
            &l,
            "o",
            sid,
            Some(&saga::SummedLines {
                items: o.items_json.clone(),
                summed: summed.clone(),
            }),
            1,
        )
        .await
        .unwrap()
    }

    async fn stock_of(&mut self, item: &str) -> i64 {
        STOCK
            .find(&mut self.stock, &sl(), item)
            .await
            .unwrap()
            .unwrap()["stock"]
    }

    async fn credit(&mut self) -> i64 {
        CREDIT
            .find(&mut self.payment, &pl(), "u")
            .await
            .unwrap()
            .unwrap()["credit"]
    }

    async fn status(&mut self) -> String {
        store::find(&mut self.order, &ol(), "o")
            .await
            .unwrap()
            .unwrap()
            .status
            .as_str()
            .to_string()
    }

    /// Log completeness: each service's log, replayed from empty, gives its database exactly
    /// (entities and saga records).
    async fn assert_replay(&mut self) {
        for (service, conn) in [
            (ServiceLog::Order, &mut self.order),
            (ServiceLog::Stock, &mut self.stock),
            (ServiceLog::Payment, &mut self.payment),
        ] {
            let l = layout_of(service.log());
            let rebuilt = replay::rebuild(conn, None, service, &l).await.unwrap();
            let live = replay::dump(conn, service).await.unwrap();
            let diff = replay::diff(&rebuilt, &live);
            assert!(diff.is_empty(), "{}: {diff:#?}", service.name());
        }
    }
}

async fn last(conn: &mut Conn, stream: &str, kind: &str) -> LogEntry {
    let all = all_entries(conn, stream).await;
    all.into_iter()
        .rev()
        .find(|e| e.kind() == kind)
        .unwrap_or_else(|| panic!("no {kind} in {stream}"))
}

fn status(reply: &[String]) -> &str {
    reply.first().map(String::as_str).unwrap_or("")
}

#[tokio::test]
async fn happy_path_commits_once_even_with_duplicate_delivery() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 2), ("b", 1), ("a", 1)]).await;
    assert_eq!(d.start("s1").await, Admission::Started("s1".into()));
    // A second checkout joins the running saga.
    assert_eq!(d.start("s2").await, Admission::Join("s1".into()));

    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    assert_eq!(started.get("items").unwrap(), r#"[["a",3],["b",1]]"#);
    let l = d.log_id();
    assert_eq!(
        status(&step::reserve(&mut d.stock, &l, &started).await.unwrap()),
        "OK"
    );
    let l = d.log_id();
    assert_eq!(
        status(&step::reserve(&mut d.stock, &l, &started).await.unwrap()),
        "DUP"
    );
    assert_eq!((d.stock_of("a").await, d.stock_of("b").await), (7, 0));
    // Two partitions, two entries, once each despite the redelivery: the lower partition's
    // StockPartReserved, and the outcome logged by the home (higher) partition with its own
    // reservation.
    let kinds: Vec<String> = all_entries(&mut d.stock, STOCK_LOG)
        .await
        .iter()
        .map(|e| e.kind().to_string())
        .filter(|k| k.starts_with("StockPart") || k.starts_with("StockRe"))
        .collect();
    assert_eq!(kinds, ["StockPartReserved", "StockReserved"]);
    let home = sl().part("a").max(sl().part("b"));
    let in_home = read_page(&mut d.stock, &log::log(STOCK_LOG, &sl(), home), "-", 100)
        .await
        .unwrap();
    let outcome = in_home.iter().find(|e| e.kind() == "StockReserved");
    assert_eq!(
        outcome.and_then(|e| e.get("parts")),
        Some("2"),
        "{in_home:?}"
    );

    let reserved = last(&mut d.stock, log::STOCK_LOG, "StockReserved").await;
    for expected in ["OK", "DUP"] {
        let l = d.log_id();
        assert_eq!(
            status(&step::charge(&mut d.payment, &l, &reserved).await.unwrap()),
            expected
        );
    }
    assert_eq!(d.credit().await, 100 - 18);

    for expected in ["OK", "DECIDED"] {
        let l = d.log_id();
        assert_eq!(
            status(&saga::commit(&mut d.order, &l, "s1", "o").await.unwrap()),
            expected
        );
    }
    assert_eq!(d.status().await, "PAID");
    let v = saga::view(&mut d.order, "s1").await.unwrap().unwrap();
    assert_eq!((v.decision.as_str(), v.done), ("commit", true));
    // A paid order is not admitted again.
    assert_eq!(d.start("s3").await, Admission::Paid("s1".into()));
    // An abort after the commit changes nothing.
    let l = d.log_id();
    assert_eq!(
        status(&saga::abort(&mut d.order, &l, "s1", "late").await.unwrap()),
        "DECIDED"
    );
    d.assert_replay().await;
}

#[tokio::test]
async fn multi_item_reservation_is_all_or_nothing_and_the_order_reopens() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 2), ("b", 2)]).await; // b has 1
    d.start("s1").await;
    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    let l = d.log_id();
    let reply = step::reserve(&mut d.stock, &l, &started).await.unwrap();
    assert_eq!(status(&reply), "REJECTED");
    assert!(
        reply[1].contains("not enough stock for item `b`"),
        "{reply:?}"
    );
    assert_eq!((d.stock_of("a").await, d.stock_of("b").await), (10, 1));

    let rejected = last(&mut d.stock, log::STOCK_LOG, "StockRejected").await;
    let l = d.log_id();
    saga::abort(&mut d.order, &l, "s1", rejected.get("reason").unwrap())
        .await
        .unwrap();
    let aborted = last(&mut d.order, ORDER_LOG, "CheckoutAborted").await;
    let l = d.log_id();
    assert_eq!(
        step::release(&mut d.stock, &l, &aborted).await.unwrap(),
        ["OK", "0"]
    );
    let l = d.log_id();
    assert_eq!(
        step::refund(&mut d.payment, &l, &aborted).await.unwrap(),
        ["OK", "0"]
    );
    assert_eq!(d.status().await, "CHECKING_OUT"); // until both confirmations
    let l = d.log_id();
    assert_eq!(
        saga::confirm(&mut d.order, &l, "s1", "o", "stock")
            .await
            .unwrap(),
        ["OK", "0"]
    );
    let l = d.log_id();
    assert_eq!(
        status(
            &saga::confirm(&mut d.order, &l, "s1", "o", "stock")
                .await
                .unwrap()
        ),
        "DUP"
    );
    let l = d.log_id();
    assert_eq!(
        saga::confirm(&mut d.order, &l, "s1", "o", "payment")
            .await
            .unwrap(),
        ["OK", "1"]
    );
    assert_eq!(d.status().await, "OPEN");
    assert_eq!(
        (
            d.stock_of("a").await,
            d.stock_of("b").await,
            d.credit().await
        ),
        (10, 1, 100)
    );
    // Checkout-able again, under a new saga.
    assert_eq!(d.start("s2").await, Admission::Started("s2".into()));
    d.assert_replay().await;
}

#[tokio::test]
async fn an_abort_that_overtakes_the_start_leaves_tombstones() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 1)]).await;
    d.start("s1").await;
    let l = d.log_id();
    saga::abort(&mut d.order, &l, "s1", "checkout timed out")
        .await
        .unwrap();
    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    let aborted = last(&mut d.order, ORDER_LOG, "CheckoutAborted").await;

    // Compensations arrive first: nothing held, tombstones left.
    let l = d.log_id();
    assert_eq!(
        step::release(&mut d.stock, &l, &aborted).await.unwrap(),
        ["OK", "0"]
    );
    let l = d.log_id();
    assert_eq!(
        step::refund(&mut d.payment, &l, &aborted).await.unwrap(),
        ["OK", "0"]
    );
    // The late start is refused, not applied.
    let l = d.log_id();
    assert_eq!(
        step::reserve(&mut d.stock, &l, &started).await.unwrap(),
        ["DUP", "TOMBSTONE"]
    );
    assert_eq!(d.stock_of("a").await, 10);
    // A (hypothetical) late reservation is not charged either.
    let fake_reserved = LogEntry {
        stream_id: "0-1".into(),
        fields: [
            ("saga", "s1"),
            ("order", "o"),
            ("user", "u"),
            ("total", "5"),
            ("items", r#"[["a",1]]"#),
            ("parts", "1"),
            ("type", "StockReserved"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect(),
    };
    let l = d.log_id();
    assert_eq!(
        step::charge(&mut d.payment, &l, &fake_reserved)
            .await
            .unwrap(),
        ["DUP", "TOMBSTONE"]
    );
    assert_eq!(d.credit().await, 100);
    // Duplicate compensations change nothing but confirm again (a re-driven abort whose first
    // confirmation was lost must still complete the saga).
    let l = d.log_id();
    let reply = step::release(&mut d.stock, &l, &aborted).await.unwrap();
    assert_eq!(status(&reply), "DUP");
    let all = all_entries(&mut d.stock, STOCK_LOG).await;
    let confirmations: Vec<&str> = all
        .iter()
        .filter(|e| e.kind() == "StockReleased")
        .map(|e| e.get("released").unwrap_or(""))
        .collect();
    assert_eq!(confirmations, ["0", "0"]);
    assert_eq!(d.stock_of("a").await, 10);
    d.assert_replay().await;
}

#[tokio::test]
async fn a_charge_after_a_timeout_abort_is_refunded_not_committed() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 2)]).await;
    d.start("s1").await;
    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    let l = d.log_id();
    step::reserve(&mut d.stock, &l, &started).await.unwrap();
    let reserved = last(&mut d.stock, log::STOCK_LOG, "StockReserved").await;
    let l = d.log_id();
    step::charge(&mut d.payment, &l, &reserved).await.unwrap();
    assert_eq!((d.stock_of("a").await, d.credit().await), (8, 90));

    // The checkout timed out before PaymentCharged reached the order service.
    let l = d.log_id();
    assert_eq!(
        status(
            &saga::abort(&mut d.order, &l, "s1", "timeout")
                .await
                .unwrap()
        ),
        "OK"
    );
    let l = d.log_id();
    assert_eq!(
        saga::commit(&mut d.order, &l, "s1", "o").await.unwrap(),
        ["DECIDED", "abort"]
    );
    let aborted = last(&mut d.order, ORDER_LOG, "CheckoutAborted").await;
    let l = d.log_id();
    assert_eq!(
        step::release(&mut d.stock, &l, &aborted).await.unwrap(),
        ["OK", "1"]
    );
    let l = d.log_id();
    assert_eq!(
        step::refund(&mut d.payment, &l, &aborted).await.unwrap(),
        ["OK", "1"]
    );
    let l = d.log_id();
    saga::confirm(&mut d.order, &l, "s1", "o", "payment")
        .await
        .unwrap();
    let l = d.log_id();
    saga::confirm(&mut d.order, &l, "s1", "o", "stock")
        .await
        .unwrap();
    assert_eq!((d.stock_of("a").await, d.credit().await), (10, 100));
    assert_eq!(d.status().await, "OPEN");
    let v = saga::view(&mut d.order, "s1").await.unwrap().unwrap();
    assert_eq!(
        (v.decision.as_str(), v.done, v.reason.as_str()),
        ("abort", true, "timeout")
    );
    d.assert_replay().await;
}

#[tokio::test]
async fn commit_is_fenced_by_the_saga_id() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 1)]).await;
    d.start("s1").await;
    // Forge a second saga record for the same order, as an expired lock might allow.
    let _: () = redis::cmd("HSET")
        .arg(log::saga_of(&ol(), "o", "s2"))
        .arg("decision")
        .arg("none")
        .arg("order")
        .arg("o")
        .query_async(&mut d.order)
        .await
        .unwrap();
    let l = d.log_id();
    assert_eq!(
        status(&saga::commit(&mut d.order, &l, "s2", "o").await.unwrap()),
        "FENCED"
    );
    assert_eq!(d.status().await, "CHECKING_OUT");
    // The forged record was written behind the log's back: replay shows exactly that.
    let rebuilt = replay::rebuild(&mut d.order, None, ServiceLog::Order, &ol())
        .await
        .unwrap();
    let live = replay::dump(&mut d.order, ServiceLog::Order).await.unwrap();
    let diff = replay::diff(&rebuilt, &live);
    assert_eq!(diff.len(), 1);
    assert_eq!(
        (diff[0].key.as_str(), diff[0].from_log.is_none()),
        (log::saga_of(&ol(), "o", "s2").as_str(), true)
    );
}

#[tokio::test]
async fn an_item_added_during_admission_makes_the_caller_reread() {
    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 1)]).await;
    let o = store::find(&mut d.order, &ol(), "o")
        .await
        .unwrap()
        .unwrap();
    let l = d.log_id();
    store::add_item(
        &mut d.order,
        &ol(),
        &l,
        "o",
        &AddItem::new("b", 1, 3).unwrap(),
        None,
    )
    .await
    .unwrap();
    let l = d.log_id();
    let summed = encode_lines(&sum_lines(&o.items).unwrap());
    assert_eq!(
        saga::start(
            &mut d.order,
            &ol(),
            &l,
            "o",
            "s1",
            Some(&saga::SummedLines {
                items: o.items_json.clone(),
                summed: summed.clone(),
            }),
            1
        )
        .await
        .unwrap(),
        Admission::Changed
    );
    assert_eq!(d.status().await, "OPEN");
    d.assert_replay().await;
}

/// Starts saga `sid` for order `order` (what the checkout does under the order's lock).
async fn start_order(d: &mut Dbs, order: &str, sid: &str) -> Admission {
    let o = store::find(&mut d.order, &ol(), order)
        .await
        .unwrap()
        .unwrap();
    let summed = encode_lines(&sum_lines(&o.items).unwrap());
    let l = d.log_id();
    saga::start(
        &mut d.order,
        &ol(),
        &l,
        order,
        sid,
        Some(&saga::SummedLines {
            items: o.items_json.clone(),
            summed: summed.clone(),
        }),
        1,
    )
    .await
    .unwrap()
}

/// Every script appends its entries, and every entry of every log decodes into an `Event`: the
/// wire format the scripts write and the one `Event::decode` reads cannot drift apart. The
/// databases are Redis Cluster nodes, so every script also proves that its keys share one hash
/// slot (a script touching two fails with `CROSSSLOT`).
#[tokio::test]
async fn every_event_every_script_appends_decodes_within_one_slot() {
    use common::event::kind;
    let mut d = Dbs::cluster().await;
    // created, added (item, user), order created, item added; a and b in two stock partitions
    d.setup(100, &[("a", 2), ("b", 1)]).await;
    let l = d.log_id();
    STOCK
        .change(Op::Subtract, &mut d.stock, &sl(), &l, "a", 1, None)
        .await
        .unwrap();
    let l = d.log_id();
    CREDIT
        .change(Op::Subtract, &mut d.payment, &pl(), &l, "u", 1, None)
        .await
        .unwrap();
    let l = d.log_id();
    STOCK
        .batch_init(&mut d.stock, &sl(), &l, 2, 5, &[("price", 1)])
        .await
        .unwrap();
    let l = d.log_id();
    CREDIT
        .batch_init(&mut d.payment, &pl(), &l, 2, 5, &[])
        .await
        .unwrap();
    let l = d.log_id();
    let b = store::BatchInit {
        n: 2,
        n_items: 2,
        n_users: 2,
        price: 1,
        seed: 7,
    };
    store::batch_init(&mut d.order, &ol(), &l, b).await.unwrap();

    // A committed saga.
    start_order(&mut d, "o", "s1").await;
    let started = last(&mut d.order, ORDER_LOG, kind::CHECKOUT_STARTED).await;
    let l = d.log_id();
    step::reserve(&mut d.stock, &l, &started).await.unwrap();
    let reserved = last(&mut d.stock, log::STOCK_LOG, kind::STOCK_RESERVED).await;
    let l = d.log_id();
    step::charge(&mut d.payment, &l, &reserved).await.unwrap();
    let l = d.log_id();
    assert_eq!(
        saga::commit(&mut d.order, &l, "s1", "o").await.unwrap(),
        ["OK"]
    );

    // A saga refused by payment (a user without credit), aborted, re-driven, compensated.
    let l = d.log_id();
    CREDIT
        .create(&mut d.payment, &pl(), &l, "poor", &[], None)
        .await
        .unwrap();
    let l = d.log_id();
    store::create(&mut d.order, &ol(), &l, "o2", "poor", None)
        .await
        .unwrap();
    let l = d.log_id();
    store::add_item(
        &mut d.order,
        &ol(),
        &l,
        "o2",
        &AddItem::new("a", 1, 5).unwrap(),
        None,
    )
    .await
    .unwrap();
    start_order(&mut d, "o2", "s2").await;
    let started = last(&mut d.order, ORDER_LOG, kind::CHECKOUT_STARTED).await;
    let l = d.log_id();
    step::reserve(&mut d.stock, &l, &started).await.unwrap();
    let reserved = last(&mut d.stock, log::STOCK_LOG, kind::STOCK_RESERVED).await;
    let l = d.log_id();
    assert_eq!(
        status(&step::charge(&mut d.payment, &l, &reserved).await.unwrap()),
        "REJECTED"
    );
    let l = d.log_id();
    saga::abort(&mut d.order, &l, "s2", "no credit")
        .await
        .unwrap();
    let l = d.log_id();
    let redriven = saga::redrive(&mut d.order, &l, "s2").await.unwrap();
    assert_eq!(redriven, Reply::Ok(vec![]));
    let aborted = last(&mut d.order, ORDER_LOG, kind::CHECKOUT_ABORTED).await;
    let l = d.log_id();
    step::release(&mut d.stock, &l, &aborted).await.unwrap();
    let l = d.log_id();
    step::refund(&mut d.payment, &l, &aborted).await.unwrap();
    for part in ["stock", "payment"] {
        let l = d.log_id();
        saga::confirm(&mut d.order, &l, "s2", "o2", part)
            .await
            .unwrap();
    }

    // A saga refused by stock in one of its two partitions (b has none left): a is reserved,
    // then released before the refusal is logged.
    let l = d.log_id();
    store::create(&mut d.order, &ol(), &l, "o3", "u", None)
        .await
        .unwrap();
    let l = d.log_id();
    store::add_item(
        &mut d.order,
        &ol(),
        &l,
        "o3",
        &AddItem::new("a", 1, 5).unwrap(),
        None,
    )
    .await
    .unwrap();
    let l = d.log_id();
    store::add_item(
        &mut d.order,
        &ol(),
        &l,
        "o3",
        &AddItem::new("b", 2, 3).unwrap(),
        None,
    )
    .await
    .unwrap();
    start_order(&mut d, "o3", "s3").await;
    let started = last(&mut d.order, ORDER_LOG, kind::CHECKOUT_STARTED).await;
    let l = d.log_id();
    assert_eq!(
        status(&step::reserve(&mut d.stock, &l, &started).await.unwrap()),
        "REJECTED"
    );

    let mut seen = std::collections::BTreeSet::new();
    for (stream, conn) in [
        (ORDER_LOG, &mut d.order),
        (STOCK_LOG, &mut d.stock),
        (PAYMENT_LOG, &mut d.payment),
    ] {
        for e in all_entries(conn, stream).await {
            let event = e.decode().unwrap_or_else(|err| panic!("{stream}: {err}"));
            assert_eq!(event.kind(), e.kind());
            assert!(
                !matches!(event, Event::Step { .. }),
                "{stream}: {e:?} decoded as an untyped step"
            );
            seen.insert(e.kind().to_string());
        }
    }
    let all: std::collections::BTreeSet<String> = kind::ALL.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        seen, all,
        "an event type no script appended here, or one the list misses"
    );
    d.assert_replay().await;
}

/// A malformed entry is an error naming the entry, its type and the field — never a default.
#[test]
fn a_malformed_entry_is_an_error_naming_the_field() {
    let entry = |fields: &[(&str, &str)]| LogEntry {
        stream_id: "1-1".into(),
        fields: fields
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    };
    let started = [
        ("type", "CheckoutStarted"),
        ("saga", "s"),
        ("order", "o"),
        ("user", "u"),
        ("items", r#"[["a",1]]"#),
        ("total", "5"),
        ("started_ms", "12"),
    ];
    assert!(entry(&started).decode().is_ok());
    for (field, bad) in [("items", "[[1,2]"), ("total", "five"), ("started_ms", "")] {
        let mut fields = started.to_vec();
        fields.retain(|(k, _)| *k != field);
        fields.push((field, bad));
        let err = entry(&fields).decode().unwrap_err().to_string();
        assert!(
            err.contains(&format!("`{field}`")) && err.contains("1-1"),
            "{err}"
        );
    }
    let err = entry(&[("type", "Nonsense")])
        .decode()
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown type `Nonsense`"), "{err}");
}

/// The checkout's fast path admits without reading the order first: lines whose items are
/// distinct become the saga's exactly as stored (the same JSON the summing path encodes); a
/// repeated item makes the script hand the lines back to be summed (`SUM`), and the summed
/// admission then starts the saga; an empty order is refused; nothing changes but on `OK`.
#[tokio::test]
async fn admission_without_a_read_takes_distinct_lines_as_stored_and_sums_repeats() {
    let layout = ol();
    let mut d = Dbs::new().await;
    d.setup(100, &[]).await;
    let l = d.log_id();
    let start = saga::start(&mut d.order, &layout, &l, "o", "s0", None, 1);
    assert_eq!(start.await.unwrap(), Admission::Empty);
    assert_eq!(d.status().await, "OPEN");

    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 2), ("b", 1)]).await;
    let l = d.log_id();
    let start = saga::start(&mut d.order, &layout, &l, "o", "s1", None, 1);
    assert_eq!(start.await.unwrap(), Admission::Started("s1".into()));
    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    assert_eq!(started.get("items").unwrap(), r#"[["a",2],["b",1]]"#);
    d.assert_replay().await;

    let mut d = Dbs::new().await;
    d.setup(100, &[("a", 2), ("b", 1), ("a", 1)]).await;
    let l = d.log_id();
    let start = saga::start(&mut d.order, &layout, &l, "o", "s2", None, 1);
    let stored = r#"[["a",2],["b",1],["a",1]]"#;
    assert_eq!(start.await.unwrap(), Admission::Sum(stored.into()));
    assert_eq!(d.status().await, "OPEN");
    assert_eq!(d.start("s2").await, Admission::Started("s2".into()));
    let started = last(&mut d.order, ORDER_LOG, "CheckoutStarted").await;
    assert_eq!(started.get("items").unwrap(), r#"[["a",3],["b",1]]"#);
    d.assert_replay().await;
}
