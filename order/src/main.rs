//! `order` — the order service binary. Configuration: see the README (`PORT`, `ORDER_DB_URL`, ...).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("order");
    let config = common::config::Config::from_env(common::config::defaults::ORDER_PORT)?;
    let service = order::Order::start(&config).await?;
    common::http::serve(service, config.listen_addr()?).await
}
