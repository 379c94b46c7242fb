//! `ids` — the ID service binary. Configuration: `PORT` (default 8104), `BIND`.

use std::sync::Arc;

fn main() -> anyhow::Result<()> {
    common::runtime::run_service("ids", common::config::defaults::IDS_PORT, |_| async {
        Ok(Arc::new(ids::Ids::default()))
    })
}
