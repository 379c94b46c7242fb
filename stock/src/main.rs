//! `stock` — the stock service binary. Configuration: see the README (`PORT`, `STOCK_DB_URL`, ...).

fn main() -> anyhow::Result<()> {
    common::runtime::run_service(
        "stock",
        common::config::defaults::STOCK_PORT,
        |config| async move { stock::Stock::start(&config).await },
    )
}
