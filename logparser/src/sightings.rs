//! What the recovery pass saw of `log:order`, kept for the archiver's retirement queue.
//!
//! **Why.** The retirement queue (`Archiver::queue_final`) asks of each `log:order` entry only
//! which saga it belongs to, and the recovery pass has just read and decoded those very entries:
//! each pass of the daemon runs recovery, then archiving, over the same stretch of the log.
//! Reading the stretch from Redis a second time, for that one answer, was an eighth of the log
//! parser's CPU in a checkout storm (parsing replies) and a second `XRANGE` of every entry on
//! order-db (docs/BENCHMARKS.md). So the recovery pass notes, per partition, each entry's id and
//! saga; the queue takes them from here, and reads Redis only for a stretch it has no note of
//! (the first pass, after the lease moved, or when the notes outgrew [`MAX_NOTES`]).
//!
//! **Exactness.** The notes of a partition are every entry after `from`, in order, with no gap:
//! the recovery pass appends what it read after its checkpoint, and a read that does not start
//! where the notes end (another instance moved the checkpoint meanwhile) starts them again. So a
//! stretch after a cursor at or past `from` is answered exactly as `XRANGE` would.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use common::archive::StreamId;
use common::event::{Event, EventError};
use common::keys;
use common::log::LogEntry;
use common::partition::Layout;

/// Notes kept at most, over all partitions (each its share); past it a partition's oldest go,
/// and the queue reads that stretch from Redis. A note is ~100 bytes, so this bounds them to
/// ~20 MB; the queue takes them within a pass or two, unless a consumer group lags.
pub const MAX_NOTES: usize = 200_000;

/// One entry as the retirement queue needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// Its stream id.
    pub id: StreamId,
    /// Its saga, as `(saga id, saga record key)`; `None` for an entry of no saga; `Err` (the
    /// decoding error) for an entry that cannot be read, which stops the queue there.
    pub saga: Result<Option<(String, String)>, String>,
}

impl Seen {
    /// Decodes `e` (of `log:order`) to what the queue needs.
    pub fn of(e: &LogEntry, order_layout: &Layout) -> Seen {
        Seen::new(&e.stream_id, e.decode().as_ref(), order_layout)
    }

    /// The entry `stream_id`, decoded (by whoever read it) to `event`.
    pub fn new(stream_id: &str, event: Result<&Event, &EventError>, order_layout: &Layout) -> Seen {
        let Some(id) = StreamId::parse(stream_id) else {
            // Redis gives none such; the queue stops at it all the same.
            return Seen {
                id: StreamId::default(),
                saga: Err(format!("`{stream_id}` is not a stream id")),
            };
        };
        let saga = event.map_err(|err| err.to_string()).map(|ev| {
            ev.saga()
                .map(|(s, o)| (s.to_string(), keys::saga_of(order_layout, o, s)))
        });
        Seen { id, saga }
    }
}

/// One partition's notes: every entry after `from` (exclusive), in id order.
#[derive(Debug, Default)]
struct Part {
    from: Option<StreamId>,
    seen: VecDeque<Seen>,
}

impl Part {
    /// Where the notes end: the last entry noted, or `from` when none is.
    fn end(&self) -> Option<StreamId> {
        self.seen.back().map(|s| s.id).or(self.from)
    }
}

/// The notes of every partition of `log:order`, shared by the recovery pass (which writes) and
/// the archiver (which takes). Cloning shares them.
#[derive(Debug, Clone, Default)]
pub struct Sightings(Arc<Mutex<Vec<Part>>>);

impl Sightings {
    fn parts(&self, part: u32) -> (MutexGuard<'_, Vec<Part>>, usize) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let i = part as usize;
        if g.len() <= i {
            g.resize_with(i + 1, Part::default);
        }
        (g, i)
    }

    /// The recovery pass read `entries` of partition `part`, the entries right after `after`
    /// (its checkpoint; `-` from the start), in order.
    pub fn record(&self, part: u32, after: &str, entries: Vec<Seen>, order_layout: &Layout) {
        let after = if after == "-" {
            StreamId::default()
        } else {
            match StreamId::parse(after) {
                Some(a) => a,
                None => return,
            }
        };
        let (mut g, i) = self.parts(part);
        let p = &mut g[i];
        if p.end() != Some(after) {
            // Not where the notes end: a stretch was read elsewhere; start again from here.
            *p = Part {
                from: Some(after),
                seen: VecDeque::new(),
            };
        }
        p.seen.extend(entries);
        let cap = MAX_NOTES / order_layout.p.max(1) as usize;
        while p.seen.len() > cap {
            if let Some(dropped) = p.seen.pop_front() {
                p.from = Some(dropped.id);
            }
        }
    }

