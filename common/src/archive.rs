//! The log archive: log entries moved out of Redis, kept in compressed, append-only segment files,
//! and read back together with the live log as one history.
//!
//! **Layout.** One directory per service and partition under the archive root (`ARCHIVE_DIR`):
//! `<root>/<service>/p<k>/` (`archive/order/p003/`), holding segments named by the first entry
//! they hold, `<ms>-<seq>.jsonl.zst`.
//!
//! **Format.** A segment is a sequence of zstd frames (one per archiving pass, with a content
//! checksum); a frame decompresses to JSON lines, one per entry, in stream-id order:
//! `{"id":"1712345678901-0","stream":"log:order:{o3.60}","fields":{"log_id":"…","type":"…",…}}`.
//! Concatenated zstd frames are one valid zstd stream, so `zstdcat <segment> | jq` reads it.
//! Entries are archived in id order and never rewritten: a later frame only holds later ids, and a
//! new segment starts after [`SEGMENT_BYTES`].
//!
//! **Crashes.** A frame is written with one `write`, then the file (and, for a new segment, the
//! directory) is fsynced; only then does the log parser trim the stream. A crash before the fsync
//! can leave a torn last frame: readers ignore it, and the writer cuts it off when it next opens
//! the directory (the entries are still in Redis and are archived again). A crash after the
//! fsync and before the trim leaves entries both archived and live: the writer skips what it holds
//! already, and readers deduplicate by entry id.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::db::Conn;
use crate::log::{self, LogEntry, LogError};

/// A segment is closed, and the next frame starts a new one, once it holds this many bytes.
/// A reader holds one segment's bytes at a time (the audit, three at once), so this bounds the
/// memory reading the archive takes, whatever its size.
pub const SEGMENT_BYTES: u64 = 4 << 20;

/// The file name suffix of a segment.
pub const SEGMENT_SUFFIX: &str = ".jsonl.zst";

/// A Redis stream id `<ms>-<seq>`, parsed once, ordered as Redis orders entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct StreamId {
    /// Milliseconds since the epoch (the appending server's clock).
    pub ms: u64,
    /// Sequence within the millisecond.
    pub seq: u64,
}

impl StreamId {
    /// Parses `<ms>-<seq>` (or `<ms>`, sequence 0).
    pub fn parse(s: &str) -> Option<StreamId> {
        let (ms, seq) = s.split_once('-').unwrap_or((s, "0"));
        Some(StreamId {
            ms: ms.parse().ok()?,
            seq: seq.parse().ok()?,
        })
    }

    /// The smallest id after this one: `XTRIM MINID` with it removes this entry and all before.
    pub fn next(self) -> StreamId {
        match self.seq.checked_add(1) {
            Some(seq) => StreamId { ms: self.ms, seq },
            None => StreamId {
                ms: self.ms + 1,
                seq: 0,
            },
        }
    }
}

impl fmt::Display for StreamId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// One archived entry, as one JSON line of a segment.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The entry's stream id.
    pub id: String,
    /// The stream it was in (`log:order:{o3.60}`).
    pub stream: String,
    /// Its fields, as in Redis.
    pub fields: BTreeMap<String, String>,
}

impl Record {
    /// The entry as the live log gives it.
    pub fn into_entry(self) -> LogEntry {
        LogEntry {
            stream_id: self.id,
            fields: self.fields,
        }
    }
}

/// Why the archive could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// A file or directory operation failed.
    #[error("archive {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
    /// A segment holds something that is not the format above (not a torn last frame).
    #[error("archive segment {path} is corrupt: {detail}")]
    Corrupt {
        /// The segment.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ArchiveError + '_ {
    move |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The directory of partition `part` of `service`'s log under the archive root.
pub fn stream_dir(root: &Path, service: &str, part: u32) -> PathBuf {
    root.join(service).join(format!("p{part:03}"))
}

/// The segments of a directory, oldest first, by the first id in their names (none when the
/// directory does not exist).
pub fn segments(dir: &Path) -> Result<Vec<(StreamId, PathBuf)>, ArchiveError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut out = Vec::new();
    for entry in read {
        let path = entry.map_err(io(dir))?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(first) = name.strip_suffix(SEGMENT_SUFFIX).and_then(StreamId::parse) {
            out.push((first, path));
        }
    }
    out.sort();
    Ok(out)
}

