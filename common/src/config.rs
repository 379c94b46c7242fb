//! Configuration from the environment, with defaults that match the local stack (`shoplog up`).
//!
//! Every binary reads the same variables, so a service, the log parser and the CLI started in the
//! same shell agree on where everything is. The README has the table of variables.

use std::time::Duration;

/// Default ports of the local stack. The CLI starts components on these; the services fall back to
/// them when the corresponding variable is unset. Kept in one place so they cannot drift apart.
pub mod defaults {
    /// The nginx gateway.
    pub const GATEWAY_PORT: u16 = 8000;
    /// First replica of the order service (replica `k` listens on `ORDER_PORT + 10 * k`).
    pub const ORDER_PORT: u16 = 8101;
    /// First replica of the stock service.
    pub const STOCK_PORT: u16 = 8102;
    /// First replica of the payment service.
    pub const PAYMENT_PORT: u16 = 8103;
    /// The ID service.
    pub const IDS_PORT: u16 = 8104;
    /// The log parser's health/metrics endpoint.
    pub const LOGPARSER_PORT: u16 = 8105;
    /// order-db, stock-db, payment-db.
    pub const ORDER_DB_PORT: u16 = 6401;
    pub const STOCK_DB_PORT: u16 = 6402;
    pub const PAYMENT_DB_PORT: u16 = 6403;
    /// The three Redlock nodes.
    pub const LOCK_PORTS: [u16; 3] = [6411, 6412, 6413];
}

/// Settings shared by every shoplog process.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address the HTTP server binds to (`BIND`, default `127.0.0.1`).
    pub bind: String,
    /// Port the HTTP server listens on (`PORT`, default depends on the service).
    pub port: u16,
    /// `ORDER_DB_URL`
    pub order_db_url: String,
    /// `STOCK_DB_URL`
    pub stock_db_url: String,
    /// `PAYMENT_DB_URL`
    pub payment_db_url: String,
    /// `LOCK_URLS`: comma-separated Redis URLs of the Redlock nodes.
    pub lock_urls: Vec<String>,
    /// `IDS_URL`: base URL of the ID service.
    pub ids_url: String,
    /// `STOCK_URL`: base URL the order service uses to look up item prices.
    pub stock_url: String,
    /// `ID_BLOCK`: how many ids a service leases from the ID service at a time.
    pub id_block: usize,
    /// `CHECKOUT_TIMEOUT_MS`: how long a checkout may stay undecided before it is aborted.
    pub checkout_timeout: Duration,
    /// `SAGA_TIMEOUT_MS`: how long the log parser lets a saga sit in `CHECKING_OUT`.
    pub saga_timeout: Duration,
    /// `RECOVERY_INTERVAL_MS`: the log parser's pass interval.
    pub recovery_interval: Duration,
    /// `REDRIVE_AFTER_MS`: how long after `SAGA_TIMEOUT` an aborted saga's unconfirmed
    /// compensations are re-driven (and at most how often).
    pub redrive_after: Duration,
    /// `CLAIM_IDLE_MS`: how long a log entry may stay pending on a consumer before another one
    /// takes it over.
    pub claim_idle: Duration,
    /// `MAX_DELIVERIES`: deliveries after which a failing entry goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// `REPLICA_ACKS` and `REPLICA_ACK_TIMEOUT_MS`: how many replicas of a database must hold a
    /// change before it is acknowledged (0: acknowledge once the primary has it), and how long
    /// to wait for them (default 5 s: longer than a replica's restart and resynchronisation, so
    /// that a replica restarted by its supervisor costs its shard latency, not errors).
    pub replication: crate::db::Replication,
    /// `IDEMPOTENCY_TTL_SECS`: how long the first answer to a request carrying an
    /// `Idempotency-Key` is kept and answered again (default
    /// [`crate::idempotency::DEFAULT_TTL_SECS`], one hour; at least 1 s).
    pub idempotency_ttl: Duration,
    /// `LEASE_TTL_MS`: the log parser's Redlock lease.
    pub lease_ttl: Duration,
    /// `INSTANCE`: a name for this process, used as its consumer name (default `<host>-<pid>`).
    pub instance: String,
    /// `ORDER_PARTITIONS`, `STOCK_PARTITIONS`, `PAYMENT_PARTITIONS`: how many partitions a service
    /// initialises its database with (default [`crate::partition::DEFAULT`]); a database already
    /// initialised with another number makes the service refuse to start.
    pub partitions: [u32; 3],
    /// `ARCHIVE_DIR`: where the log parser keeps the log archive and readers find it (default
    /// `archive`, relative to the working directory; `shoplog up` sets `<data dir>/archive`).
    pub archive_dir: std::path::PathBuf,
    /// `LOG_RETAIN`: how long log entries and final saga records stay in Redis before the log
    /// parser archives them (`90s`, `5m`, `500ms`; default 5 minutes; `off`: never).
    pub log_retain: Option<Duration>,
    /// `CONSOLE_TOKEN`: the operator token the console's actions need (`/console/`, served by
    /// the log parser). Unset or empty: the console is read-only.
    pub console_token: Option<String>,
    /// `CONSOLE_SCRAPE`: the services whose metrics the console's overview reads, as
    /// comma-separated `name=base-url` pairs (each replica its own pair; a name may repeat).
    /// Default: one of each service at its default port.
    pub console_scrape: Vec<(String, String)>,
    /// `WORKER_THREADS`: the threads a service's async runtime runs on; `None` (unset): tokio's
    /// default, a worker per core. `1` runs every task on the main thread. See
    /// [`crate::runtime`] for what each costs.
    pub worker_threads: Option<usize>,
}

