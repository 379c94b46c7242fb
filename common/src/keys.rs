//! Every Redis key, stream and channel name shoplog uses — the one place that formats them.
//!
//! Scripts receive their keys in `KEYS` from these functions, the log parser scans by these
//! prefixes, and the CLI reads by them; no other file builds a key, so a change of layout (the
//! partitioned layout adds a hash tag to every key) changes this module and nothing else.
//!
//! | key | database | holds |
//! |---|---|---|
//! | [`order`] `order:<id>` | order-db | an order (`store.rs`) |
//! | [`item`] `item:<id>` | stock-db | an item's `stock` and `price` |
//! | [`user`] `user:<id>` | payment-db | a user's `credit` |
//! | [`saga`] `saga:<sid>` | order-db | the order side of a saga (decision, pending confirmations) |
//! | [`crate::saga::Participant::record_key`] `ssaga:<sid>`, `psaga:<sid>` | the participant's | its side of a saga |
//! | [`ORDER_LOG`], [`STOCK_LOG`], [`PAYMENT_LOG`] | the service's | the service log (a stream) |
//! | [`dead_letter`] `dead:<group>:<stream>` | the stream's | entries a group gave up on |
//! | [`order_lock`] `lock:order:<id>` | lock nodes | the checkout admission Redlock |

/// The order service's log, in order-db.
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

/// Channel (in order-db) on which the deciding scripts publish a saga id once the saga is final
/// (committed, or aborted with every compensation confirmed).
pub const DONE_CHANNEL: &str = "saga:done";

/// Key (order-db) of the last `log:order` entry the log parser's passes have read.
pub const LOGPARSER_CHECKPOINT: &str = "logparser:checkpoint";
/// Key (order-db) of the set of sagas the log parser has seen start and not finish.
pub const LOGPARSER_OPEN: &str = "logparser:open";
/// Redlock resource of the log parser's lease (one active daemon).
pub const LOGPARSER_LEASE: &str = "lock:logparser";

/// Order `id`'s hash.
pub fn order(id: &str) -> String {
    format!("{ORDER_PREFIX}{id}")
}

/// Item `id`'s hash.
pub fn item(id: &str) -> String {
    format!("{ITEM_PREFIX}{id}")
}

/// User `id`'s hash.
pub fn user(id: &str) -> String {
    format!("{USER_PREFIX}{id}")
}

/// The order-side record of saga `sid` (see [`crate::saga::SagaRecord`]).
pub fn saga(sid: &str) -> String {
    format!("{SAGA_PREFIX}{sid}")
}

/// A participant's record of saga `sid`, under the participant's `prefix` (`ssaga:`).
pub fn participant_saga(prefix: &str, sid: &str) -> String {
    format!("{prefix}{sid}")
}

/// The Redlock resource that serialises checkout admission of order `id`.
pub fn order_lock(id: &str) -> String {
    format!("lock:{ORDER_PREFIX}{id}")
}

/// The dead-letter stream of consumer group `group` reading `stream`.
pub fn dead_letter(group: &str, stream: &str) -> String {
    format!("dead:{group}:{stream}")
}

/// The id after a key's `prefix`, when the key has it (`strip("saga:", "saga:01H…")`).
pub fn strip<'a>(prefix: &str, key: &'a str) -> Option<&'a str> {
    key.strip_prefix(prefix)
}
