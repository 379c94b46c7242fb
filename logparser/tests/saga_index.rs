//! The saga list's index (`logparser::saga_index`) against real Redis servers: kept by the
//! recovery pass through start → commit and start → abort → compensating → aborted, rebuilt by
//! a full pass, trimmed by retirement, and read with the filters and keyset pages of the console
//! and `shoplog sagas` — always the sagas a scan of the records with the same `Filter` finds.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::consumer::DbUrls;
use common::db::Conn;
use common::keys;
use common::metrics::Metrics;
use common::partition::Layout;
use common::saga::{groups, SagaHome, PARTICIPANTS};
use common::testing::{RedisCluster, RedisServer};
use logparser::dbs::Dbs;
use logparser::recovery::{Recovery, Settings};
use logparser::saga_index::{self, IndexError, Snapshot};
use logparser::sagas::{self, Filter, SagaState};
use order::store::{self, AddItem};

const P: u32 = 4;
const TIMEOUT_MS: u64 = 30_000;

/// Three databases (order-db optionally a one-node cluster, where a script whose keys span two
/// slots fails), each with `P` partitions, and the writes of the order side of a saga.
struct World {
    _servers: Vec<RedisServer>,
    _cluster: Option<RedisCluster>,
    lock_url: String,
    oc: Conn,
    l: Layout,
    dbs: Dbs,
    log: u32,
    tmp: tempfile::TempDir,
}

async fn world(cluster: bool) -> World {
    let servers: Vec<RedisServer> = (0..if cluster { 2 } else { 3 })
        .map(|_| RedisServer::start())
        .collect();
    let (cl, order_url) = if cluster {
        let c = RedisCluster::start(2);
        let url = c.url();
        (Some(c), url)
    } else {
        (None, servers[2].url())
    };
    let mut oc = match &cl {
        Some(c) => c.conn().await,
        None => servers[2].conn().await,
    };
    let mut sc = servers[0].conn().await;
    let mut pc = servers[1].conn().await;
    for c in [&mut oc, &mut sc, &mut pc] {
        let _: () = redis::cmd("SET")
            .arg(keys::PARTITIONS_KEY)
            .arg(P)
            .query_async(c)
            .await
            .unwrap();
    }
    let urls = DbUrls::from([
        ("order", order_url.clone()),
        ("stock", servers[0].url()),
        ("payment", servers[1].url()),
    ]);
    let tmp = tempfile::tempdir().unwrap();
    let dbs = Dbs::connect_to(&urls, PARTICIPANTS)
        .await
        .unwrap()
        .with_archive(tmp.path().to_path_buf());
    World {
        lock_url: servers[0].url(),
        _servers: servers,
        _cluster: cl,
        oc,
        l: Layout::new("order", P),
        dbs,
        log: 0,
        tmp,
    }
}

impl World {
    fn log_id(&mut self) -> String {
        self.log += 1;
        format!("L{:06}", self.log)
    }

    fn recovery(&self) -> Recovery {
        let metrics = Arc::new(Metrics::new("logparser"));
        let ids = common::ids::IdPool::new("http://127.0.0.1:9", 10, metrics.clone());
        let locks = common::lock::Redlock::new(std::slice::from_ref(&self.lock_url)).unwrap();
        Recovery::new(
            self.dbs.clone(),
            locks,
            ids,
            Settings {
                saga_timeout: Duration::from_secs(3_600),
                redrive_after: Duration::from_secs(3_600),
            },
            metrics,
        )
    }

    /// Order `order` of `user` with one line, checked out by saga `sid` started at `started`.
    async fn start(&mut self, order: &str, user: &str, sid: &str, started: u64) {
        let l = self.l;
        let id = self.log_id();
        store::create(&mut self.oc, &l, &id, order, user, None)
            .await
            .unwrap();
        let id = self.log_id();
        store::add_item(
            &mut self.oc,
            &l,
            &id,
            order,
            &AddItem::new("i1", 1, 3).unwrap(),
            None,
        )
        .await
        .unwrap();
        let o = store::find(&mut self.oc, &l, order).await.unwrap().unwrap();
        let summed = common::saga::encode_lines(&common::saga::sum_lines(&o.items).unwrap());
        let id = self.log_id();
        let _ = order::saga::start(
            &mut self.oc,
            &l,
            &id,
            order,
            sid,
            Some(&order::saga::SummedLines {
                items: o.items_json.clone(),
                summed: summed.clone(),
            }),
            started,
        )
        .await
        .unwrap();
    }

