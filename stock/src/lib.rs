//! The stock service: items with their stock and price, in stock-db, logged in `log:stock`.
//!
//! Items are counter entities (see `common::counter`): the create / add / subtract / batch_init
//! transitions are the shared scripts, configured by [`common::counter::STOCK`]. This crate is the
//! route table; [`saga`] is the stock side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::consumer::Consumers;
use common::counter::{CounterService, STOCK};
use common::http::{self, HandlerResult, Method, Service};
use common::idempotency::Keyed;
use common::metrics::Metrics;
use common::saga::PARTICIPANTS;
use common::validate;

/// The stock service.
pub struct Stock {
    items: CounterService,
    consumers: Arc<Consumers>,
    metrics: Arc<Metrics>,
    /// How long answers to keyed requests are kept (`IDEMPOTENCY_TTL_SECS`).
    idempotency_ttl: std::time::Duration,
}

impl Stock {
    /// Connects to stock-db, leases a first block of ids, and starts consuming the logs the
    /// participants table says stock reads.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Stock>> {
        let (ctx, consumers) = common::consumer::start_saga_service(
            common::saga::STOCK.name,
            config,
            PARTICIPANTS,
            &common::consumer::db_urls(config),
            saga::on_entry,
        )
        .await?;
        Ok(Arc::new(Stock {
            items: CounterService {
                spec: STOCK,
                db: ctx.db,
                layout: ctx.layout,
                ids: ctx.ids,
            },
            consumers,
            metrics: ctx.metrics,
            idempotency_ttl: config.idempotency_ttl,
        }))
    }
}

impl Service for Stock {
    const PREFIX: &'static str = "stock";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        self.handle_request(method, segments, http::Meta::now())
            .await
    }

    async fn handle_request(
        self: Arc<Self>,
        method: Method,
        segments: Vec<String>,
        meta: http::Meta,
    ) -> HandlerResult {
        let keyed = Keyed::of(meta.key, &method, &segments, self.idempotency_ttl);
        let keyed = keyed.as_ref();
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        let (get, post) = (Method::GET, Method::POST);
        match path.as_slice() {
            ["stock", "item", "create", price] => {
                http::allow(&method, post)?;
                let price = validate::non_negative(price, "price")?;
                self.items.create(&[("price", price)], keyed).await
            }
            ["stock", "find", id] => {
                http::allow(&method, get)?;
                let item = self.items.find(id).await?;
                http::json(&serde_json::json!({
                    "stock": self.items.field(id, &item, "stock")?,
                    "price": self.items.field(id, &item, "price")?,
                }))
            }
            ["stock", "add", id, amount] => {
                http::allow(&method, post)?;
                self.items.add(id, amount, keyed).await
            }
            ["stock", "subtract", id, amount] => {
                http::allow(&method, post)?;
                self.items.subtract(id, amount, keyed).await
            }
            ["stock", "batch_init", n, stock, price] => {
                http::allow(&method, post)?;
                let price = validate::non_negative(price, "item_price")?;
                self.items
                    .batch_init(n, stock, &[("price", price)], keyed)
                    .await
            }
            _ => Err(http::not_found(&segments)),
        }
    }

    async fn healthy(self: Arc<Self>) -> http::Health {
        http::health(&self.items.db, Some(&self.consumers)).await
    }

    async fn stop(self: Arc<Self>) {
        self.consumers.stop().await
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
