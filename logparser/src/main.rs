//! `logparser` — the log-parser daemon.
//!
//! For now it holds its lease (one active instance at a time) and reports liveness on
//! `GET /logparser/health` and `GET /logparser/status`; recovery passes build on this.

use std::sync::Arc;

use common::http::{self, HandlerResult, Method, Service};
use common::metrics::Metrics;
use logparser::lease::{self, Leadership};

struct Daemon {
    leadership: Arc<Leadership>,
    instance: String,
    metrics: Metrics,
}

impl Service for Daemon {
    const PREFIX: &'static str = "logparser";

    async fn handle(self: Arc<Self>, method: Method, segments: Vec<String>) -> HandlerResult {
        match (segments.as_slice(), &method) {
            ([_, s], &Method::GET) if s == "status" => http::json(&serde_json::json!({
                "instance": self.instance,
                "active": self.leadership.is_active(),
            })),
            _ => Err(http::not_found(&segments)),
        }
    }

    async fn healthy(self: Arc<Self>) -> bool {
        true
    }

    fn metrics(&self) -> &Metrics {
        &self.metrics
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("logparser");
    let config = common::config::Config::from_env(common::config::defaults::LOGPARSER_PORT);
    let leadership = Arc::new(Leadership::default());
    let locks = common::lock::Redlock::new(&config.lock_urls)?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(lease::hold(
        locks,
        config.lease_ttl,
        leadership.clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
    let daemon = Arc::new(Daemon {
        leadership,
        instance: config.instance.clone(),
        metrics: Metrics::new("logparser"),
    });
    let served = http::serve(daemon, config.listen_addr()?).await;
    let _ = stop_tx.send(());
    let _ = holder.await;
    served
}