/// The services the console scrapes when `CONSOLE_SCRAPE` is unset: one of each, at its default
/// port, named by its path prefix.
fn default_scrape() -> Vec<(String, String)> {
    use defaults::*;
    [
        ("orders", ORDER_PORT),
        ("stock", STOCK_PORT),
        ("payment", PAYMENT_PORT),
        ("ids", IDS_PORT),
    ]
    .iter()
    .map(|(n, p)| (n.to_string(), format!("http://127.0.0.1:{p}")))
    .collect()
}

/// Parses `CONSOLE_SCRAPE` (`name=url,name=url`); `None` when a pair is malformed.
pub fn parse_scrape(v: &str) -> Option<Vec<(String, String)>> {
    v.split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (name, url) = pair.split_once('=')?;
            let (name, url) = (name.trim(), url.trim().trim_end_matches('/'));
            let ok = !name.is_empty()
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && (url.starts_with("http://") || url.starts_with("https://"));
            ok.then(|| (name.to_string(), url.to_string()))
        })
        .collect()
}

/// The default of `LOG_RETAIN`.
pub const DEFAULT_LOG_RETAIN: Duration = Duration::from_secs(300);

/// Parses a duration written `500ms`, `90s`, `5m` or `2h` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "" | "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// Why the environment does not make a configuration. Returned by [`Config::from_env`] so that a
/// process stops at start-up naming the variable, instead of running with a default the operator
/// did not ask for (a warning in a log file the CLI never shows is easy to miss).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A variable is set (non-empty) to something that does not parse as what it holds.
    #[error("{var}=`{value}` is not {expected}; unset it or give e.g. {example}")]
    Invalid {
        /// The variable's name, e.g. `CHECKOUT_TIMEOUT_MS`.
        var: &'static str,
        /// The value as set.
        value: String,
        /// What the variable holds, e.g. "a number of milliseconds".
        expected: &'static str,
        /// A value that would parse (the default, where there is one).
        example: String,
    },
    /// A variable is set to bytes that are not UTF-8, so it cannot be read at all.
    #[error("{var}=`{value}` is not valid UTF-8; unset it or give a UTF-8 value")]
    NotUnicode {
        /// The variable's name.
        var: &'static str,
        /// The value, with the invalid bytes replaced by U+FFFD.
        value: String,
    },
}

/// How long past `CHECKOUT_TIMEOUT_MS` a checkout may take to answer: the abort it decides at
/// the timeout and the answer itself. The order service answers every checkout within
/// timeout + grace of its arrival at the gateway.
pub const CHECKOUT_GRACE: Duration = Duration::from_millis(1000);