/// The complete frames of a segment's bytes, and where the last complete one ends (a shorter
/// length than the file's means a torn frame at its end).
fn frames(buf: &[u8]) -> (Vec<std::ops::Range<usize>>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while at < buf.len() {
        match zstd::zstd_safe::find_frame_compressed_size(&buf[at..]) {
            Ok(n) if n > 0 && at + n <= buf.len() => {
                out.push(at..at + n);
                at += n;
            }
            _ => break,
        }
    }
    (out, at)
}

/// The records of one frame; `None` when it does not decompress (a torn or damaged frame).
fn decode_frame(path: &Path, frame: &[u8]) -> Result<Option<Vec<Record>>, ArchiveError> {
    let Ok(text) = zstd::decode_all(frame) else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let r: Record = serde_json::from_slice(line).map_err(|e| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            detail: format!("a line is not an archived entry: {e}"),
        })?;
        out.push(r);
    }
    Ok(Some(out))
}

fn read_file(path: &Path) -> Result<Vec<u8>, ArchiveError> {
    read_from(path, 0)
}

/// The bytes of segment `path` from offset `from` to its end.
fn read_from(path: &Path, from: u64) -> Result<Vec<u8>, ArchiveError> {
    use std::io::{Seek, SeekFrom};
    let mut buf = Vec::new();
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::Start(from))?;
            f.read_to_end(&mut buf)
        })
        .map_err(io(path))?;
    Ok(buf)
}

/// Calls `f` on every archived entry of `dir` in id order, each id once (a frame written twice
/// after a crash is skipped), tolerating a torn last frame. Returns the last id read.
pub fn for_each<E: From<ArchiveError>>(
    dir: &Path,
    f: impl FnMut(Record) -> Result<(), E>,
) -> Result<Option<StreamId>, E> {
    for_each_after(dir, None, f)
}

/// [`for_each`] for the entries after `after` only (all when `None`), skipping the segments that
/// end before it. Returns the last id read (`after` when there was nothing newer).
pub fn for_each_after<E: From<ArchiveError>>(
    dir: &Path,
    after: Option<StreamId>,
    f: impl FnMut(Record) -> Result<(), E>,
) -> Result<Option<StreamId>, E> {
    for_each_from(dir, after, &mut Position::default(), f)
}

/// Where a reader of one directory stopped: a segment, and the offset in it of the first frame
/// not given to its end. Segments are only appended to, and a new one sorts after every older
/// one, so reading on from there gives everything after what was read. Without it, each return
/// to the archive decompressed again every frame of the segment it was in: a read of a long live
/// log beside a running archiving pass goes back to the archive after every page.
#[derive(Debug, Clone, Default)]
pub struct Position {
    at: Option<(PathBuf, u64)>,
}

/// [`for_each_after`] from `pos` on (where the previous call with it stopped), moving `pos`
/// past each frame read to its end; a frame stopped in (by `f`) is read again by the next call.
pub fn for_each_from<E: From<ArchiveError>>(
    dir: &Path,
    after: Option<StreamId>,
    pos: &mut Position,
    mut f: impl FnMut(Record) -> Result<(), E>,
) -> Result<Option<StreamId>, E> {
    let mut last: Option<StreamId> = after;
    let segs = segments(dir)?;
    let n = segs.len();
    // The segment the previous call stopped in, and where (from the start when it is gone).
    let resume = pos
        .at
        .as_ref()
        .and_then(|(p, off)| segs.iter().position(|(_, s)| s == p).map(|i| (i, *off)));
    for (i, (_, path)) in segs.iter().enumerate() {
        let from = match resume {
            Some((r, _)) if i < r => continue,
            Some((r, off)) if i == r => off,
            _ => 0,
        };
        // A segment holds ids below the next one's first: skip it when those are all read.
        if let (Some(a), Some((next_first, _))) = (after, segs.get(i + 1)) {
            if *next_first <= a {
                continue;
            }
        }
        let buf = read_from(path, from)?;
        let (ranges, _) = frames(&buf);
        let m = ranges.len();
        for (j, range) in ranges.into_iter().enumerate() {
            let (start, end) = (from + range.start as u64, from + range.end as u64);
            pos.at = Some((path.clone(), start));
            let Some(records) = decode_frame(path, &buf[range])? else {
                if i + 1 == n && j + 1 == m {
                    break; // the torn tail of the newest segment
                }
                return Err(ArchiveError::Corrupt {
                    path: path.clone(),
                    detail: format!("frame {j} after byte {from} does not decompress"),
                }
                .into());
            };
            for r in records {
                let Some(id) = StreamId::parse(&r.id) else {
                    return Err(ArchiveError::Corrupt {
                        path: path.clone(),
                        detail: format!("`{}` is not a stream id", r.id),
                    }
                    .into());
                };
                if last.is_some_and(|l| id <= l) {
                    continue;
                }
                last = Some(id);
                f(r)?;
            }
            pos.at = Some((path.clone(), end));
        }
    }
    Ok(last)
}

