//! The local stack's layout: every component with its name, kind, port, directories and
//! environment, derived from a few settings ([`StackSettings`]). `up`, `down` and `status` all
//! derive the same layout, so they always agree on what "the stack" is.

use std::path::{Path, PathBuf};

use common::config::defaults;

/// What kind of process a component is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A `redis-server` holding a service's database (standalone).
    Redis,
    /// A `redis-server` that is one of the Redlock nodes: no data, only short-lived locks.
    LockNode,
    /// A node of the Redis Cluster that holds service `db`'s database (`shoplog up --cluster`).
    ClusterNode {
        /// The service whose database it is part of (`order`, `stock`, `payment`).
        db: &'static str,
    },
    /// A shoplog binary serving HTTP under `/<prefix>/`.
    Service {
        /// The binary's file name (next to `shoplog`).
        binary: &'static str,
        /// Its path prefix, for the health check.
        prefix: &'static str,
    },
    /// nginx, routing by prefix to the services.
    Gateway,
}

/// One process of the stack.
#[derive(Debug, Clone)]
pub struct Component {
    /// Unique name: `order-db`, `lock-1`, `ids`, `order-1`, `gateway`, ...
    pub name: String,
    /// What it is.
    pub kind: Kind,
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// Environment for services.
    pub env: Vec<(String, String)>,
}

/// The few settings that determine the layout.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct StackSettings {
    /// Where all data, logs and pid files live.
    pub data_dir: PathBuf,
    /// Added to every default port (to run two stacks side by side).
    pub port_offset: u16,
    /// The gateway's port.
    pub gateway_port: u16,
    /// Instances of order, stock and payment.
    pub replicas: u16,
    /// 0: each service database is one Redis. N > 0: each is a Redis Cluster of N primaries, each
    /// with one replica (`shoplog up --cluster --shards N`).
    #[serde(default)]
    pub shards: u16,
}

/// The first port of each service database's cluster nodes (`shoplog up --cluster`): node `i`
/// (primaries and replicas alike, `2 × shards` of them) listens on `base + i`, its cluster bus on
/// that port + 10000.
pub const CLUSTER_BASE_PORTS: [(&str, u16); 3] =
    [("order", 6500), ("stock", 6520), ("payment", 6540)];

/// At most this many primaries per cluster: `2 × shards` nodes must fit below the next base port.
pub const MAX_SHARDS: u16 = 10;

impl StackSettings {
    /// `<data>/run`: pid files and the saved settings.
    pub fn run_dir(&self) -> PathBuf {
        self.data_dir.join("run")
    }

    /// `<data>/logs`: one log file per component.
    pub fn log_dir(&self) -> PathBuf {
        self.data_dir.join("logs")
    }

    /// `<data>/<component>`: a component's own data (Redis AOF files, nginx temp files).
    pub fn component_dir(&self, name: &str) -> PathBuf {
        self.data_dir.join(name)
    }

