//! The local stack's layout: every component with its name, kind, port, directories and
//! environment, derived from a few settings ([`StackSettings`]). `up`, `down` and `status` all
//! derive the same layout, so they always agree on what "the stack" is.

use std::path::{Path, PathBuf};

use common::config::defaults;

/// What kind of process a component is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// A `redis-server` (a service database or a lock node).
    Redis,
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
}

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

    /// Every component, in start order (databases first, gateway last).
    pub fn components(&self) -> Vec<Component> {
        let mut out = Vec::new();
        let redis = |name: &str, port: u16| Component {
            name: name.to_string(),
            kind: Kind::Redis,
            port,
            env: Vec::new(),
        };
        out.push(redis("order-db", self.port(defaults::ORDER_DB_PORT)));
        out.push(redis("stock-db", self.port(defaults::STOCK_DB_PORT)));
        out.push(redis("payment-db", self.port(defaults::PAYMENT_DB_PORT)));
        for (i, p) in defaults::LOCK_PORTS.iter().enumerate() {
            out.push(redis(&format!("lock-{}", i + 1), self.port(*p)));
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
        out.push(self.service(
            "logparser",
            "logparser",
            "logparser",
            self.port(defaults::LOGPARSER_PORT),
        ));
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
                self.redis_url(defaults::ORDER_DB_PORT),
            ),
            (
                "STOCK_DB_URL".into(),
                self.redis_url(defaults::STOCK_DB_PORT),
            ),
            (
                "PAYMENT_DB_URL".into(),
                self.redis_url(defaults::PAYMENT_DB_PORT),
            ),
            ("LOCK_URLS".into(), locks),
            (
                "IDS_URL".into(),
                format!("http://127.0.0.1:{}", self.port(defaults::IDS_PORT)),
            ),
            // Prices go through the gateway, so that any live stock replica answers.
            (
                "STOCK_URL".into(),
                format!("http://127.0.0.1:{}", self.gateway_port),
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