/// How long the gateway waits for a checkout's answer before it takes the replica for frozen
/// (a paused process, a cut-off link: the connection is open but nothing comes) and moves the
/// checkout to another replica: the order service's own bound, timeout + [`CHECKOUT_GRACE`], and
/// half a second for a loaded machine. The replica it moves to gives the late checkout a short
/// budget of its own (`order::checkout::LATE_BUDGET`).
pub fn checkout_read_timeout(checkout_timeout: Duration) -> Duration {
    checkout_timeout + CHECKOUT_GRACE + Duration::from_millis(500)
}

impl Config {
    /// Reads the configuration from the process environment; `default_port` is the service's own
    /// port when `PORT` is unset. Unset or empty variables take their defaults; a variable set to
    /// something that does not parse is an error naming it, so a binary refuses to start.
    pub fn from_env(default_port: u16) -> Result<Config, ConfigError> {
        Config::build(default_port, |var| match std::env::var(var) {
            Ok(v) => Ok(Some(v)),
            Err(std::env::VarError::NotPresent) => Ok(None),
            Err(std::env::VarError::NotUnicode(raw)) => Err(ConfigError::NotUnicode {
                var,
                value: raw.to_string_lossy().into_owned(),
            }),
        })
    }

    /// [`Config::from_env`] with the variables read through `lookup` (`None` for unset) instead of
    /// from the process environment, which is global: tests pass a map and can run in parallel.
    pub fn from_lookup(
        default_port: u16,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        Config::build(default_port, |var| Ok(lookup(var)))
    }