/// What changes in `dir` when an archiving pass writes to it: its newest segment and that
/// segment's length (segments are only appended to, and a new one is a new name).
fn signature(dir: &Path) -> Result<Option<(PathBuf, u64)>, ArchiveError> {
    let Some((_, path)) = segments(dir)?.pop() else {
        return Ok(None);
    };
    let len = std::fs::metadata(&path).map_err(io(&path))?.len();
    Ok(Some((path, len)))
}

/// The last id archived in a directory that a pass may be writing to, looked at again only when
/// the directory's [`signature`] changed, and then only in the frames appended since it was last
/// read (a reader beside a running pass asks after every page of the live log).
struct Tip<'a> {
    dir: &'a Path,
    /// The newest segment and where its complete frames ended when it was last read.
    read_to: Option<(PathBuf, u64)>,
    last: Option<StreamId>,
}

impl<'a> Tip<'a> {
    fn new(dir: &'a Path) -> Tip<'a> {
        Tip {
            dir,
            read_to: None,
            last: None,
        }
    }

    /// The last id archived now.
    fn last(&mut self) -> Result<Option<StreamId>, ArchiveError> {
        let Some((path, len)) = signature(self.dir)? else {
            return Ok(self.last);
        };
        let from = match &self.read_to {
            Some((p, end)) if *p == path => *end,
            _ => 0,
        };
        if self.read_to.is_some() && from == len {
            return Ok(self.last); // nothing appended since
        }
        let (id, end) = newest_in(&path, from)?;
        self.last = match id {
            Some(id) => self.last.max(Some(id)),
            // A new segment with no complete frame yet: the older ones hold the last id.
            None if from == 0 => last_id(self.dir)?,
            None => self.last,
        };
        self.read_to = Some((path, end));
        Ok(self.last)
    }
}

/// The greatest id in the complete frames of segment `path` after byte `from` (read from the
/// newest frame back to the first that holds one), and where those frames end.
fn newest_in(path: &Path, from: u64) -> Result<(Option<StreamId>, u64), ArchiveError> {
    let buf = read_from(path, from)?;
    let (ranges, end) = frames(&buf);
    for range in ranges.into_iter().rev() {
        if let Some(records) = decode_frame(path, &buf[range])? {
            if let Some(id) = records.iter().filter_map(|r| StreamId::parse(&r.id)).max() {
                return Ok((Some(id), from + end as u64));
            }
        }
    }
    Ok((None, from + end as u64))
}

/// The last id archived in `dir` (reads the newest segment that holds any entry).
pub fn last_id(dir: &Path) -> Result<Option<StreamId>, ArchiveError> {
    for (_, path) in segments(dir)?.into_iter().rev() {
        if let (Some(id), _) = newest_in(&path, 0)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// A test-only crash point of an archiving pass: when `SHOPLOG_TEST_ARCHIVE_CRASH` names a flag
/// file that exists and holds `point`, the file is removed and the process exits at once (status
/// 86: no fsync, no trim), as a SIGKILL there would. Points: `before_fsync` (half a frame
/// written), `after_fsync` (frame durable, stream not trimmed).
pub fn crash_point(point: &str) -> bool {
    let Some(flag) = std::env::var_os("SHOPLOG_TEST_ARCHIVE_CRASH") else {
        return false;
    };
    let armed = std::fs::read_to_string(&flag).is_ok_and(|at| at.trim() == point);
    armed && std::fs::remove_file(&flag).is_ok()
}

fn die_at(point: &str) {
    tracing::error!(point, "SHOPLOG_TEST_ARCHIVE_CRASH: exiting mid-pass");
    // No destructor, flush or fsync runs after this: as abrupt as a kill for what is on disk.
    std::process::exit(86);
}

fn fsync_dir(dir: &Path) -> Result<(), ArchiveError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Appends entries of one stream to its archive directory: one frame per call, fsynced before
/// it returns.
pub struct SegmentWriter {
    dir: PathBuf,
    /// The segment being appended to and its size.
    current: Option<(PathBuf, u64)>,
    last: Option<StreamId>,
    /// The JSON lines of a frame and the frame, kept from one append to the next, and the
    /// compressor's context: built afresh for each frame, their growth was most of the fresh
    /// pages the kernel zeroed for the log parser (docs/BENCHMARKS.md, "Reading less in the log
    /// parser").
    text: Vec<u8>,
    frame: Vec<u8>,
    compressor: Option<zstd::bulk::Compressor<'static>>,
}

/// One archived entry as [`SegmentWriter::append`] writes it: [`Record`]'s fields, borrowed
/// (the same JSON).
#[derive(serde::Serialize)]
struct RecordRef<'a> {
    id: &'a str,
    stream: &'a str,
    fields: &'a BTreeMap<String, String>,
}

impl SegmentWriter {
    /// Opens (creating) the directory; cuts a torn frame off the newest segment and makes that
    /// durable; learns the last id archived.
    pub fn open(dir: &Path) -> Result<SegmentWriter, ArchiveError> {
        if !dir.exists() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
            let mut d = Some(dir);
            for _ in 0..3 {
                if let Some(p) = d.and_then(Path::parent) {
                    fsync_dir(p)?;
                    d = Some(p);
                }
            }
        }
        let mut current = None;
        if let Some((_, path)) = segments(dir)?.pop() {
            let buf = read_file(&path)?;
            let (_, valid) = frames(&buf);
            if valid < buf.len() {
                tracing::warn!(segment = %path.display(), bytes = buf.len() - valid,
                    "cutting a torn frame off the archive (its entries are still in Redis)");
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(valid as u64).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            current = Some((path, valid as u64));
        }
        Ok(SegmentWriter {
            dir: dir.to_path_buf(),
            current,
            last: last_id(dir)?,
            text: Vec::new(),
            frame: Vec::new(),
            compressor: None,
        })
    }

    /// The last id archived here.
    pub fn last_id(&self) -> Option<StreamId> {
        self.last
    }

    /// Archives the entries of `entries` (in id order) that are newer than [`Self::last_id`]; the
    /// others are already here. Returns how many were written; they are durable when it returns.
    ///
    /// When the directory is not as this writer left it (another process wrote to it: a log
    /// parser that lost its lease in the middle of a pass while another took over), the writer
    /// first reads it again, so that its frame goes to the newest segment and holds only ids
    /// past the last one there. Otherwise it could start a segment of its own, or append to an
    /// older one, and readers, which take segments in name order and each id once, would skip
    /// entries that sit after a higher id.
    pub fn append(&mut self, stream: &str, entries: &[LogEntry]) -> Result<usize, ArchiveError> {
        if signature(&self.dir)? != self.current {
            tracing::warn!(dir = %self.dir.display(),
                "the archive directory changed under this writer (another writer?): reading it again");
            let reopened = SegmentWriter::open(&self.dir)?;
            (self.current, self.last) = (reopened.current, reopened.last);
        }
        let mut text = std::mem::take(&mut self.text);
        text.clear();
        let mut first = None;
        let mut last = self.last;
        let mut n = 0;
        for e in entries {
            let Some(id) = StreamId::parse(&e.stream_id) else {
                continue;
            };
            if last.is_some_and(|l| id <= l) {
                continue;
            }
            first.get_or_insert(id);
            last = Some(id);
            let r = RecordRef {
                id: &e.stream_id,
                stream,
                fields: &e.fields,
            };
            serde_json::to_writer(&mut text, &r).map_err(|e| ArchiveError::Corrupt {
                path: self.dir.clone(),
                detail: e.to_string(),
            })?;
            text.push(b'\n');
            n += 1;
        }
        let Some(first) = first else {
            self.text = text;
            return Ok(0);
        };
        let frame = self.compress(&text).map_err(io(&self.dir))?;
        self.text = text;
        let (path, size, created) = match self.current.take() {
            Some((path, size)) if size < SEGMENT_BYTES => (path, size, false),
            _ => (self.dir.join(format!("{first}{SEGMENT_SUFFIX}")), 0, true),
        };
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        if crash_point("before_fsync") {
            let _ = f.write_all(&frame[..frame.len() / 2]);
            die_at("before_fsync");
        }
        f.write_all(&frame).map_err(io(&path))?;
        f.sync_all().map_err(io(&path))?;
        if created {
            fsync_dir(&self.dir)?;
        }
        self.current = Some((path, size + frame.len() as u64));
        self.frame = frame;
        self.last = last;
        if crash_point("after_fsync") {
            die_at("after_fsync");
        }
        Ok(n)
    }

    /// `text` as one zstd frame (checksummed), in the writer's frame buffer, by the writer's
    /// compressor.
    fn compress(&mut self, text: &[u8]) -> std::io::Result<Vec<u8>> {
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => {
                let mut c = zstd::bulk::Compressor::new(LEVEL)?;
                c.include_checksum(true)?;
                self.compressor.insert(c)
            }
        };
        let mut frame = std::mem::take(&mut self.frame);
        frame.clear();
        frame.reserve(zstd::zstd_safe::compress_bound(text.len()));
        compressor.compress_to_buffer(text, &mut frame)?;
        Ok(frame)
    }
}

/// zstd's level for the archive's frames: its default, fast, and a tenth of the JSON's size.
const LEVEL: i32 = 3;

/// `text` as one frame, without a writer: what the tests write by hand.
#[cfg(test)]
fn compress(text: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = zstd::Encoder::new(Vec::new(), LEVEL)?;
    enc.include_checksum(true)?;
    enc.write_all(text)?;
    enc.finish()
}

/// What one directory of the archive holds.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct DirStatus {
    /// The directory.
    pub dir: PathBuf,
    /// Its segments.
    pub segments: usize,
    /// Their bytes on disk.
    pub bytes: u64,
    /// The oldest entry archived (the first segment's name).
    pub oldest: Option<String>,
    /// The newest entry archived.
    pub newest: Option<String>,
}

