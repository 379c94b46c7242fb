//! Every Redis key, stream and channel name shoplog uses — the one place that formats them.
//!
//! Scripts receive their keys in `KEYS` from these functions, the log parser scans by these
//! prefixes, and the CLI reads by them; no other file builds a key.
//!
//! Every key of an entity, a saga record or a log lives in one partition of its service
//! ([`crate::partition`]) and carries that partition as a Redis Cluster hash tag, so that all keys
//! a transition touches fall in one hash slot:
//!
//! | key | database | holds |
//! |---|---|---|
//! | [`order`] `order:{o3.60}:<id>` | order-db | an order (`store.rs`) |
//! | [`item`] `item:{s3.20}:<id>` | stock-db | an item's `stock` and `price` |
//! | [`user`] `user:{p3.0}:<id>` | payment-db | a user's `credit` |
//! | [`saga`] `saga:{o3.60}:<sid>` | order-db | the order side of a saga, in its order's partition |
//! | [`participant_saga`] `ssaga:{s3.20}:<sid>`, `psaga:{p3.0}:<sid>` | the participant's | its side of a saga, in the partition of what it changed |
//! | [`log`] `log:order:{o3.60}` | the service's | one partition of the service log (a stream) |
//! | [`dead_letter`] `dead:<group>:<stream>` | the stream's | entries a group gave up on (same slot as the stream) |
//! | [`sync`] `shoplog:sync:{o3.60}` | each service's | nothing: a write that advances `WAIT`'s offset |
//! | [`PARTITIONS_KEY`] `shoplog:partitions` | each service's | its number of partitions |
//! | [`logparser_index`] `logparser:index:{o3.60}` | order-db | the saga list's index of the partition (`logparser::saga_index`) |
//! | [`logparser_retire`] `logparser:retire:{o3.60}`, [`logparser_queued`] `logparser:queued:{o3.60}` | order-db | the final sagas waiting to be retired, and the last `log:order` entry whose saga was looked at for that (`logparser::archive`) |
//! | [`AUDIT_HOLDS`] `logparser:audit-holds`, [`RETIRING`] `logparser:retiring` | order-db | the audits running, a retirement batch running (they exclude each other) |
//! | [`order_lock`] `lock:order:<id>` | lock nodes | the checkout admission Redlock |
//! | [`idempotency_claim`] `idemclaim:{s3.20}:<key>` | the service's | an `Idempotency-Key`'s binding to one request, in the key's own partition |
//! | [`idempotency`] `idem:{s3.20}:<key>` | the service's | a keyed request's stored reply, in its entity's partition (written by the changing script) |

use crate::partition::Layout;

/// The order service's log (the base name of its partitions' streams), in order-db.
pub const ORDER_LOG: &str = "log:order";
/// The stock service's log, in stock-db.
pub const STOCK_LOG: &str = "log:stock";
/// The payment service's log, in payment-db.
pub const PAYMENT_LOG: &str = "log:payment";

/// Prefix of the order hashes.
pub const ORDER_PREFIX: &str = "order:";
/// Prefix of the item hashes.
pub const ITEM_PREFIX: &str = "item:";
/// Prefix of the user hashes.
pub const USER_PREFIX: &str = "user:";
/// Prefix of the order-side saga records.
pub const SAGA_PREFIX: &str = "saga:";

/// Prefix of the idempotency answer records ([`idempotency`]).
pub const IDEMPOTENCY_PREFIX: &str = "idem:";
/// Prefix of the idempotency claims ([`idempotency_claim`]).
pub const IDEMPOTENCY_CLAIM_PREFIX: &str = "idemclaim:";

/// Key (each service's database) of its number of partitions.
pub const PARTITIONS_KEY: &str = "shoplog:partitions";

/// Channel (in order-db) on which the deciding scripts announce a saga once it is final
/// (committed, or aborted with every compensation confirmed): `<sid>\n<decision>\n<reason>`,
/// parsed by [`crate::saga::Announcement`].
pub const DONE_CHANNEL: &str = "saga:done";

/// Redlock resource of the log parser's lease (one active daemon).
pub const LOGPARSER_LEASE: &str = "lock:logparser";

/// `<prefix><tag>:<id>`: a key of partition `part`.
fn tagged(prefix: &str, l: &Layout, part: u32, id: &str) -> String {
    format!("{prefix}{}:{id}", l.tag(part))
}

/// Order `id`'s hash (order-db's layout `l`).
pub fn order(l: &Layout, id: &str) -> String {
    tagged(ORDER_PREFIX, l, l.part(id), id)
}

/// Item `id`'s hash (stock-db's layout `l`).
pub fn item(l: &Layout, id: &str) -> String {
    tagged(ITEM_PREFIX, l, l.part(id), id)
}

/// User `id`'s hash (payment-db's layout `l`).
pub fn user(l: &Layout, id: &str) -> String {
    tagged(USER_PREFIX, l, l.part(id), id)
}

/// The order-side record of saga `sid`, in partition `part` of order-db (its order's).
pub fn saga(l: &Layout, part: u32, sid: &str) -> String {
    tagged(SAGA_PREFIX, l, part, sid)
}

/// The order-side record of saga `sid` of order `order`.
pub fn saga_of(l: &Layout, order: &str, sid: &str) -> String {
    saga(l, l.part(order), sid)
}

