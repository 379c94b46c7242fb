//! The payment service: users and their credit, in payment-db, logged in `log:payment`.
//!
//! Users are counter entities (see `common::counter`): the create / add_funds / pay / batch_init
//! transitions are the shared scripts, configured by [`common::counter::CREDIT`]. This crate is the
//! route table; [`saga`] is the payment side of the checkout saga.

pub mod saga;

use std::sync::Arc;

use common::config::Config;
use common::consumer::Consumers;
use common::counter::{CounterService, CREDIT};
use common::http::{self, HandlerResult, Method, Service};
use common::idempotency::Keyed;
use common::metrics::Metrics;
use common::saga::PARTICIPANTS;

/// The payment service.
pub struct Payment {
    users: CounterService,
    consumers: Arc<Consumers>,
    metrics: Arc<Metrics>,
    /// How long answers to keyed requests are kept (`IDEMPOTENCY_TTL_SECS`).
    idempotency_ttl: std::time::Duration,
}

impl Payment {
    /// Connects to payment-db, leases a first block of ids, and starts consuming the logs the
    /// participants table says payment reads.
    pub async fn start(config: &Config) -> anyhow::Result<Arc<Payment>> {
        let (ctx, consumers) = common::consumer::start_saga_service(
            common::saga::PAYMENT.name,
            config,
            PARTICIPANTS,
            &common::consumer::db_urls(config),
            saga::on_entry,
        )
        .await?;
        Ok(Arc::new(Payment {
            users: CounterService {
                spec: CREDIT,
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

impl Service for Payment {
    const PREFIX: &'static str = "payment";

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

    async fn healthy(self: Arc<Self>) -> http::Health {
        http::health(&self.users.db, Some(&self.consumers)).await
    }

    async fn stop(self: Arc<Self>) {
        self.consumers.stop().await
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}
