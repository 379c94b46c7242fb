//! The consumer-group delivery against a real redis-server: acknowledgement after success,
//! retries, dead-lettering after too many deliveries, and taking over a dead consumer's entries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::consumer::{self, ConsumerConfig, HandlerError};
use common::metrics::Metrics;
use common::testing::RedisServer;

const STREAM: &str = "log:test";

async fn append(conn: &mut common::db::Conn, kind: &str) -> String {
    redis::cmd("XADD")
        .arg(STREAM)
        .arg("*")
        .arg("type")
        .arg(kind)
        .query_async(conn)
        .await
        .unwrap()
}

fn config(name: &str) -> ConsumerConfig {
    let mut c = ConsumerConfig::new(STREAM, vec![STREAM.to_string()], "tests", name);
    c.block = Duration::from_millis(50);
    c.claim_idle = Duration::from_millis(100);
    c.max_attempts = 3;
    c
}

async fn pending(conn: &mut common::db::Conn) -> u64 {
    // XPENDING's summary form starts with the number of pending entries.
    let summary: Vec<redis::Value> = redis::cmd("XPENDING")
        .arg(STREAM)
        .arg("tests")
        .query_async(conn)
        .await
        .unwrap();
    match summary.first() {
        Some(redis::Value::Int(n)) => *n as u64,
        other => panic!("unexpected XPENDING answer {other:?}"),
    }
}

async fn until(check: impl AsyncFnMut() -> bool) -> bool {
    common::testing::until(Duration::from_secs(5), check).await
}

#[tokio::test]
async fn a_failing_entry_is_retried_then_dead_lettered_and_the_rest_acknowledged_once() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let ok1 = append(&mut conn, "ok").await;
    let bad = append(&mut conn, "poison").await;
    append(&mut conn, "ok").await;

    let calls = Arc::new(AtomicU64::new(0));
    let poison_calls = Arc::new(AtomicU64::new(0));
    let metrics = Arc::new(Metrics::new("test"));
    let (c, p) = (calls.clone(), poison_calls.clone());
    let task = tokio::spawn(consumer::run(
        config("c1"),
        redis.conn().await,
        metrics.clone(),
        move |e| {
            let (c, p) = (c.clone(), p.clone());
            async move {
                if e.kind() == "poison" {
                    p.fetch_add(1, Ordering::SeqCst);
                    Err(HandlerError::Record(common::db::RecordError {
                        key: "poison".into(),
                        field: "state",
                        found: None,
                    }))
                } else {
                    c.fetch_add(1, Ordering::SeqCst);
                    Ok(())
                }
            }
        },
    ));

    let dead = common::keys::dead_letter("tests", STREAM);
    let mut probe = redis.conn().await;
    let dead_lettered = until(async || {
        let n: u64 = redis::cmd("XLEN")
            .arg(&dead)
            .query_async(&mut probe)
            .await
            .unwrap();
        n == 1
    })
    .await;
    task.abort();
    assert!(dead_lettered, "the poison entry never reached {dead}");
    assert_eq!(
        calls.load(Ordering::SeqCst),
        2,
        "good entries handled exactly once"
    );
    assert!(poison_calls.load(Ordering::SeqCst) >= 3);
    assert_eq!(pending(&mut conn).await, 0);
    assert_eq!(metrics.counter("dead_letters_total"), 1);
    let entries = common::log::read_page(&mut conn, &dead, "-", 10)
        .await
        .unwrap();
    assert_eq!(entries[0].get("source_id"), Some(bad.as_str()));
    assert_eq!(entries[0].kind(), "poison");
    assert_eq!(
        entries.len(),
        1,
        "only the poison entry is dead-lettered, not {ok1}"
    );
}

/// An entry whose handler fails for want of its database (here: an I/O error, as when a primary
/// fails over) is retried past `max_attempts` and handled once the database is back, never
/// dead-lettered: an outage is no fault of the entry's.
#[tokio::test]
async fn an_entry_failing_for_want_of_its_database_is_retried_not_dead_lettered() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    append(&mut conn, "ok").await;
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    let metrics = Arc::new(Metrics::new("test"));
    // max_attempts is 3: the database "comes back" only at the 6th delivery.
    let task = tokio::spawn(consumer::run(
        config("c1"),
        redis.conn().await,
        metrics.clone(),
        move |_| {
            let c = c.clone();
            async move {
                if c.fetch_add(1, Ordering::SeqCst) < 5 {
                    return Err(HandlerError::Redis(
                        std::io::Error::other("CLUSTERDOWN, failing over").into(),
                    ));
                }
                Ok(())
            }
        },
    ));
    let mut probe = redis.conn().await;
    let handled = common::testing::until(Duration::from_secs(20), async || {
        calls.load(Ordering::SeqCst) >= 6 && pending(&mut probe).await == 0
    })
    .await;
    task.abort();
    assert!(handled, "{} deliveries", calls.load(Ordering::SeqCst));
    assert_eq!(metrics.counter("dead_letters_total"), 0);
}