/// A participant's record of saga `sid` in partition `part`, under its `prefix` (`ssaga:`).
pub fn participant_saga(prefix: &str, l: &Layout, part: u32, sid: &str) -> String {
    tagged(prefix, l, part, sid)
}

/// Partition `part` of the log `base` (`log:order` → `log:order:{o3.60}`).
pub fn log(base: &str, l: &Layout, part: u32) -> String {
    format!("{base}:{}", l.tag(part))
}

/// Every partition's stream of the log `base`, in partition order.
pub fn logs(base: &str, l: &Layout) -> Vec<String> {
    l.parts().map(|k| log(base, l, k)).collect()
}

/// Key (order-db partition `part`) of the last entry of that partition's log a recovery pass read.
pub fn logparser_checkpoint(l: &Layout, part: u32) -> String {
    format!("logparser:checkpoint:{}", l.tag(part))
}

/// Key (order-db partition `part`) of the sagas of that partition started and not finished.
pub fn logparser_open(l: &Layout, part: u32) -> String {
    format!("logparser:open:{}", l.tag(part))
}

/// Key (order-db partition `part`, a sorted set, every score 0, read by lexicographic ranges) of
/// the saga list's index of that partition's live saga records: `logparser::saga_index`, kept by
/// the recovery pass from `log:order`, trimmed by `logparser/lua/retire.lua`. It lives in the
/// partition's slot so that it moves atomically with the checkpoint and the records it indexes.
pub fn logparser_index(l: &Layout, part: u32) -> String {
    format!("logparser:index:{}", l.tag(part))
}

/// Key (order-db partition `part`) where a full recovery pass builds a new index of the
/// partition before renaming it over [`logparser_index`] (so readers never see half an index).
pub fn logparser_index_new(l: &Layout, part: u32) -> String {
    format!("logparser:index-new:{}", l.tag(part))
}

/// Key (order-db partition `part`, a sorted set) of the final sagas the archiving pass saw (their
/// `log:order` entries acknowledged by every group), by when it saw them (order-db's clock, ms):
/// retired once every log is archived past that time.
pub fn logparser_retire(l: &Layout, part: u32) -> String {
    format!("logparser:retire:{}", l.tag(part))
}

/// Key (order-db partition `part`) of the last entry of that partition's log whose saga the
/// archiving pass found final and queued in [`logparser_retire`] (every entry before it too).
pub fn logparser_queued(l: &Layout, part: u32) -> String {
    format!("logparser:queued:{}", l.tag(part))
}

/// Key (order-db, a sorted set) of the audits running now, each until when it holds retirement
/// off (order-db's clock, ms): `logparser::audit_hold`.
pub const AUDIT_HOLDS: &str = "logparser:audit-holds";

/// Key (order-db) present while the archiving pass retires a batch of saga records; an audit
/// that starts waits until it is gone: `logparser::audit_hold`.
pub const RETIRING: &str = "logparser:retiring";

/// A key in the hash slot of `key` that holds nothing: [`crate::db::Conn::replicated_all`]
/// writes it so that its `WAIT` covers the slot's primary up to now (`shoplog:sync:{o3.60}`).
pub fn sync(key: &str) -> String {
    let tag = key
        .find('{')
        .and_then(|open| Some(&key[open..=open + key[open..].find('}')?]))
        .filter(|t| t.len() > 2)
        .map_or_else(|| format!("{{{key}}}"), str::to_string);
    format!("shoplog:sync:{tag}")
}

/// The claim of `Idempotency-Key` `key` (`common::idempotency`): in the key's own partition of
/// `l`, so that the same key finds the same claim whatever entity its request names.
pub fn idempotency_claim(l: &Layout, key: &str) -> String {
    tagged(IDEMPOTENCY_CLAIM_PREFIX, l, l.part(key), key)
}

/// The answer record of `Idempotency-Key` `key` in partition `part` of `l`: the partition of the
/// entity its request changes, so that the changing script writes it in the same slot.
pub fn idempotency(l: &Layout, part: u32, key: &str) -> String {
    tagged(IDEMPOTENCY_PREFIX, l, part, key)
}

/// The Redlock resource that serialises checkout admission of order `id`.
pub fn order_lock(id: &str) -> String {
    format!("lock:{ORDER_PREFIX}{id}")
}

/// The dead-letter stream of consumer group `group` reading `stream`.
pub fn dead_letter(group: &str, stream: &str) -> String {
    format!("dead:{group}:{stream}")
}

/// A key's partition and id, when it has `prefix` and a tag of `l`
/// (`parse("saga:", l, "saga:{o3.60}:01H…")` = `Some((3, "01H…"))`).
pub fn parse<'a>(prefix: &str, l: &Layout, key: &'a str) -> Option<(u32, &'a str)> {
    let rest = key.strip_prefix(prefix)?;
    let (tag, id) = rest.split_once(':')?;
    l.part_of_tag(tag).map(|k| (k, id))
}

/// The partition of a stream of `l` (`log:order:{o3.60}` → 3).
pub fn partition_of_stream(l: &Layout, stream: &str) -> Option<u32> {
    let (_, tag) = stream.rsplit_once(':')?;
    l.part_of_tag(tag)
}
