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
//! - **Hash tags.** A partition's keys carry its tag `{<letter><k>.<n>}` (`order:{o3.60}:<id>`,
//!   `log:order:{o3.60}`), so Redis Cluster puts all of them in one hash slot: every script's keys
//!   share a slot. `n` is the smallest number that puts partition `k`'s slot in the `k`-th of `P`
//!   equal slices of the 16,384 slots ([`tags`]). A cluster created with even slot ranges (what
//!   `redis-cli --cluster create` does) so holds `P/N` partitions on each of its `N` primaries, ±1,
//!   and so their share of the work: with bare tags (`{o3}`) the CRC16 slots of 16 partitions fell
//!   3/5/8 on three shards.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, OnceLock};

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

/// Redis Cluster's number of hash slots.
const SLOTS: u32 = 16_384;

/// The hash tags of `p` partitions whose tags start with `letter`: partition `k`'s tag is
/// `{<letter><k>.<n>}` for the smallest `n` whose hash slot lies in `[k·16384/p, (k+1)·16384/p)`.
/// Computed once per `(letter, p)` in a process (a search of ~`p` CRC16s per partition) and kept.
pub fn tags(letter: char, p: u32) -> &'static [String] {
    /// The tags computed so far, by letter and `P` (leaked: a process uses a handful).
    type Computed = HashMap<(char, u32), &'static [String]>;
    static TAGS: OnceLock<Mutex<Computed>> = OnceLock::new();
    let cache = TAGS.get_or_init(Default::default);
    let mut cache = cache
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    cache.entry((letter, p)).or_insert_with(|| {
        let found: Vec<String> = (0..p)
            .map(|k| {
                let slice = (k * SLOTS / p)..((k + 1) * SLOTS / p);
                (0u32..)
                    .map(|n| format!("{{{letter}{k}.{n}}}"))
                    .find(|tag| slice.contains(&u32::from(crate::db::key_slot(tag))))
                    .unwrap_or_default() // every slice is hit: CRC16 reaches every slot
            })
            .collect();
        Box::leak(found.into_boxed_slice())
    })
}

/// How a service's keys are partitioned: its tag letter, its `P` and its partitions' tags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The service (`order`, `stock`, `payment`, or a participant a table adds).
    pub service: &'static str,
    /// Its number of partitions.
    pub p: u32,
    /// The hash tag of each partition ([`tags`]).
    tags: &'static [String],
}

impl Layout {
    /// The layout of `service` with `p` partitions (clamped to 1..=[`MAX`]).
    pub fn new(service: &'static str, p: u32) -> Layout {
        let p = p.clamp(1, MAX);
        let letter = service.chars().next().unwrap_or('x');
        Layout {
            service,
            p,
            tags: tags(letter, p),
        }
    }

    /// The partition of `id`.
    pub fn part(&self, id: &str) -> u32 {
        of(id, self.p)
    }

    /// Every partition, in order.
    pub fn parts(&self) -> std::ops::Range<u32> {
        0..self.p
    }

    /// The hash tag of partition `part`: `{o3.60}` ([`tags`]); `part` must be below `p`.
    pub fn tag(&self, part: u32) -> &'static str {
        self.tags
            .get(part as usize)
            .map(String::as_str)
            .unwrap_or("{?}")
    }

    /// The partition whose tag is `tag` (`{o3.60}` → 3), if it is one of this layout's.
    pub fn part_of_tag(&self, tag: &str) -> Option<u32> {
        let digits = tag.strip_prefix('{')?.get(1..)?.split('.').next()?;
        let part: u32 = digits.parse().ok()?;
        (self.tag(part) == tag).then_some(part)
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
    /// The database holds the layout of an earlier version (one stream, or partitions tagged `{o3}`).
    #[error("{service}-db holds the key layout of an earlier shoplog (`{legacy}` exists): this version cannot read it. Keep running the earlier version, or start from an empty database (`shoplog down --wipe`)")]
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
/// another stored `P` or the layouts of earlier versions (one stream `log:<service>`, or partition
/// 0's stream under the bare tag `{o0}`). Returns the layout.
pub async fn ensure(
    conn: &mut Conn,
    service: &'static str,
    configured: u32,
) -> Result<Layout, LayoutError> {
    let letter = service.chars().next().unwrap_or('x');
    for legacy in [
        format!("log:{service}"),
        format!("log:{service}:{{{letter}0}}"),
    ] {
        let exists: bool = redis::cmd("EXISTS").arg(&legacy).query_async(conn).await?;
        if exists {
            return Err(LayoutError::Legacy { service, legacy });
        }
    }
    if stored(conn, service).await?.is_none() {
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
        assert_eq!(l.part("42"), of("42", 16));
    }

    #[test]
    fn partition_k_of_p_has_its_slot_in_the_kth_slice_of_the_slot_space() {
        for p in [1, 2, 3, 16, 64, MAX] {
            let l = Layout::new("stock", p);
            for k in l.parts() {
                let tag = l.tag(k);
                assert!(tag.starts_with(&format!("{{s{k}.")), "{tag}");
                let slot = u32::from(crate::db::key_slot(tag));
                assert!(
                    (k * SLOTS / p..(k + 1) * SLOTS / p).contains(&slot),
                    "P={p}: partition {k}'s tag {tag} has slot {slot}"
                );
                assert_eq!(l.part_of_tag(tag), Some(k));
            }
        }
        // Fixed values: the tags are part of the on-disk layout and must never change.
        let l = Layout::new("order", 16);
        assert_eq!(
            (l.tag(0), l.tag(3), l.tag(15)),
            ("{o0.43}", "{o3.60}", "{o15.43}")
        );
        assert_eq!(l.part_of_tag("{o3}"), None);
        assert_eq!(l.part_of_tag("{s3.0}"), None);
    }

    #[test]
    fn three_even_shards_hold_five_or_six_of_sixteen_partitions_each() {
        let l = Layout::new("order", 16);
        let mut per_shard = [0; 3];
        for k in l.parts() {
            let slot = u32::from(crate::db::key_slot(l.tag(k)));
            per_shard[(slot * 3 / SLOTS) as usize] += 1;
        }
        per_shard.sort();
        assert_eq!(per_shard, [5, 5, 6]);
    }
}