    /// The one place the variables, their defaults and their parsing are listed.
    fn build(
        default_port: u16,
        lookup: impl Fn(&'static str) -> Result<Option<String>, ConfigError>,
    ) -> Result<Config, ConfigError> {
        use defaults::*;
        let env = Env(lookup);
        let redis =
            |var: &'static str, port: u16| env.string_or(var, format!("redis://127.0.0.1:{port}/"));
        let millis = |var: &'static str, default: u64| {
            env.parse_or(var, default, "a number of milliseconds", default)
                .map(Duration::from_millis)
        };
        // The CLI reads the configuration with port 0 (it serves nothing): suggest a real one.
        let port_example = if default_port == 0 {
            ORDER_PORT
        } else {
            default_port
        };
        let partitions = |var: &'static str| -> Result<u32, ConfigError> {
            let p: u32 = env.parse_or(
                var,
                crate::partition::DEFAULT,
                "a number of partitions (1 to 1024)",
                crate::partition::DEFAULT,
            )?;
            if (1..=crate::partition::MAX).contains(&p) {
                Ok(p)
            } else {
                Err(ConfigError::Invalid {
                    var,
                    value: p.to_string(),
                    expected: "a number of partitions (1 to 1024)",
                    example: crate::partition::DEFAULT.to_string(),
                })
            }
        };
        let lock_urls = env.string_or(
            "LOCK_URLS",
            LOCK_PORTS
                .iter()
                .map(|p| format!("redis://127.0.0.1:{p}/"))
                .collect::<Vec<_>>()
                .join(","),
        )?;
        Ok(Config {
            bind: env.string_or("BIND", "127.0.0.1".to_string())?,
            port: env.parse_or(
                "PORT",
                default_port,
                "a port number (0 to 65535)",
                port_example,
            )?,
            order_db_url: redis("ORDER_DB_URL", ORDER_DB_PORT)?,
            stock_db_url: redis("STOCK_DB_URL", STOCK_DB_PORT)?,
            payment_db_url: redis("PAYMENT_DB_URL", PAYMENT_DB_PORT)?,
            lock_urls: lock_urls
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            ids_url: env.string_or("IDS_URL", format!("http://127.0.0.1:{IDS_PORT}"))?,
            stock_url: env.string_or("STOCK_URL", format!("http://127.0.0.1:{STOCK_PORT}"))?,
            id_block: env.parse_or("ID_BLOCK", 1000, "a whole number of ids", 1000)?,
            checkout_timeout: millis("CHECKOUT_TIMEOUT_MS", 10_000)?,
            saga_timeout: millis("SAGA_TIMEOUT_MS", 30_000)?,
            recovery_interval: millis("RECOVERY_INTERVAL_MS", 5_000)?,
            redrive_after: millis("REDRIVE_AFTER_MS", 10_000)?,
            claim_idle: millis("CLAIM_IDLE_MS", 5_000)?,
            replication: crate::db::Replication {
                acks: env.parse_or("REPLICA_ACKS", 0, "a whole number of replicas", 0)?,
                timeout: millis("REPLICA_ACK_TIMEOUT_MS", 5_000)?,
            },
            max_deliveries: env.parse_or(
                "MAX_DELIVERIES",
                10,
                "a whole number of deliveries",
                10,
            )?,
            idempotency_ttl: Duration::from_secs(env.at_least_one(
                "IDEMPOTENCY_TTL_SECS",
                crate::idempotency::DEFAULT_TTL_SECS,
                "a number of seconds (at least 1)",
            )?),
            lease_ttl: millis("LEASE_TTL_MS", 5_000)?,
            instance: env
                .string_or("INSTANCE", format!("{}-{}", hostname(), std::process::id()))?,
            partitions: [
                partitions("ORDER_PARTITIONS")?,
                partitions("STOCK_PARTITIONS")?,
                partitions("PAYMENT_PARTITIONS")?,
            ],
            archive_dir: env.string_or("ARCHIVE_DIR", "archive".into())?.into(),
            log_retain: match env.get("LOG_RETAIN")? {
                None => Some(DEFAULT_LOG_RETAIN),
                Some(v) if v.trim() == "off" => None,
                Some(v) => Some(parse_duration(&v).ok_or(ConfigError::Invalid {
                    var: "LOG_RETAIN",
                    value: v,
                    expected: "a duration (500ms, 90s, 5m, 2h) or `off`",
                    example: "5m".into(),
                })?),
            },
            console_token: env
                .get("CONSOLE_TOKEN")?
                .map(|t| t.trim().to_string())
                .filter(|t| !t.is_empty()),
            console_scrape: match env.get("CONSOLE_SCRAPE")? {
                None => default_scrape(),
                Some(v) => parse_scrape(&v).ok_or(ConfigError::Invalid {
                    var: "CONSOLE_SCRAPE",
                    value: v,
                    expected: "comma-separated name=url pairs",
                    example: "orders=http://127.0.0.1:8101,stock=http://127.0.0.1:8102".into(),
                })?,
            },
            // Unset stays unset (tokio's default); set, it is checked like any count.
            worker_threads: match env.get("WORKER_THREADS")? {
                None => None,
                Some(_) => Some(env.at_least_one(
                    "WORKER_THREADS",
                    1,
                    "a whole number of threads (at least 1)",
                )? as usize),
            },
        })
    }

    /// The number of partitions `service` initialises its database with (the default for a
    /// participant this configuration does not name).
    pub fn partitions_of(&self, service: &str) -> u32 {
        match service {
            "order" => self.partitions[0],
            "stock" => self.partitions[1],
            "payment" => self.partitions[2],
            _ => crate::partition::DEFAULT,
        }
    }

    /// The socket address to listen on.
    pub fn listen_addr(&self) -> anyhow::Result<std::net::SocketAddr> {
        let addr = format!("{}:{}", self.bind, self.port);
        addr.parse()
            .map_err(|e| anyhow::anyhow!("BIND/PORT give `{addr}`, not a socket address: {e}"))
    }
}

/// The variables as `lookup` gives them, with an empty value counting as unset.
struct Env<L>(L);

