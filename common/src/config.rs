//! Configuration from the environment, with defaults that match the local stack (`shoplog up`).
//!
//! Every binary reads the same variables, so a service, the log parser and the CLI started in the
//! same shell agree on where everything is. The README has the table of variables.

use std::time::Duration;

/// Default ports of the local stack. The CLI starts components on these; the services fall back to
/// them when the corresponding variable is unset. Kept in one place so they cannot drift apart.
pub mod defaults {
    /// The nginx gateway.
    pub const GATEWAY_PORT: u16 = 8000;
    /// First replica of the order service (replica `k` listens on `ORDER_PORT + 10 * k`).
    pub const ORDER_PORT: u16 = 8101;
    /// First replica of the stock service.
    pub const STOCK_PORT: u16 = 8102;
    /// First replica of the payment service.
    pub const PAYMENT_PORT: u16 = 8103;
    /// The ID service.
    pub const IDS_PORT: u16 = 8104;
    /// The log parser's health/metrics endpoint.
    pub const LOGPARSER_PORT: u16 = 8105;
    /// order-db, stock-db, payment-db.
    pub const ORDER_DB_PORT: u16 = 6401;
    pub const STOCK_DB_PORT: u16 = 6402;
    pub const PAYMENT_DB_PORT: u16 = 6403;
    /// The three Redlock nodes.
    pub const LOCK_PORTS: [u16; 3] = [6411, 6412, 6413];
}

/// Settings shared by every shoplog process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds to (`BIND`, default `127.0.0.1`).
    pub bind: String,
    /// Port the HTTP server listens on (`PORT`, default depends on the service).
    pub port: u16,
    /// `ORDER_DB_URL`
    pub order_db_url: String,
    /// `STOCK_DB_URL`
    pub stock_db_url: String,
    /// `PAYMENT_DB_URL`
    pub payment_db_url: String,
    /// `LOCK_URLS`: comma-separated Redis URLs of the Redlock nodes.
    pub lock_urls: Vec<String>,
    /// `IDS_URL`: base URL of the ID service.
    pub ids_url: String,
    /// `STOCK_URL`: base URL the order service uses to look up item prices.
    pub stock_url: String,
    /// `ID_BLOCK`: how many ids a service leases from the ID service at a time.
    pub id_block: usize,
    /// `CHECKOUT_TIMEOUT_MS`: how long a checkout may stay undecided before it is aborted.
    pub checkout_timeout: Duration,
    /// `SAGA_TIMEOUT_MS`: how long the log parser lets a saga sit in `CHECKING_OUT`.
    pub saga_timeout: Duration,
    /// `RECOVERY_INTERVAL_MS`: the log parser's pass interval.
    pub recovery_interval: Duration,
    /// `REDRIVE_AFTER_MS`: how long after `SAGA_TIMEOUT` an aborted saga's unconfirmed
    /// compensations are re-driven (and at most how often).
    pub redrive_after: Duration,
    /// `CLAIM_IDLE_MS`: how long a log entry may stay pending on a consumer before another one
    /// takes it over.
    pub claim_idle: Duration,
    /// `MAX_DELIVERIES`: deliveries after which a failing entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// `LEASE_TTL_MS`: the log parser's Redlock lease.
    pub lease_ttl: Duration,
    /// `INSTANCE`: a name for this process, used as its consumer name (default `<host>-<pid>`).
    pub instance: String,
}

impl Config {
    /// Reads the configuration; `default_port` is the service's own port when `PORT` is unset.
    pub fn from_env(default_port: u16) -> Config {
        use defaults::*;
        let redis = |var: &str, port: u16| env_or(var, format!("redis://127.0.0.1:{port}/"));
        let lock_urls = env_or(
            "LOCK_URLS",
            LOCK_PORTS
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}/"))
                .collect::<Vec<_>>()
                .join(","),
        );
        Config {
            bind: env_or("BIND", "127.0.0.1".to_string()),
            port: env_parse("PORT", default_port),
            order_db_url: redis("ORDER_DB_URL", ORDER_DB_PORT),
            stock_db_url: redis("STOCK_DB_URL", STOCK_DB_PORT),
            payment_db_url: redis("PAYMENT_DB_URL", PAYMENT_DB_PORT),
            lock_urls: lock_urls
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            ids_url: env_or("IDS_URL", format!("http://127.0.0.1:{IDS_PORT}")),
            stock_url: env_or("STOCK_URL", format!("http://127.0.0.1:{STOCK_PORT}")),
            id_block: env_parse("ID_BLOCK", 1000),
            checkout_timeout: Duration::from_millis(env_parse("CHECKOUT_TIMEOUT_MS", 10_000)),
            saga_timeout: Duration::from_millis(env_parse("SAGA_TIMEOUT_MS", 30_000)),
            recovery_interval: Duration::from_millis(env_parse("RECOVERY_INTERVAL_MS", 5_000)),
            redrive_after: Duration::from_millis(env_parse("REDRIVE_AFTER_MS", 10_000)),
            claim_idle: Duration::from_millis(env_parse("CLAIM_IDLE_MS", 5_000)),
            max_deliveries: env_parse("MAX_DELIVERIES", 10),
            lease_ttl: Duration::from_millis(env_parse("LEASE_TTL_MS", 5_000)),
            instance: env_or("INSTANCE", format!("{}-{}", hostname(), std::process::id())),
        }
    }

    /// The socket address to listen on.
    pub fn listen_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let addr = format!("{}:{}", self.bind, self.port);
        addr.parse()
            .map_err(|e| anyhow::anyhow!("BIND/PORT give `{addr}`, not a socket address: {e}"))
    }
}

fn env_or(var: &str, default: String) -> String {
    std::env::var(var)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(default)
}

fn env_parse<T: std::str::FromStr + Copy>(var: &str, default: T) -> T {
    match std::env::var(var) {
        Ok(v) if !v.is_empty() => match v.parse() {
            Ok(parsed) => parsed,
            Err(_) => {
                tracing::warn!(variable = var, value = %v, "not a valid number; using the default");
                default
            }
        },
        _ => default,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string())
}