#[tokio::test]
async fn a_dead_consumers_pending_entries_are_taken_over() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    for _ in 0..5 {
        append(&mut conn, "ok").await;
    }
    // c1 reads everything and dies before acknowledging (its handler never finishes).
    let metrics = Arc::new(Metrics::new("test"));
    let stuck = tokio::spawn(consumer::run(
        config("c1"),
        redis.conn().await,
        metrics.clone(),
        |_| async {
            std::future::pending::<()>().await;
            Ok(())
        },
    ));
    let mut probe = redis.conn().await;
    assert!(until(async || pending(&mut probe).await == 5).await);
    stuck.abort();

    // c2 takes the five over once they are idle, handles and acknowledges them.
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let task = tokio::spawn(consumer::run(
        config("c2"),
        redis.conn().await,
        metrics.clone(),
        move |_| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        },
    ));
    let drained = until(async || pending(&mut probe).await == 0).await;
    task.abort();
    assert!(drained, "c2 did not take over c1's entries");
    assert_eq!(handled.load(Ordering::SeqCst), 5);
    assert_eq!(metrics.counter("entries_claimed_total"), 5);
}

#[tokio::test]
async fn a_restarted_consumer_rereads_its_own_pending_entries_first() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    for _ in 0..3 {
        append(&mut conn, "ok").await;
    }
    let metrics = Arc::new(Metrics::new("test"));
    let failing = tokio::spawn(consumer::run(
        config("c1"),
        redis.conn().await,
        metrics.clone(),
        |_| async {
            Err(HandlerError::Redis(
                std::io::Error::other("database down").into(),
            ))
        },
    ));
    let mut probe = redis.conn().await;
    assert!(until(async || pending(&mut probe).await == 3).await);
    failing.abort();

    let mut cfg = config("c1");
    cfg.claim_idle = Duration::from_secs(3600); // only the restart path may deliver them
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let task = tokio::spawn(consumer::run(cfg, redis.conn().await, metrics, move |_| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            Ok(())
        }
    }));
    let drained = until(async || pending(&mut probe).await == 0).await;
    task.abort();
    assert!(drained);
    assert_eq!(handled.load(Ordering::SeqCst), 3);
}

/// Entries of kinds the handler does not act on are acknowledged without reaching it, and the
/// entries of the kinds it does act on are handled as before (here one failing: still retried).
#[tokio::test]
async fn entries_of_other_kinds_are_acknowledged_without_the_handler() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    for kind in ["other", "wanted", "other", "flaky", "other"] {
        append(&mut conn, kind).await;
    }
    let mut cfg = config("c1");
    cfg.kinds = Some(vec!["wanted", "flaky"]);
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    let metrics = Arc::new(Metrics::new("test"));
    let task = tokio::spawn(consumer::run(cfg, redis.conn().await, metrics, move |e| {
        let s = s.clone();
        async move {
            let mut seen = s.lock().unwrap();
            seen.push(e.kind().to_string());
            if e.kind() == "flaky" && seen.iter().filter(|k| *k == "flaky").count() == 1 {
                return Err(HandlerError::Redis(std::io::Error::other("once").into()));
            }
            Ok(())
        }
    }));
    let mut probe = redis.conn().await;
    let handled = || seen.lock().unwrap().len();
    let drained = until(async || handled() == 3 && pending(&mut probe).await == 0).await;
    task.abort();
    assert!(drained, "{:?}", seen.lock().unwrap());
    assert_eq!(*seen.lock().unwrap(), ["wanted", "flaky", "flaky"]);
}

/// A service's consumers are owned: once one stops (here a handler bug panics its task), the
/// service's health check fails, so that a replica whose saga delivery died does not report
/// healthy; `stop` ends the rest at shutdown.
#[tokio::test]
async fn a_stopped_consumer_makes_the_service_unhealthy() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let urls = common::consumer::DbUrls::from([("order", redis.url())]);
    // order-db as its service initialised it: one partition.
    common::partition::ensure(&mut conn, "order", 1)
        .await
        .unwrap();
    let stream = common::keys::log(
        common::keys::ORDER_LOG,
        &common::partition::Layout::new("order", 1),
        0,
    );
    let config = common::config::Config::from_lookup(0, |_| None).unwrap();
    let consumers = consumer::spawn_for(
        "stock",
        common::saga::PARTICIPANTS,
        &urls,
        &config,
        Arc::new(Metrics::new("test")),
        |_, e| async move {
            assert!(e.get("boom").is_none(), "a handler bug");
            Ok(())
        },
    )
    .unwrap();
    assert!(consumers.alive());
    assert_eq!(common::http::health(&conn, Some(&consumers)).await, Ok(()));
    let _: String = redis::cmd("XADD")
        .arg(&stream)
        .arg("*")
        .arg("type")
        .arg("CheckoutStarted")
        .arg("boom")
        .arg("1")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        until(async || !consumers.alive()).await,
        "the consumer did not stop"
    );
    assert_eq!(
        common::http::health(&conn, Some(&consumers)).await,
        Err("a log consumer stopped")
    );
    consumers.stop().await;
}