/// The state of one archive directory.
pub fn dir_status(dir: &Path) -> Result<DirStatus, ArchiveError> {
    let segs = segments(dir)?;
    let mut bytes = 0;
    for (_, p) in &segs {
        bytes += std::fs::metadata(p).map_err(io(p))?.len();
    }
    Ok(DirStatus {
        dir: dir.to_path_buf(),
        segments: segs.len(),
        bytes,
        oldest: segs.first().map(|(id, _)| id.to_string()),
        newest: last_id(dir)?.map(|id| id.to_string()),
    })
}

/// Where [`history`] reads the live log from, a page at a time.
pub trait Pages {
    /// Up to `count` entries after `after` (`-`: from the start), in id order.
    fn page(
        &mut self,
        after: &str,
        count: usize,
    ) -> impl std::future::Future<Output = Result<Vec<LogEntry>, LogError>>;
}

/// A stream of a database, read with `XRANGE`.
pub struct Stream<'a> {
    /// The stream's database.
    pub conn: &'a mut Conn,
    /// Its key.
    pub key: &'a str,
}

impl Pages for Stream<'_> {
    async fn page(&mut self, after: &str, count: usize) -> Result<Vec<LogEntry>, LogError> {
        log::read_page(self.conn, self.key, after, count).await
    }
}

