//! A cluster connection replaced in place keeps serving every clone: what `ClusterLink` does when
//! its connection wedges (its trigger — only failures for `STUCK_AFTER` — is unit-tested in
//! `cluster_link.rs`; the wedge itself was seen only under the failover storm of
//! test/faults/test_failover.py).

use common::testing::RedisCluster;

#[tokio::test]
async fn a_replaced_cluster_connection_serves_every_clone() {
    let cluster = RedisCluster::start(3);
    let mut conn = cluster.conn().await;
    let mut clone = conn.clone();
    for i in 0..50 {
        let _: () = redis::cmd("SET")
            .arg(format!("key:{i}"))
            .arg(i)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let link = conn
        .cluster_link()
        .expect("a cluster URL gives a cluster link");
    assert_eq!(link.replaced(), 0);
    link.replace().await.unwrap();
    assert_eq!(link.replaced(), 1);
    assert_eq!(
        clone.cluster_link().map(|l| l.replaced()),
        Some(1),
        "clones share it"
    );
    // Both the original and an earlier clone read every key, on every primary, through the
    // new connection.
    for i in 0..50 {
        for c in [&mut conn, &mut clone] {
            let got: i64 = redis::cmd("GET")
                .arg(format!("key:{i}"))
                .query_async(c)
                .await
                .unwrap();
            assert_eq!(got, i);
        }
    }
    assert!(common::db::ping(&conn).await);
}
