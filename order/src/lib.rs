//! The order service: orders in order-db, logged in `log:order`.
//!
//! [`store`] holds one function per order transition (each a Lua script in `order/lua/`),
//! [`prices`] asks the stock service for item prices, [`checkout`] admits checkouts and waits for
//! their outcome, [`saga`] is the order side of the saga, [`waiters`] wakes waiting checkouts, and
//! this file is the route table.

pub mod checkout;
pub mod prices;
pub mod saga;
pub mod store;
pub mod waiters;

use std::sync::Arc;

use common::config::Config;
use common::consumer::DbUrls;
use common::db::Conn;
use common::db::Outcome;
use common::error::ApiError;
use common::http::{self, Backing, HandlerResult, Method, Service};
use common::idempotency::{self, Keyed};
use common::ids::IdPool;
use common::keys;
use common::metrics::Metrics;
use common::saga::{Participant, PARTICIPANTS};
use common::validate;

/// Largest `n` accepted by `orders/batch_init`.
pub const MAX_BATCH: i64 = 1_000_000;

/// The order service.
pub struct Order {
    db: Conn,
    /// Consumers, metrics and answer retention, for the HTTP scaffolding.
    backing: Backing,
    ids: Arc<IdPool>,
    prices: prices::Prices,
    locks: common::lock::Redlock,
    waiters: Arc<waiters::Waiters>,
    checkout_timeout: std::time::Duration,
    parts: &'static [Participant],
    layout: common::partition::Layout,
}

impl Order {
    /// Connects to order-db, leases a first block of ids, and starts consuming the participants'
    /// logs ([`PARTICIPANTS`]).
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Order>> {
        Order::start_with(config, PARTICIPANTS, &common::consumer::db_urls(config)).await
    }

    /// [`Order::start`] for another participants table, whose logs live in the databases `urls`
    /// names (tests add a participant this way).
    pub async fn start_with(
        config: &Config,
        parts: &'static [Participant],
        urls: &DbUrls,
    ) -> anyhow::Result<Arc<Order>> {
        let (ctx, consumers) = common::consumer::start_saga_service(
            common::saga::ORDER,
            config,
            parts,
            urls,
            saga::on_entry,
        )
        .await?;
        let waiters = Arc::new(waiters::Waiters::default());
        waiters.clone().spawn_listener(config.order_db_url.clone());
        let backing = Backing::new(&ctx, consumers, config);
        waiters.clone().spawn_gauge(backing.metrics.clone());
        Ok(Arc::new(Order {
            backing,
            db: ctx.db,
            ids: ctx.ids,
            prices: prices::Prices::new(&config.stock_url),
            locks: common::lock::Redlock::new(&config.lock_urls)?,
            waiters,
            checkout_timeout: config.checkout_timeout,
            parts,
            layout: ctx.layout,
        }))
    }

    async fn create(&self, user: &str, keyed: Option<&Keyed>) -> HandlerResult {
        let user = validate::new_id(user, "user_id")?;
        let mut db = self.db.clone();
        // The new order's id is pinned in the key's claim: a repeat creates the same order, at
        // most once (the create script keeps the answer record).
        let id = idempotency::claim_if_keyed(&mut db, &self.layout, keyed, &self.ids.next(), true)
            .await?
            .pinned;
        store::create(&mut db, &self.layout, &self.ids.next(), &id, user, keyed).await?;
        db.replicated(&keys::order(&self.layout, &id)).await?;
        http::json(&serde_json::json!({ "order_id": id }))
    }

