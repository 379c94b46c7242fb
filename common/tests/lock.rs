//! A Redlock lease knows until when it may be relied on, against three real redis-servers: a
//! holder frozen past that instant (SIGSTOP, a long pause) must not act as the holder on resuming.

use std::time::{Duration, Instant};

use common::lock::Redlock;
use common::testing::RedisServer;

#[tokio::test]
async fn a_lease_is_valid_for_its_ttl_less_the_request_and_not_after() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let locks = Redlock::new(&urls).unwrap();
    let ttl = Duration::from_millis(400);
    let asked = Instant::now();
    let lease = locks.try_lock("lock:test", ttl).await.unwrap().unwrap();
    assert!(lease.is_valid());
    assert!(
        lease.valid_until() <= asked + ttl,
        "never more than the TTL"
    );
    assert!(lease.valid_until() > Instant::now());
    // Nobody else can take it meanwhile.
    assert!(locks.try_lock("lock:test", ttl).await.unwrap().is_none());
    // An extension moves the deadline on.
    let before = lease.valid_until();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let lease = locks.extend(&lease, ttl).await.unwrap();
    assert!(lease.valid_until() > before);
    // As if frozen past it: no longer valid, and another holder can take the lock. The nodes
    // expire the key on their own clocks, from when each applied the extension; on a loaded
    // machine a node may apply it a little after the quorum answered (one clean-clone CI run
    // found the lock still held right at the deadline), so the taking may need a moment, never
    // more than another TTL.
    tokio::time::sleep(ttl).await;
    assert!(!lease.is_valid());
    let taken = common::testing::until(ttl * 2, async || {
        matches!(locks.try_lock("lock:test", ttl).await, Ok(Some(_)))
    })
    .await;
    assert!(taken, "the expired lease still blocks the lock");
}

/// A lock node that stops answering (frozen, as one cut off by the network) is suspected within
/// a few probes; meanwhile locks are taken on the two others (still a majority of three) without
/// waiting for it, and it is trusted again once it answers.
#[tokio::test]
async fn a_silent_lock_node_is_skipped_while_a_majority_answers() {
    let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = nodes.iter().map(RedisServer::url).collect();
    let locks = Redlock::new(&urls).unwrap();
    let ttl = Duration::from_secs(5);
    let first = locks.try_lock("lock:warm-up", ttl).await.unwrap().unwrap();
    locks.release(first).await;
    assert_eq!(locks.suspected(), vec![false, false, false]);

    let silent = nodes[2].pid();
    signal("-STOP", silent);
    let suspected = common::testing::until(Duration::from_secs(5), async || {
        locks.suspected() == vec![false, false, true]
    })
    .await;

    // Locks now come from the two answering nodes: each acquisition and release takes a round
    // trip to them, never the 500 ms response timeout of the silent one (medians of ten, far
    // apart: ~1 ms against ≥ 500 ms, so a loaded machine does not blur them).
    let mut took = Vec::new();
    for i in 0..10 {
        let asked = Instant::now();
        let lease = locks
            .try_lock(&format!("lock:order:{i}"), ttl)
            .await
            .unwrap();
        let lease = lease.expect("a majority answers: the lock is granted");
        assert!(locks
            .try_lock(&format!("lock:order:{i}"), ttl)
            .await
            .unwrap()
            .is_none());
        locks.release(lease).await;
        took.push(asked.elapsed());
    }
    signal("-CONT", silent);
    assert!(suspected, "the frozen node was never suspected");
    took.sort();
    assert!(
        took[5] < Duration::from_millis(400),
        "a lock waited for the silent node: {took:?}"
    );
    // Answering again, it is trusted again, and locks are taken on all three.
    assert!(
        common::testing::until(Duration::from_secs(5), async || {
            locks.suspected() == vec![false, false, false]
        })
        .await,
        "the node answers again but is still suspected"
    );
    let lease = locks.try_lock("lock:after", ttl).await.unwrap().unwrap();
    let mut third = nodes[2].conn().await;
    let held: i64 = redis::cmd("EXISTS")
        .arg("lock:after")
        .query_async(&mut third)
        .await
        .unwrap();
    assert_eq!(held, 1, "the recovered node was not asked");
    locks.release(lease).await;
}

/// Sends `sig` (as `kill` spells it) to `pid`.
fn signal(sig: &str, pid: u32) {
    let ok = std::process::Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill {sig} {pid}");
}
