//! `ids` — the ID service binary. Configuration: `PORT` (default 8104), `BIND`.

use std::sync::Arc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    common::telemetry::init("ids");
    let config = common::config::Config::from_env(common::config::defaults::IDS_PORT)?;
    common::http::serve(Arc::new(ids::Ids::default()), config.listen_addr()?).await
}