    async fn find(&self, id: &str) -> HandlerResult {
        let id = validate::existing_id(id, "order")?;
        let order = store::find(&mut self.db.clone(), &self.layout, id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("unknown order `{id}`")))?;
        http::json(&serde_json::json!({
            "order_id": id,
            "paid": order.paid(),
            "items": order.items,
            "user_id": order.user_id,
            "total_cost": order.total_cost,
        }))
    }

    async fn add_item(
        &self,
        id: &str,
        item: &str,
        quantity: &str,
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        let id = validate::existing_id(id, "order")?;
        let item = validate::existing_id(item, "item")?;
        let quantity = validate::positive(quantity, "quantity")?;
        let price = self.prices.price(item).await?;
        let line = store::AddItem::new(item, quantity, price).ok_or_else(|| {
            ApiError::BadRequest(format!(
                "{quantity} × price {price} of item `{item}` is past {}",
                i64::MAX
            ))
        })?;
        let mut db = self.db.clone();
        idempotency::claim_if_keyed(&mut db, &self.layout, keyed, "", false).await?;
        let outcome =
            store::add_item(&mut db, &self.layout, &self.ids.next(), id, &line, keyed).await?;
        db.replicated(&keys::order(&self.layout, id)).await?;
        match outcome {
            Outcome::Ok(_) => http::json(&serde_json::json!({ "done": true })),
            Outcome::NotFound => Err(ApiError::NotFound(format!("unknown order `{id}`"))),
            Outcome::Conflict(state) => Err(ApiError::Conflict(format!(
                "order `{id}` is {} and cannot change",
                state.to_lowercase().replace('_', " ")
            ))),
            Outcome::Overflow => Err(ApiError::BadRequest(format!(
                "the total cost of order `{id}` would pass {}",
                i64::MAX
            ))),
            Outcome::Insufficient(_) => Err(ApiError::Internal("unexpected script answer".into())),
        }
    }

    async fn batch_init(
        &self,
        n: &str,
        n_items: &str,
        n_users: &str,
        price: &str,
        keyed: Option<&Keyed>,
    ) -> HandlerResult {
        let n = validate::count(n, "n", 1, MAX_BATCH)?;
        let n_items = validate::count(n_items, "n_items", 1, i64::MAX)?;
        let n_users = validate::count(n_users, "n_users", 1, i64::MAX)?;
        let price = validate::non_negative(price, "item_price")?;
        if price.checked_mul(2).is_none() {
            return Err(ApiError::BadRequest(format!(
                "item_price {price} is too large: an order of two items would cost past {}",
                i64::MAX
            )));
        }
        let mut db = self.db.clone();
        let params = |seed| store::BatchInit {
            n: n as u64,
            n_items: n_items as u64,
            n_users: n_users as u64,
            price,
            seed,
        };
        // The seed is pinned in the key's claim: a repeat before the first answered is stored
        // writes the very same orders again.
        let seed = ulid::Ulid::new().to_string();
        idempotency::answer_once(
            &mut db,
            &self.layout,
            keyed,
            &seed,
            true,
            |pinned| async move {
                let seed = pinned
                    .parse::<ulid::Ulid>()
                    .map(|u| (u.random() & u128::from(u64::MAX)) as u64)
                    .map_err(|e| ApiError::Internal(format!("pinned seed `{pinned}`: {e}")))?;
                self.run_batch_init(params(seed)).await
            },
        )
        .await
    }

    async fn run_batch_init(
        &self,
        params: store::BatchInit,
    ) -> Result<serde_json::Value, ApiError> {
        let db = &mut self.db.clone();
        store::batch_init(db, &self.layout, &self.ids.next(), params).await?;
        for part in self.layout.parts() {
            db.replicated(&keys::log(keys::ORDER_LOG, &self.layout, part))
                .await?;
        }
        let n = params.n;
        Ok(serde_json::json!({ "msg": format!("batch init for {n} orders successful") }))
    }
}

impl Service for Order {
    const PREFIX: &'static str = "orders";

    async fn handle_request(
        self: Arc<Self>,
        method: Method,
        segments: Vec<String>,
        meta: http::Meta,
    ) -> HandlerResult {
        let keyed = self.backing.keyed(&method, &segments, meta.key);
        let keyed = keyed.as_ref();
        let (get, post) = (Method::GET, Method::POST);
        match http::path(&segments).as_slice() {
            ["orders", "create", user] => {
                http::allow(&method, post)?;
                self.create(user, keyed).await
            }
            ["orders", "find", id] => {
                http::allow(&method, get)?;
                self.find(id).await
            }
            ["orders", "addItem", id, item, qty] => {
                http::allow(&method, post)?;
                self.add_item(id, item, qty, keyed).await
            }
            ["orders", "checkout", id] => {
                http::allow(&method, post)?;
                self.checkout(id, keyed, meta.arrived).await
            }
            ["orders", "batch_init", n, n_items, n_users, price] => {
                http::allow(&method, post)?;
                self.batch_init(n, n_items, n_users, price, keyed).await
            }
            _ => Err(http::not_found(&segments)),
        }
    }

    fn backing(&self) -> Option<&Backing> {
        Some(&self.backing)
    }

    fn metrics(&self) -> &Metrics {
        &self.backing.metrics
    }
}
