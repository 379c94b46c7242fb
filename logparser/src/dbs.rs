//! Connections to the service databases, as the log parser and the CLI need them: order-db and
//! the database of every participant of the saga's table.

use std::collections::BTreeMap;
use std::time::Duration;

use common::config::Config;
use common::consumer::DbUrls;
use common::db::Conn;
use common::partition::Layout;
use common::saga::{Participant, ORDER, PARTICIPANTS};

use crate::replay::ServiceLog;

/// One connection per service database.
#[derive(Clone)]
pub struct Dbs {
    /// order-db.
    pub order: Conn,
    /// The saga's participants.
    pub parts: &'static [Participant],
    /// order-db's partitions.
    pub order_layout: Layout,
    by_name: BTreeMap<&'static str, (Conn, Layout)>,
    /// The log archive's root (`ARCHIVE_DIR`), read as part of every log's history.
    pub archive: Option<std::path::PathBuf>,
}

impl Dbs {
    /// Connects to the databases of `config` ([`PARTICIPANTS`]), failing fast with a clear message
    /// when one does not answer within 3 s.
    pub async fn connect(config: &Config) -> anyhow::Result<Dbs> {
        let dbs = Dbs::connect_to(&common::consumer::db_urls(config), PARTICIPANTS).await?;
        Ok(dbs.with_archive(config.archive_dir.clone()))
    }

    /// These connections, with the log archive under `root` read as part of the logs.
    pub fn with_archive(mut self, root: std::path::PathBuf) -> Dbs {
        self.archive = Some(root);
        self
    }

    /// The archive root, when there is one.
    pub fn archive(&self) -> Option<&std::path::Path> {
        self.archive.as_deref()
    }

    /// Connects to order-db and every participant's database of `parts`, found in `urls`.
    pub async fn connect_to(urls: &DbUrls, parts: &'static [Participant]) -> anyhow::Result<Dbs> {
        let t = Duration::from_secs(3);
        let mut by_name = BTreeMap::new();
        for name in std::iter::once(ORDER).chain(parts.iter().map(|p| p.name)) {
            let url = urls
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("no database URL for `{name}`"))?;
            let mut conn = common::db::connect_once(url, &format!("{name}-db"), t).await?;
            let p = common::partition::stored(&mut conn, name).await?.ok_or_else(|| {
                anyhow::anyhow!(
                    "{name}-db has no partitions yet: its service has never started on it (is the stack up? `shoplog status`)"
                )
            })?;
            by_name.insert(name, (conn, Layout::new(name, p)));
        }
        let (order, order_layout) = by_name
            .get(ORDER)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("no order-db connection"))?;
        Ok(Dbs {
            order,
            parts,
            order_layout,
            by_name,
            archive: None,
        })
    }

    /// The database of the service named `name` (`order` or a participant's name).
    pub fn by_name(&self, name: &str) -> Option<Conn> {
        self.by_name.get(name).map(|(c, _)| c.clone())
    }

    /// The partitions of the service named `name`.
    pub fn layout(&self, name: &str) -> Option<Layout> {
        self.by_name.get(name).map(|(_, l)| *l)
    }

    /// The database and partitions of a service that has a replayable log.
    pub fn of(&self, service: ServiceLog) -> anyhow::Result<(Conn, Layout)> {
        self.by_name.get(service.name()).cloned().ok_or_else(|| {
            anyhow::anyhow!(
                "`{}` is not in this saga's participants table",
                service.name()
            )
        })
    }

    /// Every service with a log: order, then the participants in table order, as
    /// `(name, log, database, partitions)`.
    pub fn logs(&self) -> Vec<(&'static str, &'static str, Conn, Layout)> {
        std::iter::once((ORDER, common::keys::ORDER_LOG))
            .chain(self.parts.iter().map(|p| (p.name, p.log)))
            .filter_map(|(name, log)| {
                self.by_name
                    .get(name)
                    .map(|(c, l)| (name, log, c.clone(), *l))
            })
            .collect()
    }
}
