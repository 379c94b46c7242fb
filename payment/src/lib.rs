//! The payment service: users and their credit, in payment-db, logged in `log:payment`.
//!
//! Users are counter entities (see `common::counter`): the create / add_funds / pay / batch_init
//! transitions are the shared scripts, configured by [`common::counter::CREDIT`]. This crate is the
//! route table; [`saga`] is the payment side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::counter::{CounterService, CREDIT};
use common::http::{self, Backing, HandlerResult, Method, Service};
use common::metrics::Metrics;

/// The payment service.
pub struct Payment {
    users: CounterService,
    backing: Backing,
}

impl Payment {
    /// Connects to payment-db, leases a first block of ids, and starts consuming the logs the
    /// participants table says payment reads.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Payment>> {
        let (users, backing) =
            CounterService::start(CREDIT, common::saga::PAYMENT.name, config, saga::on_entry)
                .await?;
        Ok(Arc::new(Payment { users, backing }))
    }
}

impl Service for Payment {
    const PREFIX: &'static str = "payment";

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
            ["payment", "create_user"] => {
                http::allow(&method, post)?;
                self.users.create(&[], keyed).await
            }
            ["payment", "find_user", id] => {
                http::allow(&method, get)?;
                let user = self.users.find(id).await?;
                http::json(&serde_json::json!({
                    "user_id": id,
                    "credit": self.users.field(id, &user, "credit")?,
                }))
            }
            ["payment", "add_funds", id, amount] => {
                http::allow(&method, post)?;
                self.users.add(id, amount, keyed).await
            }
            ["payment", "pay", id, amount] => {
                http::allow(&method, post)?;
                self.users.subtract(id, amount, keyed).await
            }
            ["payment", "batch_init", n, money] => {
                http::allow(&method, post)?;
                self.users.batch_init(n, money, &[], keyed).await
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
