//! An audit and a retirement batch exclude each other (`logparser::audit_hold`), over a real
//! Redis: an audit waits for a batch that started, a batch does not start under an audit, and
//! the keys of a process that died expire.

use std::time::Duration;

use common::keys;
use common::testing::RedisServer;
use logparser::audit_hold::{begin_retiring, end_retiring, hold};

#[tokio::test]
async fn an_audit_waits_for_a_running_batch_and_a_batch_does_not_start_under_an_audit() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;

    // A batch runs: an audit that starts now waits until it ends.
    assert!(begin_retiring(&mut conn).await.unwrap());
    let (waited_tx, waited_rx) = tokio::sync::oneshot::channel();
    let c = conn.clone();
    let audit = tokio::spawn(async move {
        hold(&c, move || {
            let _ = waited_tx.send(());
        })
        .await
    });
    tokio::time::timeout(Duration::from_secs(5), waited_rx)
        .await
        .expect("the audit said it waits")
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!audit.is_finished(), "the audit went on while a batch ran");
    end_retiring(&mut conn).await.unwrap();
    let held = tokio::time::timeout(Duration::from_secs(5), audit)
        .await
        .expect("the audit goes on once the batch ended")
        .unwrap()
        .unwrap();

    // Under the audit's hold, no batch starts, and its mark does not stay behind.
    assert!(!begin_retiring(&mut conn).await.unwrap());
    let marked: bool = redis::cmd("EXISTS")
        .arg(keys::RETIRING)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(!marked);

    // Released: batches run again.
    held.release().await.unwrap();
    assert!(begin_retiring(&mut conn).await.unwrap());
    end_retiring(&mut conn).await.unwrap();

    // The hold of an audit that died (not renewed past its time) does not stop retirement.
    let _: i64 = redis::cmd("ZADD")
        .arg(keys::AUDIT_HOLDS)
        .arg(1)
        .arg("dead-audit")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(begin_retiring(&mut conn).await.unwrap());
    end_retiring(&mut conn).await.unwrap();
}
