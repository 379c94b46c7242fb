//! `stock` — the stock service binary. Configuration: see the README (`PORT`, `STOCK_DB_URL`, ...).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("stock");
    let config = common::config::Config::from_env(common::config::defaults::STOCK_PORT)?;
    let service = stock::Stock::start(&config).await?;
    common::http::serve(service, config.listen_addr()?).await
}
