//! Connections to the three service databases, as the log parser and the CLI need them.

use std::time::Duration;

use common::config::Config;
use redis::aio::ConnectionManager;

use crate::replay::ServiceLog;

/// One connection per service database.
#[derive(Clone)]
pub struct Dbs {
    /// order-db.
    pub order: ConnectionManager,
    /// stock-db.
    pub stock: ConnectionManager,
    /// payment-db.
    pub payment: ConnectionManager,
}

impl Dbs {
    /// Connects to the three databases of `config`, failing fast with a clear message when one
    /// does not answer within 3 s.
    pub async fn connect(config: &Config) -> anyhow::Result<Dbs> {
        let t = Duration::from_secs(3);
        Ok(Dbs {
            order: common::db::connect_once(&config.order_db_url, "order-db", t).await?,
            stock: common::db::connect_once(&config.stock_db_url, "stock-db", t).await?,
            payment: common::db::connect_once(&config.payment_db_url, "payment-db", t).await?,
        })
    }

    /// The database of `service` (`"order"`, `"stock"`, `"payment"`).
    pub fn of(&self, service: ServiceLog) -> ConnectionManager {
        match service {
            ServiceLog::Order => self.order.clone(),
            ServiceLog::Stock => self.stock.clone(),
            ServiceLog::Payment => self.payment.clone(),
        }
    }

    /// The database holding the log of the service named `name`.
    pub fn by_name(&self, name: &str) -> Option<ConnectionManager> {
        ServiceLog::parse(name).map(|s| self.of(s))
    }
}
