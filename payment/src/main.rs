//! `payment` — the payment service binary. Configuration: see the README (`PORT`, `PAYMENT_DB_URL`, ...).

fn main() -> anyhow::Result<()> {
    common::runtime::run_service(
        "payment",
        common::config::defaults::PAYMENT_PORT,
        |config| async move { payment::Payment::start(&config).await },
    )
}
