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
use common::error::ApiError;
use common::idempotency::{self, idempotent, Keyed};
use common::keys::{self, ORDER_LOG};
use common::partition::Layout;
use common::saga::{decode_lines, Lines, OrderStatus};
use redis::Script;

// Create and addItem take an optional idempotency answer record (`common::idempotency`): a
// repeated keyed request is answered from it, inside the script, and changes nothing.
static CREATE: LazyLock<Script> =
    LazyLock::new(|| idempotent("", include_str!("../lua/create_order.lua"), 2));
static ADD_ITEM: LazyLock<Script> =
    LazyLock::new(|| idempotent("", include_str!("../lua/add_item.lua"), 2));
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

/// Creates an open, empty order `id` for `user`. With `keyed` (a request's `Idempotency-Key`),
/// a repeat of the create of `id` (the id pinned in the key's claim) finds the stored reply and
/// creates nothing, so an order changed since is not reset; another request's record is a 422.
pub async fn create(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    id: &str,
    user: &str,
    keyed: Option<&Keyed>,
) -> Result<Outcome, ApiError> {
    let mut inv = CREATE.prepare_invoke();
    inv.key(keys::order(l, id))
        .key(keys::log(ORDER_LOG, l, l.part(id)))
        .arg(log_id)
        .arg(id)
        .arg(user);
    idempotency::invoke(inv, conn, l, l.part(id), keyed).await
}

/// The line `addItem` adds: `quantity` of `item` at `price`, costing `cost` (made by
/// [`AddItem::new`], so that the cost is always `quantity * price`).
#[derive(Debug, Clone, Copy)]
pub struct AddItem<'a> {
    /// The item.
    pub item: &'a str,
    /// How many.
    pub quantity: i64,
    /// The unit price.
    pub price: i64,
    /// `quantity * price`.
    pub cost: i64,
}

impl<'a> AddItem<'a> {
    /// `quantity` of `item` at `price`; `None` when the cost is past `i64::MAX` (the order's
    /// total is kept in an `i64`).
    pub fn new(item: &'a str, quantity: i64, price: i64) -> Option<AddItem<'a>> {
        quantity.checked_mul(price).map(|cost| AddItem {
            item,
            quantity,
            price,
            cost,
        })
    }
}

/// Adds the line `a` to order `id`. Answers `NotFound`, `Conflict(status)` when not open, or
/// `Overflow`. With `keyed` (a request's `Idempotency-Key`), the line and the stored reply are
/// one script, so a repeat adds nothing and answers the first reply.
pub async fn add_item(
    conn: &mut Conn,
    l: &Layout,
    log_id: &str,
    id: &str,
    a: &AddItem<'_>,
    keyed: Option<&Keyed>,
) -> Result<Outcome, ApiError> {
    let json_line = serde_json::json!([a.item, a.quantity]).to_string();
    let mut inv = ADD_ITEM.prepare_invoke();
    inv.key(keys::order(l, id))
        .key(keys::log(ORDER_LOG, l, l.part(id)))
        .arg(log_id)
        .arg(id)
        .arg(a.item)
        .arg(a.quantity)
        .arg(a.price)
        .arg(a.cost)
        .arg(json_line);
    idempotency::invoke(inv, conn, l, l.part(id), keyed).await
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
