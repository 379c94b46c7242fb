//! `order` — the order service binary. Configuration: see the README (`PORT`, `ORDER_DB_URL`, ...).

fn main() -> anyhow::Result<()> {
    common::runtime::run_service(
        "order",
        common::config::defaults::ORDER_PORT,
        |config| async move { order::Order::start(&config).await },
    )
}