    /// The entries of partition `part` after `cursor` and below `below`, at most `max`, when the
    /// notes hold every entry after `cursor`; `None` when they do not (read Redis instead). Notes
    /// at or below `cursor` are dropped: the queue has passed them.
    pub fn after(
        &self,
        part: u32,
        cursor: StreamId,
        below: StreamId,
        max: usize,
    ) -> Option<Vec<Seen>> {
        let (mut g, i) = self.parts(part);
        let p = &mut g[i];
        let from = p.from?;
        if from > cursor || p.end().is_some_and(|end| end < cursor) {
            return None;
        }
        while p.seen.front().is_some_and(|s| s.id <= cursor) {
            if let Some(dropped) = p.seen.pop_front() {
                p.from = Some(dropped.id);
            }
        }
        Some(
            p.seen
                .iter()
                .take_while(|s| s.id < below)
                .take(max)
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn entry(id: &str, saga: Option<&str>) -> LogEntry {
        let mut fields = BTreeMap::from([("log_id".to_string(), "1".to_string())]);
        match saga {
            Some(s) => {
                fields.insert("type".into(), "CheckoutCommitted".into());
                fields.insert("saga".into(), s.into());
                fields.insert("order".into(), format!("o-{s}"));
            }
            None => {
                fields.insert("type".into(), "Unknown".into());
            }
        }
        LogEntry {
            stream_id: id.into(),
            fields,
        }
    }

    fn id(s: &str) -> StreamId {
        StreamId::parse(s).unwrap_or_default()
    }

    fn ids(seen: Option<Vec<Seen>>) -> Option<Vec<String>> {
        seen.map(|v| v.iter().map(|s| s.id.to_string()).collect())
    }

    #[test]
    fn a_stretch_after_the_first_read_is_answered_from_the_notes() {
        let l = Layout::new(common::saga::ORDER, 1);
        let s = Sightings::default();
        assert_eq!(s.after(0, id("0-0"), id("9-0"), 10), None, "no notes yet");
        let seen = |es: &[LogEntry]| es.iter().map(|e| Seen::of(e, &l)).collect::<Vec<_>>();
        s.record(
            0,
            "2-0",
            seen(&[entry("3-0", Some("a")), entry("4-0", Some("b"))]),
            &l,
        );
        s.record(0, "4-0", seen(&[entry("5-0", Some("c"))]), &l);
        // A cursor before the notes start: they do not cover it.
        assert_eq!(s.after(0, id("1-0"), id("9-0"), 10), None);
        assert_eq!(
            ids(s.after(0, id("2-0"), id("9-0"), 10)),
            Some(vec!["3-0".into(), "4-0".into(), "5-0".into()])
        );
        assert_eq!(
            ids(s.after(0, id("3-0"), id("5-0"), 10)),
            Some(vec!["4-0".into()])
        );
        assert_eq!(
            ids(s.after(0, id("3-0"), id("9-0"), 1)),
            Some(vec!["4-0".into()])
        );
        // 3-0 was passed: dropped, and the notes now start after it.
        assert_eq!(s.after(0, id("2-0"), id("9-0"), 10), None);
        let seen = s.after(0, id("4-0"), id("9-0"), 10).unwrap_or_default();
        assert_eq!(
            seen[0].saga,
            Ok(Some(("c".to_string(), keys::saga_of(&l, "o-c", "c"))))
        );
        // A cursor past the notes' end (another instance read further): not covered either.
        assert_eq!(s.after(0, id("6-0"), id("9-0"), 10), None);
        // Other partitions are their own.
        assert_eq!(s.after(1, id("4-0"), id("9-0"), 10), None);
    }

    #[test]
    fn a_read_that_does_not_continue_the_notes_starts_them_again() {
        let l = Layout::new(common::saga::ORDER, 1);
        let s = Sightings::default();
        s.record(0, "2-0", vec![Seen::of(&entry("3-0", Some("a")), &l)], &l);
        // Another instance read 4-0 .. 6-0 meanwhile; this one goes on from 6-0.
        s.record(0, "6-0", vec![Seen::of(&entry("7-0", None), &l)], &l);
        assert_eq!(s.after(0, id("3-0"), id("9-0"), 10), None);
        let seen = s.after(0, id("6-0"), id("9-0"), 10).unwrap_or_default();
        assert_eq!(ids(Some(seen.clone())), Some(vec!["7-0".into()]));
        assert!(matches!(seen[0].saga, Ok(None) | Err(_)));
    }
}