    async fn commit(&mut self, order: &str, sid: &str) {
        let (l, id) = (self.l, self.log_id());
        let r = order::saga::commit(&mut self.oc, &l, &id, sid, order)
            .await
            .unwrap();
        assert!(r.applied(), "{}", r.name());
    }

    async fn abort(&mut self, order: &str, sid: &str) {
        let (l, id) = (self.l, self.log_id());
        let home = SagaHome {
            layout: &l,
            part: l.part(order),
        };
        let r = common::saga::abort(&mut self.oc, home, PARTICIPANTS, &id, sid, "test")
            .await
            .unwrap();
        assert!(r.applied(), "{}", r.name());
    }

    async fn confirm(&mut self, order: &str, sid: &str, part: &str) {
        let (l, id) = (self.l, self.log_id());
        order::saga::confirm(&mut self.oc, &l, &id, sid, order, part)
            .await
            .unwrap();
    }

    async fn snapshot(&mut self) -> Snapshot {
        Snapshot::read(&mut self.oc, &self.l).await.unwrap()
    }

    /// Every saga `f` passes, by the index (pages of `per_page`), newest first.
    async fn listed(&mut self, f: &Filter, per_page: usize) -> Vec<String> {
        let snap = self.snapshot().await;
        let mut out = Vec::new();
        let mut before: Option<String> = None;
        loop {
            let w = snap
                .walk(
                    &mut self.oc,
                    f,
                    TIMEOUT_MS,
                    before.as_deref(),
                    per_page,
                    1_000_000,
                )
                .await
                .unwrap();
            assert!(w.items.len() <= per_page);
            out.extend(w.items.into_iter().map(|r| r.id));
            match w.next {
                Some(n) => before = Some(n),
                None => break,
            }
        }
        out
    }

    /// Every saga `f` passes, by a scan of the records, newest first.
    async fn scanned(&mut self, f: &Filter) -> Vec<String> {
        let now = sagas::now_ms();
        let mut all = Vec::new();
        sagas::scan(&mut self.oc, &self.l, |r| {
            let r = r.unwrap();
            if f.matches(&r, now, TIMEOUT_MS) {
                all.push(r);
            }
        })
        .await
        .unwrap();
        all.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        all.into_iter().map(|r| r.id).collect()
    }

    async fn count(&mut self, f: &Filter) -> Option<u64> {
        let snap = self.snapshot().await;
        snap.count(&mut self.oc, f, TIMEOUT_MS).await.unwrap()
    }

    /// The members of every partition's index (the marker left out).
    async fn members(&mut self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for k in self.l.parts() {
            let m: Vec<String> = redis::cmd("ZRANGE")
                .arg(keys::logparser_index(&self.l, k))
                .arg(0)
                .arg(-1)
                .query_async(&mut self.oc)
                .await
                .unwrap();
            out.extend(m.into_iter().filter(|m| m != saga_index::MARKER));
        }
        out
    }

    /// The state members of saga `sid` (`i`, `c`, `a`), as the index has them.
    async fn state_of(&mut self, sid: &str) -> Vec<char> {
        self.members()
            .await
            .into_iter()
            .filter(|m| m.ends_with(&format!("\0{sid}")) && !m.starts_with(['t', 'u', 'o']))
            .filter_map(|m| m.chars().next())
            .collect()
    }
}

fn state(s: SagaState) -> Filter {
    Filter {
        state: Some(s),
        ..Filter::default()
    }
}

/// Every saga of `by` in every state agrees with a scan; the counts too.
async fn agrees(w: &mut World, extra: Filter) {
    for s in [
        None,
        Some(SagaState::InFlight),
        Some(SagaState::Committed),
        Some(SagaState::Compensating),
        Some(SagaState::Aborted),
    ] {
        let f = Filter {
            state: s,
            ..extra.clone()
        };
        let scanned = w.scanned(&f).await;
        assert_eq!(w.listed(&f, 3).await, scanned, "{f:?}");
        if let Some(n) = w.count(&f).await {
            assert_eq!(n, scanned.len() as u64, "count of {f:?}");
        }
    }
}