/// One history of a stream: calls `f` on every entry of the archive directory `dir` (if any),
/// then on every live entry of `stream` after the last archived one, in id order and each id once
/// — what the log was before archiving moved its old entries out. Returns the entries seen.
pub async fn for_each_history<E: From<LogError>>(
    conn: &mut Conn,
    dir: Option<&Path>,
    stream: &str,
    page: usize,
    f: impl FnMut(&LogEntry) -> Result<(), E>,
) -> Result<u64, E> {
    history(Stream { conn, key: stream }, dir, page, f).await
}

/// [`for_each_history`] over any source of live pages.
///
/// An archiving pass may run meanwhile: it writes entries to the archive, fsyncs, then trims
/// them from the stream. A page is one `XRANGE`, a contiguous run of the stream (trimming cuts a
/// prefix only), so entries can only be missing before its first one, and only if they were
/// trimmed before the page was read — so archived before it was read. Hence after each page,
/// while the archive holds ids past the last one given (looked at *after* the page was read), the
/// archived entries between that id and the page's first are given first. (Asking instead
/// whether the archive had changed since it was last read lost entries: a pass that wrote after
/// a page was read but before the archive was looked at was taken as read, and the entries it
/// trimmed past the page's end were never given.)
pub async fn history<E: From<LogError>>(
    mut live: impl Pages,
    dir: Option<&Path>,
    page: usize,
    mut f: impl FnMut(&LogEntry) -> Result<(), E>,
) -> Result<u64, E> {
    let archive_err = |e| E::from(LogError::Archive(e));
    let mut seen = 0u64;
    let mut after: Option<StreamId> = None;
    let mut tip = dir.map(Tip::new);
    let mut pos = Position::default();
    if let Some(dir) = dir {
        after = read_archive(dir, None, None, &mut pos, &mut seen, &mut f)?;
    }
    loop {
        let entries = live.page(&after_str(after), page).await?;
        if let (Some(dir), Some(tip)) = (dir, tip.as_mut()) {
            if tip.last().map_err(archive_err)? > after {
                let before = entries.first().and_then(|e| StreamId::parse(&e.stream_id));
                let read = read_archive(dir, after, before, &mut pos, &mut seen, &mut f)?;
                if read.is_some() {
                    after = read;
                    if entries.is_empty() {
                        // The rest may all have been archived and trimmed: look at the stream again.
                        continue;
                    }
                }
            }
        }
        for e in &entries {
            let id = StreamId::parse(&e.stream_id);
            if id.is_some() && id <= after {
                continue;
            }
            after = id.or(after);
            f(e)?;
            seen += 1;
        }
        if entries.len() < page {
            return Ok(seen);
        }
    }
}

