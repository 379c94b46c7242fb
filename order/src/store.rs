//! Orders in order-db: `order:<id>` = `{user_id, total_cost, items, status, saga}`, where `items` is
//! the JSON list of `[item, quantity]` lines and `status` is `OPEN`, `CHECKING_OUT` or `PAID`.
//!
//! One function per transition, each running its Lua script from `order/lua/` (which also appends
//! the log entry), plus the read [`find`].

use std::collections::HashMap;
use std::sync::LazyLock;

use common::batch::batch_orders;
use common::db::Conn;
use common::db::{Fields, Outcome, StoreError};
use common::keys::{self, ORDER_LOG};
use common::partition::Layout;
use common::saga::{decode_lines, Lines, OrderStatus};
use redis::Script;

static CREATE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/create_order.lua")));
static ADD_ITEM: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/add_item.lua")));
static BATCH_INIT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/batch_init.lua")));

/// An order as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRecord {
    /// The user the order belongs to.
    pub user_id: String,
    /// Sum of quantity × price over the lines.
    pub total_cost: i64,
    /// The lines, in the order they were added.
    pub items: Lines,
    /// Where the order stands.
    pub status: OrderStatus,
    /// The saga deciding (or that decided) the order, when there is one.
    pub saga: String,
    /// The `items` field exactly as stored (checkout admission compares it to detect a
    /// concurrent `addItem`).
    pub items_json: String,
}

impl OrderRecord {
    /// Whether the order is paid.
    pub fn paid(&self) -> bool {
        self.status == OrderStatus::Paid
    }
}

/// Creates an open, empty order `id` for `user`.
pub async fn create(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    id: &str,
    user: &str,
) -> Result<(), redis::RedisError> {
    CREATE
        .key(keys::order(l, id))
        .key(keys::log(ORDER_LOG, l, l.part(id)))
        .arg(log_id)
        .arg(id)
        .arg(user)
        .invoke_async::<Outcome>(conn)
        .await
        .map(|_| ())
}

/// Adds `quantity` of `item` at `price` to order `id`. `cost` is `quantity * price` (the caller
/// checks it fits). Answers `NotFound`, `Conflict(status)` when not open, or `Overflow`.
#[allow(clippy::too_many_arguments)]
pub async fn add_item(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    id: &str,
    item: &str,
    quantity: i64,
    price: i64,
    cost: i64,
) -> Result<Outcome, redis::RedisError> {
    let line = serde_json::json!([item, quantity]).to_string();
    ADD_ITEM
        .key(keys::order(l, id))
        .key(keys::log(ORDER_LOG, l, l.part(id)))
        .arg(log_id)
        .arg(id)
        .arg(item)
        .arg(quantity)
        .arg(price)
        .arg(cost)
        .arg(line)
        .invoke_async(conn)
        .await
}

/// Parameters of `orders/batch_init`.
#[derive(Debug, Clone, Copy)]
pub struct BatchInit {
    /// How many orders (ids `"0"`..`"n-1"`).
    pub n: u64,
    /// Items are chosen in `0..n_items`.
    pub n_items: u64,
    /// Users are chosen in `0..n_users`.
    pub n_users: u64,
    /// Unit price of every item (each order costs twice this).
    pub price: i64,
    /// Seed of [`common::batch::batch_orders`].
    pub seed: u64,
}

/// Creates or overwrites orders `"0"`..`"n-1"` as [`common::batch::batch_orders`] describes: one
/// script per partition, each logging one entry in that partition's log. The caller checks that
/// `2 * price` fits in `i64`.
pub async fn batch_init(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    b: BatchInit,
) -> Result<(), redis::RedisError> {
    let mut by_part: Vec<Vec<(u64, common::batch::BatchOrder)>> = vec![Vec::new(); l.p as usize];
    for (i, o) in batch_orders(b.seed, b.n, b.n_items, b.n_users).enumerate() {
        by_part[l.part(&i.to_string()) as usize].push((i as u64, o));
    }
    for (part, orders) in by_part.into_iter().enumerate() {
        if orders.is_empty() {
            continue;
        }
        let mut inv = BATCH_INIT.prepare_invoke();
        inv.key(keys::log(ORDER_LOG, l, part as u32));
        for (i, _) in &orders {
            inv.key(keys::order(l, &i.to_string()));
        }
        inv.arg(log_id)
            .arg(b.n)
            .arg(b.n_items)
            .arg(b.n_users)
            .arg(b.price)
            .arg(b.seed)
            .arg(b.price.saturating_mul(2));
        for (_, o) in &orders {
            inv.arg(o.user).arg(o.items[0]).arg(o.items[1]);
        }
        inv.invoke_async::<Outcome>(conn).await?;
    }
    Ok(())
}

/// Reads order `id`; `None` when it does not exist. A malformed field is an error naming the key
/// and the field, never a default (an unreadable `items` must not look like an empty order).
pub async fn find(
    conn: &mut Conn,
    l: &Layout,
    id: &str,
) -> Result<Option<OrderRecord>, StoreError> {
    let key = keys::order(l, id);
    let map: HashMap<String, String> = redis::cmd("HGETALL").arg(&key).query_async(conn).await?;
    if map.is_empty() {
        return Ok(None);
    }
    let f = Fields::new(&key, &map);
    Ok(Some(OrderRecord {
        user_id: f.text("user_id")?.to_string(),
        total_cost: f.int("total_cost")?,
        items: f.parsed("items", decode_lines)?,
        status: f.parsed("status", OrderStatus::parse)?,
        saga: f.text("saga")?.to_string(),
        items_json: f.text("items")?.to_string(),
    }))
}
