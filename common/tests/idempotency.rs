//! `Idempotency-Key` at the script level, on a one-node Redis Cluster (a script touching two
//! slots fails there with CROSSSLOT): the change and its answer record are one script, so a
//! repeat changes and logs nothing and gets the first reply; the claim binds a key to one request.

use std::time::Duration;

use common::counter::{Op, CREDIT, STOCK};
use common::db::Outcome;
use common::http::{Method, StatusCode};
use common::idempotency::{self, Answer, Key, Keyed};
use common::keys::{self, STOCK_LOG};
use common::log;
use common::partition::Layout;
use common::testing::RedisServer;

fn sl() -> Layout {
    Layout::new("stock", 4)
}

fn id() -> String {
    ulid::Ulid::new().to_string()
}

fn keyed(key: &str, path: &[&str]) -> Keyed {
    let key = Key::parse([key.as_bytes()]).unwrap();
    let segments: Vec<String> = path.iter().map(|s| s.to_string()).collect();
    Keyed::of(key, &Method::POST, &segments, Duration::from_secs(60)).unwrap()
}

async fn log_len(conn: &mut common::db::Conn, l: &Layout, item: &str) -> usize {
    log::read_page(conn, &keys::log(STOCK_LOG, l, l.part(item)), "-", 1000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_keyed_change_applies_once_and_repeats_its_first_reply() {
    let redis = RedisServer::start_cluster();
    let mut conn = redis.conn().await;
    let (l, item) = (sl(), id());
    STOCK
        .create(&mut conn, &l, "L1", &item, &[("price", 3)], None)
        .await
        .unwrap();
    let k = keyed("add-1", &["stock", "add", &item, "5"]);
    for log_id in ["L2", "L3", "L4"] {
        let got = STOCK
            .change(Op::Add, &mut conn, &l, log_id, &item, 5, Some(&k))
            .await
            .unwrap();
        assert_eq!(got, Outcome::Ok(vec!["5".into()]));
    }
    assert_eq!(log_len(&mut conn, &l, &item).await, 2, "created + one add");
    // A refusal is an answer too: repeated, even once the stock would allow it.
    let s = keyed("sub-1", &["stock", "subtract", &item, "9"]);
    let refused = STOCK
        .change(Op::Subtract, &mut conn, &l, "L5", &item, 9, Some(&s))
        .await
        .unwrap();
    assert_eq!(refused, Outcome::Insufficient("5".into()));
    STOCK
        .change(Op::Add, &mut conn, &l, "L6", &item, 10, None)
        .await
        .unwrap();
    let again = STOCK
        .change(Op::Subtract, &mut conn, &l, "L7", &item, 9, Some(&s))
        .await
        .unwrap();
    assert_eq!(again, Outcome::Insufficient("5".into()));
    // The record lives in the item's slot, with the retention.
    let record = k.answer_key(&l, l.part(&item));
    let ttl: i64 = redis::cmd("TTL")
        .arg(&record)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((1..=60).contains(&ttl), "{ttl}");
    // Another request with the same key's record (a claim that expired first): 422, no change.
    let other = keyed("add-1", &["stock", "add", &item, "6"]);
    let err = STOCK
        .change(Op::Add, &mut conn, &l, "L8", &item, 6, Some(&other))
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let stock = STOCK.find(&mut conn, &l, &item).await.unwrap().unwrap()["stock"];
    assert_eq!(stock, 15);
}

#[tokio::test]
async fn a_keyed_create_creates_once_and_never_resets() {
    let redis = RedisServer::start_cluster();
    let mut conn = redis.conn().await;
    let l = Layout::new("payment", 4);
    let user = id();
    let k = keyed("create-u", &["payment", "create_user"]);
    for log_id in ["L1", "L3"] {
        CREDIT
            .create(&mut conn, &l, log_id, &user, &[], Some(&k))
            .await
            .unwrap();
        CREDIT
            .change(Op::Add, &mut conn, &l, "L2", &user, 7, None)
            .await
            .ok();
    }
    let credit = CREDIT.find(&mut conn, &l, &user).await.unwrap().unwrap()["credit"];
    assert_eq!(credit, 14, "the repeated create did not reset the user");
}

#[tokio::test]
async fn the_claim_binds_a_key_to_one_request_and_keeps_a_finished_answer() {
    let redis = RedisServer::start_cluster();
    let mut conn = redis.conn().await;
    let l = sl();
    let k = keyed("c", &["stock", "item", "create", "4"]);
    let first = idempotency::claim(&mut conn, &l, &k, "ID1", false)
        .await
        .unwrap();
    assert_eq!((first.pinned.as_str(), first.answer), ("ID1", None));
    let again = idempotency::claim(&mut conn, &l, &k, "ID2", false)
        .await
        .unwrap();
    assert_eq!(again.pinned, "ID1", "a repeat reuses the pinned id");
    let other = keyed("c", &["stock", "item", "create", "5"]);
    let err = idempotency::claim(&mut conn, &l, &other, "ID3", false)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let answer = Answer {
        status: 400,
        body: r#"{"error":"no"}"#.into(),
    };
    idempotency::finish(&mut conn, &l, &k, &answer).await;
    let later = Answer {
        status: 200,
        body: "{}".into(),
    };
    idempotency::finish(&mut conn, &l, &k, &later).await;
    let replay = idempotency::claim(&mut conn, &l, &k, "ID4", false)
        .await
        .unwrap();
    assert_eq!(replay.answer, Some(answer), "the first answer stays");
}