/// The position `read_page` reads after: the last id seen, or the stream's start.
fn after_str(after: Option<StreamId>) -> String {
    after.map_or_else(|| "-".to_string(), |a| a.to_string())
}

/// The archived entries of `dir` after `after` and before `before` (every one when `None`),
/// given to `f`, read on from `pos`; counts them in `seen`; answers the last id given.
fn read_archive<E: From<LogError>>(
    dir: &Path,
    after: Option<StreamId>,
    before: Option<StreamId>,
    pos: &mut Position,
    seen: &mut u64,
    f: &mut impl FnMut(&LogEntry) -> Result<(), E>,
) -> Result<Option<StreamId>, E> {
    let mut caller: Option<E> = None;
    let mut last = None;
    let read = for_each_from(dir, after, pos, |r: Record| {
        let id = StreamId::parse(&r.id);
        if before.is_some() && id >= before {
            return Err(Stop::Done);
        }
        *seen += 1;
        last = id;
        f(&r.into_entry()).map_err(|e| {
            caller = Some(e);
            Stop::Caller
        })
    });
    match read {
        Ok(_) | Err(Stop::Done) => Ok(last),
        Err(Stop::Archive(e)) => Err(E::from(LogError::Archive(e))),
        Err(Stop::Caller) => match caller {
            Some(e) => Err(e),
            None => Ok(last),
        },
    }
}

/// Why [`for_each_history`] stopped reading the archive: the archive's error, the caller's
/// (kept aside), or the end of what it asked for.
enum Stop {
    Archive(ArchiveError),
    Caller,
    /// Read as far as asked.
    Done,
}

