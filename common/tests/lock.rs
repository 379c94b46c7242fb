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
    // As if frozen past it: no longer valid, and another holder can take the lock.
    tokio::time::sleep(ttl).await;
    assert!(!lease.is_valid());
    let other = locks.try_lock("lock:test", ttl).await.unwrap();
    assert!(other.is_some(), "the expired lease still blocks the lock");
}
