//! Partitions: every entity and every saga belongs to one partition of its service, so that every
//! transition touches the keys of one partition only, and a service's data and log can be spread
//! over the shards of a Redis Cluster.
//!
//! - **The hash.** `partition(id) = FNV-1a-64(the id's UTF-8 bytes) mod P`: stable across
//!   versions, platforms and languages (a few lines in any of them; `test/helpers.py` has it too),
//!   and spreading ULIDs and the decimal ids of `batch_init` evenly.
//! - **`P` per service**, set when its database is first initialised and stored there
//!   ([`crate::keys::PARTITIONS_KEY`]); a process configured with another `P` refuses to start and
//!   says both values ([`ensure`]). Readers of another service's data or log (consumers, the log
//!   parser, the CLI) take `P` from that service's database ([`stored`]).
//! - **Default `P` = [`DEFAULT`] (16):** a partition is the unit a cluster moves between shards, so
//!   16 partitions let a service grow to 16 shards (a primary each); and a consumer reads all
//!   partitions of a log in one `XREADGROUP`, whose cost grows with the number of streams named, so
//!   more partitions than shards cost throughput for nothing. Raising `P` later means replaying the
//!   logs into a fresh database.
//! - **Hash tags.** A partition's keys carry `{<letter><k>}` (`order:{o3}:<id>`, `log:order:{o3}`),
//!   so Redis Cluster puts all of them in one hash slot: every script's keys share a slot.

use std::fmt;

use crate::db::Conn;

use crate::keys;

/// Partitions of a service when its database is initialised and nothing else is configured.
pub const DEFAULT: u32 = 16;
/// The largest `P` accepted (one stream per partition is read in one call).
pub const MAX: u32 = 1024;

/// FNV-1a, 64 bits, of `id`'s bytes.
pub fn fnv1a(id: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The partition of `id` among `p`.
pub fn of(id: &str, p: u32) -> u32 {
    (fnv1a(id) % u64::from(p.max(1))) as u32
}

/// How a service's keys are partitioned: its tag letter and its `P`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The service (`order`, `stock`, `payment`, or a participant a table adds).
    pub service: &'static str,
    /// Its number of partitions.
    pub p: u32,
}

impl Layout {
    /// The layout of `service` with `p` partitions (clamped to 1..=[`MAX`]).
    pub const fn new(service: &'static str, p: u32) -> Layout {
        let p = if p < 1 {
            1
        } else if p > MAX {
            MAX
        } else {
            p
        };
        Layout { service, p }
    }

    /// The partition of `id`.
    pub fn part(&self, id: &str) -> u32 {
        of(id, self.p)
    }

    /// Every partition, in order.
    pub fn parts(&self) -> std::ops::Range<u32> {
        0..self.p
    }

    /// The hash tag of partition `part`: `{o3}` (the service's first letter and the partition).
    pub fn tag(&self, part: u32) -> String {
        let letter = self.service.chars().next().unwrap_or('x');
        format!("{{{letter}{part}}}")
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({} partitions)", self.service, self.p)
    }
}

/// Why a database's layout does not fit this process.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The database was initialised with another `P`.
    #[error("{service}-db was initialised with {stored} partitions, but this process was started with {configured} ({var}={configured}): start it with {var}={stored}, or replay the logs into a fresh database to change it")]
    Mismatch {
        /// The service.
        service: &'static str,
        /// The variable that sets it.
        var: String,
        /// `P` stored in the database.
        stored: u32,
        /// `P` this process was given.
        configured: u32,
    },
    /// The database holds the single-stream layout of earlier versions.
    #[error("{service}-db holds the single-stream layout of an earlier shoplog (`{legacy}` exists): this version cannot read it. Keep running the earlier version, or start from an empty database (`shoplog down --wipe`)")]
    Legacy {
        /// The service.
        service: &'static str,
        /// The old stream found.
        legacy: String,
    },
    /// The stored value is not a number.
    #[error(
        "{service}-db has `{key}` = {found:?}, not a number of partitions; it was edited by hand"
    )]
    Malformed {
        /// The service.
        service: &'static str,
        /// The key.
        key: &'static str,
        /// What is there.
        found: String,
    },
    /// The database did not answer.
    #[error("database error: {0}")]
    Redis(#[from] redis::RedisError),
}

/// The variable that sets `service`'s `P` (`ORDER_PARTITIONS`).
pub fn variable(service: &str) -> String {
    format!("{}_PARTITIONS", service.to_uppercase())
}

/// `P` as stored in `service`'s database; `None` before the service first started.
pub async fn stored(conn: &mut Conn, service: &'static str) -> Result<Option<u32>, LayoutError> {
    let v: Option<String> = redis::cmd("GET")
        .arg(keys::PARTITIONS_KEY)
        .query_async(conn)
        .await?;
    match v {
        None => Ok(None),
        Some(s) => s
            .parse()
            .ok()
            .filter(|p| (1..=MAX).contains(p))
            .map(Some)
            .ok_or(LayoutError::Malformed {
                service,
                key: keys::PARTITIONS_KEY,
                found: s,
            }),
    }
}

/// Checks `service`'s database against `configured`: stores it when the database is new, refuses
/// another stored `P` or the single-stream layout of earlier versions. Returns the layout.
pub async fn ensure(
    conn: &mut Conn,
    service: &'static str,
    configured: u32,
) -> Result<Layout, LayoutError> {
    if stored(conn, service).await?.is_none() {
        let legacy = format!("log:{service}");
        let exists: bool = redis::cmd("EXISTS").arg(&legacy).query_async(conn).await?;
        if exists {
            return Err(LayoutError::Legacy { service, legacy });
        }
        let _: Option<String> = redis::cmd("SET")
            .arg(keys::PARTITIONS_KEY)
            .arg(configured)
            .arg("NX")
            .query_async(conn)
            .await?;
    }
    // Another replica may have initialised it first: the stored value decides.
    let stored = stored(conn, service).await?.unwrap_or(configured);
    if stored != configured {
        return Err(LayoutError::Mismatch {
            service,
            var: variable(service),
            stored,
            configured,
        });
    }
    Ok(Layout::new(service, stored))
}

/// The layout of `service` as its database says, waiting (retrying every second) until the
/// service has initialised it — for consumers of another service's log, which may start first.
pub async fn wait_stored(conn: &mut Conn, service: &'static str) -> Layout {
    let mut attempt = 0u32;
    loop {
        match stored(conn, service).await {
            Ok(Some(p)) => return Layout::new(service, p),
            Ok(None) => {
                if attempt.is_multiple_of(10) {
                    tracing::info!(
                        service,
                        "waiting for {service}-db to be initialised by its service"
                    );
                }
            }
            Err(e) => {
                if attempt.is_multiple_of(10) {
                    tracing::warn!(service, error = %e, "cannot read {service}-db's partitions yet");
                }
            }
        }
        attempt += 1;
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_fnv1a_64_and_spreads_ids_evenly() {
        // Reference values of FNV-1a 64 (the empty string is the offset basis).
        assert_eq!(fnv1a(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a("a"), 0xaf63_dc4c_8601_ec8c);
        let mut counts = [0u32; 16];
        for i in 0..16_000 {
            counts[of(&i.to_string(), 16) as usize] += 1;
        }
        assert!(
            counts.iter().all(|&c| (800..1200).contains(&c)),
            "{counts:?}"
        );
        assert_eq!(of("anything", 1), 0);
        let l = Layout::new("order", 16);
        assert_eq!(l.tag(3), "{o3}");
        assert_eq!(l.part("42"), of("42", 16));
    }
}