impl From<ArchiveError> for Stop {
    fn from(e: ArchiveError) -> Self {
        Stop::Archive(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, n: u32) -> LogEntry {
        LogEntry {
            stream_id: id.to_string(),
            fields: BTreeMap::from([
                ("type".to_string(), "StockAdded".to_string()),
                ("n".to_string(), n.to_string()),
            ]),
        }
    }

    fn ids(dir: &Path) -> Vec<String> {
        let mut out = Vec::new();
        for_each(dir, |r| {
            out.push(r.id);
            Ok::<(), ArchiveError>(())
        })
        .unwrap_or_default();
        out
    }

    /// The ids `for_each_from` gives from `pos` after `after`, stopping before `before`.
    fn ids_from(
        dir: &Path,
        after: Option<&str>,
        before: Option<&str>,
        pos: &mut Position,
    ) -> Result<Vec<String>, ArchiveError> {
        let mut out = Vec::new();
        let before = before.and_then(StreamId::parse);
        let read = for_each_from(dir, after.and_then(StreamId::parse), pos, |r| {
            if before.is_some() && StreamId::parse(&r.id) >= before {
                return Err(None);
            }
            out.push(r.id);
            Ok(())
        });
        match read {
            Ok(_) | Err(None) => Ok(out),
            Err(Some(e)) => Err(e),
        }
    }

    #[test]
    fn a_read_resumed_at_its_position_gives_what_a_read_from_the_start_gives(
    ) -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("order").join("p001");
        let mut w = SegmentWriter::open(&dir)?;
        w.append("s", &[entry("1-0", 1), entry("2-0", 2)])?;
        w.append("s", &[entry("3-0", 3), entry("4-0", 4)])?;
        let mut pos = Position::default();
        // Stopped inside the second frame: it is read again, from its start, next time.
        assert_eq!(
            ids_from(&dir, None, Some("4-0"), &mut pos)?,
            ["1-0", "2-0", "3-0"]
        );
        w.append("s", &[entry("5-0", 5)])?;
        assert_eq!(ids_from(&dir, Some("3-0"), None, &mut pos)?, ["4-0", "5-0"]);
        // Read to the end: the next call starts after the last frame, and finds only new ones.
        assert_eq!(
            ids_from(&dir, Some("5-0"), None, &mut pos)?,
            Vec::<String>::new()
        );
        w.append("s", &[entry("6-0", 6)])?;
        assert_eq!(ids_from(&dir, Some("5-0"), None, &mut pos)?, ["6-0"]);
        // A position in a segment that is no longer there reads from the start.
        let mut gone = Position {
            at: Some((dir.join("0-0.jsonl.zst"), 1 << 20)),
        };
        assert_eq!(
            ids_from(&dir, Some("4-0"), None, &mut gone)?,
            ["5-0", "6-0"]
        );
        // And the tip follows appended frames without reading the segment again.
        let mut tip = Tip::new(&dir);
        assert_eq!(tip.last()?, StreamId::parse("6-0"));
        w.append("s", &[entry("7-0", 7)])?;
        assert_eq!(tip.last()?, StreamId::parse("7-0"));
        Ok(())
    }

