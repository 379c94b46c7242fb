//! A replay in buckets (the audit's bounded-memory mode, `logparser::spill`) is exact: over a
//! real Redis, the buckets of a partition's replay together are its whole replay, key for key;
//! and when the log cannot be replayed, the bucket failure of the smallest (entry, step) is the
//! failure the whole replay stops at.

use common::counter::{Op, CREDIT, STOCK};
use common::testing::RedisServer;
use logparser::replay::{self, Failed, ReplayError, ServiceLog, State};
use logparser::spill::Bucket;

mod fixtures;

use fixtures::{add_item, layout, log_ids};

/// Partition `part` of `service` replayed keeping only `bucket`'s keys: the state, or the
/// failure with its entry's position.
async fn replay_bucket(
    conn: &mut common::db::Conn,
    service: ServiceLog,
    part: u32,
    bucket: Bucket,
) -> Result<State, (u64, u32, String)> {
    let mut state = State::new();
    let mut seq = 0u64;
    let mut failed: Option<(u64, Failed)> = None;
    let l = layout(service);
    let read = replay::for_each_entry(conn, None, service, &l, part, |at, e| {
        if let Err(f) = replay::apply_in(service, at, &mut state, e, bucket) {
            failed = Some((seq, f));
            return Err(ReplayError::Nodes("stop".into()));
        }
        seq += 1;
        Ok(())
    })
    .await;
    match (read, failed) {
        (_, Some((seq, f))) => Err((seq, f.step, f.error.to_string())),
        (Ok(_), None) => Ok(state),
        (Err(e), None) => Err((u64::MAX, 0, e.to_string())),
    }
}

#[tokio::test]
async fn buckets_together_are_the_whole_replay_and_find_its_first_failure() {
    let redis = RedisServer::start();
    let mut conn = redis.conn().await;
    let (sl, pl, ol) = (
        layout(ServiceLog::Stock),
        layout(ServiceLog::Payment),
        layout(ServiceLog::Order),
    );
    let mut log_id = log_ids();
    STOCK
        .batch_init(&mut conn, &sl, &log_id(), 200, 10, &[("price", 3)])
        .await
        .unwrap();
    for i in 0..40 {
        let id = format!("it{i}");
        STOCK
            .create(&mut conn, &sl, &log_id(), &id, &[("price", 2)], None)
            .await
            .unwrap();
        STOCK
            .change(Op::Add, &mut conn, &sl, &log_id(), &id, 100 + i, None)
            .await
            .unwrap();
        STOCK
            .change(Op::Subtract, &mut conn, &sl, &log_id(), &id, i + 1, None)
            .await
            .unwrap();
    }
    CREDIT
        .batch_init(&mut conn, &pl, &log_id(), 100, 5, &[])
        .await
        .unwrap();
    for i in 0..30 {
        CREDIT
            .change(
                Op::Subtract,
                &mut conn,
                &pl,
                &log_id(),
                &i.to_string(),
                1,
                None,
            )
            .await
            .unwrap();
    }
    fixtures::batch_orders(&mut conn, &ol, &log_id()).await;
    for i in 0..30 {
        let o = format!("o{i}");
        order::store::create(&mut conn, &ol, &log_id(), &o, "u", None)
            .await
            .unwrap();
        add_item(&mut conn, &ol, &log_id(), &o, ("it1", 2, 2)).await;
        add_item(&mut conn, &ol, &log_id(), &i.to_string(), ("it2", 1, 2)).await;
    }

    for service in ServiceLog::ALL {
        let l = layout(service);
        for part in l.parts() {
            let whole = replay::rebuild_part(&mut conn, None, service, &l, part)
                .await
                .unwrap();
            assert!(!whole.is_empty(), "{} partition {part}", service.name());
            let mut together = State::new();
            let buckets = Bucket::split_in(3);
            for &b in &buckets {
                let state = replay_bucket(&mut conn, service, part, b).await.unwrap();
                assert!(state.keys().all(|k| b.holds(k)));
                assert!(state.len() < whole.len(), "a bucket holds only its share");
                together.extend(state);
            }
            assert_eq!(together, whole, "{} partition {part}", service.name());
        }
    }

    // Delete the creations of two items of one stock partition: the partition no longer
    // replays. The whole replay's failure is the bucket failure that comes first.
    let part = sl.part("it3");
    let stream = common::keys::log(ServiceLog::Stock.log(), &sl, part);
    let entries = common::log::read_page(&mut conn, &stream, "-", 10_000)
        .await
        .unwrap();
    let creations: Vec<String> = entries
        .iter()
        .filter(|e| e.kind() == common::event::kind::ITEM_CREATED)
        .map(|e| e.stream_id.clone())
        .collect();
    assert!(creations.len() >= 2, "{creations:?}");
    for id in &creations[..2] {
        let _: () = redis::cmd("XDEL")
            .arg(&stream)
            .arg(id)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let whole = replay::rebuild_part(&mut conn, None, ServiceLog::Stock, &sl, part).await;
    let Err(whole) = whole else {
        panic!("a log without its creations replays")
    };
    let mut first: Option<(u64, u32, String)> = None;
    let mut failing = 0;
    for b in Bucket::split_in(4) {
        if let Err(f) = replay_bucket(&mut conn, ServiceLog::Stock, part, b).await {
            failing += 1;
            if first.as_ref().is_none_or(|g| (f.0, f.1) < (g.0, g.1)) {
                first = Some(f);
            }
        }
    }
    assert!(failing >= 1);
    assert_eq!(
        first.map(|f| f.2),
        Some(whole.to_string()),
        "the first failure over the buckets"
    );
}
