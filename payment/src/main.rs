//! `payment` — the payment service binary. Configuration: see the README (`PORT`, `PAYMENT_DB_URL`, ...).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("payment");
    let config = common::config::Config::from_env(common::config::defaults::PAYMENT_PORT)?;
    let service = payment::Payment::start(&config).await?;
    common::http::serve(service, config.listen_addr()?).await
}