impl<L: Fn(&'static str) -> Result<Option<String>, ConfigError>> Env<L> {
    /// The value of `var` if set and non-empty.
    fn get(&self, var: &'static str) -> Result<Option<String>, ConfigError> {
        Ok((self.0)(var)?.filter(|v| !v.is_empty()))
    }

    /// `var` as set, else `default`.
    fn string_or(&self, var: &'static str, default: String) -> Result<String, ConfigError> {
        Ok(self.get(var)?.unwrap_or(default))
    }

    /// `var` parsed (surrounding blanks ignored), else `default`; the error suggests `example`.
    fn parse_or<T>(
        &self,
        var: &'static str,
        default: T,
        expected: &'static str,
        example: T,
    ) -> Result<T, ConfigError>
    where
        T: std::str::FromStr + std::fmt::Display,
    {
        match self.get(var)? {
            None => Ok(default),
            Some(value) => value.trim().parse().map_err(|_| ConfigError::Invalid {
                var,
                value,
                expected,
                example: example.to_string(),
            }),
        }
    }

    /// `var` as a whole number of at least 1, else `default` (which the error suggests): for
    /// the variables where 0 would mean nothing (keep no answer, run on no thread).
    fn at_least_one(
        &self,
        var: &'static str,
        default: u64,
        expected: &'static str,
    ) -> Result<u64, ConfigError> {
        match self.parse_or(var, default, expected, default)? {
            0 => Err(ConfigError::Invalid {
                var,
                value: "0".into(),
                expected,
                example: default.to_string(),
            }),
            n => Ok(n),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".to_string())
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// The configuration from `vars` alone (the process environment is shared by parallel tests).
    fn config(default_port: u16, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(default_port, |var| vars.get(var).cloned())
    }

    #[test]
    fn unset_or_empty_variables_take_the_defaults() {
        for vars in [
            &[][..],
            &[
                ("PORT", ""),
                ("CHECKOUT_TIMEOUT_MS", ""),
                ("ID_BLOCK", ""),
                ("BIND", ""),
                ("WORKER_THREADS", ""),
            ][..],
        ] {
            let c = config(defaults::STOCK_PORT, vars).unwrap();
            assert_eq!(c.bind, "127.0.0.1");
            assert_eq!(c.port, defaults::STOCK_PORT);
            assert_eq!(c.id_block, 1000);
            assert_eq!(c.checkout_timeout, Duration::from_millis(10_000));
            assert_eq!(c.saga_timeout, Duration::from_millis(30_000));
            assert_eq!(c.max_deliveries, 10);
            assert_eq!(c.lock_urls.len(), 3);
            assert_eq!(c.order_db_url, "redis://127.0.0.1:6401/");
            assert_eq!(c.idempotency_ttl, Duration::from_secs(3600));
            assert_eq!(c.worker_threads, None);
        }
    }

    #[test]
    fn good_values_parse() {
        let c = config(
            defaults::ORDER_PORT,
            &[
                ("PORT", " 9000 "),
                ("CHECKOUT_TIMEOUT_MS", "5000"),
                ("ID_BLOCK", "50"),
                ("MAX_DELIVERIES", "3"),
                ("LOCK_URLS", "redis://a/, redis://b/,"),
                ("INSTANCE", "order-1"),
                ("IDEMPOTENCY_TTL_SECS", "2"),
                ("WORKER_THREADS", "3"),
            ],
        )
        .unwrap();
        assert_eq!(c.idempotency_ttl, Duration::from_secs(2));
        assert_eq!(c.worker_threads, Some(3));
        assert_eq!(c.port, 9000);
        assert_eq!(c.checkout_timeout, Duration::from_millis(5000));
        assert_eq!(c.id_block, 50);
        assert_eq!(c.max_deliveries, 3);
        assert_eq!(c.lock_urls, ["redis://a/", "redis://b/"]);
        assert_eq!(c.instance, "order-1");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_variable_and_the_value() {
        let err = config(defaults::ORDER_PORT, &[("CHECKOUT_TIMEOUT_MS", "abc")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "CHECKOUT_TIMEOUT_MS=`abc` is not a number of milliseconds; unset it or give e.g. 10000"
        );
        for (var, value) in [
            ("PORT", "99999"),
            ("ID_BLOCK", "-3"),
            ("MAX_DELIVERIES", "x"),
            ("SAGA_TIMEOUT_MS", "30s"),
            ("LEASE_TTL_MS", "1.5"),
            ("IDEMPOTENCY_TTL_SECS", "0"),
            ("IDEMPOTENCY_TTL_SECS", "1h"),
            ("WORKER_THREADS", "0"),
            ("WORKER_THREADS", "two"),
        ] {
            let err = config(defaults::ORDER_PORT, &[(var, value)]).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { var: v, value: x, .. } if *v == var && x == value),
                "{var}={value}: {err:?}"
            );
            assert!(
                err.to_string()
                    .starts_with(&format!("{var}=`{value}` is not ")),
                "{err}"
            );
        }
    }

    #[test]
    fn the_port_example_is_a_real_port_even_for_the_cli() {
        let err = config(0, &[("PORT", "99999")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "PORT=`99999` is not a port number (0 to 65535); unset it or give e.g. 8101"
        );
    }
}