#[tokio::test]
async fn without_a_pass_there_is_no_index_and_the_reader_says_what_to_do() {
    let mut w = world(false).await;
    let err = Snapshot::read(&mut w.oc, &w.l).await.unwrap_err();
    assert!(matches!(err, IndexError::Missing(_)), "{err}");
    assert!(err.to_string().contains("shoplog recover"), "{err}");
    // A dry full pass builds nothing either.
    w.recovery().full_pass(true).await.unwrap();
    assert!(Snapshot::read(&mut w.oc, &w.l).await.is_err());
    w.recovery().startup().await.unwrap();
    let snap = w.snapshot().await;
    assert_eq!(snap.counts(&mut w.oc, TIMEOUT_MS).await.unwrap().total, 0);
}

#[tokio::test]
async fn the_pass_indexes_start_commit_abort_compensating_and_aborted() {
    let mut w = world(false).await;
    let mut rec = w.recovery();
    rec.startup().await.unwrap();
    let now = sagas::now_ms();
    w.start("o1", "u1", "s1", now - 5_000).await;
    w.start("o2", "u2", "s2", now - 4_000).await;
    // Not indexed yet: listed from the tail all the same.
    assert!(w.members().await.is_empty());
    assert_eq!(
        w.listed(&state(SagaState::InFlight), 10).await,
        ["s2", "s1"]
    );
    assert_eq!(w.count(&state(SagaState::InFlight)).await, Some(2));
    rec.incremental_pass().await.unwrap();
    assert_eq!(w.state_of("s1").await, ['i']);
    assert_eq!(w.state_of("s2").await, ['i']);
    let s1 = saga_index::rest(now - 5_000, "s1");
    let want: BTreeSet<String> = [
        format!("t\0{s1}"),
        format!("u\0u1\0{s1}"),
        format!("o\0o1\0{s1}"),
        format!("i\0{s1}"),
    ]
    .into();
    assert!(w.members().await.is_superset(&want));
    agrees(&mut w, Filter::default()).await;

    w.commit("o1", "s1").await;
    w.abort("o2", "s2").await;
    // The tail says so before the next pass.
    assert_eq!(w.listed(&state(SagaState::Committed), 10).await, ["s1"]);
    assert_eq!(w.listed(&state(SagaState::Compensating), 10).await, ["s2"]);
    agrees(&mut w, Filter::default()).await;
    rec.incremental_pass().await.unwrap();
    assert!(
        w.state_of("s1").await.is_empty(),
        "committed: no state member"
    );
    assert_eq!(w.state_of("s2").await, ['c']);
    agrees(&mut w, Filter::default()).await;

    w.confirm("o2", "s2", "stock").await;
    rec.incremental_pass().await.unwrap();
    assert_eq!(w.state_of("s2").await, ['c'], "one confirmation of two");
    w.confirm("o2", "s2", "payment").await;
    assert_eq!(w.listed(&state(SagaState::Aborted), 10).await, ["s2"]);
    rec.incremental_pass().await.unwrap();
    assert_eq!(w.state_of("s2").await, ['a']);
    agrees(&mut w, Filter::default()).await;
    let counts = w
        .snapshot()
        .await
        .counts(&mut w.oc, TIMEOUT_MS)
        .await
        .unwrap();
    assert_eq!(
        (
            counts.total,
            counts.committed,
            counts.aborted,
            counts.in_flight,
            counts.compensating
        ),
        (2, 1, 1, 0, 0)
    );
}

