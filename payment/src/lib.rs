//! The payment service: users and their credit, in payment-db, logged in `log:payment`.
//!
//! Users are counter entities (see `common::counter`): the create / add_funds / pay / batch_init
//! transitions are the shared scripts, configured by [`common::counter::CREDIT`]. This crate is the
//! route table; [`saga`] is the payment side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::consumer::ConsumerConfig;
use common::counter::{CounterService, CREDIT};
use common::http::{self, HandlerResult, Method, Service};
use common::ids::IdPool;
use common::log::{ORDER_LOG, STOCK_LOG};
use common::metrics::Metrics;

/// The payment service.
pub struct Payment {
    users: CounterService,
    metrics: Arc<Metrics>,
}

impl Payment {
    /// Connects to payment-db and leases a first block of ids.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Payment>> {
        let metrics = Arc::new(Metrics::new("payment"));
        let ids = IdPool::new(&config.ids_url, config.id_block, metrics.clone());
        ids.prefill().await;
        let db = common::db::connect(&config.payment_db_url, "payment-db").await?;
        for (stream, url) in [
            (STOCK_LOG, &config.stock_db_url),
            (ORDER_LOG, &config.order_db_url),
        ] {
            let (saga_db, saga_ids) = (db.clone(), ids.clone());
            common::consumer::spawn(
                ConsumerConfig::from_config(stream, "payment", config),
                url.clone(),
                metrics.clone(),
                move |e| {
                    let (db, ids) = (saga_db.clone(), saga_ids.clone());
                    async move { saga::on_entry(&db, &ids, e).await }
                },
            );
        }
        Ok(Arc::new(Payment {
            users: CounterService {
                spec: CREDIT,
                db,
                ids,
            },
            metrics,
        }))
    }
}

impl Service for Payment {
    const PREFIX: &'static str = "payment";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        let path: Vec<&str> = segments.iter().map(String::as_str).collect();
        let post = method == Method::POST;
        match path.as_slice() {
            ["payment", "create_user"] if post => self.users.create(&[]).await,
            ["payment", "find_user", id] if method == Method::GET => {
                let user = self.users.find(id).await?;
                http::json(&serde_json::json!({
                    "user_id": id,
                    "credit": user.get("credit").copied().unwrap_or(0),
                }))
            }
            ["payment", "add_funds", id, amount] if post => self.users.add(id, amount).await,
            ["payment", "pay", id, amount] if post => self.users.subtract(id, amount).await,
            ["payment", "batch_init", n, money] if post => {
                self.users.batch_init(n, money, &[]).await
            }
            ["payment", "find_user", _] => Err(http::wrong_method(&method, "GET")),
            ["payment", "create_user"]
            | ["payment", "add_funds" | "pay", _, _]
            | ["payment", "batch_init", _, _] => Err(http::wrong_method(&method, "POST")),
            _ => Err(http::not_found(&segments)),
        }
    }

    async fn healthy(self: Arc<Self>) -> bool {
        common::db::ping(&self.users.db).await
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
