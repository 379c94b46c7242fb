//! The saga list's index: the order-side saga records, read with the same scan as
//! `shoplog sagas` (`crate::sagas::scan`) at most once per refresh interval however many views
//! ask, kept newest first in memory; every list view, filter and page reads this copy (no
//! database scan per view).
//!
//! The interval grows with the scan's cost (at least [`MIN_REFRESH`], else 5 × the last scan's
//! duration), so a database of millions of records is scanned rarely; nobody looking at the
//! console means no scan at all (a refresh happens only when a view asks for a stale index).
//! A view never waits for a scan, except the very first: it is answered from the copy it finds
//! (its time is shown) while a stale copy is read again in the background.

use std::time::{Duration, Instant};

use common::saga::SagaRecord;

use crate::dbs::Dbs;
use crate::sagas::{self, Filter, SagaState};

/// The shortest time between two scans.
pub const MIN_REFRESH: Duration = Duration::from_secs(2);

/// The saga records as of the last scan.
#[derive(Debug, Default)]
pub struct Index {
    /// Newest first.
    pub records: Vec<SagaRecord>,
    /// Malformed records met by the last scan (each named).
    pub malformed: Vec<String>,
    /// When the last scan finished (ms since the epoch; 0: never).
    pub as_of_ms: u64,
    scanned_at: Option<Instant>,
    took: Duration,
}

/// Counts of the sagas by state, for the overview.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Undecided.
    #[serde(rename = "in-flight")]
    pub in_flight: usize,
    /// Undecided past `SAGA_TIMEOUT`.
    pub stuck: usize,
    /// Committed.
    pub committed: usize,
    /// Aborted, a compensation not confirmed yet.
    pub compensating: usize,
    /// Aborted and compensated.
    pub aborted: usize,
    /// Every live record.
    pub total: usize,
    /// When the index was read.
    pub as_of_ms: u64,
}

impl Index {
    /// Whether a view should refresh the index first.
    pub fn stale(&self) -> bool {
        self.scanned_at
            .is_none_or(|t| t.elapsed() >= MIN_REFRESH.max(self.took * 5))
    }

    /// Reads every saga record into a new index.
    pub async fn read(dbs: &Dbs) -> Result<Index, redis::RedisError> {
        let started = Instant::now();
        let mut records = Vec::new();
        let mut malformed = Vec::new();
        sagas::scan(&mut dbs.order.clone(), &dbs.order_layout, |r| match r {
            Ok(r) => records.push(r),
            Err(e) => malformed.push(e.to_string()),
        })
        .await?;
        records.sort_by(|a, b| b.started_ms.cmp(&a.started_ms).then(b.id.cmp(&a.id)));
        Ok(Index {
            records,
            malformed,
            as_of_ms: sagas::now_ms(),
            scanned_at: Some(Instant::now()),
            took: started.elapsed(),
        })
    }

    /// The records `filter` passes (newest first), and how many there are in all.
    pub fn select(
        &self,
        filter: &Filter,
        saga_timeout_ms: u64,
        skip: usize,
        take: usize,
    ) -> (Vec<SagaRecord>, usize) {
        let now = sagas::now_ms();
        let mut total = 0;
        let mut page = Vec::new();
        for r in self
            .records
            .iter()
            .filter(|r| filter.matches(r, now, saga_timeout_ms))
        {
            if total >= skip && page.len() < take {
                page.push(r.clone());
            }
            total += 1;
        }
        (page, total)
    }

    /// The counts by state.
    pub fn counts(&self, saga_timeout_ms: u64) -> Counts {
        let now = sagas::now_ms();
        let mut c = Counts {
            total: self.records.len(),
            as_of_ms: self.as_of_ms,
            ..Counts::default()
        };
        for r in &self.records {
            match r.state() {
                SagaState::InFlight => {
                    c.in_flight += 1;
                    if sagas::is_stuck(r, now, saga_timeout_ms) {
                        c.stuck += 1;
                    }
                }
                SagaState::Committed => c.committed += 1,
                SagaState::Compensating => c.compensating += 1,
                SagaState::Aborted => c.aborted += 1,
            }
        }
        c
    }
}