    /// The log file of a component.
    pub fn log_file(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    fn settings_file(data_dir: &Path) -> PathBuf {
        data_dir.join("run").join("stack.json")
    }

    /// Saves the settings, so that `status` and `down` find the same layout later.
    pub fn save(&self) -> std::io::Result<()> {
        std::fs::create_dir_all(self.run_dir())?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(Self::settings_file(&self.data_dir), json)
    }

    /// The settings saved by the last `up` in `data_dir`, if any.
    pub fn load(data_dir: &Path) -> Option<StackSettings> {
        let text = std::fs::read_to_string(Self::settings_file(data_dir)).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn port(&self, default: u16) -> u16 {
        default.saturating_add(self.port_offset)
    }

    fn redis_url(&self, default_port: u16) -> String {
        format!("redis://127.0.0.1:{}/", self.port(default_port))
    }

    /// The ports of service `db`'s cluster nodes (none without `--cluster`).
    pub fn cluster_ports(&self, db: &str) -> Vec<u16> {
        let base = CLUSTER_BASE_PORTS
            .iter()
            .find(|(name, _)| *name == db)
            .map_or(0, |(_, p)| *p);
        (0..2 * self.shards).map(|i| self.port(base + i)).collect()
    }

    /// The URL of service `db`'s database at `default_port`: that Redis, or its cluster's nodes.
    fn db_url(&self, db: &str, default_port: u16) -> String {
        if self.shards == 0 {
            return self.redis_url(default_port);
        }
        let seeds: Vec<String> = self
            .cluster_ports(db)
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("{}{}", common::db::CLUSTER_SCHEME, seeds.join(","))
    }

    /// Every component, in start order (databases first, gateway last).
    pub fn components(&self) -> Vec<Component> {
        let mut out = Vec::new();
        let redis = |name: &str, port: u16| Component {
            name: name.to_string(),
            kind: Kind::Redis,
            port,
            env: Vec::new(),
        };
        if self.shards == 0 {
            out.push(redis("order-db", self.port(defaults::ORDER_DB_PORT)));
            out.push(redis("stock-db", self.port(defaults::STOCK_DB_PORT)));
            out.push(redis("payment-db", self.port(defaults::PAYMENT_DB_PORT)));
        }
        for (db, _) in CLUSTER_BASE_PORTS {
            for (i, port) in self.cluster_ports(db).into_iter().enumerate() {
                out.push(Component {
                    name: format!("{db}-db-{}", i + 1),
                    kind: Kind::ClusterNode { db },
                    port,
                    env: Vec::new(),
                });
            }
        }
        for (i, p) in defaults::LOCK_PORTS.iter().enumerate() {
            out.push(Component {
                kind: Kind::LockNode,
                ..redis(&format!("lock-{}", i + 1), self.port(*p))
            });
        }
        out.push(self.service("ids", "ids", "ids", self.port(defaults::IDS_PORT)));
        let replicated = [
            ("stock", "stock", defaults::STOCK_PORT),
            ("payment", "payment", defaults::PAYMENT_PORT),
            ("order", "orders", defaults::ORDER_PORT),
        ];
        for (binary, prefix, base) in replicated {
            for r in 0..self.replicas.max(1) {
                let port = self.port(base).saturating_add(10 * r);
                out.push(self.service(&format!("{binary}-{}", r + 1), binary, prefix, port));
            }
        }
        let mut logparser = self.service(
            "logparser",
            "logparser",
            "logparser",
            self.port(defaults::LOGPARSER_PORT),
        );
        // The console's overview reads every service replica's metrics.
        let scrape: Vec<String> = out
            .iter()
            .filter_map(|c| match c.kind {
                Kind::Service { prefix, .. } => {
                    Some(format!("{prefix}=http://127.0.0.1:{}", c.port))
                }
                _ => None,
            })
            .collect();
        logparser
            .env
            .push(("CONSOLE_SCRAPE".into(), scrape.join(",")));
        out.push(logparser);
        out.push(Component {
            name: "gateway".into(),
            kind: Kind::Gateway,
            port: self.gateway_port,
            env: Vec::new(),
        });
        out
    }

    /// The environment every shoplog process of this stack gets (services and CLI commands).
    pub fn service_env(&self) -> Vec<(String, String)> {
        let locks = defaults::LOCK_PORTS
            .iter()
            .map(|p| self.redis_url(*p))
            .collect::<Vec<_>>()
            .join(",");
        vec![
            (
                "ORDER_DB_URL".into(),
                self.db_url("order", defaults::ORDER_DB_PORT),
            ),
            (
                "STOCK_DB_URL".into(),
                self.db_url("stock", defaults::STOCK_DB_PORT),
            ),
            (
                "PAYMENT_DB_URL".into(),
                self.db_url("payment", defaults::PAYMENT_DB_PORT),
            ),
            ("LOCK_URLS".into(), locks),
            // The log parser archives the logs here; the CLI's audit, replay and saga read it.
            (
                "ARCHIVE_DIR".into(),
                self.data_dir.join("archive").display().to_string(),
            ),
            (
                "IDS_URL".into(),
                format!("http://127.0.0.1:{}", self.port(defaults::IDS_PORT)),
            ),
            // Prices go through the gateway, so that any live stock replica answers.
            (
                "STOCK_URL".into(),
                format!("http://127.0.0.1:{}", self.gateway_port),
            ),
            // On the clusters, a change counts once a replica holds it (WAIT 1), unless the
            // environment says otherwise (`REPLICA_ACKS=0 shoplog up --cluster` measures the
            // cost of waiting).
            (
                "REPLICA_ACKS".into(),
                std::env::var("REPLICA_ACKS")
                    .ok()
                    .filter(|v| !v.trim().is_empty())
                    .unwrap_or_else(|| if self.shards > 0 { "1" } else { "0" }.into()),
            ),
        ]
    }

    fn service(
        &self,
        name: &str,
        binary: &'static str,
        prefix: &'static str,
        port: u16,
    ) -> Component {
        let mut env = self.service_env();
        env.push(("PORT".into(), port.to_string()));
        env.push(("BIND".into(), "127.0.0.1".into()));
        env.push(("INSTANCE".into(), name.to_string()));
        Component {
            name: name.to_string(),
            kind: Kind::Service { binary, prefix },
            port,
            env,
        }
    }

    /// The upstream ports of each replicated service, for the gateway.
    pub fn upstreams(&self) -> Vec<(&'static str, Vec<u16>)> {
        let comps = self.components();
        crate::nginx::ROUTES
            .into_iter()
            .map(|(prefix, _, _)| {
                let ports = comps
                    .iter()
                    .filter(|c| matches!(c.kind, Kind::Service { prefix: p, .. } if p == prefix))
                    .map(|c| c.port)
                    .collect();
                (prefix, ports)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replicas_get_distinct_ports_and_names() {
        let s = StackSettings {
            data_dir: "/tmp/x".into(),
            port_offset: 0,
            gateway_port: 8000,
            replicas: 2,
            shards: 0,
        };
        let comps = s.components();
        let mut ports: Vec<u16> = comps.iter().map(|c| c.port).collect();
        ports.sort();
        ports.dedup();
        assert_eq!(ports.len(), comps.len(), "ports collide: {comps:?}");
        assert!(comps.iter().any(|c| c.name == "order-2" && c.port == 8111));
        let up = s.upstreams();
        assert_eq!(up[0], ("orders", vec![8101, 8111]));
    }
}
