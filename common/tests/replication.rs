//! Acknowledged means replicated: `Conn::replicated` waits (`WAIT`) on the primary that holds a
//! key's slot until the configured replicas have every write sent to it, and says so when they do
//! not within the timeout — against a real Redis Cluster of three primaries, one replica each.

use std::time::{Duration, Instant};

use common::db::Replication;
use common::testing::RedisCluster;

/// Two keys, on different primaries (the test asks the cluster which holds each).
const ON_FIRST: &str = "key:{a}";
const ON_OTHER: &str = "key:{b}";

/// Which primary (index into `cluster.nodes`, which hold equal slot ranges in order) has `key`.
async fn slot_owner(cluster: &RedisCluster, key: &str) -> usize {
    let mut conn = cluster.conn().await;
    let slot: i64 = redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let per = 16384 / cluster.nodes.len() as i64;
    ((slot / per) as usize).min(cluster.nodes.len() - 1)
}

#[tokio::test]
async fn a_write_is_acknowledged_once_its_primarys_replica_has_it_and_refused_when_it_cannot() {
    let mut cluster = RedisCluster::start_with_replicas(3, 1);
    let (a, b) = (
        slot_owner(&cluster, ON_FIRST).await,
        slot_owner(&cluster, ON_OTHER).await,
    );
    assert_ne!(a, b, "the two keys must live on different primaries");
    let r = Replication {
        acks: 1,
        timeout: Duration::from_millis(300),
    };
    let mut conn = cluster.conn().await.replicating(r);
    for key in [ON_FIRST, ON_OTHER] {
        let _: () = redis::cmd("SET")
            .arg(key)
            .arg("1")
            .query_async(&mut conn)
            .await
            .unwrap();
        conn.replicated(key).await.unwrap();
    }
    // The replica of `a`'s primary dies: a write there is made but cannot be confirmed.
    drop(cluster.replicas.remove(a));
    let _: () = redis::cmd("SET")
        .arg(ON_FIRST)
        .arg("2")
        .query_async(&mut conn)
        .await
        .unwrap();
    let started = Instant::now();
    let e = conn.replicated(ON_FIRST).await.unwrap_err();
    assert!(e.to_string().contains("0 of 1 replicas"), "{e}");
    assert!(started.elapsed() >= Duration::from_millis(300));
    // The other primary's replica lives: its writes are confirmed (WAIT went to the key's primary).
    let _: () = redis::cmd("SET")
        .arg(ON_OTHER)
        .arg("2")
        .query_async(&mut conn)
        .await
        .unwrap();
    conn.replicated(ON_OTHER).await.unwrap();
    // Without REPLICA_ACKS nothing waits.
    let mut plain = cluster.conn().await;
    plain.replicated(ON_FIRST).await.unwrap();
}

/// `WAIT` covers only its own client's writes: an answer reporting a change that another process
/// made (a checkout decided by another order replica) needs `replicated_all`, which waits for
/// everything the slot's primary holds. Shown with the replica frozen (SIGSTOP) after another
/// client's write: the plain wait of a client that wrote nothing passes, `replicated_all` refuses.
#[tokio::test]
async fn replicated_all_covers_the_writes_of_other_clients() {
    let cluster = RedisCluster::start_with_replicas(3, 1);
    let a = slot_owner(&cluster, ON_FIRST).await;
    let r = Replication {
        acks: 1,
        timeout: Duration::from_millis(300),
    };
    let mut writer = cluster.conn().await.replicating(r);
    let mut answerer = cluster.conn().await.replicating(r);
    answerer.replicated_all(ON_FIRST).await.unwrap();

    let frozen = cluster.replicas[a].pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &frozen])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {frozen}");
    };
    signal("-STOP");
    let _: () = redis::cmd("SET")
        .arg(ON_FIRST)
        .arg("decided")
        .query_async(&mut writer)
        .await
        .unwrap();
    // The answerer wrote nothing since: its own WAIT has nothing to wait for.
    answerer.replicated(ON_FIRST).await.unwrap();
    let e = answerer.replicated_all(ON_FIRST).await.unwrap_err();
    signal("-CONT");
    assert!(e.to_string().contains("0 of 1 replicas"), "{e}");
    // Thawed, the replica catches up and the same wait passes.
    answerer.replicated_all(ON_FIRST).await.unwrap();
    assert_eq!(common::keys::sync(ON_FIRST), "shoplog:sync:{a}");
    assert_eq!(common::keys::sync("plain"), "shoplog:sync:{plain}");
}
