//! The service logs: one Redis Stream per service (`log:<service>`, named in [`crate::keys`]) in
//! that service's own database.
//!
//! Every state change appends exactly one entry, from the same Lua script that makes the change.
//! An entry is a flat map of fields: `log_id` (from the ID service), `type` (one of
//! [`crate::event::kind`]), and the fields that let the change be replayed. This module reads
//! entries back in bounded pages (logs can hold millions of entries); [`crate::event::Event`]
//! decodes them.

use std::collections::BTreeMap;

use crate::db::Conn;

/// Why a log entry could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database did not answer.
    #[error("reading the log failed: {0}")]
    Redis(#[from] redis::RedisError),
    /// An entry cannot be decoded.
    #[error(transparent)]
    Event(#[from] crate::event::EventError),
    /// The archived part of the log cannot be read.
    #[error(transparent)]
    Archive(#[from] crate::archive::ArchiveError),
}

/// The field every entry names its event kind in (one of [`crate::event::kind`]).
pub const TYPE_FIELD: &str = "type";

/// One entry of a service log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// The stream id Redis assigned (`<ms>-<seq>`), which orders the log.
    pub stream_id: String,
    /// The entry's fields.
    pub fields: BTreeMap<String, String>,
}

impl LogEntry {
    /// The entry `stream_id` with `fields` (name, value): for code that builds an entry rather
    /// than reading one (tests, fixtures).
    pub fn new(stream_id: &str, fields: &[(&str, &str)]) -> LogEntry {
        LogEntry {
            stream_id: stream_id.to_string(),
            fields: fields
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// The event type (`""` when missing).
    pub fn kind(&self) -> &str {
        self.get(TYPE_FIELD).unwrap_or("")
    }

    /// A field's value.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    /// Decodes the entry (see [`crate::event::Event::decode`]).
    pub fn decode(&self) -> Result<crate::event::Event, crate::event::EventError> {
        crate::event::Event::decode(self)
    }

    /// When the entry was appended (ms since the epoch): the first part of its stream id.
    pub fn at_ms(&self) -> u64 {
        self.stream_id
            .split_once('-')
            .and_then(|(ms, _)| ms.parse().ok())
            .unwrap_or(0)
    }
}

type RawEntries = Vec<(String, Vec<(String, String)>)>;

/// Reads up to `count` entries of `stream` that come strictly after stream id `after`
/// (`"-"` for the beginning).
pub async fn read_page(
    conn: &mut Conn,
    stream: &str,
    after: &str,
    count: usize,
) -> Result<Vec<LogEntry>, LogError> {
    read_page_below(conn, stream, after, None, count).await
}

/// [`read_page`], only entries strictly below stream id `below` (`None`: to the end): the
/// archiving pass reads up to what it may move.
pub async fn read_page_below(
    conn: &mut Conn,
    stream: &str,
    after: &str,
    below: Option<&str>,
    count: usize,
) -> Result<Vec<LogEntry>, LogError> {
    let start = if after == "-" {
        "-".to_string()
    } else {
        format!("({after}")
    };
    let end = below.map_or("+".to_string(), |b| format!("({b}"));
    let raw: RawEntries = redis::cmd("XRANGE")
        .arg(stream)
        .arg(start)
        .arg(end)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await?;
    Ok(raw
        .into_iter()
        .map(|(stream_id, kv)| LogEntry {
            stream_id,
            fields: kv.into_iter().collect(),
        })
        .collect())
}

/// Calls `f` on every entry of `stream`, in order, reading pages of `page` entries so memory stays
/// bounded however long the log is. `f`'s own error type passes through unchanged.
pub async fn for_each<E: From<LogError>>(
    conn: &mut Conn,
    stream: &str,
    page: usize,
    mut f: impl FnMut(&LogEntry) -> Result<(), E>,
) -> Result<u64, E> {
    let mut after = "-".to_string();
    let mut seen = 0u64;
    loop {
        let entries = read_page(conn, stream, &after, page).await?;
        let Some(last) = entries.last() else {
            return Ok(seen);
        };
        after = last.stream_id.clone();
        for e in &entries {
            f(e)?;
            seen += 1;
        }
        if entries.len() < page {
            return Ok(seen);
        }
    }
}