#[tokio::test]
async fn a_full_pass_rebuilds_the_index_the_passes_kept() {
    let mut w = world(false).await;
    let mut rec = w.recovery();
    rec.startup().await.unwrap();
    let now = sagas::now_ms();
    for i in 0..40u64 {
        let (o, s) = (format!("o{i}"), format!("s{i:02}"));
        w.start(&o, &format!("u{}", i % 3), &s, now - 60_000 + i * 10)
            .await;
        match i % 4 {
            0 => w.commit(&o, &s).await,
            1 => w.abort(&o, &s).await,
            2 => {
                w.abort(&o, &s).await;
                w.confirm(&o, &s, "stock").await;
                w.confirm(&o, &s, "payment").await;
            }
            _ => {}
        }
    }
    rec.incremental_pass().await.unwrap();
    let kept = w.members().await;
    assert_eq!(kept.iter().filter(|m| m.starts_with('t')).count(), 40);
    // Lost, or from before the index existed: the startup pass finds no index and rebuilds.
    for k in w.l.parts() {
        let _: () = redis::cmd("DEL")
            .arg(keys::logparser_index(&w.l, k))
            .query_async(&mut w.oc)
            .await
            .unwrap();
    }
    let report = w.recovery().startup().await.unwrap();
    assert_eq!(report.mode, "full");
    assert_eq!(w.members().await, kept);
    // And a full pass over an index it replaces leaves the same.
    w.recovery().full_pass(false).await.unwrap();
    assert_eq!(w.members().await, kept);
    agrees(&mut w, Filter::default()).await;
    agrees(
        &mut w,
        Filter {
            user: Some("u1".into()),
            ..Filter::default()
        },
    )
    .await;
}

#[tokio::test]
async fn filters_by_user_order_age_and_stuck_agree_with_a_scan() {
    let mut w = world(false).await;
    let mut rec = w.recovery();
    rec.startup().await.unwrap();
    let now = sagas::now_ms();
    for i in 0..60u64 {
        let (o, s) = (format!("o{}", i % 45), format!("s{i:02}"));
        // Orders o0..o14 are checked out twice: the first saga aborted, then a second one.
        if i >= 45 {
            let first = format!("s{:02}", i - 45);
            w.abort(&o, &first).await;
            w.confirm(&o, &first, "stock").await;
            w.confirm(&o, &first, "payment").await;
        }
        w.start(&o, &format!("u{}", i % 5), &s, now - 120_000 + i * 1_000)
            .await;
        if i % 3 == 0 && i < 45 && i % 45 >= 15 {
            w.commit(&o, &s).await;
        }
        if i == 30 {
            // Half of them indexed, half in the tail.
            rec.incremental_pass().await.unwrap();
        }
    }
    for f in [
        Filter {
            user: Some("u2".into()),
            ..Filter::default()
        },
        Filter {
            order: Some("o3".into()),
            ..Filter::default()
        },
        Filter {
            min_age_ms: 90_000,
            ..Filter::default()
        },
        Filter {
            max_age_ms: Some(70_000),
            user: Some("u4".into()),
            ..Filter::default()
        },
    ] {
        agrees(&mut w, f).await;
    }
    let stuck = Filter {
        stuck: true,
        ..Filter::default()
    };
    let scanned = w.scanned(&stuck).await;
    assert!(!scanned.is_empty());
    assert_eq!(w.listed(&stuck, 4).await, scanned);
    assert_eq!(w.count(&stuck).await, Some(scanned.len() as u64));
    // An order's two sagas.
    assert_eq!(
        w.listed(
            &Filter {
                order: Some("o3".into()),
                ..Filter::default()
            },
            10
        )
        .await,
        ["s48", "s03"]
    );
    rec.incremental_pass().await.unwrap();
    agrees(
        &mut w,
        Filter {
            user: Some("u0".into()),
            ..Filter::default()
        },
    )
    .await;
    agrees(&mut w, Filter::default()).await;
}

#[tokio::test]
async fn pages_have_no_duplicates_or_gaps_while_new_sagas_arrive() {
    let mut w = world(false).await;
    let mut rec = w.recovery();
    rec.startup().await.unwrap();
    let now = sagas::now_ms();
    // 120 sagas, some in one millisecond (ties sort by id).
    for i in 0..120u64 {
        w.start(
            &format!("o{i}"),
            "u",
            &format!("s{i:03}"),
            now - 600_000 + (i / 3) * 100,
        )
        .await;
        // Few committed: a page of them is not full after one round of reads, so the walk must
        // go on below what every partition gave, without a gap.
        if i % 7 == 0 {
            w.commit(&format!("o{i}"), &format!("s{i:03}")).await;
        }
    }
    rec.incremental_pass().await.unwrap();
    let before_paging: Vec<String> = w.scanned(&Filter::default()).await;
    let committed_before = w.scanned(&state(SagaState::Committed)).await;
    for (f, want) in [
        (Filter::default(), before_paging.clone()),
        (state(SagaState::Committed), committed_before),
    ] {
        let snap = w.snapshot().await;
        let mut seen: Vec<String> = Vec::new();
        let mut before: Option<String> = None;
        let mut n = 0;
        loop {
            let page = snap
                .walk(&mut w.oc, &f, TIMEOUT_MS, before.as_deref(), 7, 1_000_000)
                .await
                .unwrap();
            seen.extend(page.items.iter().map(|r| r.id.clone()));
            // Newer sagas arrive between pages, some indexed by a pass, some still in the tail.
            n += 1;
            w.start(
                &format!("new{n}"),
                "u",
                &format!("z{n:03}"),
                sagas::now_ms(),
            )
            .await;
            if n % 3 == 0 {
                rec.incremental_pass().await.unwrap();
            }
            match page.next {
                Some(c) => before = Some(c),
                None => break,
            }
        }
        let unique: HashSet<&String> = seen.iter().collect();
        assert_eq!(unique.len(), seen.len(), "no saga twice");
        assert_eq!(
            seen, want,
            "every saga of the first page's moment, newest first"
        );
    }
}

