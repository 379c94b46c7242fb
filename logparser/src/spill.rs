//! Bounded memory for replaying one partition's history when its state does not fit a budget.
//!
//! The audit replays a partition's history into a [`State`] and compares it with the database.
//! That state grows with the data (every saga record, order, item and user of the partition), so
//! when it outgrows the audit's memory budget the partition is replayed in **buckets**: every
//! key falls in one of [`SUBS`] sub-buckets by a hash of the whole key, and a [`Bucket`] is a
//! power-of-two share of them. Replaying the history with only one bucket's keys kept is exact
//! for those keys, because a log entry's effect on a key depends only on the entry and that key's
//! own earlier state (never on another key's), so each bucket needs only a bucket-sized state.
//!
//! The history is read from Redis and the archive once more into a [`Spool`], a local file of
//! length-prefixed entries, and each bucket pass reads that file instead; a bucket that still
//! outgrows the budget is split in two. Memory is then the budget plus a page of entries,
//! whatever the number of sagas, entries and entities; time grows with the number of passes.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use common::log::LogEntry;

use crate::replay::State;

/// Sub-buckets keys are hashed into (2^[`MAX_BITS`]): the finest split of a partition, and the
/// unit the audit counts the database's keys in, so that a bucket's count is a sum of them.
pub const SUBS: usize = 1 << MAX_BITS;

/// A bucket is at most this fine (1/1024 of a partition).
pub const MAX_BITS: u8 = 10;

/// The sub-bucket of `key`: a hash of the whole key (not the partition's hash of the id, so that
/// keys of one partition spread over all sub-buckets).
pub fn sub_of(key: &str) -> usize {
    let h = common::partition::fnv1a(key);
    // The partition uses the low bits of another hash of the id; mix and take high bits.
    ((h.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 40) as usize) % SUBS
}

/// A share of a partition's keys: those whose sub-bucket's low `bits` bits equal `value`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    bits: u8,
    value: usize,
}

impl Bucket {
    /// Every key: the replay keeps its whole state (what it does while the budget allows).
    pub const ALL: Bucket = Bucket { bits: 0, value: 0 };

    /// The `2^bits` buckets that together hold every key once.
    pub fn split_in(bits: u8) -> Vec<Bucket> {
        let bits = bits.min(MAX_BITS);
        (0..1usize << bits)
            .map(|value| Bucket { bits, value })
            .collect()
    }

    /// Whether `key` is in this bucket.
    pub fn holds(&self, key: &str) -> bool {
        self.bits == 0 || self.holds_sub(sub_of(key))
    }

    /// Whether sub-bucket `sub` is part of this bucket.
    pub fn holds_sub(&self, sub: usize) -> bool {
        sub & ((1 << self.bits) - 1) == self.value
    }

    /// This bucket's two halves, or `None` when it is as fine as buckets go.
    pub fn halves(&self) -> Option<[Bucket; 2]> {
        (self.bits < MAX_BITS).then(|| {
            let bits = self.bits + 1;
            [
                Bucket {
                    bits,
                    value: self.value,
                },
                Bucket {
                    bits,
                    value: self.value | (1 << self.bits),
                },
            ]
        })
    }

    /// How many of [`SUBS`] this bucket holds, as `1/n` (for progress and logs).
    pub fn share(&self) -> usize {
        1 << self.bits
    }
}

/// Heap bytes of one string of `len` bytes: nothing when empty, else the allocator's size class
/// (mimalloc's are word multiples up to 64 bytes, then about an eighth apart).
fn string_bytes(len: usize) -> usize {
    match len {
        0 => 0,
        1..=64 => (len + 7) & !7,
        _ => (len + len / 8 + 15) & !15,
    }
}

/// A `BTreeMap` node of `String` keys and values: eleven slots allocated whatever the map holds
/// (a hash of one field costs a whole node), 544 bytes rounded to mimalloc's 640-byte class.
const NODE_BYTES: usize = 640;
/// A key's share of the outer map: its slot (key and inner map, 48 bytes) in nodes that B-tree
/// splits leave about two-thirds full, and the allocator's own overhead per hash (measured: the
/// rest of the resident growth, 20–110 bytes by shape).
const SLOT_BYTES: usize = 160;

