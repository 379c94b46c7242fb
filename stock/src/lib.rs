//! The stock service: items with their stock and price, in stock-db, logged in `log:stock`.
//!
//! Items are counter entities (see `common::counter`): the create / add / subtract / batch_init
//! transitions are the shared scripts, configured by [`common::counter::STOCK`]. This crate is the
//! route table; [`saga`] is the stock side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::consumer::ConsumerConfig;
use common::counter::{CounterService, STOCK};
use common::http::{self, HandlerResult, Method, Service};
use common::ids::IdPool;
use common::log::ORDER_LOG;
use common::metrics::Metrics;
use common::validate;

/// The stock service.
pub struct Stock {
    items: CounterService,
    metrics: Arc<Metrics>,
}

impl Stock {
    /// Connects to stock-db and leases a first block of ids.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Stock>> {
        let metrics = Arc::new(Metrics::new("stock"));
        let ids = IdPool::new(&config.ids_url, config.id_block, metrics.clone());
        ids.prefill().await;
        let db = common::db::connect(&config.stock_db_url, "stock-db").await?;
        let (saga_db, saga_ids) = (db.clone(), ids.clone());
        common::consumer::spawn(
            ConsumerConfig::from_config(ORDER_LOG, "stock", config),
            config.order_db_url.clone(),
            metrics.clone(),
            move |e| {
                let (db, ids) = (saga_db.clone(), saga_ids.clone());
                async move { saga::on_order_entry(&db, &ids, e).await }
            },
        );
        Ok(Arc::new(Stock {
            items: CounterService {
                spec: STOCK,
                db,
                ids,
            },
            metrics,
        }))
    }
}

impl Service for Stock {
    const PREFIX: &'static str = "stock";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        let post = method == Method::POST;
        match path.as_slice() {
            ["stock", "item", "create", price] if post => {
                let price = validate::non_negative(price, "price")?;
                self.items.create(&[("price", price)]).await
            }
            ["stock", "find", id] if method == Method::GET => {
                let item = self.items.find(id).await?;
                http::json(&serde_json::json!({
                    "stock": item.get("stock").copied().unwrap_or(0),
                    "price": item.get("price").copied().unwrap_or(0),
                }))
            }
            ["stock", "add", id, amount] if post => self.items.add(id, amount).await,
            ["stock", "subtract", id, amount] if post => self.items.subtract(id, amount).await,
            ["stock", "batch_init", n, stock, price] if post => {
                let price = validate::non_negative(price, "item_price")?;
                self.items.batch_init(n, stock, &[("price", price)]).await
            }
            ["stock", "find", _] => Err(http::wrong_method(&method, "GET")),
            ["stock", "item", "create", _]
            | ["stock", "add" | "subtract", _, _]
            | ["stock", "batch_init", _, _, _] => Err(http::wrong_method(&method, "POST")),
            _ => Err(http::not_found(&segments)),
        }
    }

    async fn healthy(self: Arc<Self>) -> bool {
        common::db::ping(&self.items.db).await
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