#[tokio::test]
async fn retirement_removes_the_index_members_in_the_same_script_on_a_cluster() {
    let mut w = world(true).await;
    let mut rec = w.recovery();
    rec.startup().await.unwrap();
    let now = sagas::now_ms();
    w.start("o1", "u1", "s1", now - 2_000).await;
    w.commit("o1", "s1").await;
    w.start("o2", "u1", "s2", now - 1_000).await;
    w.abort("o2", "s2").await;
    w.confirm("o2", "s2", "stock").await;
    w.confirm("o2", "s2", "payment").await;
    rec.incremental_pass().await.unwrap();
    agrees(&mut w, Filter::default()).await;
    // Every group has read every log: nothing holds the entries or the records.
    for (db, log) in [
        (w.oc.clone(), keys::ORDER_LOG),
        (w.dbs.by_name("stock").unwrap(), keys::STOCK_LOG),
        (w.dbs.by_name("payment").unwrap(), keys::PAYMENT_LOG),
    ] {
        let mut db = db;
        let name = log.trim_start_matches("log:");
        let l = Layout::new(name, P);
        for k in l.parts() {
            let stream = keys::log(log, &l, k);
            for g in groups(PARTICIPANTS).iter().filter(|g| g.stream == log) {
                let _: redis::Value = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(&stream)
                    .arg(g.group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut db)
                    .await
                    .unwrap();
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
    let metrics = Arc::new(Metrics::new("logparser"));
    let ids = common::ids::IdPool::new("http://127.0.0.1:9", 10, metrics.clone());
    let settings = logparser::archive::Settings {
        retain: Duration::ZERO,
        root: w.tmp.path().to_path_buf(),
    };
    let mut archiver = logparser::archive::Archiver::new(w.dbs.clone(), settings, ids, metrics);
    let first = archiver.pass(|| true).await.unwrap();
    assert!(first.errors.is_empty(), "{first:?}");
    assert_eq!(first.retire_queue, 2, "{first:?}");
    // Retired once every log is past the moment they were seen final, plus the clock margin:
    // then a saga still in flight (s3) holds its stream, not their retirement.
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    w.start("o3", "u1", "s3", sagas::now_ms()).await;
    rec.incremental_pass().await.unwrap();
    let r = archiver.pass(|| true).await.unwrap();
    assert!(r.errors.is_empty(), "{r:?}");
    let retired = r.retired;
    assert_eq!(retired, 2, "s1 and s2's order-side records");
    let left = w.members().await;
    assert!(
        left.iter().all(|m| m.ends_with("\0s3")),
        "only the live saga is indexed: {left:?}"
    );
    assert_eq!(left.len(), 4, "{left:?}");
    assert_eq!(w.listed(&Filter::default(), 10).await, ["s3"]);
    let counts = w
        .snapshot()
        .await
        .counts(&mut w.oc, TIMEOUT_MS)
        .await
        .unwrap();
    assert_eq!((counts.total, counts.in_flight), (1, 1));
    // A pass after the retirement does not bring them back.
    rec.incremental_pass().await.unwrap();
    assert_eq!(w.members().await, left);
    w.recovery().full_pass(false).await.unwrap();
    assert_eq!(w.members().await, left);
}