/// Heap bytes of one hash of a [`State`]: its slot in the state, its key, the node(s) of its own
/// map, and each field and value. Checked against resident memory by
/// `logparser/tests/state_bytes.rs`: an estimate that read small hashes at a third of their
/// cost let the ten-million-checkout audit pass its budget by a third.
fn hash_bytes(key: &str, h: &BTreeMap<String, String>) -> usize {
    let nodes = match h.len() {
        0 => 0,
        1..=11 => NODE_BYTES,
        n => n.div_ceil(7) * (NODE_BYTES + 128),
    };
    SLOT_BYTES
        + string_bytes(key.len())
        + nodes
        + h.iter()
            .map(|(f, v)| string_bytes(f.len()) + string_bytes(v.len()))
            .sum::<usize>()
}

/// Approximate heap bytes of `state` (the audit checks it against its budget).
pub fn state_bytes(state: &State) -> usize {
    state.iter().map(|(k, h)| hash_bytes(k, h)).sum()
}

/// Whether a replay has outgrown its budget, measured every few entries (a measure walks the
/// state, so it is not done per entry unless the budget is tiny, and the state with it).
#[derive(Debug)]
pub struct Gauge {
    budget: usize,
    every: usize,
    /// Entries until the next measure.
    next: usize,
    since: usize,
}

impl Gauge {
    /// The most entries applied between two measures (with budgets of 64 MiB and more).
    pub const EVERY: usize = 4096;

    /// A gauge of `budget` bytes: measured every `budget / 16 KiB` entries, from 1 to
    /// [`Gauge::EVERY`], so that neither the measures' cost nor the overshoot between two of them
    /// is large next to the budget.
    pub fn new(budget: usize) -> Gauge {
        let every = (budget >> 14).clamp(1, Self::EVERY);
        Gauge {
            budget,
            every,
            next: every,
            since: 0,
        }
    }

    /// Called after each entry: true once `state` is over the budget.
    ///
    /// A measure walks the whole state, so measuring at a fixed interval costs time that grows
    /// with the state (a sixteenth of a 1M-checkout audit went to it). After a measure, the next
    /// comes once the state could have reached the budget if every entry added a key twice the
    /// average size so far — and after [`Gauge::new`]'s interval at the soonest.
    pub fn over(&mut self, state: &State) -> bool {
        self.since += 1;
        if self.since < self.next {
            return false;
        }
        self.since = 0;
        let bytes = state_bytes(state);
        if bytes > self.budget {
            return true;
        }
        let per_key = bytes / state.len().max(1) + 1;
        self.next = ((self.budget - bytes) / (2 * per_key)).max(self.every);
        false
    }
}

/// A partition's history copied to a local file, so that bucket passes read it again without
/// going back to Redis and the archive. The file is deleted when the spool is dropped.
pub struct Spool {
    file: tempfile::NamedTempFile,
    out: Option<BufWriter<File>>,
    entries: u64,
}

impl Spool {
    /// An empty spool in `dir` (the audit's spill directory).
    pub fn create(dir: &Path) -> io::Result<Spool> {
        let file = tempfile::Builder::new()
            .prefix("audit-spool-")
            .tempfile_in(dir)?;
        let out = BufWriter::with_capacity(1 << 20, file.reopen()?);
        Ok(Spool {
            file,
            out: Some(out),
            entries: 0,
        })
    }

    /// Appends one entry: its stream id, then its fields, each string as a little-endian `u32`
    /// length and its bytes.
    pub fn push(&mut self, e: &LogEntry) -> io::Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(io::Error::other("the spool was already read"));
        };
        put(out, &e.stream_id)?;
        out.write_all(&(e.fields.len() as u32).to_le_bytes())?;
        for (k, v) in &e.fields {
            put(out, k)?;
            put(out, v)?;
        }
        self.entries += 1;
        Ok(())
    }

    /// Entries written.
    pub fn len(&self) -> u64 {
        self.entries
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Bytes on disk.
    pub fn bytes(&self) -> u64 {
        self.file.as_file().metadata().map(|m| m.len()).unwrap_or(0)
    }

    /// Ends writing (flushes); later reads see every entry pushed.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(mut out) = self.out.take() {
            out.flush()?;
        }
        Ok(())
    }

    /// Calls `f` on every entry, in the order pushed, with its position (0-based).
    pub fn for_each<E: From<io::Error>>(
        &mut self,
        mut f: impl FnMut(u64, &LogEntry) -> Result<(), E>,
    ) -> Result<(), E> {
        self.finish()?;
        let mut input = BufReader::with_capacity(1 << 20, self.file.reopen()?);
        for seq in 0..self.entries {
            let stream_id = get(&mut input)?;
            let n = u32::from_le_bytes(take4(&mut input)?);
            let mut fields = BTreeMap::new();
            for _ in 0..n {
                let k = get(&mut input)?;
                let v = get(&mut input)?;
                fields.insert(k, v);
            }
            f(seq, &LogEntry { stream_id, fields })?;
        }
        Ok(())
    }
}

