//! The stock service: items with their stock and price, in stock-db, logged in `log:stock`.
//!
//! Items are counter entities (see `common::counter`): the create / add / subtract / batch_init
//! transitions are the shared scripts, configured by [`common::counter::STOCK`]. This crate is the
//! route table; [`saga`] is the stock side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::counter::{CounterService, STOCK};
use common::http::{self, Backing, HandlerResult, Method, Service};
use common::metrics::Metrics;
use common::validate;

/// The stock service.
pub struct Stock {
    items: CounterService,
    backing: Backing,
}

impl Stock {
    /// Connects to stock-db, leases a first block of ids, and starts consuming the logs the
    /// participants table says stock reads.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Stock>> {
        let (items, backing) =
            CounterService::start(STOCK, common::saga::STOCK.name, config, saga::on_entry).await?;
        Ok(Arc::new(Stock { items, backing }))
    }
}

impl Service for Stock {
    const PREFIX: &'static str = "stock";

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

    fn backing(&self) -> Option<&Backing> {
        Some(&self.backing)
    }

    fn metrics(&self) -> &Metrics {
        &self.backing.metrics
    }
}