    #[test]
    fn frames_append_in_order_and_a_repeat_is_skipped() -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("order").join("p000");
        let mut w = SegmentWriter::open(&dir)?;
        assert_eq!(w.append("s", &[entry("1-0", 1), entry("1-1", 2)])?, 2);
        // After a crash between fsync and trim the same entries come again, with new ones.
        assert_eq!(w.append("s", &[entry("1-1", 2), entry("2-0", 3)])?, 1);
        assert_eq!(ids(&dir), ["1-0", "1-1", "2-0"]);
        let w = SegmentWriter::open(&dir)?;
        assert_eq!(w.last_id(), StreamId::parse("2-0"));
        let st = dir_status(&dir)?;
        assert_eq!((st.segments, st.oldest.as_deref()), (1, Some("1-0")));
        Ok(())
    }

    /// The writer keeps its buffers and compressor between frames: a frame after a larger one
    /// holds its own entries only, each as it was, and a reopened writer reads them the same.
    #[test]
    fn each_frame_holds_exactly_its_entries() -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("payment").join("p000");
        let mut w = SegmentWriter::open(&dir)?;
        let mut big = entry("1-0", 1);
        big.fields
            .insert("items".into(), "\"quoted\" \\ ".repeat(5_000));
        let written = [big, entry("2-0", 2), entry("3-0", 3)];
        w.append("log:payment", &written[..1])?;
        w.append("log:payment", &written[1..2])?;
        SegmentWriter::open(&dir)?.append("log:payment", &written[2..])?;
        let mut read = Vec::new();
        for_each(&dir, |r| {
            read.push(r);
            Ok::<(), ArchiveError>(())
        })?;
        let expected: Vec<Record> = written
            .iter()
            .map(|e| Record {
                id: e.stream_id.clone(),
                stream: "log:payment".into(),
                fields: e.fields.clone(),
            })
            .collect();
        assert_eq!(read, expected);
        // And on disk, each entry once (readers would hide a repeat: they skip ids seen).
        let mut lines = 0;
        for (_, path) in segments(&dir)? {
            let text = zstd::stream::decode_all(&read_file(&path)?[..]).map_err(io(&path))?;
            lines += text.iter().filter(|&&b| b == b'\n').count();
        }
        assert_eq!(lines, written.len());
        Ok(())
    }

    #[test]
    fn two_writers_on_one_directory_lose_nothing() -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("stock").join("p004");
        // Both open the empty directory (two log parsers during a lease take-over).
        let mut a = SegmentWriter::open(&dir)?;
        let mut b = SegmentWriter::open(&dir)?;
        a.append("s", &[entry("1-0", 1), entry("2-0", 2)])?;
        // `b` must not start a segment of its own ("3-0"), nor `a` go on in the first one after
        // it: a reader would take 7-0 before 3-0 and skip 3-0 as already read.
        b.append("s", &[entry("3-0", 3), entry("4-0", 4)])?;
        a.append("s", &[entry("3-0", 3), entry("7-0", 7)])?;
        b.append("s", &[entry("8-0", 8)])?;
        assert_eq!(ids(&dir), ["1-0", "2-0", "3-0", "4-0", "7-0", "8-0"]);
        assert_eq!(segments(&dir)?.len(), 1);
        Ok(())
    }

    #[test]
    fn a_torn_last_frame_is_ignored_by_readers_and_cut_by_the_writer() -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("p001");
        let mut w = SegmentWriter::open(&dir)?;
        w.append("s", &[entry("5-0", 1)])?;
        let (_, path) = segments(&dir)?.pop().ok_or(ArchiveError::Corrupt {
            path: dir.clone(),
            detail: "no segment".into(),
        })?;
        let good = std::fs::metadata(&path).map_err(io(&path))?.len();
        let torn = compress(b"{\"id\":\"6-0\"}\n").map_err(io(&path))?;
        let mut f = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        f.write_all(&torn[..torn.len() / 2]).map_err(io(&path))?;
        drop(f);
        assert_eq!(ids(&dir), ["5-0"]);
        let mut w = SegmentWriter::open(&dir)?;
        assert_eq!(std::fs::metadata(&path).map_err(io(&path))?.len(), good);
        w.append("s", &[entry("6-0", 2)])?;
        assert_eq!(ids(&dir), ["5-0", "6-0"]);
        Ok(())
    }

    #[test]
    fn readers_deduplicate_ids_written_twice() -> Result<(), ArchiveError> {
        let tmp = tempfile::tempdir().map_err(io(Path::new("tmp")))?;
        let dir = tmp.path().join("p002");
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        // Two segments that overlap (written by hand: the writer never does this).
        for (name, lines) in [("1-0", ["1-0", "2-0"]), ("2-0", ["2-0", "3-0"])] {
            let mut text = Vec::new();
            for id in lines {
                serde_json::to_writer(
                    &mut text,
                    &Record {
                        id: id.into(),
                        stream: "s".into(),
                        fields: BTreeMap::new(),
                    },
                )
                .map_err(|e| io(&dir)(e.into()))?;
                text.push(b'\n');
            }
            let path = dir.join(format!("{name}{SEGMENT_SUFFIX}"));
            std::fs::write(&path, compress(&text).map_err(io(&path))?).map_err(io(&path))?;
        }
        assert_eq!(ids(&dir), ["1-0", "2-0", "3-0"]);
        Ok(())
    }

    #[test]
    fn stream_ids_order_numerically() {
        let a = StreamId::parse("999-5");
        let b = StreamId::parse("1000-0");
        assert!(a < b);
        assert_eq!(
            a.map(StreamId::next).map(|i| i.to_string()),
            Some("999-6".into())
        );
        assert_eq!(StreamId::parse("x"), None);
    }
}