fn put(out: &mut impl Write, s: &str) -> io::Result<()> {
    out.write_all(&(s.len() as u32).to_le_bytes())?;
    out.write_all(s.as_bytes())
}

fn take4(input: &mut impl Read) -> io::Result<[u8; 4]> {
    let mut b = [0u8; 4];
    input.read_exact(&mut b)?;
    Ok(b)
}

fn get(input: &mut impl Read) -> io::Result<String> {
    let n = u32::from_le_bytes(take4(input)?) as usize;
    let mut b = vec![0u8; n];
    input.read_exact(&mut b)?;
    String::from_utf8(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_of_a_split_hold_every_key_exactly_once() {
        for bits in [0u8, 1, 3, MAX_BITS] {
            let buckets = Bucket::split_in(bits);
            assert_eq!(buckets.len(), 1 << bits);
            for i in 0..2000 {
                let key = format!("saga:{{o3.60}}:{i:026}");
                let holding = buckets.iter().filter(|b| b.holds(&key)).count();
                assert_eq!(holding, 1, "{key} with {bits} bits");
            }
        }
    }

    #[test]
    fn halves_partition_their_bucket_and_stop_at_the_finest() {
        let b = Bucket::split_in(2)[3];
        let [x, y] = b.halves().unwrap_or([Bucket::ALL, Bucket::ALL]);
        for i in 0..2000 {
            let key = format!("item:{{s1.4}}:{i}");
            assert_eq!(b.holds(&key), x.holds(&key) || y.holds(&key));
            assert!(!(x.holds(&key) && y.holds(&key)));
        }
        assert!(Bucket::split_in(MAX_BITS)[0].halves().is_none());
    }

    #[test]
    fn keys_spread_over_buckets() {
        let buckets = Bucket::split_in(3);
        let mut counts = [0usize; 8];
        for i in 0..8000 {
            let key = format!("order:{{o5.1}}:{i}");
            if let Some(at) = buckets.iter().position(|b| b.holds(&key)) {
                counts[at] += 1;
            }
        }
        assert!(
            counts.iter().all(|&n| (700..1300).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_spool_gives_back_what_was_pushed_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = Spool::create(dir.path()).unwrap();
        let entries: Vec<LogEntry> = (0..3000)
            .map(|i| LogEntry {
                stream_id: format!("{i}-0"),
                fields: [
                    ("type".to_string(), "StockAdded".to_string()),
                    ("n".into(), format!("é{i}")),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        for e in &entries {
            spool.push(e).unwrap();
        }
        assert_eq!(spool.len(), 3000);
        for _ in 0..2 {
            let mut back = Vec::new();
            spool
                .for_each(|seq, e| {
                    assert_eq!(seq as usize, back.len());
                    back.push(e.clone());
                    Ok::<(), io::Error>(())
                })
                .unwrap();
            assert_eq!(back, entries);
        }
        assert!(spool.bytes() > 0);
        let path = spool.file.path().to_path_buf();
        drop(spool);
        assert!(!path.exists(), "the spool file outlives its spool");
    }

    #[test]
    fn the_gauge_trips_once_the_state_is_over_budget() {
        let mut state = State::new();
        let mut gauge = Gauge::new(100_000);
        assert_eq!(gauge.every, 6);
        let mut tripped_at = None;
        for i in 0..100_000usize {
            state.insert(format!("k{i}"), [("f".to_string(), "v".to_string())].into());
            if gauge.over(&state) {
                tripped_at = Some(i);
                break;
            }
        }
        let at = tripped_at.unwrap_or(usize::MAX);
        assert!(state_bytes(&state) > 100_000);
        // Measured every 6 entries, each a hash of one short field (~830 bytes with its node).
        assert!(state_bytes(&state) < 100_000 + 6 * 1_000, "tripped at {at}");
        assert_eq!(Gauge::new(1 << 30).every, Gauge::EVERY);
        assert_eq!(Gauge::new(10).every, 1);
    }
}
